"""The training-data form: its submission and its report's button. Each acks at once; the work runs after."""

from __future__ import annotations

from slack_bolt import App

from bot.views import DATA_CALLBACK, DATA_CONFIRM_ACTION


def register(app: App, services) -> None:
    app.view(DATA_CALLBACK)(make_submission_listener(services))
    app.action(DATA_CONFIRM_ACTION)(make_confirm_listener(services))


def make_submission_listener(services):
    def form_submitted(ack, body, view):  # noqa: ANN001 - Bolt injects by name
        try:
            answer, then = services.data.submitted(view, (body.get("user") or {}).get("id", ""))
        except ValueError:
            ack()  # not one of our forms
            return
        ack(**answer)  # Slack's 3 seconds: the inline errors, or "checking…"
        if then is not None:
            then()

    return form_submitted


def make_confirm_listener(services):
    def confirm_clicked(ack, body):  # noqa: ANN001 - Bolt injects by name
        ack()
        view = body.get("view")
        if not isinstance(view, dict):
            return  # not in a modal: not our button
        try:
            services.data.confirmed(view, (body.get("user") or {}).get("id", ""))
        except ValueError:
            return

    return confirm_clicked
