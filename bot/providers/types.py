"""What the bot knows of a fine-tuning provider, in its own words: no SDK is imported here.

Services are typed against `FineTuningProvider`; each API shape (OpenAI's today) is one adapter module that returns
these dataclasses and raises `ProviderError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


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
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def outcome(self) -> str | None:
        """The final status, or None while the job (in any status, known or new) is still going."""
        return self.status if self.final else None

    def fields(self) -> dict:
        """The job's state as storage keeps it."""
        return {name: getattr(self, name) for name in STORED_FIELDS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """A job as storage last saw it."""
        return cls(**{name: row.get(name) for name in STORED_FIELDS})


# What storage keeps of a job: everything but what only a start or a lookup needs.
STORED_FIELDS = tuple(f.name for f in fields(Job) if f.name not in {"validation_file", "metadata"})


@dataclass(frozen=True)
class JobEvent:
    created_at: int
    level: str
    message: str
    type: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """The provider refused or failed. `message` is its own words (secrets removed), fit to show a user."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retryable: bool = False, retry_after: float | None = None, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        self.ambiguous = ambiguous  # the request may have been carried out although no answer came back

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


class FineTuningProvider(Protocol):
    """What the services need of a provider; one adapter per API shape provides it."""

    max_suffix: int

    def retrieve(self, job_id: str) -> Job: ...

    def list_jobs(self, limit: int = 10, *, after: str | None = None) -> tuple[list[Job], bool]: ...

    def events(self, job_id: str, limit: int = 5) -> list[JobEvent]: ...

    def cancel(self, job_id: str) -> Job: ...

    def pause(self, job_id: str) -> Job: ...

    def resume(self, job_id: str) -> Job: ...

    def create_job(self, *, request_id: str, training_file: str, model: str, suffix: str | None = None,
                   n_epochs: int | None = None, validation_file: str | None = None, seed: int | None = None,
                   metadata: Mapping[str, str] | None = None) -> Job: ...

    def find_started(self, request_id: str, *, training_file: str, model: str, suffix: str | None,
                     since: float) -> Job | None: ...

    def unwrap_webhook(self, payload: bytes, headers: Mapping[str, str]) -> WebhookEvent: ...
