"""Named queries: each concern's SQL in `storage/sql/<concern>.sql`, read once. A query starts at its
`-- name: <name>` line, the `--` lines under that say what it does, and its statement runs to the next name; its
parameters are named (`:job_id`), given as a dict. The few words each engine spells its own way are written
`{skip_locked}`, `{for_update}` and `{queue_order}`, and filled in for the engine the queries are loaded for."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

SQL_DIR = Path(__file__).parent / "sql"
IN_CHUNK = 500  # values per IN (...) list: well under either engine's limit of parameters (PostgreSQL: 65,535)
_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)[ \t]*$", re.MULTILINE)
_WORD = re.compile(r"\{([a-z_]+)\}")


@functools.cache
def _read(concern: str) -> dict[str, str]:
    """A concern's queries by name, as written (comments dropped, words not yet filled in)."""
    text = (SQL_DIR / f"{concern}.sql").read_text(encoding="utf-8")
    found: dict[str, str] = {}
    marks = list(_NAME.finditer(text))
    for mark, after in zip(marks, [*marks[1:], None], strict=True):
        body = text[mark.end():after.start() if after else len(text)]
        statement = " ".join(line.strip() for line in body.splitlines()
                             if line.strip() and not line.strip().startswith("--"))
        name = mark.group(1)
        if name in found:
            raise ValueError(f"{concern}.sql names {name!r} twice")
        found[name] = statement.rstrip(";").strip()
    return found


def driver_params(params: Iterable[Any] | Mapping[str, Any]) -> tuple | dict:
    """Parameters as a driver takes them: named ones (a dict, for a named query) as a dict, `?` ones as a tuple."""
    return dict(params) if isinstance(params, Mapping) else tuple(params)


def in_list(sql: str, name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`sql` with its list parameter `IN (:name)` spelt out as one parameter a value (`:name_0, :name_1, …`), and
    those parameters; for a list of any length, `in_lists`."""
    names = [f"{name}_{n}" for n in range(len(values))]
    spelt = sql.replace(f"(:{name})", "(" + ", ".join(f":{n}" for n in names) + ")")
    return spelt, dict(zip(names, values, strict=True))


def in_lists(sql: str, name: str, values: Iterable[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """`sql` for each slice of `values` short enough for either engine, with that slice spelt out (`in_list`)."""
    values = list(values)
    for start in range(0, len(values), IN_CHUNK):
        yield in_list(sql, name, values[start:start + IN_CHUNK])


class Queries:
    """One concern's queries: `SQL["take_turn"]` is its statement, with the engine's `words` filled in (a class
    whose queries use one is given its engine's, as spend's and the outbox's are). The file is read on first use,
    not at import."""

    def __init__(self, concern: str, words: dict[str, str] | None = None) -> None:
        self.concern = concern
        self._words = words or {}
        self._filled: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self._filled:  # filled on first ask: a query that uses no word needs no engine's words
            self._filled[name] = _WORD.sub(lambda m: self._words[m.group(1)], _read(self.concern)[name])
        return self._filled[name]

    def names(self) -> list[str]:
        return list(_read(self.concern))
