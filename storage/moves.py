"""Fine-tunes moved to another provider: each move claimed once before its first upload, the files moves uploaded (by
content, so the same content goes to the same provider once), and the links between a job and where it moved. One
concern of the store, over its engine (the same queries on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

# How long a move being prepared (read, checked, uploaded) is its process's own; past that another may take it over.
PREPARE_LEASE_SECONDS = 30 * 60
HOLD_SECONDS = 86400  # a held move's hold expires after a day, like a held start's; then it may be moved again
# What a move may be in. A move in one of RETRYABLE (or whose lease ran out) can be claimed again by a new `move`.
PREPARING, NEEDS_FILE, HELD, STARTED, REFUSED = "preparing", "needs_file", "held", "started", "refused"
RETRYABLE = (NEEDS_FILE, REFUSED)


class MoveStore:
    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    def claim(self, *, team_id: str, channel_id: str, user_id: str, source_provider: str, source_job: str,
              target_provider: str, options: dict) -> tuple[bool, dict]:
        """This move, for this process to carry out: (True, the move) when it is new or may be tried again (a refused
        one, one waiting for a file, one whose process stopped, an expired hold); else (False, the move as another
        click, process or replica left it). One transaction that locks its row: two clicks claim it once."""
        now = self._clock()
        with self.engine.transaction(row_locks=True) as db:
            move_id = "mv-" + secrets.token_hex(8)
            # The unique index on (workspace, source, target) decides between two processes inserting at once.
            if db.conn.execute(
                    "INSERT INTO moves (id, team_id, channel_id, user_id, source_provider, source_job, target_provider,"
                    " options, state, created_at, updated_at, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (move_id, team_id, channel_id, user_id, source_provider, source_job, target_provider,
                     json.dumps(options), PREPARING, now, now, now + PREPARE_LEASE_SECONDS)).rowcount == 1:
                return True, self._one(db.conn, move_id)
            found = dict(db.conn.execute(
                "SELECT * FROM moves WHERE team_id = ? AND source_provider = ? AND source_job = ?"
                f" AND target_provider = ?{self.engine.words['for_update']}",
                (team_id, source_provider, source_job, target_provider)).fetchone())
            # A move whose process stopped is taken over once its lease ends, unless its start is still to be
            # reconciled (the job may exist: reconciling links it, or frees the move).
            stale = ((found["state"] == PREPARING and (found["lease_until"] or 0) <= now and not db.conn.execute(
                "SELECT 1 FROM start_intents WHERE move_id = ? AND (state = 'pending' OR state LIKE 'reconciling:%')",
                (found["id"],)).fetchone())
                     or (found["state"] == HELD and (found["updated_at"] or 0) <= now - HOLD_SECONDS)
                     # A move whose job failed or was cancelled may be made again (with another model, say).
                     or (found["state"] == STARTED and db.conn.execute(
                         "SELECT 1 FROM jobs WHERE provider = ? AND id = ? AND state IN ('failed', 'cancelled')",
                         (target_provider, found["new_job"])).fetchone() is not None))
            if found["state"] not in RETRYABLE and not stale:
                return False, _read(found)
            db.conn.execute("UPDATE moves SET channel_id = ?, user_id = ?, options = ?, state = ?, note = NULL,"
                            " new_job = NULL, updated_at = ?, lease_until = ? WHERE id = ?",
                            (channel_id, user_id, json.dumps(options), PREPARING, now, now + PREPARE_LEASE_SECONDS,
                             found["id"]))
            return True, _read({**found, "channel_id": channel_id, "user_id": user_id,
                                "options": json.dumps(options), "state": PREPARING, "note": None, "new_job": None})

    def take(self, move_id: str, state: str, *, team_id: str) -> bool:
        """Go on with a move in `state` (waiting for its file), once: False when it is not in that state any more
        (or belongs to another workspace)."""
        now = self._clock()
        with self.engine.transaction() as db:
            return db.conn.execute("UPDATE moves SET state = ?, updated_at = ?, lease_until = ? WHERE id = ?"
                                   " AND state = ? AND team_id = ?",
                                   (PREPARING, now, now + PREPARE_LEASE_SECONDS, move_id, state,
                                    team_id)).rowcount == 1

    def get(self, move_id: str) -> dict | None:
        rows = self.engine.rows("SELECT * FROM moves WHERE id = ?", (move_id,))
        return _read(rows[0]) if rows else None

    def set_state(self, move_id: str, state: str, *, note: str | None = None, options: dict | None = None) -> None:
        with self.engine.transaction() as db:
            db.conn.execute("UPDATE moves SET state = ?, note = ?, options = coalesce(?, options), updated_at = ?"
                            " WHERE id = ? AND state != ?",
                            (state, note, json.dumps(options) if options is not None else None, self._clock(),
                             move_id, STARTED))

    def settle(self, move_id: str, note: str) -> None:
        """A move whose start ended neither started nor held (refused, failed): it may be tried again."""
        with self.engine.transaction() as db:
            db.conn.execute("UPDATE moves SET state = ?, note = ?, updated_at = ? WHERE id = ? AND state = ?",
                            (REFUSED, note, self._clock(), move_id, PREPARING))

    def started(self, move_id: str, new_job: str) -> dict | None:
        """The move's job is created: linked, once. The move (None when it was already linked to a job)."""
        with self.engine.transaction() as db:
            if db.conn.execute("UPDATE moves SET state = ?, new_job = ?, updated_at = ? WHERE id = ?"
                               " AND new_job IS NULL", (STARTED, new_job, self._clock(), move_id)).rowcount != 1:
                return None
            return self._one(db.conn, move_id)

    # -- links between a job and where it moved ---------------------------------------------------------------

    def moved_from(self, provider: str, job_id: str) -> dict | None:
        """The move that made this job, if one did."""
        rows = self.engine.rows("SELECT * FROM moves WHERE target_provider = ? AND new_job = ?", (provider, job_id))
        return _read(rows[0]) if rows else None

    def moved_to(self, provider: str, job_id: str) -> list[dict]:
        """Where this job was moved (the new jobs, with their last known status), oldest first."""
        return [_read(r) for r in self.engine.rows(
            "SELECT m.*, j.status AS new_status, j.state AS new_state FROM moves m LEFT JOIN jobs j"
            " ON j.provider = m.target_provider AND j.id = m.new_job"
            " WHERE m.source_provider = ? AND m.source_job = ? AND m.new_job IS NOT NULL ORDER BY m.created_at",
            (provider, job_id))]

    # -- files uploaded by moves -----------------------------------------------------------------------------

    def uploaded(self, provider: str, sha256: str) -> str | None:
        rows = self.engine.rows("SELECT file_id FROM moved_files WHERE provider = ? AND sha256 = ?",
                                (provider, sha256))
        return rows[0]["file_id"] if rows else None

    def remember_upload(self, provider: str, sha256: str, file_id: str) -> None:
        with self.engine.transaction() as db:
            db.conn.execute("INSERT INTO moved_files (provider, sha256, file_id, uploaded_at) VALUES (?, ?, ?, ?)"
                            " ON CONFLICT DO NOTHING", (provider, sha256, file_id, self._clock()))

    @staticmethod
    def _one(conn: Any, move_id: str) -> dict:
        return _read(dict(conn.execute("SELECT * FROM moves WHERE id = ?", (move_id,)).fetchone()))


def _read(row: Any) -> dict:
    found = dict(row)
    found["options"] = json.loads(found.get("options") or "{}")
    return found
