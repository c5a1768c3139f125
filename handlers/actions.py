"""Buttons on the bot's messages: ack at once, then act as the matching slash command would."""

from __future__ import annotations

import html
import json
import re

from slack_bolt import App

from bot.commands import Command
from bot.jobs import Caller
from bot.messages.answers import format_refusal, format_replay
from bot.messages.jobs import CANCEL_ACTION, EVENTS_ACTION, REFRESH_ACTION
from bot.messages.money import HOLD_APPROVE_ACTION, HOLD_DENY_ACTION, HOLD_START_ACTION
from bot.values import ID_PATTERN, PROVIDER_PATTERN
from handlers.commands import run_after_ack
from handlers.errors import apologizing
from handlers.replies import caller_of_click, first_sight, replier


def register(app: App, services) -> None:
    app.action(CANCEL_ACTION)(make_cancel_listener(services))
    app.action(REFRESH_ACTION)(make_job_listener(services, refresh=True))
    app.action(EVENTS_ACTION)(make_job_listener(services, refresh=False))
    for action, decision in ((HOLD_START_ACTION, "start"), (HOLD_APPROVE_ACTION, "approve"),
                             (HOLD_DENY_ACTION, "deny")):
        app.action(action)(make_hold_listener(services, decision))


HOLD_ID = re.compile(r"[A-Za-z0-9_\-]{8,64}")


def make_hold_listener(services, decision: str):
    """A held start's Start anyway, Approve or Deny: ack at once; decided once, on the bot's pool."""
    def hold_clicked(ack, body, action):  # noqa: ANN001 - Bolt injects by name
        ack()
        hold_id = str(action.get("value") or "")
        if not HOLD_ID.fullmatch(hold_id):
            return  # not a button of ours
        services.background.submit(_decide, services, caller_of_click(body), hold_id, decision, body)

    return hold_clicked


def _decide(services, caller: Caller, hold_id: str, decision: str, body: dict) -> None:
    send = replier(services, caller)
    with apologizing(send, "a held start's button"):
        if not first_sight(services, body):
            send(format_replay())
            return
        answer, decided = services.jobs.release(caller, hold_id, decision)
        send(answer, replace=decision == "start" and decided is not None)
        if decided is not None and decided["state"] in {"approved", "denied", "expired"}:
            services.holds.settle_hold(decided, answer)


def make_job_listener(services, *, refresh: bool):
    """Refresh replaces the clicked message with the job as it is now; Events answers only whoever clicked."""
    def job_clicked(ack, body, action):  # noqa: ANN001 - Bolt injects by name
        ack()
        try:
            target = json.loads(html.unescape(action.get("value") or "{}"))
        except ValueError:
            return
        job_id, provider = str(target.get("job") or ""), str(target.get("provider") or "")
        if not ID_PATTERN.fullmatch(job_id) or (provider and not PROVIDER_PATTERN.fullmatch(provider)):
            return  # not a button of ours
        caller = caller_of_click(body)
        if caller.response_url:
            services.background.submit(_answer, services, caller, job_id, provider or None, refresh,
                                       bool(target.get("card")), body)

    return job_clicked


def _answer(services, caller: Caller, job_id: str, provider, refresh: bool, card: bool, body: dict) -> None:
    send = replier(services, caller)
    with apologizing(send, "a job button"):
        if not first_sight(services, body):
            return  # a replayed click: answered the first time
        if refresh and card:
            message, replace = services.jobs.refresh_card(caller, job_id, provider)
            send(message, replace=replace)
        elif refresh:
            send(services.jobs.refresh(caller, job_id, provider), replace=True)
        else:
            send(services.jobs.latest_events(caller, job_id, provider))


def make_cancel_listener(services):
    def cancel_clicked(ack, body, action):  # noqa: ANN001 - Bolt injects by name
        ack()
        job_id = str(action.get("value") or "")
        caller = caller_of_click(body)
        if not ID_PATTERN.fullmatch(job_id):
            return  # not a button of ours
        command = Command("cancel", {"job_id": job_id})
        refusal = services.jobs.refusal(command, caller)
        if refusal:
            services.background.submit(replier(services, caller), format_refusal(refusal))
            return
        run_after_ack(services, command, caller, trigger_id=body.get("trigger_id"))

    return cancel_clicked
