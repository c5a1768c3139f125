"""`/finetune`: ack at once (with the answer, when it needs nothing slow), then do the work and reply."""

from __future__ import annotations

import html

from slack_bolt import App

from bot.commands import Command, Problem, parse
from bot.jobs import Caller
from bot.messages import format_help, format_problem, format_refusal
from handlers.errors import apologize


def register(app: App, services) -> None:
    app.command("/finetune")(make_listener(services))


def make_listener(services):
    def finetune(ack, command, respond):  # noqa: ANN001 - Bolt injects by name
        parsed = parse(html.unescape(command.get("text") or ""))  # Slack sends &, < and > escaped
        caller = Caller(command.get("team_id", ""), command.get("channel_id", ""), command.get("user_id", ""))
        if isinstance(parsed, Problem):
            ack(**services.reply(format_problem(parsed)))
            return
        if parsed.name == "help":
            ack(**services.reply(format_help()))
            return
        refusal = services.jobs.refusal(parsed, caller)
        if refusal:
            ack(**services.reply(format_refusal(refusal)))
            return
        ack()
        run_after_ack(services, parsed, caller, respond)

    return finetune


def run_after_ack(services, command: Command, caller: Caller, respond) -> None:
    """Do a command's slow work on the bot's pool and reply through the response URL."""
    services.background.submit(_work, services, command, caller, respond)


def _work(services, command: Command, caller: Caller, respond) -> None:
    try:
        message = services.jobs.run(command, caller)
        respond(**services.reply(message), replace_original=False)
    except Exception as error:  # noqa: BLE001 - work after ack() is outside Bolt's error handler; end it there too
        apologize(error, respond, f"/finetune {command.name}")

