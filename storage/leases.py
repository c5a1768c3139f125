"""Turns shared by every process on the database (the `leases` table): which process runs the poll cycle, the
metric reads and the maintenance this interval, and which one posts in a channel now."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

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
        with self.engine.transaction() as db:
            if from_holder is not None:
                return db.conn.execute("UPDATE leases SET holder = ?, held_until = ? WHERE name = ? AND holder = ?",
                                       (worker, max(now + hold, at_least_until), name, from_holder)).rowcount == 1
            return db.conn.execute(
                "INSERT INTO leases (name, holder, held_until) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " held_until = CASE WHEN leases.holder = excluded.holder AND leases.held_until > excluded.held_until"
                " THEN leases.held_until ELSE excluded.held_until END"
                " WHERE leases.holder = excluded.holder OR leases.held_until <= ?",
                (name, worker, max(now + hold, at_least_until), now)).rowcount == 1

    def end_turns(self, worker: str, names: Iterable[str]) -> int:
        """Give back turns `worker` holds (it is stopping): another process takes each at its next ask."""
        now = self._clock()
        with self.engine.transaction() as db:
            return sum(db.conn.execute("UPDATE leases SET held_until = ? WHERE name = ? AND holder = ?"
                                       " AND held_until > ?", (now, name, worker, now)).rowcount for name in names)

    def gone(self, worker: str) -> bool:
        """Whether a worker is known to have ended, wherever it ran (PostgreSQL: its presence lock is free)."""
        return self.engine.gone(worker)

    def turn_holder(self, name: str) -> str | None:
        rows = self.engine.rows("SELECT holder FROM leases WHERE name = ?", (name,))
        return rows[0]["holder"] if rows else None

    def turns(self) -> list[dict]:
        return self.engine.rows("SELECT * FROM leases ORDER BY name")

    @staticmethod
    def prune(conn: Any, now: float) -> dict[str, int]:
        """Forget turns ended long ago (a worker that stopped for good)."""
        return {"leases": conn.execute("DELETE FROM leases WHERE held_until < ?", (now - LEASE_RETENTION_SECONDS,)
                                       ).rowcount}
