"""OpenAI's fine-tuning job objects (the SDK's, or the JSON of a raw list page) read as the bot's `Job`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.providers.calls import loss_value
from bot.providers.shape import Pricing
from bot.providers.types import Job, state_of, whole_epochs

STATES = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}

def number(value: Any) -> float | None:
    return loss_value(value)


def job_of(raw: Any, provider: str, pricing: Pricing) -> Job:
    extra = getattr(raw, "model_extra", None) or {}
    error = getattr(raw, "error", None)
    return Job(
        id=raw.id,
        provider=provider,
        status=str(raw.status),
        state=state_of(str(raw.status), STATES),
        model=raw.model,
        fine_tuned_model=raw.fine_tuned_model,
        trained_tokens=raw.trained_tokens,
        training_file=raw.training_file,
        validation_file=getattr(raw, "validation_file", None),
        suffix=extra.get("user_provided_suffix") or extra.get("suffix"),
        created_at=raw.created_at,
        finished_at=raw.finished_at,
        error_code=getattr(error, "code", None) if error else None,
        error_message=getattr(error, "message", None) if error else None,
        metadata=dict(getattr(raw, "metadata", None) or {}),
        estimated_finish=getattr(raw, "estimated_finish", None),
        n_epochs=epochs_run({"method": plain(getattr(raw, "method", None)),
                             "hyperparameters": plain(getattr(raw, "hyperparameters", None))}),
        cost=pricing.cost_of(raw.model or "", raw.trained_tokens),  # OpenAI bills trained tokens at the model's price
    )


def job_from_json(item: Mapping[str, Any], provider: str, pricing: Pricing) -> Job:
    """A job from its JSON as the API sends it (a listing's), the same as `_job` reads the SDK's model of it."""
    error = item.get("error") if isinstance(item.get("error"), Mapping) else None
    status = str(item["status"])
    return Job(
        id=str(item["id"]),
        provider=provider,
        status=status,
        state=state_of(status, STATES),
        model=item.get("model") or "",
        fine_tuned_model=item.get("fine_tuned_model"),
        trained_tokens=item.get("trained_tokens"),
        training_file=item.get("training_file"),
        validation_file=item.get("validation_file"),
        suffix=item.get("user_provided_suffix") or item.get("suffix"),
        created_at=item.get("created_at"),
        finished_at=item.get("finished_at"),
        error_code=error.get("code") if error else None,
        error_message=error.get("message") if error else None,
        metadata=dict(item.get("metadata") or {}),
        estimated_finish=item.get("estimated_finish"),
        n_epochs=epochs_run(item),
        cost=pricing.cost_of(item.get("model") or "", item.get("trained_tokens")),
    )


def plain(value: Any) -> Any:
    """An SDK model as the JSON it came from (None stays None)."""
    return value.model_dump() if hasattr(value, "model_dump") else value


def epochs_run(item: Mapping[str, Any]) -> int | None:
    """The epochs a job runs, once OpenAI has resolved an "auto": its method's hyperparameters, else the legacy
    top-level ones."""
    method = item.get("method") if isinstance(item.get("method"), Mapping) else {}
    kind = method.get(method.get("type") or "supervised") if isinstance(method, Mapping) else None
    hyper = kind.get("hyperparameters") if isinstance(kind, Mapping) else None
    legacy = item.get("hyperparameters") if isinstance(item.get("hyperparameters"), Mapping) else {}
    return whole_epochs((hyper or {}).get("n_epochs")) or whole_epochs(legacy.get("n_epochs"))
