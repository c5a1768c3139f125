"""Job cards: each channel's card of a job, its edits when the job changes, and the progress replies in its
thread. One concern of the store, over its engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from storage.channels import setting
from storage.outbox import queue_kind

# A follow (`s`, with its channel's settings `c`) is due a progress reply when its card is up, its channel wants
# progress, and its last reply (or read with nothing new) is at least the channel's interval old (the one `?`: now).
PROGRESS_DUE = ("coalesce(s.card_ts, '') != '' AND coalesce(c.cards, 1) != 0 AND coalesce(c.progress, 1) != 0"
                " AND (s.progress_at IS NULL OR s.progress_at <= ? - 60 * coalesce(c.progress_minutes, 5))")


class Cards:
    """Cards, their edits and their threads' progress."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    def redraw_cards(self, provider: str, job_id: str) -> int:
        """Edit every card of a job (finished or not) to show what the bot now knows of it (where it moved): a new
        revision, with no thread reply."""
        with self.engine.transaction() as db:
            return redraw(db.conn, provider, job_id, self._clock())

    def card(self, channel_id: str, job_id: str, provider: str) -> dict | None:
        """A channel's card of a job: its outbox row's state, and (once posted) its ts and the revision it shows.
        None when the channel has no card for it (cards off, a direct message, or a follow from before cards)."""
        rows = self.engine.rows(
            "SELECT a.state, a.next_attempt_at, a.lease_until, a.last_error, s.card_ts, s.card_revision"
            " FROM announcements a"
            " JOIN subscriptions s ON s.channel_id = a.channel_id AND s.provider = a.provider AND s.job_id = a.job_id"
            " WHERE a.key = ?", (f"{provider}:{job_id}:{channel_id}:card",))
        return rows[0] if rows else None

    def card_edit_in_flight(self, row: dict, now: float) -> bool:
        """Whether another edit of the same card is being made right now (claimed, its lease running)."""
        return bool(self.engine.rows(
            "SELECT 1 FROM announcements WHERE provider = ? AND job_id = ? AND channel_id = ? AND kind = 'card_update'"
            " AND state = 'sending' AND key != ? AND lease_until > ? LIMIT 1",
            (row["provider"], row["job_id"], row["channel_id"], row["key"], now)))

    def set_card(self, channel_id: str, job_id: str, provider: str, *, ts: str | None = None,
                 revision: int | None = None) -> None:
        """Remember a card's ts once posted ('' when Slack says it is gone), and the job's revision it shows."""
        with self.engine.transaction() as db:
            if ts is not None:
                db.conn.execute("UPDATE subscriptions SET card_ts = ? WHERE channel_id = ? AND provider = ?"
                                " AND job_id = ?", (ts, channel_id, provider, job_id))
            if revision is not None:
                db.conn.execute("UPDATE subscriptions SET card_revision = CASE WHEN card_revision > ? THEN"
                                " card_revision ELSE ? END WHERE channel_id = ? AND provider = ? AND job_id = ?",
                                (revision, revision, channel_id, provider, job_id))

    def progress_due(self, provider: str, job_ids: Iterable[str]) -> list[str]:
        """Which of these jobs have a card, in a channel that wants progress, whose last progress reply is older than
        the channel's interval: only those are worth asking the provider for their latest metrics. Longest waiting
        first, so a cycle's cap on such reads reaches every job in turn."""
        ids = list(job_ids)
        if not ids:
            return []
        now = self._clock()
        marks = ", ".join("?" for _ in ids)
        return [r["job_id"] for r in self.engine.rows(
            "SELECT s.job_id FROM subscriptions s LEFT JOIN channel_settings c ON c.channel_id = s.channel_id"
            f" WHERE s.provider = ? AND s.job_id IN ({marks}) AND {PROGRESS_DUE}"
            " GROUP BY s.job_id ORDER BY min(coalesce(s.progress_at, 0)), s.job_id",  # longest waiting first
            (provider, *ids, now))]

    def queue_progress(self, provider: str, job_id: str, step: int | None, detail: dict | None, *,
                       soon: bool = False) -> int:
        """A job's latest step was just read for its cards that were due a reply: each of those starts its interval
        again, and those that have not yet shown this step get a progress reply queued. In one transaction, so two
        processes polling at once queue one reply; and a job with no new step (paused, stalled) is not read again
        before the interval has passed. With `step` None (training, but no metrics yet) and `soon`, the job is due
        again at the next cycle rather than a whole interval later: its first steps are about to come."""
        now = self._clock()
        queued = 0
        with self.engine.transaction() as db:
            due = db.conn.execute(
                "SELECT s.channel_id, s.progress_step, coalesce(c.progress_minutes, 5) FROM subscriptions s"
                " LEFT JOIN channel_settings c ON c.channel_id = s.channel_id"
                f" WHERE s.provider = ? AND s.job_id = ? AND {PROGRESS_DUE}",
                (provider, job_id, now)).fetchall()
            for channel_id, shown, minutes in due:
                new = step is not None and (shown is None or shown < step)
                asked_at = now - 60 * minutes if step is None and soon else now
                db.conn.execute("UPDATE subscriptions SET progress_at = ?, progress_step = ? WHERE channel_id = ?"
                                " AND provider = ? AND job_id = ?",
                                (asked_at, step if new else shown, channel_id, provider, job_id))
                if new:
                    queued += queue_kind(db.conn, "progress", provider, job_id, channel_id, "running", now,
                                         key=f"{provider}:{job_id}:{channel_id}:progress:{step}", detail=detail)
        return queued



def queue_card_edits(conn: Any, provider: str, job_id: str, revision: int, before: str,
                     after: str, *, final: bool, now: float) -> int:
    """A status change: each card of the job is edited, and (progress on, not yet final) its thread told."""
    queued = 0
    # Every card posted or still to be posted; not one Slack refused or that is known to be gone.
    cards = conn.execute(
        "SELECT a.channel_id FROM announcements a JOIN subscriptions s ON s.channel_id = a.channel_id"
        " AND s.provider = a.provider AND s.job_id = a.job_id WHERE a.provider = ? AND a.job_id = ?"
        " AND a.kind = 'card' AND a.state != 'failed' AND (s.card_ts IS NULL OR s.card_ts != '')",
        (provider, job_id)).fetchall()
    for (channel_id,) in cards:
        base = f"{provider}:{job_id}:{channel_id}"
        queued += queue_kind(conn, "card_update", provider, job_id, channel_id, after, now,
                             key=f"{base}:card:{revision}", detail={"revision": revision})
        if not final and setting(conn, channel_id, "progress"):
            queued += queue_kind(conn, "progress", provider, job_id, channel_id, after, now,
                                 key=f"{base}:status:{revision}", detail={"from": before, "to": after})
    return queued


def redraw(conn: Any, provider: str, job_id: str, now: float) -> int:
    row = conn.execute("SELECT revision, status FROM jobs WHERE provider = ? AND id = ?",
                       (provider, job_id)).fetchone()
    if row is None:
        return 0
    revision = row["revision"] + 1
    conn.execute("UPDATE jobs SET revision = ? WHERE provider = ? AND id = ?", (revision, provider, job_id))
    return queue_card_edits(conn, provider, job_id, revision, row["status"], row["status"], final=True,
                            now=now)


def redraw_moved_from(conn: Any, provider: str, job_id: str, now: float) -> int:
    """A moved job's status changed: the cards of the job it was moved from show its new state."""
    sources = conn.execute("SELECT source_provider, source_job FROM moves WHERE target_provider = ?"
                           " AND new_job = ?", (provider, job_id)).fetchall()
    return sum(redraw(conn, source_provider, source_job, now) for source_provider, source_job in sources)
