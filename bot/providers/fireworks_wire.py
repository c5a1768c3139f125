"""Reading Fireworks AI's answers, whichever way they came (the SDK's types, or a listing's camelCase JSON): names,
times, money. Used by bot/providers/fireworks_shape.py."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from bot.providers.calls import unix_seconds as seconds  # noqa: F401 - (Fireworks' times: RFC 3339, or datetimes)


class Wire:
    """A job from a listing's JSON, read by the same names as the SDK's type (its fields are camelCase)."""

    NAMES = {"base_model": "baseModel", "output_model": "outputModel", "display_name": "displayName",
             "create_time": "createTime", "update_time": "updateTime", "completed_time": "completedTime",
             "evaluation_dataset": "evaluationDataset"}

    def __init__(self, item: Mapping[str, Any]) -> None:
        self._item = item

    def __getattr__(self, name: str) -> Any:
        return self._item.get(self.NAMES.get(name, name))


def usd(cost: Any) -> float | None:
    """Fireworks' estimatedCost ({currencyCode, units, nanos}: a google.type.Money) in US dollars; None for none, or
    for another currency (never converted by guesswork)."""
    if cost is None:
        return None
    currency = field(cost, "currency_code") or field(cost, "currencyCode") or "USD"
    units, nanos = field(cost, "units") or "0", (cost.get("nanos") if isinstance(cost, Mapping)
                                                   else getattr(cost, "nanos", None)) or 0
    try:
        amount = int(units) + int(nanos) / 1e9
    except (TypeError, ValueError):
        return None
    return amount if currency == "USD" and amount >= 0 else None


def field(value: Any, name: str) -> str | None:
    found = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
    return str(found) if found else None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def last_segment(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def job_id_for(request_id: str) -> str:
    """The id a start names its job with: from the start's request id, so a retried create finds its own job."""
    return "ftb-" + hashlib.sha256(request_id.encode()).hexdigest()[:24]
