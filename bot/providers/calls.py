"""How every adapter calls its SDK: reads retried a little, refusals turned into `ProviderError` in the provider's
words, and a job started exactly once (the provider APIs have no idempotency key, and a lost answer to a create may
still have started, and billed, a job)."""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import date, datetime, timezone
from typing import Any, TypeVar

from bot import metrics
from bot.providers.types import ChatAnswer, Job, JobEvent, ProviderError, provider_label
from bot.retry_after import retry_after_seconds
from bot.scrub import Scrubber

SHAPES = Scrubber()  # what every adapter removes even when it was told no secret: anything shaped like a credential

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

log = logging.getLogger(__name__)

# How providers word "we no longer create fine-tuning jobs" (as opposed to "this request is wrong").
_STOPPED_WORDS = re.compile(r"deprecat|no longer|not (?:be )?accept|discontinu|sunset|retired|unavailable|shut",
                            re.IGNORECASE)
_STOPPED_CODES = {"fine_tuning_unavailable", "fine_tuning_deprecated", "deprecated", "model_deprecated"}


# Every call the services make of an adapter (the FineTuningProvider protocol's methods, bar webhooks, which have
# their own refusal). Whatever escapes one of them that is not a ProviderError (a 200 whose body is a proxy's error
# page or cut off, a field of the wrong type, a transport error the SDK does not wrap) is the provider failing.
PROVIDER_CALLS = ("retrieve", "list_jobs", "events", "metrics", "latest_metric", "upload_file", "estimate_price",
                  "chat", "read_file", "cancel", "pause", "resume", "create_job", "find_started")


@functools.cache
def tls_context(http_library: str) -> Any:
    """The TLS context every SDK client of this process verifies with, made by the SDK's own HTTP library (`httpx`,
    or `httpx2` for openai) exactly as it would make it (its CA bundle, SSL_CERT_FILE honoured), once per process.
    Each client made its own, reading the whole CA bundle: 49 ms of CPU for every provider built, which a bot of many
    workspaces does for each workspace's key (and every test, for each bot it builds)."""
    import importlib

    return importlib.import_module(http_library).create_ssl_context()


def answers_in_provider_errors(cls: type) -> type:
    """Make every provider call of an adapter class raise only ProviderError: an unreadable answer becomes a
    retryable one (the poller backs off, a command says so), and one to a create is ambiguous (it may have started
    a job, so the user is told to look before starting again)."""
    for name in PROVIDER_CALLS:
        method = cls.__dict__.get(name)
        if method is not None and not getattr(method, "_answers_in_provider_errors", False):
            setattr(cls, name, _guarded(method, creating=name == "create_job"))
    return cls


def _scrubbed(value: Any, redact: Callable[[str], str]) -> Any:
    """A provider's answer with the free text in it (a job's error, an event's message, a model's answer) scrubbed
    of secrets as it enters the bot, before anything can cut it and leave part of a key behind."""
    if isinstance(value, Job) and value.error_message:
        return replace(value, error_message=redact(value.error_message))
    if isinstance(value, JobEvent) and value.message:
        return replace(value, message=redact(value.message))
    if isinstance(value, ChatAnswer) and value.text:
        return replace(value, text=redact(value.text))
    if isinstance(value, list):
        return [_scrubbed(item, redact) for item in value]
    if isinstance(value, tuple):
        return tuple(_scrubbed(item, redact) for item in value)
    return value


def _guarded(method: Callable, *, creating: bool) -> Callable:
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        name, started, outcome = getattr(self, "name", ""), time.monotonic(), "ok"
        try:
            return _scrubbed(method(self, *args, **kwargs), getattr(self, "_redact", None) or SHAPES)
        except ProviderError as error:
            outcome = "failed" if error.retryable else "refused"
            raise
        except Exception as exc:  # noqa: BLE001 - the one boundary between an SDK and the bot
            outcome = "unreadable"
            label = provider_label(getattr(self, "name", ""))
            log.warning("%s sent an answer that could not be read (%s)", label, type(exc).__name__)
            if creating:
                raise ProviderError(f"{label} sent an answer I could not read ({type(exc).__name__}), so I cannot "
                                    "tell whether the job started. Check `/finetune list` before starting it again.",
                                    retryable=False, ambiguous=True, provider=getattr(self, "name", None)) from None
            raise ProviderError(f"{label} sent an answer I could not read ({type(exc).__name__}).",
                                retryable=True, provider=getattr(self, "name", None)) from None
        finally:
            metrics.inc("provider_requests", provider=name, outcome=outcome)
            metrics.observe("provider_request_seconds", time.monotonic() - started, provider=name)

    call._answers_in_provider_errors = True  # type: ignore[attr-defined]
    return call


def stopped_taking_jobs(status: int, message: str, code: str, new_jobs_end: date | None, now: float) -> bool:
    """Whether a refused create means the provider has stopped creating jobs, rather than that this one was wrong."""
    if status not in {400, 403, 404, 410}:
        return False
    if code in _STOPPED_CODES or status == 410:
        return True
    past_end = new_jobs_end is not None and datetime.fromtimestamp(now, timezone.utc).date() >= new_jobs_end
    return bool(_STOPPED_WORDS.search(message)) and (past_end or status in {403, 410} or "fine-tun" in message
                                                     or "fine tun" in message.lower())


def start_once(create: Callable[[], Job], find: Callable[[float], Job | None], *, attempts: int, timeout: float,
               sleep: Callable[[float], None], clock: Callable[[], float], provider: str = "") -> Job:
    """Call `create` until it answers, at most `attempts` times; before each retry, `find(since)` looks for the job a
    lost attempt may have created, so a retry never starts a second one.

    A failure to look is reported as ambiguous: the user is told to check before starting again.
    """
    began = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return create()
        except ProviderError as error:
            if not error.retryable:
                raise
            failure = error
        try:
            found = find(began)
        except ProviderError as error:
            raise ProviderError(
                f"The provider did not confirm whether the job started ({error.message}). "
                "Check `/finetune list` before starting it again.",
                status=error.status, retryable=False, ambiguous=True,
            ) from None
        if found is not None:
            log.info("job creation answer was lost; found the job it created: %s", found.id)
            return found
        if attempt >= attempts:
            raise failure
        metrics.inc("provider_requests", provider=provider, outcome="retried")
        # Never longer than one request may take: a start's whole life stays within 8 timeouts (see bot.app).
        sleep(min(failure.retry_after or 0.5 * attempt, timeout))


def read_with_retries(call: Callable[[], Any], *, sdk_error: type[Exception],
                      translate: Callable[[Exception], ProviderError], attempts: int,
                      sleep: Callable[[float], None], provider: str = "") -> Any:
    """A read, tried again (briefly, or as long as the provider's Retry-After says, up to 2 s) when it may pass."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except sdk_error as exc:
            error = translate(exc)
            if not error.retryable or attempt == attempts:
                raise error from None
            metrics.inc("provider_requests", provider=provider, outcome="retried")
            sleep(min(error.retry_after or 0.25 * attempt, 2.0))
    raise AssertionError("unreachable")


def refusal(provider: str, status: int, body: object, headers: Mapping[str, str], *,
            redact: Callable[[str], str], creating: bool, new_jobs_end: date | None, now: float) -> ProviderError:
    """An HTTP refusal in the provider's own words: `{"error": {"message", "code"}}`, the inner object alone, or a
    bare string; secrets removed."""
    message = code = None
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message, code = inner.get("message"), inner.get("code")
        if message is None and isinstance(body.get("error"), str):
            message = body["error"]
    if not message:
        message = f"The provider answered HTTP {status}."
    stopped = creating and stopped_taking_jobs(status, str(message), str(code or ""), new_jobs_end, now)
    return ProviderError(redact(str(message)), status=status, code=str(code) if code else None,
                         retryable=status in RETRYABLE_STATUS,
                         retry_after=retry_after_seconds(headers.get("retry-after")),
                         stopped_taking_jobs=stopped, provider=provider)


def lines_capped(chunks: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    """A file's lines as its pieces arrive (never the whole file in memory), refused past `max_bytes`."""
    read = 0
    pending = b""
    for chunk in chunks:
        read += len(chunk)
        if read > max_bytes:
            raise ProviderError(f"The file is larger than {max_bytes / 1e6:,.0f} MB, the most this bot reads.")
        *whole, pending = (pending + chunk).split(b"\n")
        yield from whole
    if pending:
        yield pending


def chat_answer(raw: Any) -> ChatAnswer:
    """The first choice of a chat completion (both SDKs answer in OpenAI's shape)."""
    choice = (getattr(raw, "choices", None) or [None])[0]
    message = getattr(choice, "message", None)
    usage = getattr(raw, "usage", None)
    return ChatAnswer(text=str(getattr(message, "content", None) or ""),
                      prompt_tokens=getattr(usage, "prompt_tokens", None),
                      completion_tokens=getattr(usage, "completion_tokens", None),
                      finish_reason=getattr(choice, "finish_reason", None))


def made_by_this_start(job: Job, *, training_file: str, model: str, suffix: str | None, since: float) -> bool:
    """Whether `job` is the one a start with these words, begun at `since`, created (for providers that keep no
    metadata to tag it with)."""
    return (job.training_file == training_file and job.model == model and (job.suffix or None) == (suffix or None)
            and (job.created_at or 0) >= int(since) - 5)


def loss_value(value: Any) -> float | None:
    """A loss as a provider reports it: a number, or NaN and infinities however they are written (JSON has no word
    for them: some services send the bare NaN token, others the string "NaN" or "inf"). Anything else: no loss."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an integer past any float (10**400): a loss that large is an infinite one
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str) and value.strip().lower() in {"nan", "inf", "+inf", "-inf", "infinity", "-infinity"}:
        return float(value.strip())
    return None


def unix_seconds(value: Any) -> int | None:
    """Unix seconds from a provider's times: RFC 3339 / ISO 8601 strings (on the wire), datetimes (in SDK types), or
    seconds already; None for none or for what is not a time."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return int(value.timestamp()) if isinstance(value, datetime) else None
