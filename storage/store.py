"""The one gateway to finetune-bot's SQLite database; safe across threads and processes."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlite_utils import Database

from storage.engines import DB_ERRORS, describe, open_engine
from storage.moves import MoveStore
from storage.outbox import queue_kind
from storage.spend import SpendStore
from storage.watch import WatchStore

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

# The provider of a job dict that names none: the OpenAI shape, which was the only one before providers were named.
OPENAI = "openai"

WEBHOOK_RETENTION_SECONDS = 7 * 86400  # providers redeliver for at most a few days
TRIGGER_RETENTION_SECONDS = 600  # Slack refuses a request older than 5 minutes, so a replay is younger than this
INTENT_RETENTION_SECONDS = 7 * 86400
SHARE_RETENTION_SECONDS = 86400  # a tried answer can be shared for a day
FORM_RETENTION_SECONDS = 86400  # a form left open longer than a day is answered as expired
# What a channel hears until someone changes it: every outcome, mentions, a card per job with progress in its thread
# at most every five minutes.
NO_LIMIT = 2**62  # LIMIT for "all of them", in both dialects (SQLite spells it -1, PostgreSQL ALL)
CHANNEL_DEFAULTS = {"outcomes": "all", "mentions": 1, "cards": 1, "progress": 1, "progress_minutes": 5,
                    "confirm_above": None, "budget": None, "watchdog": "warn"}
OFF = "off"  # a setting whose off is no value at all (a threshold, a budget): stored as NULL
# A follow (`s`, with its channel's settings `c`) is due a progress reply when its card is up, its channel wants
# progress, and its last reply (or read with nothing new) is at least the channel's interval old (the one `?`: now).
PROGRESS_DUE = ("coalesce(s.card_ts, '') != '' AND coalesce(c.cards, 1) != 0 AND coalesce(c.progress, 1) != 0"
                " AND (s.progress_at IS NULL OR s.progress_at <= ? - 60 * coalesce(c.progress_minutes, 5))")


def _insert(conn: Any, table: str, row: dict, *, on_conflict: str = "") -> None:
    """INSERT one row (its keys are our own column names, never input), with an ON CONFLICT clause if given."""
    conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)}){on_conflict}",
                 tuple(row.values()))


OBSERVED_REFRESH_SECONDS = 60.0  # how stale a running job's "as of" may be before an unchanged poll rewrites it
IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's limits on parameters


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start:start + IN_CHUNK]


def _by_provider(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for provider, job_id in keys:
        grouped.setdefault(provider, []).append(job_id)
    return grouped


class StorageUnavailable(Exception):
    """The database cannot be opened or written; the message is one line meant for the person running the bot."""


class NotLowered(ValueError):
    """A limit that may only be lowered here, asked to go up or off: which, and what it is now."""

    def __init__(self, name: str, current: float) -> None:
        super().__init__(name)
        self.name, self.current = name, current


class Store:
    """Followed jobs, their last known state, the announcement outbox, and webhook deliveries seen.

    `location` is a SQLite file's path (the default) or a postgresql:// URL; `storage/engines.py` runs the one
    dialect of SQL below on either."""

    def __init__(self, location: str, *, clock: Callable[[], float] = time.time):
        self.path = str(location)
        self._clock = clock
        try:
            self.engine = open_engine(self.path)
        except DB_ERRORS as error:
            raise StorageUnavailable(f"the database at {describe(self.path)} cannot be used: {error}") from None
        self.where = self.engine.where
        try:
            self.engine.migrate()
        except DB_ERRORS as error:
            self.close()
            raise StorageUnavailable(f"the database at {self.where} cannot be used: {error}") from None
        self._queue_order = self.engine.words["queue_order"]
        self.spend = SpendStore(self.engine, clock)
        self.watch = WatchStore(self.engine, clock)
        self.moves = MoveStore(self.engine, clock)
        self._skip_locked = self.engine.words["skip_locked"]

    # -- connections and transactions ------------------------------------------------------------

    def _db(self) -> Database:
        """This thread's SQLite connection (SQLite only: for tests that look at the file itself)."""
        return self.engine.db()

    def connections(self) -> int:
        """How many connections are in use now (SQLite: one per live thread that used the store)."""
        return self.engine.connections()

    def _immediate(self):  # noqa: ANN202 - a context manager over the engine's unit of work
        """A write transaction that takes the engine's write lock up front, so read-then-write is safe."""
        return self.engine.transaction()

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        return self.engine.rows(sql, params)

    def check_writable(self) -> None:
        """Write one row and commit; raises one of DB_ERRORS when the database cannot be written (read-only, full)."""
        with self._immediate() as db:
            db.conn.execute("INSERT INTO health (id, written_at) VALUES (1, ?)"
                            " ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at", (self._clock(),))

    def close(self, *, for_good: bool = False) -> None:
        """Close every connection this store made, whichever thread made it (call once its users have stopped). A
        thread that uses the store afterwards opens a new one, unless it was closed `for_good` (its bot stopped)."""
        self.engine.close(for_good=for_good)

    # -- jobs and subscriptions ------------------------------------------------------------------

    def adopt_unnamed(self, provider: str) -> int:
        """Give rows written before jobs were named by provider to `provider` (the OpenAI-shaped provider this bot
        used then). Returns how many jobs were adopted; runs at every start-up and does nothing the second time."""
        with self._immediate() as db:
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
        provider = job.get("provider") or OPENAI
        with self._immediate() as db:
            exists = db.conn.execute("SELECT 1 FROM jobs WHERE provider = ? AND id = ?",
                                     (provider, job["id"])).fetchone()
            if not exists:
                row = {"provider": provider, "id": job["id"], **{k: job.get(k) for k in JOB_FIELDS},
                       "final": int(final), "observed_at": now}
                _insert(db.conn, "jobs", row)
            cur = db.conn.execute(
                "INSERT INTO subscriptions (channel_id, provider, job_id, team_id, user_id, origin,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (channel_id, provider, job["id"], team_id, user_id, origin, now),
            )
            new = cur.rowcount == 1
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
                self._queue(db.conn, provider, job["id"], announce, now, channel_id=channel_id)
            if card and not final and self._setting(db.conn, channel_id, "cards"):
                self._queue_kind(db.conn, "card", provider, job["id"], channel_id, job.get("status") or "", now,
                                 key=f"{provider}:{job['id']}:{channel_id}:card")
            return new

    @staticmethod
    def _setting(conn: Any, channel_id: str, name: str):
        row = conn.execute(f"SELECT {name} FROM channel_settings WHERE channel_id = ?", (channel_id,)).fetchone()
        return row[0] if row else CHANNEL_DEFAULTS[name]

    _queue_kind = staticmethod(queue_kind)

    @staticmethod
    def _queue(conn: Any, provider: str, job_id: str, outcome: str, now: float, *,
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

    def unfollow(self, channel_id: str, job_id: str, provider: str = OPENAI) -> bool:
        """Stop a channel following a job, dropping announcements not yet sent; False when it did not follow it."""
        with self._immediate() as db:
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
        return self._rows(
            "SELECT s.job_id, s.user_id, s.origin, s.created_at AS followed_at, s.delivery_error, j.*"
            " FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id"
            f" WHERE s.channel_id = ?{only}"
            " ORDER BY j.final, s.created_at DESC, s.job_id LIMIT ? OFFSET ?",
            (*params, NO_LIMIT if limit is None else limit, offset),
        )

    def follow_counts(self, channel_id: str) -> tuple[int, int]:
        """How many jobs a channel follows that are still running, and how many have finished."""
        row = self._rows(
            "SELECT sum(CASE WHEN j.final = 0 THEN 1 ELSE 0 END) AS active,"
            " sum(CASE WHEN j.final = 1 THEN 1 ELSE 0 END) AS finished"
            " FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id WHERE s.channel_id = ?",
            (channel_id,),
        )[0]
        return row["active"] or 0, row["finished"] or 0

    def followers(self, job_id: str, provider: str = OPENAI) -> list[dict]:
        return self._rows("SELECT * FROM subscriptions WHERE provider = ? AND job_id = ? ORDER BY created_at",
                          (provider, job_id))

    def job(self, job_id: str, provider: str = OPENAI) -> dict | None:
        rows = self._rows("SELECT * FROM jobs WHERE provider = ? AND id = ?", (provider, job_id))
        return rows[0] if rows else None

    def channel_settings(self, channel_id: str) -> dict:
        """What a channel hears (defaults for a channel that never changed anything)."""
        rows = self._rows("SELECT * FROM channel_settings WHERE channel_id = ?", (channel_id,))
        return rows[0] if rows else {"channel_id": channel_id, **CHANNEL_DEFAULTS, "updated_by": None,
                                     "updated_at": None}

    def set_channel_settings(self, channel_id: str, user_id: str, *, only_lower: Iterable[str] = (),
                             **changes: str | int | bool | None) -> dict:
        """Change some of a channel's settings (the names of CHANNEL_DEFAULTS); the others stay as they were. A limit
        named in `only_lower` may only be lowered (or set where it was off): raising it or switching it off raises
        NotLowered, and nothing changes. Judged in the same transaction as the write."""
        unknown = set(changes) - set(CHANNEL_DEFAULTS)
        if unknown:
            raise ValueError(f"no such channel setting: {sorted(unknown)}")
        with self._immediate() as db:
            current = db.conn.execute("SELECT * FROM channel_settings WHERE channel_id = ?", (channel_id,)).fetchone()
            row = dict(current) if current else {"channel_id": channel_id, **CHANNEL_DEFAULTS}
            for name in only_lower:
                value, now = changes.get(name), row.get(name)
                if value is not None and now is not None and (value == OFF or value > now):
                    raise NotLowered(name, now)
            for name, value in changes.items():
                if value == OFF and CHANNEL_DEFAULTS[name] is None:
                    row[name] = None
                elif value is not None:
                    row[name] = int(value) if isinstance(value, bool) else value
            row.update(updated_by=user_id, updated_at=self._clock())
            changed = ", ".join(f"{name} = excluded.{name}" for name in row if name != "channel_id")
            _insert(db.conn, "channel_settings", row, on_conflict=f" ON CONFLICT (channel_id) DO UPDATE SET {changed}")
        return row

    def dm_follows(self, user_id: str) -> list[dict]:
        """The jobs a person follows in direct messages, with each job's last known state."""
        return self._rows(
            "SELECT s.job_id, s.user_id, s.origin, s.created_at AS followed_at, s.delivery_error, j.*"
            " FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id"
            " WHERE s.user_id = ? AND s.origin = 'dm' ORDER BY j.final, s.created_at DESC LIMIT 20", (user_id,))

    def job_with_model(self, model: str) -> dict | None:
        """The succeeded job that made `model`, if the bot has seen it."""
        rows = self._rows("SELECT * FROM jobs WHERE fine_tuned_model = ? AND provider != ''"
                          " ORDER BY observed_at DESC LIMIT 1", (model,))
        return rows[0] if rows else None

    # -- answers kept for sharing ------------------------------------------------------------------

    def take_model_calls(self, user_id: str, count: int, *, limit: int, window: float = 60.0) -> float | None:
        """Count `count` prompts against a person's `limit` a `window`, in one write transaction (every process and
        replica counts the same rows): None when taken, else the seconds until enough of the window has passed."""
        now = self._clock()
        with self._immediate() as db:
            rows = db.conn.execute("SELECT at, count FROM model_calls WHERE user_id = ? AND at > ? ORDER BY at",
                                   (user_id, now - window)).fetchall()
            used = sum(row["count"] for row in rows)
            if used + count > limit:
                freed, wait = used + count - limit, window
                for row in rows:  # the oldest prompts leave the window first
                    freed -= row["count"]
                    if freed <= 0:
                        wait = row["at"] + window - now
                        break
                return max(1.0, wait)
            _insert(db.conn, "model_calls", {"id": secrets.token_hex(8), "user_id": user_id, "at": now,
                                             "count": count})
        return None

    def keep_answer(self, user_id: str, channel_id: str, message: dict) -> str:
        """Keep a message only its asker sees, so a button can share it in `channel_id` later; returns its id."""
        share_id = secrets.token_hex(12)
        with self._immediate() as db:
            _insert(db.conn, "shared_answers", {"id": share_id, "user_id": user_id, "channel_id": channel_id,
                                                "message": json.dumps(message), "created_at": self._clock()})
        return share_id

    def claim_share(self, share_id: str, user_id: str) -> tuple[str, dict | None]:
        """Take a kept answer to share it, once: ('ok', answer) for its asker the first time; else ('gone', None),
        ('not_yours', None) or ('shared', None). The claim and the check are one transaction, so two clicks at once
        (or two processes) share it once; `unclaim_share` gives it back when the post fails."""
        with self._immediate() as db:
            rows = [dict(r) for r in db.conn.execute("SELECT * FROM shared_answers WHERE id = ?", (share_id,))]
            if not rows:
                return "gone", None
            if rows[0]["user_id"] != user_id:
                return "not_yours", None
            if rows[0]["shared_at"] is not None:
                return "shared", None
            db.conn.execute("UPDATE shared_answers SET shared_at = ? WHERE id = ?", (self._clock(), share_id))
        return "ok", {**rows[0], "message": json.loads(rows[0]["message"])}

    def unclaim_share(self, share_id: str) -> None:
        with self._immediate() as db:
            db.conn.execute("UPDATE shared_answers SET shared_at = NULL WHERE id = ?", (share_id,))

    def providers_of(self, job_id: str) -> list[str]:
        """Which providers the bot has seen a job called `job_id` at, most recently seen first."""
        return [r["provider"] for r in self._rows(
            "SELECT provider FROM jobs WHERE id = ? AND provider != '' ORDER BY observed_at DESC", (job_id,))]

    def active_jobs(self) -> list[dict]:
        """Followed jobs not yet final, least recently polled first."""
        return self._rows(
            "SELECT j.* FROM jobs j WHERE j.final = 0"
            " AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider = j.provider AND s.job_id = j.id)"
            " ORDER BY coalesce(j.polled_at, 0), j.created_at"
        )

    def has_active_jobs(self) -> bool:
        return bool(self._rows(
            "SELECT 1 FROM jobs j WHERE j.final = 0"
            " AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider = j.provider AND s.job_id = j.id) LIMIT 1"
        ))

    def record_jobs(self, observed: Iterable[tuple[dict, str | None]]) -> int:
        """Save what the provider said of followed jobs and queue announcements for outcomes, in one transaction.

        Each item is (job fields, outcome or None). A job already final is left as it is, so an outcome is
        queued at most once per channel however many times and by however many processes it is seen.
        Returns how many announcements were queued.
        """
        now = self._clock()
        queued = 0
        items = [(job.get("provider") or OPENAI, job, outcome) for job, outcome in observed]
        with self._immediate() as db:
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
                    queued += self._queue(conn, provider, job["id"], outcome, now)
                if changed:
                    queued += self._queue_card_edits(conn, provider, job["id"], revision, row["status"],
                                                     fields["status"], final=outcome is not None, now=now)
                    queued += self._redraw_moved_from(conn, provider, job["id"], now)
            for provider, ids in unchanged.items():
                for chunk in _chunks(ids):
                    conn.execute(f"UPDATE jobs SET observed_at = ?, polled_at = ? WHERE provider = ? AND final = 0"
                                 f" AND id IN ({', '.join('?' for _ in chunk)})", (now, now, provider, *chunk))
        return queued

    @staticmethod
    def _stored_jobs(conn: Any, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """The stored state of these (provider, id) jobs that the bot has, a few statements for any number."""
        found = {}
        for provider, ids in _by_provider(keys).items():
            for chunk in _chunks(ids):
                for row in conn.execute(
                        f"SELECT provider, id, final, status, revision, observed_at, {', '.join(JOB_FIELDS)} FROM jobs"
                        f" WHERE provider = ? AND id IN ({', '.join('?' for _ in chunk)})", (provider, *chunk)):
                    found[(row["provider"], row["id"])] = dict(row)
        return found

    def _queue_card_edits(self, conn: Any, provider: str, job_id: str, revision: int, before: str,
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
            queued += self._queue_kind(conn, "card_update", provider, job_id, channel_id, after, now,
                                       key=f"{base}:card:{revision}", detail={"revision": revision})
            if not final and self._setting(conn, channel_id, "progress"):
                queued += self._queue_kind(conn, "progress", provider, job_id, channel_id, after, now,
                                           key=f"{base}:status:{revision}", detail={"from": before, "to": after})
        return queued

    def followed_jobs(self, provider: str, *, state: str) -> list[dict]:
        """Every follow of a job at `provider` in `state` (a meaning: going, succeeded, …), with the job."""
        return self._rows("SELECT s.channel_id, s.user_id AS follower, j.* FROM subscriptions s JOIN jobs j"
                          " ON j.provider = s.provider AND j.id = s.job_id WHERE j.provider = ? AND j.state = ?"
                          " ORDER BY s.channel_id, j.id", (provider, state))

    def queue_notice(self, kind: str, provider: str, job_id: str, channel_id: str, *, key: str, detail: dict) -> int:
        """A message about a followed job (and others), for a channel that follows it, once by its key."""
        with self._immediate() as db:
            return self._queue_kind(db.conn, kind, provider, job_id, channel_id, kind, self._clock(), key=key,
                                    detail=detail)

    def redraw_cards(self, provider: str, job_id: str) -> int:
        """Edit every card of a job (finished or not) to show what the bot now knows of it (where it moved): a new
        revision, with no thread reply."""
        with self._immediate() as db:
            return self._redraw(db.conn, provider, job_id, self._clock())

    def _redraw(self, conn: Any, provider: str, job_id: str, now: float) -> int:
        row = conn.execute("SELECT revision, status FROM jobs WHERE provider = ? AND id = ?",
                           (provider, job_id)).fetchone()
        if row is None:
            return 0
        revision = row["revision"] + 1
        conn.execute("UPDATE jobs SET revision = ? WHERE provider = ? AND id = ?", (revision, provider, job_id))
        return self._queue_card_edits(conn, provider, job_id, revision, row["status"], row["status"], final=True,
                                      now=now)

    def _redraw_moved_from(self, conn: Any, provider: str, job_id: str, now: float) -> int:
        """A moved job's status changed: the cards of the job it was moved from show its new state."""
        sources = conn.execute("SELECT source_provider, source_job FROM moves WHERE target_provider = ?"
                               " AND new_job = ?", (provider, job_id)).fetchall()
        return sum(self._redraw(conn, source_provider, source_job, now) for source_provider, source_job in sources)

    # -- cards ---------------------------------------------------------------------------------------

    def card(self, channel_id: str, job_id: str, provider: str = OPENAI) -> dict | None:
        """A channel's card of a job: its outbox row's state, and (once posted) its ts and the revision it shows.
        None when the channel has no card for it (cards off, a direct message, or a follow from before cards)."""
        rows = self._rows(
            "SELECT a.state, a.next_attempt_at, a.lease_until, a.last_error, s.card_ts, s.card_revision"
            " FROM announcements a"
            " JOIN subscriptions s ON s.channel_id = a.channel_id AND s.provider = a.provider AND s.job_id = a.job_id"
            " WHERE a.key = ?", (f"{provider}:{job_id}:{channel_id}:card",))
        return rows[0] if rows else None

    def card_edit_in_flight(self, row: dict, now: float) -> bool:
        """Whether another edit of the same card is being made right now (claimed, its lease running)."""
        return bool(self._rows(
            "SELECT 1 FROM announcements WHERE provider = ? AND job_id = ? AND channel_id = ? AND kind = 'card_update'"
            " AND state = 'sending' AND key != ? AND lease_until > ? LIMIT 1",
            (row["provider"], row["job_id"], row["channel_id"], row["key"], now)))

    def set_card(self, channel_id: str, job_id: str, provider: str, *, ts: str | None = None,
                 revision: int | None = None) -> None:
        """Remember a card's ts once posted ('' when Slack says it is gone), and the job's revision it shows."""
        with self._immediate() as db:
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
        return [r["job_id"] for r in self._rows(
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
        with self._immediate() as db:
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
                    queued += self._queue_kind(db.conn, "progress", provider, job_id, channel_id, "running", now,
                                               key=f"{provider}:{job_id}:{channel_id}:progress:{step}", detail=detail)
        return queued

    def mark_polled(self, jobs: Iterable[tuple[str, str]]) -> None:
        """Note that these (provider, id) jobs were just asked about."""
        now = self._clock()
        keys = list(jobs)
        if not keys:
            return
        with self._immediate() as db:
            for provider, ids in _by_provider(keys).items():
                for chunk in _chunks(ids):
                    db.conn.execute(f"UPDATE jobs SET polled_at = ? WHERE provider = ?"
                                    f" AND id IN ({', '.join('?' for _ in chunk)})", (now, provider, *chunk))

    # -- the outbox --------------------------------------------------------------------------------

    def older_reply_held(self, row: dict) -> float | None:
        """When the oldest thread reply of this row's job and channel queued before it is due, if one is still to be
        sent: replies go in the order they were queued (a later state's never before an earlier one's)."""
        order = self._queue_order
        rows = self._rows(
            f"SELECT min(next_attempt_at) AS at FROM announcements WHERE provider = ? AND job_id = ? AND channel_id = ?"
            f" AND kind = 'progress' AND state IN ('pending', 'sending') AND {order} < (SELECT {order} FROM"
            " announcements WHERE key = ?)", (row["provider"], row["job_id"], row["channel_id"], row["key"]))
        return rows[0]["at"] if rows and rows[0]["at"] is not None else None

    def due_announcements(self, *, limit: int) -> list[dict]:
        """Announcements due now (or whose holder's lease has ended), oldest first. Nothing is claimed yet."""
        now = self._clock()
        return self._rows(
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
        due = "key = ? AND ((state = 'pending' AND next_attempt_at <= ?) OR (state = 'sending' AND lease_until <= ?))"
        # The row alone is locked (on PostgreSQL, skipping one another process is claiming this moment), not the
        # whole database: replicas claim side by side, and none waits behind another's claim.
        with self.engine.transaction(row_locks=True) as db:
            if not db.conn.execute(f"SELECT key FROM announcements WHERE {due}{self._skip_locked}",
                                   (key, now, now)).fetchone():
                return None
            cur = db.conn.execute(
                "UPDATE announcements SET state = 'sending', claimed_by = ?, lease_until = ?,"
                " uncertain = CASE WHEN uncertain != 0 OR state = 'sending' THEN 1 ELSE 0 END"
                f" WHERE {due}",
                (worker, now + lease_seconds, key, now, now),
            )
            if cur.rowcount != 1:
                return None
            return dict(db.conn.execute("SELECT * FROM announcements WHERE key = ?", (key,)).fetchone())

    def claim_announcements(self, worker: str, *, limit: int, lease_seconds: float) -> list[dict]:
        """Claim up to `limit` due announcements at once (for tests and tools; the sender claims one at a time)."""
        claimed = (self.claim(row["key"], worker, lease_seconds=lease_seconds)
                   for row in self.due_announcements(limit=limit))
        return [row for row in claimed if row is not None]

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
        with self._immediate() as db:
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
        with self._immediate() as db:
            db.conn.execute(
                "UPDATE announcements SET next_attempt_at = CASE WHEN next_attempt_at > ? THEN next_attempt_at"
                f" ELSE ? END WHERE channel_id = ? AND state = 'pending'{only}",
                (until, until, channel_id, *(chosen or ())),
            )

    def outcomes_waiting(self, *, within: float = 5.0) -> bool:
        """Whether an outcome is being posted or falls due within `within` seconds: what best-effort work (a chart)
        waits behind. One held back for longer (a rate limit, a failing channel) keeps nothing waiting."""
        return bool(self._rows("SELECT 1 FROM announcements WHERE kind = 'announcement' AND (state = 'sending'"
                               " OR (state = 'pending' AND next_attempt_at <= ?)) LIMIT 1", (self._clock() + within,)))

    def next_due(self) -> float | None:
        """When the earliest queued announcement falls due (or a claim on one lapses); None when nothing waits."""
        row = self._rows(
            "SELECT min(CASE WHEN state = 'pending' THEN next_attempt_at ELSE lease_until END) AS due"
            " FROM announcements WHERE state IN ('pending', 'sending')"
        )
        return row[0]["due"] if row else None

    def announcement(self, key: str) -> dict | None:
        rows = self._rows("SELECT * FROM announcements WHERE key = ?", (key,))
        return rows[0] if rows else None

    def announcements(self, *, state: str | None = None) -> list[dict]:
        if state is None:
            return self._rows("SELECT * FROM announcements ORDER BY created_at")
        return self._rows("SELECT * FROM announcements WHERE state = ? ORDER BY created_at", (state,))

    # -- forms -----------------------------------------------------------------------------------------

    def record_form(self, kind: str, *, user_id: str, team_id: str, channel_id: str, provider: str | None = None,
                    job_id: str | None = None, form_id: str | None = None) -> str:
        """Remember a form about to be opened: who opens it, from which channel, about what. Returns its id (new and
        unguessable unless given), for the form to carry."""
        form_id = form_id or secrets.token_urlsafe(18)
        with self._immediate() as db:
            db.conn.execute(
                "INSERT INTO open_forms (form_id, kind, user_id, team_id, channel_id, provider, job_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (form_id, kind, user_id, team_id, channel_id, provider, job_id, self._clock()))
        return form_id

    def form(self, form_id: str, kind: str) -> dict | None:
        """A form of `kind` the bot opened, as recorded then; None for one it never opened (or long gone)."""
        rows = self._rows("SELECT * FROM open_forms WHERE form_id = ? AND kind = ?", (form_id, kind))
        return rows[0] if rows else None

    def claim_form(self, form_id: str, kind: str, user_id: str) -> tuple[str, dict | None]:
        """Take a form's submission, once: ('ok', form) for the person who opened it, the first time; else
        ('unknown', None), ('not_yours', None) or ('submitted', None). One transaction, so a replayed or doubled
        submission, in any process, does nothing."""
        with self._immediate() as db:
            row = db.conn.execute("SELECT * FROM open_forms WHERE form_id = ? AND kind = ?",
                                  (form_id, kind)).fetchone()
            if row is None:
                return "unknown", None
            if row["user_id"] != user_id:
                return "not_yours", None
            if row["submitted_at"] is not None:
                return "submitted", None
            db.conn.execute("UPDATE open_forms SET submitted_at = ? WHERE form_id = ?", (self._clock(), form_id))
        return "ok", dict(row)

    # -- replays -------------------------------------------------------------------------------------

    def first_sight_of_trigger(self, trigger_id: str) -> bool:
        """Remember a Slack trigger_id; False when it was seen before (the same signed request, replayed)."""
        with self._immediate() as db:
            cur = db.conn.execute("INSERT INTO seen_triggers (trigger_id, seen_at) VALUES (?, ?)"
                                  " ON CONFLICT DO NOTHING",
                                  (trigger_id, self._clock()))
            return cur.rowcount == 1

    # -- starts in flight ----------------------------------------------------------------------------

    def record_intent(self, request_id: str, *, team_id: str, channel_id: str, user_id: str,
                      response_url: str | None, training_file: str, model: str, suffix: str | None,
                      provider: str = OPENAI, estimate: float | None = None, approved_by: str | None = None,
                      move_id: str | None = None, budget: float | None = None,
                      month: tuple[float, float] | None = None) -> float | None:
        """Write down a start before the provider is asked, so a crash in between can be reconciled. With a
        `budget`, the start is admitted only if the month's committed spend (`month`: its bounds) with its estimate
        stays within it, decided in the same transaction as the write (starts racing each other are counted):
        returns None when admitted, else the committed spend that refused it (and nothing is written)."""
        with self._immediate() as db:
            if budget is not None and month is not None:
                committed = self.spend.committed(db.conn, channel_id, *month)
                if committed + (estimate or 0) > budget:
                    return committed
            _insert(db.conn, "start_intents", {
                "request_id": request_id, "provider": provider, "team_id": team_id, "channel_id": channel_id,
                "user_id": user_id,
                "response_url": response_url, "training_file": training_file, "model": model, "suffix": suffix,
                "created_at": self._clock(), "state": "pending", "job_id": None, "estimate": estimate,
                "approved_by": approved_by, "move_id": move_id,
            })
        return None

    def finish_intent(self, request_id: str, *, job_id: str | None, state: str = "done") -> bool:
        """Close an intent (its response_url, a credential, is forgotten); False when another process closed it."""
        with self._immediate() as db:
            cur = db.conn.execute(
                "UPDATE start_intents SET state = ?, job_id = ?, response_url = NULL"
                " WHERE request_id = ? AND (state = 'pending' OR state LIKE 'reconciling:%')",
                (state, job_id, request_id),
            )
            return cur.rowcount == 1

    def claim_orphaned_intents(self, *, older_than: float, worker: str) -> list[dict]:
        """Pending starts older than `older_than` seconds (whoever made them is gone), each handed to one caller."""
        cutoff = self._clock() - older_than
        with self._immediate() as db:
            rows = [dict(r) for r in db.conn.execute(
                "SELECT * FROM start_intents WHERE state = 'pending' AND created_at <= ? ORDER BY created_at",
                (cutoff,))]
            db.conn.executemany("UPDATE start_intents SET state = ? WHERE request_id = ?",
                                [(f"reconciling:{worker}", r["request_id"]) for r in rows])
        return rows

    def reopen_intent(self, request_id: str) -> None:
        """Hand a start back for a later reconciling pass (the provider could not be asked this time)."""
        with self._immediate() as db:
            db.conn.execute("UPDATE start_intents SET state = 'pending' WHERE request_id = ?", (request_id,))

    def intents(self) -> list[dict]:
        return self._rows("SELECT * FROM start_intents ORDER BY created_at")

    # -- housekeeping --------------------------------------------------------------------------------

    def prune(self) -> dict[str, int]:
        """Forget what is only kept for a while: webhook ids, trigger ids, closed starts, shared answers, an ended
        job's card edits and thread replies. Returns counts removed."""
        now = self._clock()
        with self._immediate() as db:
            removed = {
                "webhook_deliveries": db.conn.execute("DELETE FROM webhook_deliveries WHERE received_at < ?",
                                                      (now - WEBHOOK_RETENTION_SECONDS,)).rowcount,
                "seen_triggers": db.conn.execute("DELETE FROM seen_triggers WHERE seen_at < ?",
                                                 (now - TRIGGER_RETENTION_SECONDS,)).rowcount,
                "shared_answers": db.conn.execute("DELETE FROM shared_answers WHERE created_at < ?",
                                                  (now - SHARE_RETENTION_SECONDS,)).rowcount,
                "open_forms": db.conn.execute("DELETE FROM open_forms WHERE created_at < ?",
                                              (now - FORM_RETENTION_SECONDS,)).rowcount,
                "start_intents": db.conn.execute("DELETE FROM start_intents WHERE state != 'pending'"
                                                 " AND state NOT LIKE 'reconciling:%' AND created_at < ?",
                                                 (now - INTENT_RETENTION_SECONDS,)).rowcount,
                # A long job leaves dozens of settled edits and replies. Once its job has ended nothing can queue
                # their keys again (each is a revision or a step already passed), so they go; outcomes and cards
                # stay, for their keys are what keeps them once.
                "held_starts": self.spend.prune(db.conn, now),
                "job_readings": self.watch.prune(db.conn),
                "leases": db.conn.execute("DELETE FROM leases WHERE held_until < ?",
                                          (now - TRIGGER_RETENTION_SECONDS,)).rowcount,
                "model_calls": db.conn.execute("DELETE FROM model_calls WHERE at < ?", (now - 3600,)).rowcount,
                "card_edits_and_replies": db.conn.execute(
                    "DELETE FROM announcements WHERE kind IN ('card_update', 'progress')"
                    " AND state IN ('sent', 'skipped', 'failed') AND created_at < ? AND EXISTS (SELECT 1 FROM jobs j"
                    " WHERE j.provider = announcements.provider AND j.id = announcements.job_id AND j.final = 1)",
                    (now - INTENT_RETENTION_SECONDS,)).rowcount,
            }
        return removed

    # -- turns shared by every process on the database ----------------------------------------------

    def take_turn(self, name: str, worker: str, *, hold: float, at_least_until: float = 0.0,
                  from_holder: str | None = None) -> bool:
        """Take (or keep) the turn called `name` for `hold` seconds from now (or until `at_least_until`, if later):
        True when `worker` holds it now, False while another holder's turn runs. One statement, so two processes
        (or replicas) asking at once cannot both have it; a holder that died is replaced once its turn ends, or at
        once `from_holder` (known dead) if it still holds it."""
        now = self._clock()
        with self._immediate() as db:
            if from_holder is not None:
                return db.conn.execute("UPDATE leases SET holder = ?, held_until = ? WHERE name = ? AND holder = ?",
                                       (worker, max(now + hold, at_least_until), name, from_holder)).rowcount == 1
            return db.conn.execute(
                "INSERT INTO leases (name, holder, held_until) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " held_until = CASE WHEN leases.holder = excluded.holder AND leases.held_until > excluded.held_until"
                " THEN leases.held_until ELSE excluded.held_until END"
                " WHERE leases.holder = excluded.holder OR leases.held_until <= ?",
                (name, worker, max(now + hold, at_least_until), now)).rowcount == 1

    def end_turns(self, worker: str, names: Iterable[str]) -> int:
        """Give back turns `worker` holds (it is stopping): another process takes each at its next ask."""
        now = self._clock()
        with self._immediate() as db:
            return sum(db.conn.execute("UPDATE leases SET held_until = ? WHERE name = ? AND holder = ?"
                                       " AND held_until > ?", (now, name, worker, now)).rowcount for name in names)

    def turn_holder(self, name: str) -> str | None:
        rows = self._rows("SELECT holder FROM leases WHERE name = ?", (name,))
        return rows[0]["holder"] if rows else None

    def turns(self) -> list[dict]:
        return self._rows("SELECT * FROM leases ORDER BY name")

    # -- webhooks ----------------------------------------------------------------------------------

    def remember_webhook(self, webhook_id: str) -> bool:
        """Remember a webhook delivery; False when it was handled before (the provider delivered it again)."""
        with self._immediate() as db:
            cur = db.conn.execute(
                "INSERT INTO webhook_deliveries (webhook_id, received_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (webhook_id, self._clock()),
            )
            return cur.rowcount == 1
