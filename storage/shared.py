"""What the store's concerns share: how a row is inserted, how long id lists are cut, the provider of a row that
names none."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# The provider of a job dict that names none: the OpenAI shape, which was the only one before providers were named.
OPENAI = "openai"
NO_LIMIT = 2**62  # LIMIT for "all of them", in both dialects (SQLite spells it -1, PostgreSQL ALL)
IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's limits on parameters


def insert(conn: Any, table: str, row: dict, *, on_conflict: str = "") -> None:
    """INSERT one row (its keys are our own column names, never input), with an ON CONFLICT clause if given."""
    conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)}){on_conflict}",
                 tuple(row.values()))


def chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start:start + IN_CHUNK]


def by_provider(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for provider, job_id in keys:
        grouped.setdefault(provider, []).append(job_id)
    return grouped
