"""What runs cost and what a channel may spend: token counts of files, a channel's month of jobs (their estimates and
costs, which the store keeps with each job), and starts held for confirmation or approval. One concern of the store,
over its engine (the same queries on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from storage.queries import Queries
from storage.scope import current_workspace

HOLD_SECONDS = 86400  # a held start may be released for a day; after that it is answered as expired
HELD_RETENTION_SECONDS = 30 * 86400


class SpendStore:
    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock
        self.sql = Queries("spend", engine.words)  # storage/sql/spend.sql

    # -- token counts of files at providers ------------------------------------------------------------

    def file_tokens(self, provider: str, file_id: str, model: str) -> dict | None:
        rows = self.engine.rows(self.sql["file_tokens"], {"provider": provider, "file_id": file_id, "model": model})
        return rows[0] if rows else None

    def remember_file_tokens(self, provider: str, file_id: str, model: str, *, billable_per_epoch: int,
                             examples: int) -> None:
        with self.engine.transaction() as db:
            db.conn.execute(self.sql["remember_file_tokens"], {
                "provider": provider, "file_id": file_id, "model": model, "billable_per_epoch": billable_per_epoch,
                "examples": examples, "now": self._clock()})

    # -- a channel's month ----------------------------------------------------------------------------------

    def month_jobs(self, channel_id: str, start: float, end: float, *, provider: str | None = None,
                   limit: int, offset: int = 0) -> list[dict]:
        """The channel's jobs of a month, newest first, each with who started (or followed) it here."""
        return self.engine.rows(self.sql["month_jobs"], {"channel_id": channel_id, "start": start, "end": end,
                                                         "provider": provider, "limit": limit, "offset": offset,
                                                         "workspace": current_workspace()})

    def month_totals(self, channel_id: str, start: float, end: float, *, provider: str | None = None) -> dict:
        """jobs, estimated (every job's estimate), actual (ended jobs' costs), running (running jobs' estimates), and
        spent: what the budget counts, each ended job's cost (its estimate when no cost is known) and each running
        job's estimate."""
        row = self.engine.rows(self.sql["month_totals"], {"channel_id": channel_id, "start": start, "end": end,
                                                          "provider": provider, "workspace": current_workspace()})[0]
        return {key: (row[key] or 0) for key in ("jobs", "estimated", "actual", "running", "spent", "unknown")}

    def committed(self, conn: Any, channel_id: str, start: float, end: float) -> float:
        """What a channel's budget counts for a month, read inside the caller's write transaction: each ended job's
        cost (its estimate when no cost is known), each running job's estimate, and each start admitted but not yet
        recorded as a job (its estimate is reserved until the job, or its refusal, replaces it)."""
        month = {"channel_id": channel_id, "start": start, "end": end, "workspace": current_workspace()}
        jobs = conn.execute(self.sql["committed_jobs"], month).fetchone()[0]
        in_flight = conn.execute(self.sql["committed_in_flight"], month).fetchone()[0]
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
            db.conn.execute(self.sql["hold"], {
                "id": hold_id, "team_id": team_id, "channel_id": channel_id, "user_id": user_id, "provider": provider,
                "command": json.dumps(command), "estimate": estimate, "reason": reason, "now": now,
                "expires_at": now + HOLD_SECONDS, "workspace": current_workspace() or None})
        return hold_id

    def held(self, hold_id: str) -> dict | None:
        rows = self.engine.rows(self.sql["held"], {"id": hold_id})
        if not rows:
            return None
        return {**rows[0], "command": json.loads(rows[0]["command"])}

    def holds_waiting(self) -> int:
        """Starts held for a confirmation or an approval, not yet decided nor expired."""
        return int(self.engine.rows(self.sql["holds_waiting"], {"now": self._clock()})[0]["n"])

    def decide(self, hold_id: str, user_id: str, state: str) -> tuple[str, dict | None]:
        """Release ('started'), approve ('approved') or deny ('denied') a held start, once: ('ok', hold) the first
        time; else ('gone', None), ('expired', hold) or ('decided', hold). One transaction that locks its row, so
        two clicks, two processes or two replicas decide it once."""
        now = self._clock()
        with self.engine.transaction(row_locks=True) as db:
            row = db.conn.execute(self.sql["held_for_deciding"], {"id": hold_id}).fetchone()
            if row is None:
                return "gone", None
            found = {**dict(row), "command": json.loads(row["command"])}
            if row["state"] != "held":
                return "decided", found
            if (row["expires_at"] or 0) <= now:
                db.conn.execute(self.sql["expire_hold"], {"id": hold_id})
                return "expired", {**found, "state": "expired"}
            db.conn.execute(self.sql["decide_hold"], {"state": state, "user_id": user_id, "now": now, "id": hold_id})
            return "ok", {**found, "state": state, "decided_by": user_id, "decided_at": now}

    def set_hold_message(self, hold_id: str, ts: str) -> None:
        """Where the approval request was posted (its buttons are replaced by the decision)."""
        with self.engine.transaction() as db:
            db.conn.execute(self.sql["set_hold_message"], {"ts": ts, "id": hold_id})

    def prune(self, conn: Any, now: float) -> int:
        return conn.execute(self.sql["prune"], {"before": now - HELD_RETENTION_SECONDS}).rowcount
