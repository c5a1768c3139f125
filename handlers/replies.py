"""What every listener needs after its ack: who clicked where, and a way to answer them through response_url."""

from __future__ import annotations

from collections.abc import Callable

from bot.jobs import Caller
from bot.messages.blocks import Message


def caller_of_click(body: dict) -> Caller:
    """The person, channel and response_url of a button click."""
    return Caller((body.get("team") or {}).get("id", ""), (body.get("channel") or {}).get("id", ""),
                  (body.get("user") or {}).get("id", ""), response_url=body.get("response_url") or None)


def replier(services, caller: Caller) -> Callable[..., object]:
    """Send a message to whoever asked, through their response_url (decorated for the sandbox); nothing without one."""
    def send(message: Message, replace: bool = False) -> None:
        if caller.response_url:
            services.slack.reply(caller.response_url, services.decorate(message), replace_original=replace)

    return send


def first_sight(services, body: dict) -> bool:
    """Whether this click is new: Slack sends a fresh trigger_id with every click, so the same one again is the same
    signed request replayed (checked after the ack, on the bot's pool: a database write)."""
    trigger_id = body.get("trigger_id")
    return not trigger_id or services.store.replays.first_sight_of_trigger(str(trigger_id))
