"""Logging set-up, with every configured secret scrubbed from every record, whatever logged it."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bot.scrub import Scrubber


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = Scrubber(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.redact(message), None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def configure(level: str, secrets: Iterable[str], *, stream=None) -> logging.Handler:
    """Send all logs to one handler that scrubs secrets; returns it (tests attach their own stream)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_finetune_bot", False):
            root.removeHandler(old)
    handler._finetune_bot = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # The scheduler says "Running job … executed successfully" for every run (four a second with a 1 s poll), and
    # the HTTP clients a line a request: at INFO that drowns what the bot itself says. Their warnings still show,
    # and LOG_LEVEL=DEBUG shows everything.
    quiet = logging.DEBUG if logging.getLevelName(level) == logging.DEBUG else logging.WARNING
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(quiet)
    return handler


CHATTY_LOGGERS = ("apscheduler", "httpx", "httpx2", "openai._base_client", "together._base_client")
