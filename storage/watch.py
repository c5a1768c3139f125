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
from storage.queries import Queries, in_lists

SQL = Queries("watch")  # storage/sql/watch.sql
READINGS_KEPT = 12  # the readings a job's rules look at, newest first (older ones are of no use to them)


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
        asked = {"provider": provider, "read_before": self._clock() - every}
        due = [row for sql, listed in in_lists(SQL["metrics_due"], "job_ids", job_ids)
               for row in self.engine.rows(sql, {**asked, **listed})]
        return [r["id"] for r in sorted(due, key=lambda r: (r["read_at"], r["id"]))]

    def record_reading(self, provider: str, job_id: str, step: int | None, train_loss: float | None,
                       valid_loss: float | None) -> None:
        """A read of a job's metrics: its newest step (if any, kept once) and when it was read."""
        now = self._clock()
        with self.engine.transaction() as db:
            if step is not None:
                db.conn.execute(SQL["record_step"], {"provider": provider, "job_id": job_id, "step": step,
                                                     "train_loss": _stored(train_loss),
                                                     "valid_loss": _stored(valid_loss), "now": now})
            db.conn.execute(SQL["mark_read"], {"now": now, "provider": provider, "job_id": job_id})

    def readings(self, provider: str, job_id: str, *, limit: int = READINGS_KEPT) -> list[dict]:
        """The job's readings, oldest first (at most the newest `limit`)."""
        rows = self.engine.rows(SQL["readings"], {"provider": provider, "job_id": job_id, "limit": limit})
        return [{**r, "train_loss": _loaded(r["train_loss"]), "valid_loss": _loaded(r["valid_loss"])}
                for r in reversed(rows)]

    def claim(self, provider: str, job_id: str, kind: str, detail: dict,
              cancelling: Callable[[list[dict]], bool]) -> Claim | None:
        """Record that the watchdog found `kind` in a job, once (None after, here or in any other process), with the
        listening followers (each with its channel's setting). When `cancelling(followers)` is false, the warning is
        queued to each in the same transaction: found and said, or neither. When it is true, the finding is left
        unsaid until `say` (after the cancel); one left so by a process that stopped is taken over by `take_over`."""
        with self.engine.transaction() as db:
            if db.conn.execute(SQL["claim_finding"], {"provider": provider, "job_id": job_id, "kind": kind,
                                                      "detail": json.dumps(detail), "now": self._clock()}
                               ).rowcount != 1:
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
        return self.engine.rows(SQL["unsaid"], {"claimed_before": self._clock() - older_than})

    def take_over(self, provider: str, job_id: str, kind: str, *, older_than: float) -> list[dict] | None:
        """An unsaid finding, for this process to finish (its followers), once: None if another process has it, or
        it was said meanwhile. Its claim is renewed, so a process that stops in turn hands it on in its turn."""
        now = self._clock()
        with self.engine.transaction(row_locks=True) as db:
            if db.conn.execute(SQL["take_over"], {"now": now, "provider": provider, "job_id": job_id, "kind": kind,
                                                  "claimed_before": now - older_than}).rowcount != 1:
                return None
            return self._followers(db, provider, job_id)

    def _followers(self, db: Any, provider: str, job_id: str) -> list[dict]:
        return [dict(r) for r in db.conn.execute(SQL["followers"], {"provider": provider, "job_id": job_id})]

    def _said(self, db: Any, provider: str, job_id: str, kind: str, detail: dict, followers: list[dict]) -> int:
        now = self._clock()
        queued = sum(queue_kind(db.conn, "watchdog", provider, job_id, f["channel_id"], kind, now,
                                key=f"{provider}:{job_id}:{f['channel_id']}:watchdog:{kind}",
                                detail={**detail, "kind": kind})
                     for f in followers)
        db.conn.execute(SQL["mark_said"], {"now": now, "provider": provider, "job_id": job_id, "kind": kind})
        return queued

    def marks(self, provider: str, job_id: str) -> list[str]:
        return [r["kind"] for r in self.engine.rows(SQL["marks"], {"provider": provider, "job_id": job_id})]

    def prune(self, conn: Any) -> int:
        """An ended job's readings are of no more use."""
        return conn.execute(SQL["prune"]).rowcount


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
