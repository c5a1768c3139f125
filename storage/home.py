"""Each person's App Home: the jobs they started, what they started this month, where they follow jobs; and whose
Home is owed a redraw (queued in the transaction that records a state change, claimed once across processes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def queue_home_refresh(conn: Any, provider: str, job_id: str, now: float) -> int:
    """Owe a redraw to the Home of whoever started this job (in the caller's transaction)."""
    return conn.execute(
        "INSERT INTO home_refreshes (user_id, due_at) SELECT DISTINCT user_id, ? FROM subscriptions"
        " WHERE provider = ? AND job_id = ? AND origin = 'start' AND user_id IS NOT NULL ON CONFLICT DO NOTHING",
        (now, provider, job_id)).rowcount


class Home:
    """What a person's Home shows, and the redraws owed."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    def started(self, user_id: str, *, limit: int) -> list[dict]:
        """The jobs `user_id` started, running ones first, then the newest; each with where it was started and the
        card's ts there."""
        return self.engine.rows(
            "SELECT j.*, s.channel_id, s.card_ts FROM subscriptions s JOIN jobs j ON j.provider = s.provider"
            " AND j.id = s.job_id WHERE s.user_id = ? AND s.origin = 'start'"
            " ORDER BY j.final, coalesce(j.created_at, s.created_at) DESC, j.id LIMIT ?", (user_id, limit))

    def month(self, user_id: str, start: float, end: float) -> dict:
        """The jobs `user_id` started within [start, end) and what they cost (each ended job's cost, its estimate when
        none is known, and each running job's estimate)."""
        return self.engine.rows(
            "SELECT count(*) AS jobs, sum(CASE WHEN j.final = 1 THEN coalesce(j.cost, j.estimate, 0)"
            " ELSE coalesce(j.estimate, 0) END) AS spent,"
            " sum(CASE WHEN j.estimate IS NULL AND (j.final = 0 OR j.cost IS NULL) THEN 1 ELSE 0 END) AS unknown"
            " FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id"
            " WHERE s.user_id = ? AND s.origin = 'start' AND coalesce(j.created_at, s.created_at) >= ?"
            " AND coalesce(j.created_at, s.created_at) < ?", (user_id, start, end))[0]

    def channels(self, user_id: str, *, limit: int) -> list[dict]:
        """The channels where `user_id` follows jobs (started or subscribed), the busiest first."""
        return self.engine.rows(
            "SELECT channel_id, count(*) AS jobs FROM subscriptions WHERE user_id = ? AND channel_id NOT LIKE 'U%'"
            " AND channel_id NOT LIKE 'D%' GROUP BY channel_id ORDER BY count(*) DESC, channel_id LIMIT ?",
            (user_id, limit))

    def claim_refreshes(self, *, limit: int) -> list[str]:
        """The people whose Home is owed a redraw now, taken off the list (by one process only). A read first: the
        scheduler asks every second on every replica, and a write would take the database's write lock each time."""
        if not self.engine.rows("SELECT 1 FROM home_refreshes WHERE due_at <= ? LIMIT 1", (self._clock(),)):
            return []
        with self.engine.transaction() as db:
            rows = db.conn.execute(
                "DELETE FROM home_refreshes WHERE user_id IN (SELECT user_id FROM home_refreshes WHERE due_at <= ?"
                " ORDER BY due_at LIMIT ?) RETURNING user_id", (self._clock(), limit)).fetchall()
        return sorted(row["user_id"] for row in rows)

    def refresh_later(self, user_id: str, at: float) -> None:
        with self.engine.transaction() as db:
            db.conn.execute("INSERT INTO home_refreshes (user_id, due_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                            (user_id, at))

    def waiting(self) -> int:
        return self.engine.rows("SELECT count(*) AS n FROM home_refreshes")[0]["n"]
