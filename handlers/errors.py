"""The one place unexpected errors end: logged with an id, answered with a short apology that quotes it (or, when the
database could not be reached, a request to try again in a moment)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from slack_bolt import App

from bot.messages.answers import format_apology, format_database_unavailable
from bot.messages.blocks import Message
from storage import DB_ERRORS
from storage.engines import is_transient

log = logging.getLogger("finetune_bot.errors")


def apologize(error: BaseException, send: Callable[[Message], object] | None, where: str) -> str:
    error_id = "E" + secrets.token_hex(4).upper()
    away = isinstance(error, DB_ERRORS) and is_transient(error)
    if away:
        # The database going away (a restart, a failover) is not a bug: one line, and the person told to retry.
        log.warning("the database could not be reached in %s (%s): %s", where, error_id, error)
    else:
        log.error("unexpected error %s in %s", error_id, where, exc_info=error)
    message = format_database_unavailable(error_id) if away else format_apology(error_id)
    if send is not None:
        try:
            send(message)
        except Exception:  # noqa: BLE001 - the apology itself failing must not hide the original error
            log.warning("could not send the apology for %s", error_id)
    return error_id


def register(app: App, services) -> None:
    @app.error
    def on_error(error, body, logger):  # noqa: ANN001 - Bolt injects by name
        url = body.get("response_url") if isinstance(body, dict) else None
        apologize(error, (lambda m: services.slack.reply(url, services.decorate(m))) if url else None,
                  "a Slack request")
