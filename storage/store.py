"""The one gateway to finetune-bot's SQLite database; safe across threads and processes."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlite_utils import Database

from storage.migrations import migrations

JOB_FIELDS = (
    "status",
    "model",
    "fine_tuned_model",
    "trained_tokens",
    "training_file",
    "suffix",
    "created_at",
    "finished_at",
    "error_code",
    "error_message",
)

# How long another process may hold the write lock before we give up (SQLite's busy handler waits meanwhile).
BUSY_TIMEOUT_MS = 30_000


class Store:
    """Followed jobs, their last known state, the announcement outbox, and webhook deliveries seen."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time):
        self.path = str(path)
        self._clock = clock
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        db = self._db()
        db.enable_wal()
        with self._immediate() as db:
            migrations.apply(db)

    # -- connections and transactions ------------------------------------------------------------

    def _db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            # sqlite3 connections refuse other threads, so every thread gets its own.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.row_factory = sqlite3.Row
            db = Database(conn)
            self._local.db = db
            with self._all_lock:
                self._all.append(conn)
        return db

    @contextmanager
    def _immediate(self) -> Iterator[Database]:
        """A write transaction that takes the lock up front, so read-then-write never hits 'database is locked'."""
        db = self._db()
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        else:
            db.conn.execute("COMMIT")

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        return [dict(row) for row in self._db().conn.execute(sql, tuple(params))]

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.ProgrammingError:
                pass  # made in another thread; it closes with that thread
        self._local = threading.local()

    # -- jobs and subscriptions ------------------------------------------------------------------

    def follow(
        self, channel_id: str, job: dict, *, final: bool, team_id: str, user_id: str, origin: str
    ) -> bool:
        """Make a channel follow a job; returns False when it already did."""
        now = self._clock()
        with self._immediate() as db:
            exists = db.conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job["id"],)).fetchone()
            if not exists:
                row = {k: job.get(k) for k in JOB_FIELDS}
                db["jobs"].insert({"id": job["id"], **row, "final": int(final), "observed_at": now})
            cur = db.conn.execute(
                "INSERT OR IGNORE INTO subscriptions (channel_id, job_id, team_id, user_id, origin, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (channel_id, job["id"], team_id, user_id, origin, now),
            )
            return cur.rowcount == 1

    def unfollow(self, channel_id: str, job_id: str) -> bool:
        """Stop a channel following a job, dropping announcements not yet sent; False when it did not follow it."""
        with self._immediate() as db:
            cur = db.conn.execute(
                "DELETE FROM subscriptions WHERE channel_id = ? AND job_id = ?", (channel_id, job_id)
            )
            db.conn.execute(
                "DELETE FROM announcements WHERE channel_id = ? AND job_id = ? AND state = 'pending'",
                (channel_id, job_id),
            )
            return cur.rowcount == 1

    def channel_follows(self, channel_id: str) -> list[dict]:
        """The jobs a channel follows, newest first, with each job's last known state."""
        return self._rows(
            "SELECT s.job_id, s.user_id, s.origin, s.created_at AS followed_at, s.delivery_error, j.*"
            " FROM subscriptions s JOIN jobs j ON j.id = s.job_id WHERE s.channel_id = ?"
            " ORDER BY s.created_at DESC",
            (channel_id,),
        )

    def followers(self, job_id: str) -> list[dict]:
        return self._rows("SELECT * FROM subscriptions WHERE job_id = ? ORDER BY created_at", (job_id,))

    def job(self, job_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def active_jobs(self) -> list[dict]:
        """Followed jobs not yet final, least recently polled first."""
        return self._rows(
            "SELECT j.* FROM jobs j WHERE j.final = 0"
            " AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.job_id = j.id)"
            " ORDER BY coalesce(j.polled_at, 0), j.created_at"
        )

    def has_active_jobs(self) -> bool:
        return bool(
            self._db().conn.execute(
                "SELECT 1 FROM jobs j WHERE j.final = 0"
                " AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.job_id = j.id) LIMIT 1"
            ).fetchone()
        )

    def record_jobs(self, observed: Iterable[tuple[dict, str | None]]) -> int:
        """Save what the provider said of followed jobs and queue announcements for outcomes, in one transaction.

        Each item is (job fields, outcome or None). A job already final is left as it is, so an outcome is
        queued at most once per channel however many times and by however many processes it is seen.
        Returns how many announcements were queued.
        """
        now = self._clock()
        queued = 0
        with self._immediate() as db:
            conn = db.conn
            for job, outcome in observed:
                row = conn.execute("SELECT final FROM jobs WHERE id = ?", (job["id"],)).fetchone()
                if row is None or row["final"]:
                    continue
                fields = {k: job.get(k) for k in JOB_FIELDS if k in job}
                assignments = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(
                    f"UPDATE jobs SET {assignments}, final = ?, observed_at = ?, polled_at = ? WHERE id = ?",
                    (*fields.values(), int(outcome is not None), now, now, job["id"]),
                )
                if outcome is None:
                    continue
                cur = conn.execute(
                    "INSERT OR IGNORE INTO announcements"
                    " (key, job_id, channel_id, outcome, user_id, state, created_at, next_attempt_at)"
                    " SELECT job_id || ':' || channel_id || ':' || ?, job_id, channel_id, ?, user_id,"
                    " 'pending', ?, ? FROM subscriptions WHERE job_id = ?",
                    (outcome, outcome, now, now, job["id"]),
                )
                queued += cur.rowcount
        return queued

    def mark_polled(self, job_ids: Iterable[str]) -> None:
        now = self._clock()
        ids = list(job_ids)
        if not ids:
            return
        with self._immediate() as db:
            db.conn.executemany("UPDATE jobs SET polled_at = ? WHERE id = ?", [(now, i) for i in ids])

    # -- the outbox --------------------------------------------------------------------------------

    def claim_announcements(self, worker: str, *, limit: int, lease_seconds: float) -> list[dict]:
        """Take due announcements for delivery; a claim whose holder vanished is taken over once its lease ends.

        A taken-over claim is marked uncertain: its first holder may have posted before it died.
        """
        now = self._clock()
        with self._immediate() as db:
            rows = [
                dict(r)
                for r in db.conn.execute(
                    "SELECT key, state FROM announcements"
                    " WHERE (state = 'pending' AND next_attempt_at <= ?) OR (state = 'sending' AND lease_until <= ?)"
                    " ORDER BY next_attempt_at LIMIT ?",
                    (now, now, limit),
                )
            ]
            for r in rows:
                db.conn.execute(
                    "UPDATE announcements SET state = 'sending', claimed_by = ?, lease_until = ?,"
                    " attempts = attempts + 1, uncertain = uncertain OR ? WHERE key = ?",
                    (worker, now + lease_seconds, int(r["state"] == "sending"), r["key"]),
                )
        if not rows:
            return []
        keys = [r["key"] for r in rows]
        marks = ",".join("?" * len(keys))
        return self._rows(
            "SELECT a.*, (SELECT origin FROM subscriptions s WHERE s.job_id = a.job_id AND s.channel_id = a.channel_id)"
            " AS origin, j.status, j.model, j.fine_tuned_model, j.trained_tokens, j.created_at AS job_created_at,"
            " j.finished_at, j.error_code, j.error_message, j.suffix, j.training_file"
            f" FROM announcements a JOIN jobs j ON j.id = a.job_id WHERE a.key IN ({marks})",
            keys,
        )

    def _finish_claim(self, key: str, worker: str, sql: str, params: tuple) -> bool:
        with self._immediate() as db:
            cur = db.conn.execute(
                f"UPDATE announcements SET {sql} WHERE key = ? AND claimed_by = ? AND state = 'sending'",
                (*params, key, worker),
            )
            return cur.rowcount == 1

    def mark_sent(self, key: str, worker: str, message_ts: str | None) -> bool:
        return self._finish_claim(
            key, worker, "state = 'sent', sent_at = ?, message_ts = ?, last_error = NULL", (self._clock(), message_ts)
        )

    def mark_retry(self, key: str, worker: str, *, at: float, error: str, uncertain: bool) -> bool:
        return self._finish_claim(
            key,
            worker,
            "state = 'pending', next_attempt_at = ?, last_error = ?, uncertain = uncertain OR ?",
            (at, error, int(uncertain)),
        )

    def release(self, key: str, worker: str, *, at: float) -> bool:
        """Hand back a claim that was not attempted (the channel must wait), so it does not count as a try."""
        return self._finish_claim(key, worker, "state = 'pending', next_attempt_at = ?, attempts = attempts - 1",
                                  (at,))

    def mark_failed(self, key: str, worker: str, reason: str) -> bool:
        """Give up on an announcement Slack refused for good, and note why on the subscription."""
        with self._immediate() as db:
            cur = db.conn.execute(
                "UPDATE announcements SET state = 'failed', last_error = ?"
                " WHERE key = ? AND claimed_by = ? AND state = 'sending'",
                (reason, key, worker),
            )
            db.conn.execute(
                "UPDATE subscriptions SET delivery_error = ?"
                " WHERE (channel_id, job_id) IN (SELECT channel_id, job_id FROM announcements WHERE key = ?)",
                (reason, key),
            )
            return cur.rowcount == 1

    def defer_channel(self, channel_id: str, until: float) -> None:
        """Hold every queued announcement for a channel Slack asked us to slow down for."""
        with self._immediate() as db:
            db.conn.execute(
                "UPDATE announcements SET next_attempt_at = max(next_attempt_at, ?)"
                " WHERE channel_id = ? AND state = 'pending'",
                (until, channel_id),
            )

    def announcements(self, *, state: str | None = None) -> list[dict]:
        if state is None:
            return self._rows("SELECT * FROM announcements ORDER BY created_at")
        return self._rows("SELECT * FROM announcements WHERE state = ? ORDER BY created_at", (state,))

    # -- webhooks ----------------------------------------------------------------------------------

    def webhook_seen(self, webhook_id: str) -> bool:
        return bool(
            self._db().conn.execute("SELECT 1 FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,)).fetchone()
        )

    def remember_webhook(self, webhook_id: str) -> None:
        with self._immediate() as db:
            db.conn.execute(
                "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, received_at) VALUES (?, ?)",
                (webhook_id, self._clock()),
            )
