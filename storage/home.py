"""Each person's App Home: the jobs they started, what they started this month, where they follow jobs; and whose
Home is owed a redraw (queued in the transaction that records a state change, claimed once across processes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from storage.queries import Queries

SQL = Queries("home")  # storage/sql/home.sql


def queue_home_refresh(conn: Any, provider: str, job_id: str, now: float) -> int:
    """Owe a redraw to the Home of whoever started this job (in the caller's transaction)."""
    return conn.execute(SQL["queue_refresh"], {"now": now, "provider": provider, "job_id": job_id}).rowcount


class Home:
    """What a person's Home shows, and the redraws owed."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    def started(self, user_id: str, *, limit: int) -> list[dict]:
        """The jobs `user_id` started, running ones first, then the newest; each with where it was started and the
        card's ts there."""
        return self.engine.rows(SQL["started"], {"user_id": user_id, "limit": limit})

    def month(self, user_id: str, start: float, end: float) -> dict:
        """The jobs `user_id` started within [start, end) and what they cost (each ended job's cost, its estimate when
        none is known, and each running job's estimate)."""
        return self.engine.rows(SQL["month"], {"user_id": user_id, "start": start, "end": end})[0]

    def channels(self, user_id: str, *, limit: int) -> list[dict]:
        """The channels where `user_id` follows jobs (started or subscribed), the busiest first."""
        return self.engine.rows(SQL["channels"], {"user_id": user_id, "limit": limit})

    def claim_refreshes(self, *, limit: int) -> list[str]:
        """The people whose Home is owed a redraw now, taken off the list (by one process only). A read first: the
        scheduler asks every second on every replica, and a write would take the database's write lock each time."""
        if not self.engine.rows(SQL["any_refresh_due"], {"now": self._clock()}):
            return []
        with self.engine.transaction() as db:
            rows = db.conn.execute(SQL["claim_refreshes"], {"now": self._clock(), "limit": limit}).fetchall()
        return sorted(row["user_id"] for row in rows)

    def refresh_later(self, user_id: str, at: float) -> None:
        with self.engine.transaction() as db:
            db.conn.execute(SQL["refresh_later"], {"user_id": user_id, "at": at})

    def waiting(self) -> int:
        return self.engine.rows(SQL["waiting"])[0]["n"]
