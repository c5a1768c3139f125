"""The announcement outbox: a post is queued once (its key), claimed by one sender at a time (a lease), and
settled as sent, retried, skipped or failed. Shared by the store's concerns: `queue_kind` and `queue_outcome`
are how any of them owes a post."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

OUTBOX_TOPIC = "finetune_bot_outbox"  # what replicas on PostgreSQL are woken with when posts are queued

SETTLED_EDIT_RETENTION_SECONDS = 7 * 86400  # an ended job's settled card edits and thread replies


def queue_kind(conn: Any, kind: str, provider: str, job_id: str, channel_id: str, outcome: str, now: float, *,
               key: str, detail: dict | None = None) -> int:
    """Queue one card, card edit, thread reply or warning (its key makes it once), for the follower in
    `channel_id`."""
    return conn.execute(
        "INSERT INTO announcements (key, provider, job_id, channel_id, outcome, user_id, origin, kind,"
        " detail, state, created_at, next_attempt_at) SELECT ?, provider, job_id, channel_id, ?, user_id, origin,"
        " ?, ?, 'pending', ?, ? FROM subscriptions WHERE provider = ? AND job_id = ? AND channel_id = ?"
        " ON CONFLICT DO NOTHING",
        (key, outcome, kind, json.dumps(detail) if detail else None, now, now, provider, job_id, channel_id),
    ).rowcount



def queue_outcome(conn: Any, provider: str, job_id: str, outcome: str, now: float, *,
                  channel_id: str | None = None) -> int:
    """Queue an outcome's announcement for every channel following the job (or just `channel_id`).

    The key (provider, job, channel, outcome) is the outbox's primary key and the insert ignores a key already
    there: that, not the caller's care, is what makes an announcement happen once.
    """
    where = "provider = ? AND job_id = ?" + (" AND channel_id = ?" if channel_id else "")
    params = (provider, job_id, channel_id) if channel_id else (provider, job_id)
    # A channel that asked for failures only is owed no other outcome.
    heard = ("NOT EXISTS (SELECT 1 FROM channel_settings c WHERE c.channel_id = subscriptions.channel_id"
             " AND c.outcomes = 'failures' AND ? != 'failed')")
    cur = conn.execute(
        "INSERT INTO announcements"
        " (key, provider, job_id, channel_id, outcome, user_id, origin, state, created_at, next_attempt_at)"
        " SELECT provider || ':' || job_id || ':' || channel_id || ':' || ?, provider, job_id, channel_id, ?,"
        f" user_id, origin, 'pending', ?, ? FROM subscriptions WHERE {where} AND {heard} ON CONFLICT DO NOTHING",
        (outcome, outcome, now, now, *params, outcome),
    )
    return cur.rowcount


class Outbox:
    """The posts owed, and their claims."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock
        self._queue_order = engine.words["queue_order"]  # the words each engine spells its own way
        self._skip_locked = engine.words["skip_locked"]

    def queue_notice(self, kind: str, provider: str, job_id: str, channel_id: str, *, key: str, detail: dict) -> int:
        """A message about a followed job (and others), for a channel that follows it, once by its key."""
        with self.engine.transaction() as db:
            return queue_kind(db.conn, kind, provider, job_id, channel_id, kind, self._clock(), key=key,
                              detail=detail)

    def older_reply_held(self, row: dict) -> float | None:
        """When the oldest thread reply of this row's job and channel queued before it is due, if one is still to be
        sent: replies go in the order they were queued (a later state's never before an earlier one's)."""
        order = self._queue_order
        rows = self.engine.rows(
            f"SELECT min(next_attempt_at) AS at FROM announcements WHERE provider = ? AND job_id = ? AND channel_id = ?"
            f" AND kind = 'progress' AND state IN ('pending', 'sending') AND {order} < (SELECT {order} FROM"
            " announcements WHERE key = ?)", (row["provider"], row["job_id"], row["channel_id"], row["key"]))
        return rows[0]["at"] if rows and rows[0]["at"] is not None else None

    def due_announcements(self, *, limit: int) -> list[dict]:
        """Announcements due now (or whose holder's lease has ended), oldest first. Nothing is claimed yet."""
        now = self._clock()
        return self.engine.rows(
            "SELECT * FROM announcements"
            " WHERE (state = 'pending' AND next_attempt_at <= ?) OR (state = 'sending' AND lease_until <= ?)"
            # Of the rows due: outcomes (with the cards their threads need), then other rows, then card edits and
            # thread replies, each in the order queued. An outcome never waits behind a wave of edits or replies, nor
            # behind the cards of other jobs still going up in its channel (a sweep's cards take a second each).
            " ORDER BY CASE kind WHEN 'announcement' THEN 0 WHEN 'card_update' THEN 2 WHEN 'progress' THEN 2"
            " WHEN 'card' THEN CASE WHEN EXISTS (SELECT 1 FROM announcements o WHERE o.kind = 'announcement'"
            " AND o.state IN ('pending', 'sending') AND o.channel_id = announcements.channel_id"
            " AND o.provider = announcements.provider AND o.job_id = announcements.job_id) THEN 0 ELSE 1 END"
            f" ELSE 1 END, next_attempt_at, created_at, {self._queue_order} LIMIT ?",
            (now, now, limit),
        )

    def claim(self, key: str, worker: str, *, lease_seconds: float) -> dict | None:
        """Claim one announcement just before posting it, if it is still due; None when another has it or sent it.

        A claim is held only for the one post that follows, so a lease can never run out behind a batch. A claim
        taken over from a holder whose lease ended is marked uncertain: that holder may have posted before dying.
        """
        now = self._clock()
        due = "(state = 'pending' AND next_attempt_at <= ?) OR (state = 'sending' AND lease_until <= ?)"
        # One statement, committed on its own (it was four in a transaction: on PostgreSQL a claim is a post's
        # largest cost). The row alone is locked, and on PostgreSQL one another process is claiming this moment is
        # skipped rather than waited for: replicas claim side by side, none behind another's claim.
        rows = self.engine.rows(
            "UPDATE announcements SET state = 'sending', claimed_by = ?, lease_until = ?,"
            " uncertain = CASE WHEN uncertain != 0 OR state = 'sending' THEN 1 ELSE 0 END"
            f" WHERE key IN (SELECT key FROM announcements WHERE key = ? AND ({due}){self._skip_locked}) RETURNING *",
            (worker, now + lease_seconds, key, now, now))
        return rows[0] if rows else None

    def _finish_claim(self, key: str, worker: str, sql: str, params: tuple) -> bool:
        with self.engine.transaction() as db:
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
        """A real failure (not Slack asking us to wait): counted, and tried again at `at`."""
        return self._finish_claim(
            key,
            worker,
            "state = 'pending', next_attempt_at = ?, last_error = ?,"
            " uncertain = CASE WHEN uncertain != 0 OR ? != 0 THEN 1 ELSE 0 END,"
            " attempts = attempts + 1",
            (at, error, int(uncertain)),
        )

    def release(self, key: str, worker: str, *, at: float, note: str | None = None) -> bool:
        """Hand back a claim to try at `at` without counting an attempt: Slack asked us to wait, or we paced."""
        return self._finish_claim(key, worker, "state = 'pending', next_attempt_at = ?, last_error = coalesce(?, "
                                  "last_error)", (at, note))

    def mark_failed(self, key: str, worker: str, reason: str, *, tell: str | None = None) -> bool:
        """Give up on an announcement, note why on the subscription, and, with `tell` (a user id), queue a direct
        message saying so: through this same outbox, so Slack slowing down cannot lose it either."""
        now = self._clock()
        with self.engine.transaction() as db:
            cur = db.conn.execute(
                "UPDATE announcements SET state = 'failed', last_error = ?"
                " WHERE key = ? AND claimed_by = ? AND state = 'sending'",
                (reason, key, worker),
            )
            if cur.rowcount != 1:
                return False
            row = db.conn.execute("SELECT * FROM announcements WHERE key = ?", (key,)).fetchone()
            if row["kind"] == "announcement":
                db.conn.execute(
                    "UPDATE subscriptions SET delivery_error = ? WHERE channel_id = ? AND provider = ? AND job_id = ?",
                    (reason, row["channel_id"], row["provider"], row["job_id"]),
                )
                if tell:
                    db.conn.execute(
                        "INSERT INTO announcements (key, provider, job_id, channel_id, outcome, user_id,"
                        " origin, kind, about_channel, last_error, state, created_at, next_attempt_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, 'delivery_problem', ?, ?, 'pending', ?, ?)"
                        " ON CONFLICT DO NOTHING",
                        (f"{row['provider']}:{row['job_id']}:{tell}:{row['outcome']}:about:{row['channel_id']}",
                         row["provider"], row["job_id"], tell, row["outcome"], tell, row["origin"],
                         row["channel_id"], reason, now, now),
                    )
            return True

    def mark_skipped(self, key: str, worker: str, reason: str) -> bool:
        """Settle a card edit or progress reply without posting it (nothing left to show, or nowhere to show it)."""
        return self._finish_claim(key, worker, "state = 'skipped', last_error = ?", (reason,))

    def defer_channel(self, channel_id: str, until: float, *, kinds: Iterable[str] | None = None) -> None:
        """Hold a channel's queued rows until `until`: every one (Slack asked us to slow down), or only those of
        `kinds` (card edits keep a pace of their own, and an outcome is not held back with a thread reply)."""
        chosen = list(kinds) if kinds is not None else None
        only = f" AND kind IN ({', '.join('?' for _ in chosen)})" if chosen else ""
        with self.engine.transaction() as db:
            db.conn.execute(
                "UPDATE announcements SET next_attempt_at = CASE WHEN next_attempt_at > ? THEN next_attempt_at"
                f" ELSE ? END WHERE channel_id = ? AND state = 'pending'{only}",
                (until, until, channel_id, *(chosen or ())),
            )

    def outcomes_waiting(self, *, within: float = 5.0) -> bool:
        """Whether an outcome is being posted or falls due within `within` seconds: what best-effort work (a chart)
        waits behind. One held back for longer (a rate limit, a failing channel) keeps nothing waiting."""
        return bool(self.engine.rows("SELECT 1 FROM announcements WHERE kind = 'announcement' AND (state = 'sending'"
                                     " OR (state = 'pending' AND next_attempt_at <= ?)) LIMIT 1",
                                     (self._clock() + within,)))

    def wake_others(self) -> None:
        """Tell every replica listening (PostgreSQL) that posts were queued: the one holding their channel posts them
        now, not at its next timed run. On SQLite, nothing (its processes look on their timers)."""
        self.engine.notify(OUTBOX_TOPIC)

    def listen(self, on_wake: Callable[[], None], stopping: threading.Event, *, presence: str | None = None) -> None:
        """Call `on_wake` whenever another replica queued posts, until `stopping` (returns at once on SQLite); with
        `presence`, that worker is known to be running meanwhile (storage/notify.py)."""
        self.engine.listen(OUTBOX_TOPIC, on_wake, stopping, presence=presence)

    def backlog(self) -> tuple[int, float | None]:
        """Posts owed and not yet delivered (pending, or being posted), and when the oldest of them was queued."""
        row = self.engine.rows("SELECT count(*) AS n, min(created_at) AS oldest FROM announcements"
                               " WHERE state IN ('pending', 'sending')")[0]
        return int(row["n"] or 0), row["oldest"]

    def next_due(self) -> float | None:
        """When the earliest queued announcement falls due (or a claim on one lapses); None when nothing waits."""
        row = self.engine.rows(
            "SELECT min(CASE WHEN state = 'pending' THEN next_attempt_at ELSE lease_until END) AS due"
            " FROM announcements WHERE state IN ('pending', 'sending')"
        )
        return row[0]["due"] if row else None

    def announcement(self, key: str) -> dict | None:
        rows = self.engine.rows("SELECT * FROM announcements WHERE key = ?", (key,))
        return rows[0] if rows else None

    def announcements(self, *, state: str | None = None) -> list[dict]:
        if state is None:
            return self.engine.rows("SELECT * FROM announcements ORDER BY created_at")
        return self.engine.rows("SELECT * FROM announcements WHERE state = ? ORDER BY created_at", (state,))

    @staticmethod
    def prune(conn: Any, now: float) -> dict[str, int]:
        """A long job leaves dozens of settled edits and replies. Once its job has ended nothing can queue their keys
        again (each is a revision or a step already passed), so they go; outcomes and cards stay, for their keys are
        what keeps them once."""
        return {"card_edits_and_replies": conn.execute(
            "DELETE FROM announcements WHERE kind IN ('card_update', 'progress')"
            " AND state IN ('sent', 'skipped', 'failed') AND created_at < ? AND EXISTS (SELECT 1 FROM jobs j"
            " WHERE j.provider = announcements.provider AND j.id = announcements.job_id AND j.final = 1)",
            (now - SETTLED_EDIT_RETENTION_SECONDS,)).rowcount}
