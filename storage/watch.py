"""What the watchdog reads and says of running jobs: when each job's metrics were last read, the steps read, and
what it has warned of (once per job and kind, queued to every following channel that listens). One concern of the
store, over its engine."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from storage.outbox import queue_kind

READINGS_KEPT = 12  # the readings a job's rules look at, newest first (older ones are of no use to them)
# A following channel whose watchdog listens (`off` hears nothing; a channel that never set it warns).
_LISTENING = "coalesce((SELECT c.watchdog FROM channel_settings c WHERE c.channel_id = s.channel_id), 'warn') != 'off'"


@dataclass(frozen=True)
class Claim:
    """A finding claimed by this process: who listens, the warnings queued with the claim, and whether a cancel is
    wanted first (then nothing is queued until `WatchStore.say`)."""

    followers: list[dict]
    queued: int
    cancelling: bool


class WatchStore:
    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    def metrics_due(self, provider: str, job_ids: Iterable[str], *, every: float) -> list[str]:
        """Which of these running jobs a listening channel follows and whose metrics were last read `every`
        seconds ago or more (or never), longest waiting first."""
        ids = list(job_ids)
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        return [r["id"] for r in self.engine.rows(
            f"SELECT j.id FROM jobs j WHERE j.provider = ? AND j.id IN ({marks}) AND j.final = 0"
            " AND coalesce(j.metrics_read_at, 0) <= ?"
            f" AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider = j.provider AND s.job_id = j.id"
            f" AND {_LISTENING}) ORDER BY coalesce(j.metrics_read_at, 0), j.id",
            (provider, *ids, self._clock() - every))]

    def record_reading(self, provider: str, job_id: str, step: int | None, train_loss: float | None,
                       valid_loss: float | None) -> None:
        """A read of a job's metrics: its newest step (if any, kept once) and when it was read."""
        now = self._clock()
        with self.engine.transaction() as db:
            if step is not None:
                db.conn.execute("INSERT INTO job_readings (provider, job_id, step, train_loss, valid_loss, read_at)"
                                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                (provider, job_id, step, _stored(train_loss), _stored(valid_loss), now))
            db.conn.execute("UPDATE jobs SET metrics_read_at = ? WHERE provider = ? AND id = ?",
                            (now, provider, job_id))

    def readings(self, provider: str, job_id: str, *, limit: int = READINGS_KEPT) -> list[dict]:
        """The job's readings, oldest first (at most the newest `limit`)."""
        rows = self.engine.rows("SELECT step, train_loss, valid_loss, read_at FROM job_readings WHERE provider = ?"
                                " AND job_id = ? ORDER BY step DESC LIMIT ?", (provider, job_id, limit))
        return [{**r, "train_loss": _loaded(r["train_loss"]), "valid_loss": _loaded(r["valid_loss"])}
                for r in reversed(rows)]

    def claim(self, provider: str, job_id: str, kind: str, detail: dict,
              cancelling: Callable[[list[dict]], bool]) -> Claim | None:
        """Record that the watchdog found `kind` in a job, once (None after, here or in any other process), with the
        listening followers (each with its channel's setting). When `cancelling(followers)` is false, the warning is
        queued to each in the same transaction: found and said, or neither. When it is true, the finding is left
        unsaid until `say` (after the cancel); one left so by a process that stopped is taken over by `take_over`."""
        with self.engine.transaction() as db:
            if db.conn.execute("INSERT INTO watch_marks (provider, job_id, kind, detail, at) VALUES (?, ?, ?, ?, ?)"
                               " ON CONFLICT DO NOTHING",
                               (provider, job_id, kind, json.dumps(detail), self._clock())).rowcount != 1:
                return None
            followers = self._followers(db, provider, job_id)
            if cancelling(followers):
                return Claim(followers, queued=0, cancelling=True)
            return Claim(followers, queued=self._said(db, provider, job_id, kind, detail, followers),
                         cancelling=False)

    def say(self, provider: str, job_id: str, kind: str, detail: dict, followers: list[dict]) -> int:
        """A claimed finding's warning for each of these followers (once each, by its key), and the finding said."""
        with self.engine.transaction() as db:
            return self._said(db, provider, job_id, kind, detail, followers)

    def unsaid(self, *, older_than: float) -> list[dict]:
        """Findings claimed `older_than` seconds ago or more and never said: their process stopped between the claim
        and the warning (a cancel under way)."""
        return self.engine.rows("SELECT provider, job_id, kind, detail FROM watch_marks WHERE said_at IS NULL"
                                " AND at <= ? ORDER BY at", (self._clock() - older_than,))

    def take_over(self, provider: str, job_id: str, kind: str, *, older_than: float) -> list[dict] | None:
        """An unsaid finding, for this process to finish (its followers), once: None if another process has it, or
        it was said meanwhile. Its claim is renewed, so a process that stops in turn hands it on in its turn."""
        now = self._clock()
        with self.engine.transaction(row_locks=True) as db:
            if db.conn.execute("UPDATE watch_marks SET at = ? WHERE provider = ? AND job_id = ? AND kind = ?"
                               " AND said_at IS NULL AND at <= ?",
                               (now, provider, job_id, kind, now - older_than)).rowcount != 1:
                return None
            return self._followers(db, provider, job_id)

    def _followers(self, db: Any, provider: str, job_id: str) -> list[dict]:
        return [dict(r) for r in db.conn.execute(
            "SELECT s.channel_id, s.user_id, s.origin, coalesce((SELECT c.watchdog FROM channel_settings c"
            " WHERE c.channel_id = s.channel_id), 'warn') AS watchdog FROM subscriptions s"
            f" WHERE s.provider = ? AND s.job_id = ? AND {_LISTENING} ORDER BY s.created_at",
            (provider, job_id))]

    def _said(self, db: Any, provider: str, job_id: str, kind: str, detail: dict, followers: list[dict]) -> int:
        now = self._clock()
        queued = sum(queue_kind(db.conn, "watchdog", provider, job_id, f["channel_id"], kind, now,
                                key=f"{provider}:{job_id}:{f['channel_id']}:watchdog:{kind}",
                                detail={**detail, "kind": kind})
                     for f in followers)
        db.conn.execute("UPDATE watch_marks SET said_at = ? WHERE provider = ? AND job_id = ? AND kind = ?",
                        (now, provider, job_id, kind))
        return queued

    def marks(self, provider: str, job_id: str) -> list[str]:
        return [r["kind"] for r in self.engine.rows(
            "SELECT kind FROM watch_marks WHERE provider = ? AND job_id = ? ORDER BY at", (provider, job_id))]

    def prune(self, conn: Any) -> int:
        """An ended job's readings are of no more use."""
        return conn.execute("DELETE FROM job_readings WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.provider ="
                            " job_readings.provider AND j.id = job_readings.job_id AND j.final = 1)").rowcount


# NaN and infinities, which not every engine stores as a number, are kept as these stand-ins.
_NAN, _INF = -1.0e308, 1.0e308


def _stored(value: float | None) -> float | None:
    if value is None:
        return None
    if math.isnan(value):
        return _NAN
    if math.isinf(value):
        return _INF if value > 0 else -_INF
    return value


def _loaded(value: float | None) -> float | None:
    if value == _NAN:
        return math.nan
    if value in (_INF, -_INF):
        return math.inf if value > 0 else -math.inf
    return value
