"""Followed jobs: which channel follows which job, and each job's last known state (what a poll cycle records,
queueing the outcomes and card edits it owes in the same transaction). One concern of the store, over its engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from storage.cards import queue_card_edits, redraw_moved_from
from storage.channels import setting
from storage.home import queue_home_refresh
from storage.outbox import queue_kind, queue_outcome
from storage.queries import Queries, in_lists
from storage.scope import current_workspace
from storage.shared import NO_LIMIT, by_provider, provider_of

SQL = Queries("follows")  # storage/sql/follows.sql

JOB_FIELDS = (  # what a provider says of a job, kept as it last said it (follows.sql's insert_job and update_job)
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
            adopted = db.conn.execute(SQL["adopt_jobs"], {"provider": provider}).rowcount
            for query in (SQL["adopt_subscriptions"], SQL["adopt_announcements"], SQL["adopt_start_intents"]):
                db.conn.execute(query, {"provider": provider})
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
        the_job = {"provider": provider, "job_id": job["id"]}
        with self.engine.transaction() as db:
            if not db.conn.execute(SQL["job_known"], the_job).fetchone():
                db.conn.execute(SQL["insert_job"], {**the_job, **{k: job.get(k) for k in JOB_FIELDS},
                                                    "final": int(final), "now": now})
            new = db.conn.execute(SQL["subscribe"], {**the_job, "channel_id": channel_id, "team_id": team_id,
                                                     "user_id": user_id, "origin": origin, "now": now}).rowcount == 1
            if new and origin == "start":
                queue_home_refresh(db.conn, provider, job["id"], now)  # a new job on its starter's Home
            if recorded:  # what the bot itself knows of a job it started: its estimate, who approved it
                db.conn.execute(SQL["record_started"], {**the_job, "estimate": recorded.get("estimate"),
                                                        "approved_by": recorded.get("approved_by")})
            if finishes:  # the start that made it: closed in the same transaction, so its reservation of the
                # budget and the job's estimate are never counted both at once
                db.conn.execute(SQL["finish_start_intent"], {"job_id": job["id"], "request_id": finishes})
            if announce:
                queue_outcome(db.conn, provider, job["id"], announce, now, channel_id=channel_id)
            if card and not final and setting(db.conn, channel_id, "cards"):
                queue_kind(db.conn, "card", provider, job["id"], channel_id, job.get("status") or "", now,
                           key=f"{provider}:{job['id']}:{channel_id}:card")
            return new

    def unfollow(self, channel_id: str, job_id: str, provider: str) -> bool:
        """Stop a channel following a job, dropping announcements not yet sent; False when it did not follow it."""
        follow = {"channel_id": channel_id, "provider": provider, "job_id": job_id}
        with self.engine.transaction() as db:
            gone = db.conn.execute(SQL["unfollow"], follow).rowcount == 1
            db.conn.execute(SQL["drop_unsent"], follow)
            return gone

    def channel_follows(self, channel_id: str, *, final: bool | None = None, limit: int | None = None,
                        offset: int = 0) -> list[dict]:
        """The jobs a channel follows, running before finished, newest first, with each job's last known state."""
        return self.engine.rows(SQL["channel_follows"], {
            "channel_id": channel_id, "final": None if final is None else int(final),
            "limit": NO_LIMIT if limit is None else limit, "offset": offset, "workspace": current_workspace()})

    def follow_counts(self, channel_id: str) -> tuple[int, int]:
        """How many jobs a channel follows that are still running, and how many have finished."""
        row = self.engine.rows(SQL["follow_counts"], {"channel_id": channel_id, "workspace": current_workspace()})[0]
        return row["active"] or 0, row["finished"] or 0

    def followers(self, job_id: str, provider: str) -> list[dict]:
        return self.engine.rows(SQL["followers"], {"provider": provider, "job_id": job_id})

    def job(self, job_id: str, provider: str) -> dict | None:
        rows = self.engine.rows(SQL["job"], {"provider": provider, "job_id": job_id})
        return rows[0] if rows else None

    def dm_follows(self, user_id: str) -> list[dict]:
        """The jobs a person follows in direct messages, with each job's last known state."""
        return self.engine.rows(SQL["dm_follows"], {"user_id": user_id})

    def job_with_model(self, model: str) -> dict | None:
        """The succeeded job that made `model`, if the bot has seen it."""
        rows = self.engine.rows(SQL["job_with_model"], {"model": model})
        return rows[0] if rows else None

    def providers_of(self, job_id: str) -> list[str]:
        """Which providers the bot has seen a job called `job_id` at, most recently seen first."""
        return [r["provider"] for r in self.engine.rows(SQL["providers_of"], {"job_id": job_id})]

    def active_jobs(self) -> list[dict]:
        """Followed jobs not yet final, least recently polled first."""
        return self.engine.rows(SQL["active_jobs"])

    def has_active_jobs(self) -> bool:
        return bool(self.engine.rows(SQL["has_active_jobs"]))

    def followed_by_state(self) -> dict[tuple[str, str], int]:
        """Jobs followed and not yet ended, counted by (provider, state)."""
        rows = self.engine.rows(SQL["followed_by_state"])
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
                conn.execute(SQL["update_job"], {**{k: row[k] for k in JOB_FIELDS}, **fields, "now": now,
                                                 "final": int(outcome is not None), "revision": revision,
                                                 "provider": provider, "job_id": job["id"]})
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
                for sql, named in in_lists(SQL["seen_unchanged"], "job_ids", ids):
                    conn.execute(sql, {"now": now, "provider": provider, **named})
        return queued

    @staticmethod
    def _stored_jobs(conn: Any, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """The stored state of these (provider, id) jobs that the bot has, a few statements for any number."""
        found = {}
        for provider, ids in by_provider(keys).items():
            for sql, named in in_lists(SQL["stored_jobs"], "job_ids", ids):
                for row in conn.execute(sql, {"provider": provider, **named}):
                    found[(row["provider"], row["id"])] = dict(row)
        return found

    def followed_jobs(self, provider: str, *, state: str) -> list[dict]:
        """Every follow of a job at `provider` in `state` (a meaning: going, succeeded, …), with the job."""
        return self.engine.rows(SQL["followed_jobs"], {"provider": provider, "state": state})

    def mark_polled(self, jobs: Iterable[tuple[str, str]]) -> None:
        """Note that these (provider, id) jobs were just asked about."""
        now = self._clock()
        keys = list(jobs)
        if not keys:
            return
        with self.engine.transaction() as db:
            for provider, ids in by_provider(keys).items():
                for sql, named in in_lists(SQL["mark_polled"], "job_ids", ids):
                    db.conn.execute(sql, {"now": now, "provider": provider, **named})
