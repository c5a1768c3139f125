"""The App Home: drawn when its person opens it (after the ack, on the pool), and its Help button."""

from __future__ import annotations

from slack_bolt import App

from bot.messages.home import HOME_HELP_ACTION
from handlers.errors import apologizing


def register(app: App, services) -> None:  # noqa: ANN001 - bot.app.Services
    @app.event("app_home_opened")
    def home_opened(body: dict) -> None:
        event = body.get("event") or {}
        user_id = str(event.get("user") or "")
        if event.get("tab", "home") != "home" or not user_id:
            return  # the Messages tab: nothing to draw
        services.background.submit(_publish, services, user_id)

    @app.action(HOME_HELP_ACTION)
    def help_clicked(ack, body):  # noqa: ANN001 - Bolt injects by name
        ack()
        trigger_id = str(body.get("trigger_id") or "")
        if trigger_id:
            services.prompt.submit(_help, services, trigger_id)


def _publish(services, user_id: str) -> None:  # noqa: ANN001
    with apologizing(None, "drawing an App Home"):
        services.home.publish(user_id)


def _help(services, trigger_id: str) -> None:  # noqa: ANN001
    with apologizing(None, "the Home's Help button"):
        services.slack.open_view(trigger_id, services.home.help_view())
