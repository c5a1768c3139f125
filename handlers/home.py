"""The App Home: drawn when its person opens it (after the ack, on the pool), its Help button, and (for a
workspace's admins, in OAuth mode) its Provider keys button."""

from __future__ import annotations

from slack_bolt import App

from bot.jobs import Caller
from bot.messages.home import HOME_HELP_ACTION, HOME_KEYS_ACTION
from bot.messages.keys import keys_done_view
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

    @app.action(HOME_KEYS_ACTION)
    def keys_clicked(ack, body):  # noqa: ANN001 - Bolt injects by name
        ack()
        trigger_id = str(body.get("trigger_id") or "")
        caller = Caller((body.get("team") or {}).get("id", ""), "", (body.get("user") or {}).get("id", ""))
        if trigger_id and caller.user_id:
            services.prompt.submit(_keys, services, caller, trigger_id)


def _keys(services, caller: Caller, trigger_id: str) -> None:  # noqa: ANN001
    """The keys form from the Home (admins see the button); anyone else is told why not, in a modal of its own."""
    with apologizing(None, "the Home's Provider keys button"):
        problem = services.keys.open_form(caller, trigger_id)
        if problem:
            services.slack.open_view(trigger_id, keys_done_view(problem))


def _publish(services, user_id: str) -> None:  # noqa: ANN001
    with apologizing(None, "drawing an App Home"):
        services.home.publish(user_id)


def _help(services, trigger_id: str) -> None:  # noqa: ANN001
    with apologizing(None, "the Home's Help button"):
        services.slack.open_view(trigger_id, services.home.help_view())
