"""What the bot knows of a fine-tuning provider, in its own words: no SDK is imported here.

Services are typed against `FineTuningProvider`; each API shape (OpenAI's, Together's) is one adapter module that
returns these dataclasses and raises `ProviderError`. `Providers` is the set configured at start-up, by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any, BinaryIO, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

# What a job's status means to the bot, whatever word its provider uses: still going, or one of three outcomes.
GOING = "going"
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
STATES = FINAL_STATUSES | {GOING}
# How people read each provider's name, and the emoji of each status word: filled from the shapes' declarations by
# bot/providers/registry.py (a provider missing here is shown by its name; a word missing, by its meaning's emoji).
LABELS: dict[str, str] = {}
STATUS_EMOJI: dict[str, str] = {}
STATE_EMOJI = {GOING: ":gear:", "succeeded": ":white_check_mark:", "failed": ":x:", "cancelled": ":no_entry_sign:"}


def provider_label(name: str) -> str:
    return LABELS.get(name, name.title() if name else "the provider")


def ended(job: Job) -> str:
    """How a final job ended, as a verb phrase: "succeeded", "failed", "was cancelled"."""
    return {"cancelled": "was cancelled"}.get(job.state, job.state)


def status_emoji(status: str, state: str | None = None) -> str:
    """The emoji of a provider's status word (or, for a word no shape declares, of what it means)."""
    return STATUS_EMOJI.get(status) or STATE_EMOJI.get(state or "", ":grey_question:")


MAX_WHOLE = 2**53  # the largest whole number every store and JSON reader keeps exactly (SQLite's INTEGER is 64 bits)
MAX_TEXT = 100_000  # what the bot keeps of any text a provider sends (an error, a name): more is cut


def whole(value: Any, *, high: int = MAX_WHOLE) -> int | None:
    """A count, step or time as a provider reports it, if it is one: a whole number from 0 to `high` (an integral
    float included); anything else (10**30, NaN, a bool, a string) is no number at all."""
    if type(value) is int:
        return value if 0 <= value <= high else None
    if isinstance(value, float) and value.is_integer() and 0 <= value <= high:
        return int(value)
    return None


def amount(value: Any) -> float | None:
    """Money as a provider reports it: a finite amount from 0, else unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and 0 <= value <= 1e12 else None


def whole_epochs(value: Any) -> int | None:
    """Epochs as a provider reports them, when resolved to a number (OpenAI says "auto" until it has chosen)."""
    return whole(value, high=10_000) or None


def state_of(status: str, table: Mapping[str, str]) -> str:
    """A provider's status word mapped through its adapter's table; a word the table lacks is still going."""
    return table.get(status, GOING)


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    model: str
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    training_file: str | None = None
    validation_file: str | None = None
    suffix: str | None = None
    created_at: int | None = None
    finished_at: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    provider: str = "openai"
    # The bot's meaning of `status` (GOING or an outcome); by default the OpenAI words, where they are the same.
    state: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    estimated_finish: int | None = None  # when the provider expects it to end (OpenAI says so while it runs)
    provider_estimate: float | None = None  # the provider's own estimate of its cost, US dollars (Fireworks says so)
    n_epochs: int | None = None  # the epochs the job runs, once the provider has resolved them (never "auto")
    # What the run cost, US dollars: as the provider bills it (Together's total_price), or its trained tokens at the
    # shape's price (OpenAI's); None while nobody can say. Billed so far, for a job cancelled or failed part way.
    cost: float | None = None
    # The bot's estimate when it was started (the channel's record, not the provider's), and who approved a held
    # start: kept with the job, never read from a provider.
    estimate: float | None = None
    approved_by: str | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            object.__setattr__(self, "state", self.status if self.status in FINAL_STATUSES else GOING)
        # Everything a provider says is hostile: one absurd number (a step of 10**30) once stopped every progress read
        # at its provider, when SQLite could not store it. Numbers out of range are unknown; long text is cut.
        for name in _COUNTS:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, whole(getattr(self, name)))
        for name in _AMOUNTS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, amount(value))
        for name in _TEXTS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
                object.__setattr__(self, name, str(value)[:MAX_TEXT])

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATUSES

    @property
    def outcome(self) -> str | None:
        """The outcome (succeeded, failed, cancelled), or None while the job, in any status word, is still going."""
        return self.state if self.final else None

    def fields(self) -> dict:
        """The job's state as storage keeps it."""
        return {name: getattr(self, name) for name in STORED_FIELDS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """A job as storage last saw it."""
        values = {name: row.get(name) for name in (*STORED_FIELDS, *RECORDED_FIELDS)}
        values["provider"] = values["provider"] or "openai"
        values["state"] = values["state"] or ""
        return cls(**values)


_COUNTS = ("trained_tokens", "created_at", "finished_at", "estimated_finish", "n_epochs")
_AMOUNTS = ("cost", "provider_estimate", "estimate")
_TEXTS = ("status", "model", "fine_tuned_model", "training_file", "validation_file", "suffix", "error_code",
          "error_message")
# What the bot itself records of a job (at its start), which no provider's answer carries or overwrites.
RECORDED_FIELDS = ("estimate", "approved_by")
# What storage keeps of a job from the provider's answers: everything but what only a start or a lookup needs.
STORED_FIELDS = tuple(f.name for f in fields(Job)
                      if f.name not in {"validation_file", "metadata", "estimated_finish", "provider_estimate",
                                        "n_epochs", *RECORDED_FIELDS})


@dataclass(frozen=True)
class JobEvent:
    created_at: int
    level: str
    message: str
    type: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricPoint:
    """One step of training, as a loss curve needs it."""

    step: int
    train_loss: float | None = None
    valid_loss: float | None = None
    total_steps: int | None = None
    percent: int | None = None  # how far the run has come, where a provider says so instead of steps (Fireworks)
    epoch: int | None = None

    def __post_init__(self) -> None:
        """A step the bot can keep, or none at all (ValueError: the adapter skips such a point); the rest bounded."""
        if whole(self.step) is None:
            raise ValueError(f"not a step: {self.step!r:.40}")
        object.__setattr__(self, "step", whole(self.step))
        for name in ("total_steps", "epoch"):
            object.__setattr__(self, name, whole(getattr(self, name)))
        object.__setattr__(self, "percent", whole(self.percent, high=100))
        for name in ("train_loss", "valid_loss"):  # NaN and infinities are kept: they are what the watchdog sees
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                object.__setattr__(self, name, None)


@dataclass(frozen=True)
class ChatAnswer:
    """A model's answer to one conversation, with what it used."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class ProviderError(Exception):
    """The provider refused or failed. `message` is its own words (secrets removed), fit to show a user."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retryable: bool = False, retry_after: float | None = None, ambiguous: bool = False,
                 stopped_taking_jobs: bool = False, provider: str | None = None, own: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        self.ambiguous = ambiguous  # the request may have been carried out although no answer came back
        self.stopped_taking_jobs = stopped_taking_jobs  # the provider no longer creates fine-tuning jobs at all
        self.provider = provider  # which provider said it, when known
        self.own = own  # the bot's own finding about providers (no provider said it)

    @property
    def not_found(self) -> bool:
        return self.status == 404


class WebhookRejected(Exception):
    """A webhook whose signature, timestamp or shape is not right."""


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    job_id: str | None


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do beyond starting, reading and cancelling jobs."""

    pause_resume: bool = False
    chat: bool = True  # serves chat completions, so a fine-tuned model can be tried
    metadata: bool = False
    events: bool = True
    metrics: bool = False
    progress: bool = False  # says how far a run has come without loss metrics (a share, an epoch)
    webhooks: bool = False
    price_estimate: bool = False

    def described(self, *, present: bool = True) -> list[str]:
        """What the provider can do (or, with present=False, cannot), in words."""
        names = {"pause_resume": "pause and resume", "chat": "trying models", "metadata": "job metadata",
                 "events": "events", "metrics": "training metrics", "progress": "progress", "webhooks": "webhooks",
                 "price_estimate": "price estimates of its own"}
        has = {f.name: bool(getattr(self, f.name)) for f in fields(self)}
        has["progress"] = has["progress"] or has["metrics"]  # training metrics say how far a run has come, too
        return [names[name] for name, value in has.items() if value is present]


@dataclass(frozen=True)
class StartOption:
    """A `/finetune start` option a provider takes, beyond the training file: its word, and what it means there."""

    name: str
    help: str


@runtime_checkable
class FineTuningProvider(Protocol):
    """What the services need of a provider; one adapter per API shape provides it."""

    name: str  # the word users type: provider=together
    max_suffix: int
    capabilities: Capabilities
    start_options: tuple[StartOption, ...]
    page_size: int | None  # jobs a listing returns at most, or None when one request lists them all
    new_jobs_end: date | None  # the day the provider stops creating jobs, when it has announced one
    default_model: str | None  # the base model `start` uses when none is given, if the provider has its own
    needs_deployment: bool  # models are called by a deployment's name (AzureOpenAI), not the model's
    training_statuses: frozenset[str]  # the provider's status words while a job trains (and metrics come)
    webhook_route: str | None  # the path its webhooks come to (bot/web.py), if it sends any
    webhooks_verifiable: bool  # its webhooks' signing secret is set, so they can be received

    def owns_id(self, job_id: str) -> bool: ...

    def warm(self) -> None:
        """Do now, with no request, the first-use work its SDK would otherwise do inside the first command that calls
        it (importing the resources it reaches lazily, building its response types' validators): at start-up, so
        that no ack waits behind it. Never fails: what cannot be warmed is done on first use as before."""

    def close(self) -> None:
        """Let go of its connections (a workspace's provider, replaced after its key changed)."""

    def retrieve(self, job_id: str) -> Job: ...

    def list_jobs(self, limit: int | None = 10, *, after: str | None = None) -> tuple[list[Job], bool]: ...

    def events(self, job_id: str, limit: int = 5) -> list[JobEvent]: ...

    def metrics(self, job_id: str) -> list[MetricPoint]: ...

    def latest_metric(self, job_id: str) -> MetricPoint | None:
        """The newest training step a running job reported, in one request (for progress replies); None yet."""
        ...

    def upload_file(self, filename: str, content: bytes | BinaryIO) -> str: ...

    def estimate_price(self, *, training_file: str, model: str, n_epochs: int | None,
                       validation_file: str | None = None) -> float | None: ...

    def chat(self, model: str, messages: list[dict], *, max_tokens: int) -> ChatAnswer: ...

    def read_file(self, file_id: str, consume: Callable[[Iterator[bytes]], T], *, max_bytes: int) -> T:
        """`consume` over the lines of a file at the provider, streamed (refused past `max_bytes`)."""
        ...

    def cancel(self, job_id: str) -> Job: ...

    def pause(self, job_id: str) -> Job: ...

    def resume(self, job_id: str) -> Job: ...

    def create_job(self, *, request_id: str, training_file: str, model: str, suffix: str | None = None,
                   n_epochs: int | None = None, validation_file: str | None = None, seed: int | None = None,
                   metadata: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> Job: ...

    def find_started(self, request_id: str, *, training_file: str, model: str, suffix: str | None,
                     since: float) -> Job | None: ...

    def unwrap_webhook(self, payload: bytes, headers: Mapping[str, str]) -> WebhookEvent: ...


class UnknownProvider(LookupError):
    """A provider name that is not configured."""


class Providers:
    """The providers configured at start-up, by name, in the order they were configured; one is the default."""

    def __init__(self, providers: Sequence[FineTuningProvider], *, default: str | None = None) -> None:
        if not providers:
            raise ValueError("at least one provider is needed")
        self._by_name = {p.name: p for p in providers}
        self.default = self._by_name[default] if default else providers[0]

    def __iter__(self) -> Iterator[FineTuningProvider]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str | None) -> FineTuningProvider:
        """The provider called `name` (the default for None); UnknownProvider when none is configured by that name."""
        if name is None:
            return self.default
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownProvider(name) from None

    def fitting(self, job_id: str) -> list[FineTuningProvider]:
        """The providers to ask about an id the bot has never seen: those whose ids look like it, else all."""
        return [p for p in self if p.owns_id(job_id)] or list(self)

    def everywhere(self) -> list[FineTuningProvider]:
        """Every provider any workspace uses, one a name (for facts that are the provider's, such as its dates)."""
        return list(self)
