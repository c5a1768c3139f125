"""Trying a fine-tuned model from its announcement: the Try it button, its form, and sharing an answer."""

from __future__ import annotations

import html
import json

from slack_bolt import App

from bot.commands import Command
from bot.jobs import Caller
from bot.messages.answers import format_note, format_refusal
from bot.messages.jobs import TRY_CALLBACK, TRY_OPEN_ACTION, TRY_SHARE_ACTION
from bot.values import ID_PATTERN
from handlers.errors import apologizing
from handlers.replies import caller_of_click as _caller
from handlers.replies import first_sight
from handlers.replies import replier as _tell


def register(app: App, services) -> None:
    app.action(TRY_OPEN_ACTION)(make_open_listener(services))
    app.view(TRY_CALLBACK)(make_submission_listener(services))
    app.action(TRY_SHARE_ACTION)(make_share_listener(services))


def make_open_listener(services):
    def try_clicked(ack, body, action):  # noqa: ANN001 - Bolt injects by name
        ack()
        caller = _caller(body)
        try:
            target = json.loads(html.unescape(action.get("value") or "{}"))
        except ValueError:
            return
        job_id, provider = str(target.get("job") or ""), target.get("provider")
        if not ID_PATTERN.fullmatch(job_id):
            return  # not a button of ours
        refusal = services.jobs.refusal(Command("try", {}), caller)
        if refusal:
            services.background.submit(_tell(services, caller), format_refusal(refusal))
            return
        services.prompt.submit(_open, services, caller, job_id, provider, body)

    return try_clicked


def _open(services, caller: Caller, job_id: str, provider, body: dict) -> None:
    with apologizing(_tell(services, caller), "the Try it button"):
        if not first_sight(services, body):
            return  # a replayed click opens no second form
        problem = services.trying.open_form(caller, job_id, provider, str(body.get("trigger_id") or ""))
        if problem:
            _tell(services, caller)(problem)


def make_submission_listener(services):
    def try_submitted(ack, body, view):  # noqa: ANN001 - Bolt injects by name
        answer, then = services.trying.submitted(view, (body.get("user") or {}).get("id", ""))
        ack(**answer)
        if then is not None:
            then()

    return try_submitted


def make_share_listener(services):
    def share_clicked(ack, body, action):  # noqa: ANN001 - Bolt injects by name
        ack()
        caller = _caller(body)
        services.background.submit(_share, services, caller, str(action.get("value") or ""), body)

    return share_clicked


def _share(services, caller: Caller, share_id: str, body: dict) -> None:
    send = _tell(services, caller)
    with apologizing(send, "the Share button"):
        if not first_sight(services, body):
            return  # a replayed click: the answer is shared once anyway, and its clicker was told
        refusal = services.trying.share(share_id, caller.user_id)
        if refusal:
            send(format_refusal(refusal))
        else:  # the answer with its button becomes a line saying where it went, so it is not shared twice by eye
            send(format_note("Shared in the channel.", emoji=":white_check_mark:"), replace=True)
