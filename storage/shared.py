"""What the store's concerns share: how long id lists are cut, the provider a job names."""

from __future__ import annotations

from collections.abc import Iterable

NO_LIMIT = 2**62  # LIMIT for "all of them", in both dialects (SQLite spells it -1, PostgreSQL ALL)
IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's limits on parameters


def provider_of(job: dict) -> str:
    """The provider a job to be stored names (storage knows no provider of its own: every job says whose it is)."""
    provider = job.get("provider")
    if not provider:
        raise ValueError(f"job {job.get('id')!r} names no provider")
    return provider


def chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start:start + IN_CHUNK]


def by_provider(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for provider, job_id in keys:
        grouped.setdefault(provider, []).append(job_id)
    return grouped
