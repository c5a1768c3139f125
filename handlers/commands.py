"""`/finetune`: ack at once (with the answer, when it needs nothing slow), then do the work and reply."""

from __future__ import annotations

import html

from slack_bolt import App

from bot.commands import Command, Problem, parse
from bot.jobs import Caller
from bot.messages.answers import format_help, format_problem, format_refusal, format_replay, format_unknown_provider
from bot.providers.types import UnknownProvider
from handlers import keys
from handlers.errors import apologizing
from handlers.replies import replier


def register(app: App, services) -> None:
    app.command("/finetune")(make_listener(services))


def make_listener(services):
    def finetune(ack, command):  # noqa: ANN001 - Bolt injects by name
        parsed = parse(html.unescape(command.get("text") or ""))  # Slack sends &, < and > escaped
        caller = Caller(command.get("team_id", ""), command.get("channel_id", ""), command.get("user_id", ""),
                        response_url=command.get("response_url") or None)
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
        if parsed.name == "keys":  # a form, opened with the command's trigger_id (3 seconds): at once, after ack
            services.prompt.submit(keys.open_form, services, caller, command.get("trigger_id") or "")
            return
        if parsed.name in {"check", "upload"} or (parsed.name == "start" and "training_file" not in parsed.args):
            # The form opens with the command's trigger_id, which Slack honours for 3 seconds: at once, after ack.
            services.prompt.submit(_open_form, services, parsed, caller, command.get("trigger_id") or "")
            return
        run_after_ack(services, parsed, caller, trigger_id=command.get("trigger_id"))

    return finetune


def _open_form(services, command: Command, caller: Caller, trigger_id: str) -> None:
    send = replier(services, caller)
    with apologizing(send, f"/finetune {command.name}"):
        try:
            problem = services.data.open_form(command.name, caller, trigger_id, provider=command.args.get("provider"))
            if problem:
                send(format_refusal(problem))
        except UnknownProvider as unknown:
            send(format_unknown_provider(unknown, services.providers.names, command.spec.usage))


def run_after_ack(services, command: Command, caller: Caller, *, trigger_id: str | None) -> None:
    """Do a command's slow work on the bot's pool and reply through the response URL."""
    services.background.submit(_work, services, command, caller, trigger_id)


def _work(services, command: Command, caller: Caller, trigger_id: str | None) -> None:
    send = replier(services, caller)
    with apologizing(send, f"/finetune {command.name}"):
        # Slack sends a fresh trigger_id with every command and click: the same one again is a replayed request.
        if trigger_id and not services.store.replays.first_sight_of_trigger(trigger_id):
            send(format_replay())
            return
        send(services.run(command, caller))
