"""Logging set-up, with every configured secret scrubbed from every record, whatever logged it."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable

from bot.scrub import Scrubber

# The Slack request a log line concerns (set for each request by bot/web.py, carried into the pools that do its work).
REQUEST: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = Scrubber(secrets, learned=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request", None) is None and REQUEST.get() is not None:
            record.request = REQUEST.get()
        for name in CONTEXT_FIELDS:  # (what a line concerns, as JSON logs show it: scrubbed the same)
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, self.redact(value))
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.redact(message), None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class SkippedRunsOncePerInterval(logging.Filter):
    """A scheduled run skipped because the last one is still going is normal (a slow cycle at a short interval):
    APScheduler says so at every skip (263 lines in 35 s at a 0.1 s interval). Said once per interval, counted."""

    WORDS = "maximum number of running instances reached"

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every, self.clock = every, clock
        self._said_at: float | None = None
        self._skipped = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.WORDS not in str(record.msg):
            return True
        with self._lock:
            self._skipped += 1
            now = self.clock()
            if self._said_at is not None and now - self._said_at < self.every:
                return False
            skipped, self._skipped, self._said_at = self._skipped, 0, now
        record.msg = (f"a scheduled run was skipped because the previous one was still going ({skipped} skipped "
                      f"since the last such line; said at most once every {self.every:.0f}s)")
        record.args = None
        return True


SKIPPED_RUNS = SkippedRunsOncePerInterval()


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever `sys.stderr` is when it writes (not the one it was made with, which a test
    runner or a daemon may since have closed)."""

    @property
    def stream(self):  # noqa: ANN201 - a text stream
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - (logging sets it once; the current stderr is used instead)
        pass


def _json_formatter() -> type:
    """python-json-logger's formatter, showing a traceback as the scrubbing filter left it (it would format the
    exception afresh, secrets and all)."""
    from pythonjsonlogger.json import JsonFormatter

    class ScrubbedJson(JsonFormatter):
        def format(self, record: logging.LogRecord) -> str:
            if not record.exc_text:
                return super().format(record)
            exc_info, record.exc_info = record.exc_info, None
            try:
                return super().format(record)
            finally:
                record.exc_info = exc_info

    return ScrubbedJson


# What a log line may say it concerns (passed as `extra=`): JSON logs give each its own field.
CONTEXT_FIELDS = ("job", "provider", "channel", "request")


def configure(level: str, secrets: Iterable[str], *, stream=None, chatty: Iterable[str] = (),
              fmt: str = "text") -> logging.Handler:
    """Send all logs to one handler that scrubs secrets; returns it (tests attach their own stream). `fmt` "json":
    one JSON object a line (time, level, logger, message, and the job, provider, channel and request a line concerns),
    through python-json-logger."""
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    if fmt == "json":
        handler.setFormatter(_json_formatter()(
            "%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={
                "asctime": "time", "levelname": "level", "name": "logger", "exc_info": "error"},
            timestamp=False, json_ensure_ascii=False))
    else:
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
    for name in (*CHATTY_LOGGERS, *chatty):  # (`chatty`: the SDK loggers the provider shapes declare)
        logging.getLogger(name).setLevel(quiet)
    scheduler = logging.getLogger("apscheduler.scheduler")
    if SKIPPED_RUNS not in scheduler.filters:
        scheduler.addFilter(SKIPPED_RUNS)
    return handler


CHATTY_LOGGERS = ("apscheduler", "httpx", "httpx2")
