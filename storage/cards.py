"""Job cards: each channel's card of a job, its edits when the job changes, and the progress replies in its
thread. One concern of the store, over its engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from storage.channels import setting
from storage.outbox import queue_kind
from storage.queries import Queries, in_list, in_lists

SQL = Queries("cards")  # storage/sql/cards.sql


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
        rows = self.engine.rows(SQL["card"], {"key": f"{provider}:{job_id}:{channel_id}:card"})
        return rows[0] if rows else None

    def card_edit_in_flight(self, row: dict, now: float) -> bool:
        """Whether another edit of the same card is being made right now (claimed, its lease running)."""
        return bool(self.engine.rows(SQL["card_edit_in_flight"], {
            "provider": row["provider"], "job_id": row["job_id"], "channel_id": row["channel_id"], "key": row["key"],
            "now": now}))

    def set_card(self, channel_id: str, job_id: str, provider: str, *, ts: str | None = None,
                 revision: int | None = None) -> None:
        """Remember a card's ts once posted ('' when Slack says it is gone), and the job's revision it shows."""
        follow = {"channel_id": channel_id, "provider": provider, "job_id": job_id}
        with self.engine.transaction() as db:
            if ts is not None:
                db.conn.execute(SQL["set_card_ts"], {**follow, "ts": ts})
            if revision is not None:
                db.conn.execute(SQL["set_card_revision"], {**follow, "revision": revision})

    def progress_due(self, provider: str, job_ids: Iterable[str]) -> list[str]:
        """Which of these jobs have a card, in a channel that wants progress, whose last progress reply is older than
        the channel's interval: only those are worth asking the provider for their latest metrics. Longest waiting
        first, so a cycle's cap on such reads reaches every job in turn."""
        waiting: dict[str, float] = {}  # each job due, and since when its longest-waiting follow has waited
        now = self._clock()
        for sql, ids in in_lists(SQL["progress_follows"], "job_ids", job_ids):
            for row in self.engine.rows(sql, {"provider": provider, "now": now, **ids}):
                since = row["progress_at"] or 0
                waiting[row["job_id"]] = min(since, waiting.get(row["job_id"], since))
        return sorted(waiting, key=lambda job_id: (waiting[job_id], job_id))  # longest waiting first

    def queue_progress(self, provider: str, job_id: str, step: int | None, detail: dict | None, *,
                       soon: bool = False) -> int:
        """A job's latest step was just read for its cards that were due a reply: each of those starts its interval
        again, and those that have not yet shown this step get a progress reply queued. In one transaction, so two
        processes polling at once queue one reply; and a job with no new step (paused, stalled) is not read again
        before the interval has passed. With `step` None (training, but no metrics yet) and `soon`, the job is due
        again at the next cycle rather than a whole interval later: its first steps are about to come."""
        now = self._clock()
        queued = 0
        sql, ids = in_list(SQL["progress_follows"], "job_ids", [job_id])
        with self.engine.transaction() as db:
            due = db.conn.execute(sql, {"provider": provider, "now": now, **ids}).fetchall()
            for row in due:
                channel_id, shown = row["channel_id"], row["progress_step"]
                new = step is not None and (shown is None or shown < step)
                asked_at = now - 60 * row["minutes"] if step is None and soon else now
                db.conn.execute(SQL["progress_read"], {"asked_at": asked_at, "step": step if new else shown,
                                                       "channel_id": channel_id, "provider": provider,
                                                       "job_id": job_id})
                if new:
                    queued += queue_kind(db.conn, "progress", provider, job_id, channel_id, "running", now,
                                         key=f"{provider}:{job_id}:{channel_id}:progress:{step}", detail=detail)
        return queued


def queue_card_edits(conn: Any, provider: str, job_id: str, revision: int, before: str,
                     after: str, *, final: bool, now: float) -> int:
    """A status change: each card of the job is edited, and (progress on, not yet final) its thread told."""
    queued = 0
    # Every card posted or still to be posted; not one Slack refused or that is known to be gone.
    cards = conn.execute(SQL["cards_of_job"], {"provider": provider, "job_id": job_id}).fetchall()
    for (channel_id,) in cards:
        base = f"{provider}:{job_id}:{channel_id}"
        queued += queue_kind(conn, "card_update", provider, job_id, channel_id, after, now,
                             key=f"{base}:card:{revision}", detail={"revision": revision})
        if not final and setting(conn, channel_id, "progress"):
            queued += queue_kind(conn, "progress", provider, job_id, channel_id, after, now,
                                 key=f"{base}:status:{revision}", detail={"from": before, "to": after})
    return queued


def redraw(conn: Any, provider: str, job_id: str, now: float) -> int:
    job = {"provider": provider, "job_id": job_id}
    row = conn.execute(SQL["job_revision"], job).fetchone()
    if row is None:
        return 0
    revision = row["revision"] + 1
    conn.execute(SQL["set_job_revision"], {**job, "revision": revision})
    return queue_card_edits(conn, provider, job_id, revision, row["status"], row["status"], final=True,
                            now=now)


def redraw_moved_from(conn: Any, provider: str, job_id: str, now: float) -> int:
    """A moved job's status changed: the cards of the job it was moved from show its new state."""
    sources = conn.execute(SQL["moved_from"], {"provider": provider, "job_id": job_id}).fetchall()
    return sum(redraw(conn, source_provider, source_job, now) for source_provider, source_job in sources)
