"""Turns shared by every process on the database (the `leases` table): which process runs the poll cycle, the
metric reads and the maintenance this interval, and which one posts in a channel now. Its SQL is
storage/sql/leases.sql."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from storage.queries import Queries

SQL = Queries("leases")  # storage/sql/leases.sql
LEASE_RETENTION_SECONDS = 600  # a turn ended this long ago belongs to a worker that is gone


class Leases:
    """Named turns, each held by one worker until it ends."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    def take_turn(self, name: str, worker: str, *, hold: float, at_least_until: float = 0.0,
                  from_holder: str | None = None) -> bool:
        """Take (or keep) the turn called `name` for `hold` seconds from now (or until `at_least_until`, if later):
        True when `worker` holds it now, False while another holder's turn runs. One statement, so two processes
        (or replicas) asking at once cannot both have it; a holder that died is replaced once its turn ends, or at
        once `from_holder` (known dead) if it still holds it."""
        now = self._clock()
        asked = {"name": name, "worker": worker, "until": max(now + hold, at_least_until), "now": now}
        with self.engine.transaction() as db:
            if from_holder is not None:
                return db.conn.execute(SQL["take_turn_from"], {**asked, "from_holder": from_holder}).rowcount == 1
            return db.conn.execute(SQL["take_turn"], asked).rowcount == 1

    def end_turns(self, worker: str, names: Iterable[str]) -> int:
        """Give back turns `worker` holds (it is stopping): another process takes each at its next ask."""
        now = self._clock()
        with self.engine.transaction() as db:
            return sum(db.conn.execute(SQL["end_turn"], {"name": name, "worker": worker, "now": now}).rowcount
                       for name in names)

    def gone(self, worker: str) -> bool:
        """Whether a worker is known to have ended, wherever it ran (PostgreSQL: its presence lock is free)."""
        return self.engine.gone(worker)

    def turn_holder(self, name: str) -> str | None:
        rows = self.engine.rows(SQL["turn_holder"], {"name": name})
        return rows[0]["holder"] if rows else None

    def turns(self) -> list[dict]:
        return self.engine.rows(SQL["turns"])

    @staticmethod
    def prune(conn: Any, now: float) -> dict[str, int]:
        """Forget turns ended long ago (a worker that stopped for good)."""
        return {"leases": conn.execute(SQL["prune"], {"before": now - LEASE_RETENTION_SECONDS}).rowcount}
