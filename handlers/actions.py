"""Buttons on the bot's messages: ack at once, then act as the matching slash command would."""

from __future__ import annotations

from slack_bolt import App

from bot.commands import ID_PATTERN, Command
from bot.jobs import Caller
from bot.messages import CANCEL_ACTION, format_refusal
from handlers.commands import run_after_ack


def register(app: App, services) -> None:
    app.action(CANCEL_ACTION)(make_cancel_listener(services))


def make_cancel_listener(services):
    def cancel_clicked(ack, body, action):  # noqa: ANN001 - Bolt injects by name
        ack()
        job_id = str(action.get("value") or "")
        caller = Caller((body.get("team") or {}).get("id", ""), (body.get("channel") or {}).get("id", ""),
                        (body.get("user") or {}).get("id", ""), response_url=body.get("response_url") or None)
        if not ID_PATTERN.fullmatch(job_id):
            return  # not a button of ours
        command = Command("cancel", {"job_id": job_id})
        refusal = services.jobs.refusal(command, caller)
        if refusal:
            if caller.response_url:
                services.background.submit(services.slack.reply, caller.response_url,
                                           services.decorate(format_refusal(refusal)))
            return
        run_after_ack(services, command, caller, trigger_id=body.get("trigger_id"))

    return cancel_clicked
