"""`/finetune keys`: the form opens after the command's ack; its submission is checked in the ack (no I/O) and
carried out after it (who sent it, sealed and stored), the form then saying what became of it."""

from __future__ import annotations

import time

from slack_bolt import App

from bot.jobs import Caller
from bot.messages.answers import format_refusal
from bot.messages.keys import KEYS_CALLBACK, keys_done_view
from handlers.errors import apologizing
from handlers.replies import replier


def register(app: App, services) -> None:  # noqa: ANN001 - bot.app.Services
    app.view(KEYS_CALLBACK)(make_submission_listener(services))


def open_form(services, caller: Caller, trigger_id: str) -> None:  # noqa: ANN001
    """After the command's ack, on the forms' pool: the form for an admin, or why not."""
    send = replier(services, caller)
    with apologizing(send, "/finetune keys"):
        problem = services.keys.open_form(caller, trigger_id)
        if problem:
            send(format_refusal(problem))


def make_submission_listener(services):  # noqa: ANN001, ANN201
    def keys_submitted(ack, body, view):  # noqa: ANN001 - Bolt injects by name
        answers, errors = services.keys.read_form(view)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        ack(response_action="update", view=keys_done_view("Saving…"))
        user_id = str((body.get("user") or {}).get("id") or "")
        services.background.submit(_save, services, str(view.get("id") or ""), answers, user_id, time.monotonic())

    return keys_submitted


def _save(services, view_id: str, answers: dict, user_id: str, answered_at: float) -> None:  # noqa: ANN001
    def show(sentence: str) -> None:
        services.slack.update_view(view_id, keys_done_view(sentence), answered_at=answered_at)

    with apologizing(lambda message: show(message.text), "the keys form"):
        show(services.keys.submitted(answers, user_id))
