"""The one place unexpected errors end: logged with an id, answered with a short apology that quotes it."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from slack_bolt import App

from bot.messages import Message, format_apology

log = logging.getLogger("finetune_bot.errors")


def reply_kwargs(message: Message) -> dict:
    return {"text": message.text, "blocks": message.blocks,
            "response_type": "in_channel" if message.in_channel else "ephemeral"}


def apologize(error: BaseException, respond: Callable[..., object] | None, where: str) -> str:
    error_id = "E" + secrets.token_hex(4).upper()
    log.error("unexpected error %s in %s", error_id, where, exc_info=error)
    if respond is not None:
        try:
            respond(**reply_kwargs(format_apology(error_id)))
        except Exception:  # noqa: BLE001 - the apology itself failing must not hide the original error
            log.warning("could not send the apology for %s", error_id)
    return error_id


def register(app: App, services) -> None:
    @app.error
    def on_error(error, body, respond, logger):  # noqa: ANN001 - Bolt injects by name
        apologize(error, respond if body.get("response_url") else None, "a Slack request")
