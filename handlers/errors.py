"""The one place unexpected errors end: logged with an id, answered with a short apology that quotes it (or, when the
database could not be reached, a request to try again in a moment)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from slack_bolt import App

from bot import metrics
from bot.messages.answers import format_apology, format_database_unavailable
from bot.messages.blocks import Message
from storage import DB_ERRORS
from storage.engines import is_transient

log = logging.getLogger("finetune_bot.errors")


def apologize(error: BaseException, send: Callable[[Message], object] | None, where: str) -> str:
    error_id = "E" + secrets.token_hex(4).upper()
    away = isinstance(error, DB_ERRORS) and is_transient(error)
    if isinstance(error, DB_ERRORS):
        metrics.inc("database_errors", where="request")
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


@contextmanager
def apologizing(send: Callable[[Message], object] | None, where: str) -> Iterator[None]:
    """Work done after `ack()` (on a pool, where Bolt's error handler cannot see it) ends here when it fails, as
    unexpected errors before the ack end in `register`'s handler: logged with an id, its person told. The one
    `except Exception` of the listeners."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - the end of the line for anything a listener's work raises
        apologize(error, send, where)


def register(app: App, services) -> None:
    @app.error
    def on_error(error, body, logger):  # noqa: ANN001 - Bolt injects by name
        url = body.get("response_url") if isinstance(body, dict) else None
        apologize(error, (lambda m: services.slack.reply(url, services.decorate(m))) if url else None,
                  "a Slack request")
