"""What the store's concerns share: the provider a job names, ids grouped by provider, "no limit"."""

from __future__ import annotations

from collections.abc import Iterable

NO_LIMIT = 2**62  # LIMIT for "all of them", in both dialects (SQLite spells it -1, PostgreSQL ALL)


def provider_of(job: dict) -> str:
    """The provider a job to be stored names (storage knows no provider of its own: every job says whose it is)."""
    provider = job.get("provider")
    if not provider:
        raise ValueError(f"job {job.get('id')!r} names no provider")
    return provider


def by_provider(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for provider, job_id in keys:
        grouped.setdefault(provider, []).append(job_id)
    return grouped
