"""Followed jobs: which channel follows which job, and each job's last known state (what a poll cycle records,
queueing the outcomes and card edits it owes in the same transaction). One concern of the store, over its engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from storage.cards import queue_card_edits, redraw_moved_from
from storage.channels import setting
from storage.home import queue_home_refresh
from storage.outbox import queue_kind, queue_outcome
from storage.shared import NO_LIMIT, by_provider, chunks, insert, provider_of

JOB_FIELDS = (
    "status",
    "state",
    "model",
    "fine_tuned_model",
    "trained_tokens",
    "training_file",
    "suffix",
    "created_at",
    "finished_at",
    "error_code",
    "error_message",
    "cost",
)
OBSERVED_REFRESH_SECONDS = 60.0  # how stale a running job's "as of" may be before an unchanged poll rewrites it


class Follows:
    """Jobs and the channels that follow them."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    def adopt_unnamed(self, provider: str) -> int:
        """Give rows written before jobs were named by provider to `provider` (the OpenAI-shaped provider this bot
        used then). Returns how many jobs were adopted; runs at every start-up and does nothing the second time."""
        with self.engine.transaction() as db:
            conn = db.conn
            # A row whose provider-named twin exists already stays as it was (SQLite's UPDATE OR IGNORE, portably).
            adopted = conn.execute("UPDATE jobs SET provider = ? WHERE provider = '' AND NOT EXISTS (SELECT 1 FROM"
                                   " jobs t WHERE t.provider = ? AND t.id = jobs.id)", (provider, provider)).rowcount
            conn.execute("UPDATE subscriptions SET provider = ? WHERE provider = '' AND NOT EXISTS (SELECT 1 FROM"
                         " subscriptions t WHERE t.provider = ? AND t.channel_id = subscriptions.channel_id"
                         " AND t.job_id = subscriptions.job_id)", (provider, provider))
            conn.execute("UPDATE announcements SET provider = ?, key = ? || key WHERE provider = '' AND NOT EXISTS"
                         " (SELECT 1 FROM announcements t WHERE t.key = ? || announcements.key)",
                         (provider, provider, provider))
            conn.execute("UPDATE start_intents SET provider = ? WHERE provider IS NULL", (provider,))
            return adopted

    def follow(
        self, channel_id: str, job: dict, *, final: bool, team_id: str, user_id: str, origin: str,
        announce: str | None = None, card: bool = False, recorded: dict | None = None, finishes: str | None = None,
    ) -> bool:
        """Make a channel follow a job; returns False when it already did.

        With `announce` (an outcome), the channel is also owed that outcome's announcement: for a job that ended
        while nobody was yet following it (a start reconciled after a crash). Queued at most once, however many
        processes reconcile the same start. With `card`, a running job's card is queued for the channel too, unless
        the channel turned cards off (then its outcome comes as a plain message, as before cards).
        """
        now = self._clock()
        provider = provider_of(job)
        with self.engine.transaction() as db:
            exists = db.conn.execute("SELECT 1 FROM jobs WHERE provider = ? AND id = ?",
                                     (provider, job["id"])).fetchone()
            if not exists:
                row = {"provider": provider, "id": job["id"], **{k: job.get(k) for k in JOB_FIELDS},
                       "final": int(final), "observed_at": now}
                insert(db.conn, "jobs", row)
            cur = db.conn.execute(
                "INSERT INTO subscriptions (channel_id, provider, job_id, team_id, user_id, origin,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (channel_id, provider, job["id"], team_id, user_id, origin, now),
            )
            new = cur.rowcount == 1
            if new and origin == "start":
                queue_home_refresh(db.conn, provider, job["id"], now)  # a new job on its starter's Home
            if recorded:  # what the bot itself knows of a job it started: its estimate, who approved it
                db.conn.execute("UPDATE jobs SET estimate = coalesce(estimate, ?), approved_by = coalesce(approved_by,"
                                " ?) WHERE provider = ? AND id = ?",
                                (recorded.get("estimate"), recorded.get("approved_by"), provider, job["id"]))
            if finishes:  # the start that made it: closed in the same transaction, so its reservation of the
                # budget and the job's estimate are never counted both at once
                db.conn.execute("UPDATE start_intents SET state = 'done', job_id = ?, response_url = NULL"
                                " WHERE request_id = ? AND (state = 'pending' OR state LIKE 'reconciling:%')",
                                (job["id"], finishes))
            if announce:
                queue_outcome(db.conn, provider, job["id"], announce, now, channel_id=channel_id)
            if card and not final and setting(db.conn, channel_id, "cards"):
                queue_kind(db.conn, "card", provider, job["id"], channel_id, job.get("status") or "", now,
                           key=f"{provider}:{job['id']}:{channel_id}:card")
            return new

    def unfollow(self, channel_id: str, job_id: str, provider: str) -> bool:
        """Stop a channel following a job, dropping announcements not yet sent; False when it did not follow it."""
        with self.engine.transaction() as db:
            cur = db.conn.execute(
                "DELETE FROM subscriptions WHERE channel_id = ? AND provider = ? AND job_id = ?",
                (channel_id, provider, job_id),
            )
            db.conn.execute(
                "DELETE FROM announcements WHERE channel_id = ? AND provider = ? AND job_id = ?"
                " AND (state = 'pending' OR kind IN ('card', 'card_update', 'progress'))",
                (channel_id, provider, job_id),
            )  # (a card goes with its follow: following again gets a new one)
            return cur.rowcount == 1

    def channel_follows(self, channel_id: str, *, final: bool | None = None, limit: int | None = None,
                        offset: int = 0) -> list[dict]:
        """The jobs a channel follows, running before finished, newest first, with each job's last known state."""
        only = "" if final is None else " AND j.final = ?"
        params: tuple = (channel_id,) if final is None else (channel_id, int(final))
        return self.engine.rows(
            "SELECT s.job_id, s.user_id, s.origin, s.created_at AS followed_at, s.delivery_error, j.*"
            " FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id"
            f" WHERE s.channel_id = ?{only}"
            " ORDER BY j.final, s.created_at DESC, s.job_id LIMIT ? OFFSET ?",
            (*params, NO_LIMIT if limit is None else limit, offset),
        )

    def follow_counts(self, channel_id: str) -> tuple[int, int]:
        """How many jobs a channel follows that are still running, and how many have finished."""
        row = self.engine.rows(
            "SELECT sum(CASE WHEN j.final = 0 THEN 1 ELSE 0 END) AS active,"
            " sum(CASE WHEN j.final = 1 THEN 1 ELSE 0 END) AS finished"
            " FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id WHERE s.channel_id = ?",
            (channel_id,),
        )[0]
        return row["active"] or 0, row["finished"] or 0

    def followers(self, job_id: str, provider: str) -> list[dict]:
        return self.engine.rows("SELECT * FROM subscriptions WHERE provider = ? AND job_id = ? ORDER BY created_at",
                                (provider, job_id))

    def job(self, job_id: str, provider: str) -> dict | None:
        rows = self.engine.rows("SELECT * FROM jobs WHERE provider = ? AND id = ?", (provider, job_id))
        return rows[0] if rows else None

    def dm_follows(self, user_id: str) -> list[dict]:
        """The jobs a person follows in direct messages, with each job's last known state."""
        return self.engine.rows(
            "SELECT s.job_id, s.user_id, s.origin, s.created_at AS followed_at, s.delivery_error, j.*"
            " FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id"
            " WHERE s.user_id = ? AND s.origin = 'dm' ORDER BY j.final, s.created_at DESC LIMIT 20", (user_id,))

    def job_with_model(self, model: str) -> dict | None:
        """The succeeded job that made `model`, if the bot has seen it."""
        rows = self.engine.rows("SELECT * FROM jobs WHERE fine_tuned_model = ? AND provider != ''"
                                " ORDER BY observed_at DESC LIMIT 1", (model,))
        return rows[0] if rows else None

    def providers_of(self, job_id: str) -> list[str]:
        """Which providers the bot has seen a job called `job_id` at, most recently seen first."""
        return [r["provider"] for r in self.engine.rows(
            "SELECT provider FROM jobs WHERE id = ? AND provider != '' ORDER BY observed_at DESC", (job_id,))]

    def active_jobs(self) -> list[dict]:
        """Followed jobs not yet final, least recently polled first."""
        return self.engine.rows(
            "SELECT j.* FROM jobs j WHERE j.final = 0"
            " AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider = j.provider AND s.job_id = j.id)"
            " ORDER BY coalesce(j.polled_at, 0), j.created_at"
        )

    def has_active_jobs(self) -> bool:
        return bool(self.engine.rows(
            "SELECT 1 FROM jobs j WHERE j.final = 0"
            " AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider = j.provider AND s.job_id = j.id) LIMIT 1"
        ))

    def followed_by_state(self) -> dict[tuple[str, str], int]:
        """Jobs followed and not yet ended, counted by (provider, state)."""
        rows = self.engine.rows("SELECT provider, coalesce(state, 'unknown') AS state, count(*) AS n FROM jobs"
                                " WHERE final = 0 GROUP BY provider, coalesce(state, 'unknown')")
        return {(r["provider"], r["state"]): int(r["n"]) for r in rows}

    def record_jobs(self, observed: Iterable[tuple[dict, str | None]]) -> int:
        """Save what the provider said of followed jobs and queue announcements for outcomes, in one transaction.

        Each item is (job fields, outcome or None). A job already final is left as it is, so an outcome is
        queued at most once per channel however many times and by however many processes it is seen.
        Returns how many announcements were queued.
        """
        now = self._clock()
        queued = 0
        items = [(provider_of(job), job, outcome) for job, outcome in observed]
        with self.engine.transaction() as db:
            conn = db.conn
            # Read every job's stored state at once, and write only what changed: a cycle over thousands of jobs is a
            # few statements, not two a job (on a server, each a round trip made while holding the write lock).
            stored = self._stored_jobs(conn, [(provider, job["id"]) for provider, job, _ in items])
            unchanged: dict[str, list[str]] = {}
            for provider, job, outcome in items:
                row = stored.get((provider, job["id"]))
                if row is None or row["final"]:
                    continue
                fields = {k: job.get(k) for k in JOB_FIELDS if k in job}
                if outcome is None and all(row[k] == v for k, v in fields.items()):
                    # Nothing new: only when it was last seen, and that at most once a minute (the "as of" a
                    # channel's list shows), not every cycle: on PostgreSQL each row written is a row version to
                    # vacuum, and 10,000 jobs polled every 5 s would be 2,000 a second.
                    if (row["observed_at"] or 0) <= now - OBSERVED_REFRESH_SECONDS:
                        unchanged.setdefault(provider, []).append(job["id"])
                    continue
                changed = "status" in fields and fields["status"] != row["status"]
                revision = row["revision"] + int(changed)
                assignments = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(
                    f"UPDATE jobs SET {assignments}, final = ?, revision = ?, observed_at = ?, polled_at = ?"
                    " WHERE provider = ? AND id = ?",
                    (*fields.values(), int(outcome is not None), revision, now, now, provider, job["id"]),
                )
                stored[(provider, job["id"])] = {**row, **fields, "final": int(outcome is not None),
                                                 "revision": revision}
                if outcome is not None:
                    queued += queue_outcome(conn, provider, job["id"], outcome, now)
                if changed:
                    queue_home_refresh(conn, provider, job["id"], now)
                    queued += queue_card_edits(conn, provider, job["id"], revision, row["status"],
                                               fields["status"], final=outcome is not None, now=now)
                    queued += redraw_moved_from(conn, provider, job["id"], now)
            for provider, ids in unchanged.items():
                for chunk in chunks(ids):
                    conn.execute(f"UPDATE jobs SET observed_at = ?, polled_at = ? WHERE provider = ? AND final = 0"
                                 f" AND id IN ({', '.join('?' for _ in chunk)})", (now, now, provider, *chunk))
        return queued

    @staticmethod
    def _stored_jobs(conn: Any, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """The stored state of these (provider, id) jobs that the bot has, a few statements for any number."""
        found = {}
        for provider, ids in by_provider(keys).items():
            for chunk in chunks(ids):
                for row in conn.execute(
                        f"SELECT provider, id, final, status, revision, observed_at, {', '.join(JOB_FIELDS)} FROM jobs"
                        f" WHERE provider = ? AND id IN ({', '.join('?' for _ in chunk)})", (provider, *chunk)):
                    found[(row["provider"], row["id"])] = dict(row)
        return found

    def followed_jobs(self, provider: str, *, state: str) -> list[dict]:
        """Every follow of a job at `provider` in `state` (a meaning: going, succeeded, …), with the job."""
        return self.engine.rows("SELECT s.channel_id, s.user_id AS follower, j.* FROM subscriptions s JOIN jobs j"
                                " ON j.provider = s.provider AND j.id = s.job_id WHERE j.provider = ? AND j.state = ?"
                                " ORDER BY s.channel_id, j.id", (provider, state))

    def mark_polled(self, jobs: Iterable[tuple[str, str]]) -> None:
        """Note that these (provider, id) jobs were just asked about."""
        now = self._clock()
        keys = list(jobs)
        if not keys:
            return
        with self.engine.transaction() as db:
            for provider, ids in by_provider(keys).items():
                for chunk in chunks(ids):
                    db.conn.execute(f"UPDATE jobs SET polled_at = ? WHERE provider = ?"
                                    f" AND id IN ({', '.join('?' for _ in chunk)})", (now, provider, *chunk))
