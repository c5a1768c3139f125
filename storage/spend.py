"""What runs cost and what a channel may spend: token counts of files, a channel's month of jobs (their estimates and
costs, which the store keeps with each job), and starts held for confirmation or approval. One concern of the store,
over its engine (the same queries on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

HOLD_SECONDS = 86400  # a held start may be released for a day; after that it is answered as expired
HELD_RETENTION_SECONDS = 30 * 86400
# A job of a channel's month: started from there (a job it only follows is another's spend), created (by the
# provider's clock, else when the channel began following it) within the month.
_MONTH_JOBS = ("FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id"
               " WHERE s.channel_id = ? AND s.origin = 'start' AND coalesce(j.created_at, s.created_at) >= ?"
               " AND coalesce(j.created_at, s.created_at) < ?")


class SpendStore:
    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    # -- token counts of files at providers ------------------------------------------------------------

    def file_tokens(self, provider: str, file_id: str, model: str) -> dict | None:
        rows = self.engine.rows("SELECT * FROM file_tokens WHERE provider = ? AND file_id = ? AND model = ?",
                                (provider, file_id, model))
        return rows[0] if rows else None

    def remember_file_tokens(self, provider: str, file_id: str, model: str, *, billable_per_epoch: int,
                             examples: int) -> None:
        with self.engine.transaction() as db:
            db.conn.execute("INSERT INTO file_tokens (provider, file_id, model, billable_per_epoch, examples,"
                            " counted_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                            (provider, file_id, model, billable_per_epoch, examples, self._clock()))

    # -- a channel's month ----------------------------------------------------------------------------------

    def month_jobs(self, channel_id: str, start: float, end: float, *, provider: str | None = None,
                   limit: int, offset: int = 0) -> list[dict]:
        """The channel's jobs of a month, newest first, each with who started (or followed) it here."""
        only = " AND s.provider = ?" if provider else ""
        return self.engine.rows(
            f"SELECT j.*, s.user_id, s.origin {_MONTH_JOBS}{only}"
            " ORDER BY coalesce(j.created_at, s.created_at) DESC, j.id LIMIT ? OFFSET ?",
            (channel_id, start, end, *((provider,) if provider else ()), limit, offset))

    def month_totals(self, channel_id: str, start: float, end: float, *, provider: str | None = None) -> dict:
        """jobs, estimated (every job's estimate), actual (ended jobs' costs), running (running jobs' estimates), and
        spent: what the budget counts, each ended job's cost (its estimate when no cost is known) and each running
        job's estimate."""
        only = " AND s.provider = ?" if provider else ""
        row = self.engine.rows(
            "SELECT count(*) AS jobs, sum(j.estimate) AS estimated,"
            " sum(CASE WHEN j.final = 1 THEN j.cost END) AS actual,"
            " sum(CASE WHEN j.final = 0 THEN j.estimate END) AS running,"
            " sum(CASE WHEN j.final = 1 THEN coalesce(j.cost, j.estimate, 0) ELSE coalesce(j.estimate, 0) END)"
            " AS spent,"
            " sum(CASE WHEN j.estimate IS NULL AND (j.final = 0 OR j.cost IS NULL) THEN 1 ELSE 0 END) AS unknown"
            f" {_MONTH_JOBS}{only}", (channel_id, start, end, *((provider,) if provider else ())))[0]
        return {key: (row[key] or 0) for key in ("jobs", "estimated", "actual", "running", "spent", "unknown")}

    def committed(self, conn: Any, channel_id: str, start: float, end: float) -> float:
        """What a channel's budget counts for a month, read inside the caller's write transaction: each ended job's
        cost (its estimate when no cost is known), each running job's estimate, and each start admitted but not yet
        recorded as a job (its estimate is reserved until the job, or its refusal, replaces it)."""
        jobs = conn.execute(
            "SELECT sum(CASE WHEN j.final = 1 THEN coalesce(j.cost, j.estimate, 0) ELSE coalesce(j.estimate, 0) END)"
            f" {_MONTH_JOBS}", (channel_id, start, end)).fetchone()[0]
        in_flight = conn.execute(
            "SELECT sum(estimate) FROM start_intents WHERE channel_id = ? AND created_at >= ? AND created_at < ?"
            " AND (state = 'pending' OR state LIKE 'reconciling:%')", (channel_id, start, end)).fetchone()[0]
        return float(jobs or 0) + float(in_flight or 0)

    def committed_now(self, channel_id: str, start: float, end: float) -> float:
        """`committed`, read on its own (for a reply's figures; a start is admitted by `Replays.record_intent`)."""
        with self.engine.transaction() as db:
            return self.committed(db.conn, channel_id, start, end)

    # -- starts held for confirmation or approval ------------------------------------------------------------

    def hold(self, *, team_id: str, channel_id: str, user_id: str, provider: str, command: dict,
             estimate: float | None, reason: str) -> str:
        """Keep a start that needs a click before it reaches the provider; returns its id (unguessable)."""
        hold_id = secrets.token_urlsafe(12)
        now = self._clock()
        with self.engine.transaction() as db:
            db.conn.execute(
                "INSERT INTO held_starts (id, team_id, channel_id, user_id, provider, command, estimate, reason,"
                " created_at, expires_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'held')",
                (hold_id, team_id, channel_id, user_id, provider, json.dumps(command), estimate, reason, now,
                 now + HOLD_SECONDS))
        return hold_id

    def held(self, hold_id: str) -> dict | None:
        rows = self.engine.rows("SELECT * FROM held_starts WHERE id = ?", (hold_id,))
        if not rows:
            return None
        return {**rows[0], "command": json.loads(rows[0]["command"])}

    def holds_waiting(self) -> int:
        """Starts held for a confirmation or an approval, not yet decided nor expired."""
        return int(self.engine.rows("SELECT count(*) AS n FROM held_starts WHERE state = 'held' AND expires_at > ?",
                                    (self._clock(),))[0]["n"])

    def decide(self, hold_id: str, user_id: str, state: str) -> tuple[str, dict | None]:
        """Release ('started'), approve ('approved') or deny ('denied') a held start, once: ('ok', hold) the first
        time; else ('gone', None), ('expired', hold) or ('decided', hold). One transaction that locks its row, so
        two clicks, two processes or two replicas decide it once."""
        now = self._clock()
        with self.engine.transaction(row_locks=True) as db:
            row = db.conn.execute(f"SELECT * FROM held_starts WHERE id = ?{self.engine.words['for_update']}",
                                  (hold_id,)).fetchone()
            if row is None:
                return "gone", None
            found = {**dict(row), "command": json.loads(row["command"])}
            if row["state"] != "held":
                return "decided", found
            if (row["expires_at"] or 0) <= now:
                db.conn.execute("UPDATE held_starts SET state = 'expired' WHERE id = ?", (hold_id,))
                return "expired", {**found, "state": "expired"}
            db.conn.execute("UPDATE held_starts SET state = ?, decided_by = ?, decided_at = ? WHERE id = ?"
                            " AND state = 'held'", (state, user_id, now, hold_id))
            return "ok", {**found, "state": state, "decided_by": user_id, "decided_at": now}

    def set_hold_message(self, hold_id: str, ts: str) -> None:
        """Where the approval request was posted (its buttons are replaced by the decision)."""
        with self.engine.transaction() as db:
            db.conn.execute("UPDATE held_starts SET message_ts = ? WHERE id = ?", (ts, hold_id))

    def prune(self, conn: Any, now: float) -> int:
        return conn.execute("DELETE FROM held_starts WHERE created_at < ?",
                            (now - HELD_RETENTION_SECONDS,)).rowcount
