"""The announcement outbox: a post is queued once (its key), claimed by one sender at a time (a lease), and
settled as sent, retried, skipped or failed. Shared by the store's concerns: `queue_kind` and `queue_outcome`
are how any of them owes a post."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from storage.queries import Queries, in_list

SQL = Queries("outbox")  # storage/sql/outbox.sql (the queries that use no engine's word; the class has them all)
OUTBOX_TOPIC = "finetune_bot_outbox"  # what replicas on PostgreSQL are woken with when posts are queued

SETTLED_EDIT_RETENTION_SECONDS = 7 * 86400  # an ended job's settled card edits and thread replies


def queue_kind(conn: Any, kind: str, provider: str, job_id: str, channel_id: str, outcome: str, now: float, *,
               key: str, detail: dict | None = None) -> int:
    """Queue one card, card edit, thread reply or warning (its key makes it once), for the follower in
    `channel_id`."""
    return conn.execute(SQL["queue_kind"], {
        "key": key, "outcome": outcome, "kind": kind, "detail": json.dumps(detail) if detail else None, "now": now,
        "provider": provider, "job_id": job_id, "channel_id": channel_id}).rowcount


def queue_outcome(conn: Any, provider: str, job_id: str, outcome: str, now: float, *,
                  channel_id: str | None = None) -> int:
    """Queue an outcome's announcement for every channel following the job (or just `channel_id`).

    The key (provider, job, channel, outcome) is the outbox's primary key and the insert ignores a key already
    there: that, not the caller's care, is what makes an announcement happen once.
    """
    return conn.execute(SQL["queue_outcome"], {"outcome": outcome, "now": now, "provider": provider,
                                               "job_id": job_id, "channel_id": channel_id or None}).rowcount


class Outbox:
    """The posts owed, and their claims."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock
        self.sql = Queries("outbox", engine.words)  # with the words each engine spells its own way

    def queue_notice(self, kind: str, provider: str, job_id: str, channel_id: str, *, key: str, detail: dict) -> int:
        """A message about a followed job (and others), for a channel that follows it, once by its key."""
        with self.engine.transaction() as db:
            return queue_kind(db.conn, kind, provider, job_id, channel_id, kind, self._clock(), key=key,
                              detail=detail)

    def older_reply_held(self, row: dict) -> float | None:
        """When the oldest thread reply of this row's job and channel queued before it is due, if one is still to be
        sent: replies go in the order they were queued (a later state's never before an earlier one's)."""
        rows = self.engine.rows(self.sql["older_reply_due"], {key: row[key] for key in
                                                              ("provider", "job_id", "channel_id", "key")})
        return rows[0]["at"] if rows and rows[0]["at"] is not None else None

    def due_announcements(self, *, limit: int) -> list[dict]:
        """Announcements due now (or whose holder's lease has ended), oldest first. Nothing is claimed yet."""
        return self.engine.rows(self.sql["due"], {"now": self._clock(), "limit": limit})

    def claim(self, key: str, worker: str, *, lease_seconds: float) -> dict | None:
        """Claim one announcement just before posting it, if it is still due; None when another has it or sent it.

        A claim is held only for the one post that follows, so a lease can never run out behind a batch. A claim
        taken over from a holder whose lease ended is marked uncertain: that holder may have posted before dying.
        """
        now = self._clock()
        # One statement, committed on its own (it was four in a transaction: on PostgreSQL a claim is a post's
        # largest cost): replicas claim side by side, none behind another's claim.
        rows = self.engine.rows(self.sql["claim"], {"worker": worker, "until": now + lease_seconds, "key": key,
                                                    "now": now})
        return rows[0] if rows else None

    def _finish_claim(self, sql: str, key: str, worker: str, **values: Any) -> bool:
        """Settle a claim `worker` still holds (`sql`, one of the outbox's settling queries); False when it does not
        (its lease ran out and another took the row over)."""
        with self.engine.transaction() as db:
            return db.conn.execute(sql, {"key": key, "worker": worker, **values}).rowcount == 1

    def mark_sent(self, key: str, worker: str, message_ts: str | None) -> bool:
        return self._finish_claim(SQL["mark_sent"], key, worker, now=self._clock(), message_ts=message_ts)

    def mark_retry(self, key: str, worker: str, *, at: float, error: str, uncertain: bool) -> bool:
        """A real failure (not Slack asking us to wait): counted, and tried again at `at`."""
        return self._finish_claim(SQL["mark_retry"], key, worker, at=at, error=error, uncertain=int(uncertain))

    def release(self, key: str, worker: str, *, at: float, note: str | None = None) -> bool:
        """Hand back a claim to try at `at` without counting an attempt: Slack asked us to wait, or we paced."""
        return self._finish_claim(SQL["release"], key, worker, at=at, note=note)

    def mark_failed(self, key: str, worker: str, reason: str, *, tell: str | None = None) -> bool:
        """Give up on an announcement, note why on the subscription, and, with `tell` (a user id), queue a direct
        message saying so: through this same outbox, so Slack slowing down cannot lose it either."""
        now = self._clock()
        with self.engine.transaction() as db:
            if db.conn.execute(SQL["mark_failed"], {"reason": reason, "key": key, "worker": worker}).rowcount != 1:
                return False
            row = db.conn.execute(SQL["announcement"], {"key": key}).fetchone()
            if row["kind"] == "announcement":
                follow = {"channel_id": row["channel_id"], "provider": row["provider"], "job_id": row["job_id"]}
                db.conn.execute(SQL["note_delivery_error"], {**follow, "reason": reason})
                if tell:
                    db.conn.execute(SQL["queue_delivery_problem"], {
                        **follow, "key": f"{row['provider']}:{row['job_id']}:{tell}:{row['outcome']}:about:"
                                         f"{row['channel_id']}",
                        "user_id": tell, "outcome": row["outcome"], "origin": row["origin"],
                        "about_channel": row["channel_id"], "reason": reason, "now": now})
            return True

    def mark_skipped(self, key: str, worker: str, reason: str) -> bool:
        """Settle a card edit or progress reply without posting it (nothing left to show, or nowhere to show it)."""
        return self._finish_claim(SQL["mark_skipped"], key, worker, reason=reason)

    def defer_channel(self, channel_id: str, until: float, *, kinds: Iterable[str] | None = None) -> None:
        """Hold a channel's queued rows until `until`: every one (Slack asked us to slow down), or only those of
        `kinds` (card edits keep a pace of their own, and an outcome is not held back with a thread reply)."""
        asked: dict[str, Any] = {"until": until, "channel_id": channel_id}
        sql = SQL["defer_channel"]
        if kinds is not None and (chosen := list(kinds)):
            sql, named = in_list(SQL["defer_channel_kinds"], "kinds", chosen)
            asked.update(named)
        with self.engine.transaction() as db:
            db.conn.execute(sql, asked)

    def outcomes_waiting(self, *, within: float = 5.0) -> bool:
        """Whether an outcome is being posted or falls due within `within` seconds: what best-effort work (a chart)
        waits behind. One held back for longer (a rate limit, a failing channel) keeps nothing waiting."""
        return bool(self.engine.rows(SQL["outcomes_waiting"], {"before": self._clock() + within}))

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
        row = self.engine.rows(SQL["backlog"])[0]
        return int(row["n"] or 0), row["oldest"]

    def next_due(self) -> float | None:
        """When the earliest queued announcement falls due (or a claim on one lapses); None when nothing waits."""
        row = self.engine.rows(SQL["next_due"])
        return row[0]["due"] if row else None

    def announcement(self, key: str) -> dict | None:
        rows = self.engine.rows(SQL["announcement"], {"key": key})
        return rows[0] if rows else None

    def announcements(self, *, state: str | None = None) -> list[dict]:
        if state is None:
            return self.engine.rows(SQL["announcements"])
        return self.engine.rows(SQL["announcements_in_state"], {"state": state})

    @staticmethod
    def prune(conn: Any, now: float) -> dict[str, int]:
        """A long job leaves dozens of settled edits and replies. Once its job has ended nothing can queue their keys
        again (each is a revision or a step already passed), so they go; outcomes and cards stay, for their keys are
        what keeps them once."""
        return {"card_edits_and_replies": conn.execute(
            SQL["prune"], {"before": now - SETTLED_EDIT_RETENTION_SECONDS}).rowcount}
