"""Fine-tunes moved to another provider: each move claimed once before its first upload, the files moves uploaded (by
content, so the same content goes to the same provider once), and the links between a job and where it moved. One
concern of the store, over its engine (the same queries on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from storage.queries import Queries

# How long a move being prepared (read, checked, uploaded) is its process's own; past that another may take it over.
PREPARE_LEASE_SECONDS = 30 * 60
HOLD_SECONDS = 86400  # a held move's hold expires after a day, like a held start's; then it may be moved again
# What a move may be in. A move in one of RETRYABLE (or whose lease ran out) can be claimed again by a new `move`.
PREPARING, NEEDS_FILE, HELD, STARTED, REFUSED = "preparing", "needs_file", "held", "started", "refused"
RETRYABLE = (NEEDS_FILE, REFUSED)


class MoveStore:
    """Moves, the files they uploaded, and the links between a job and where it moved."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock
        self.sql = Queries("moves", engine.words)  # storage/sql/moves.sql, with the engine's FOR UPDATE

    def claim(self, *, team_id: str, channel_id: str, user_id: str, source_provider: str, source_job: str,
              target_provider: str, options: dict) -> tuple[bool, dict]:
        """This move, for this process to carry out: (True, the move) when it is new or may be tried again (a refused
        one, one waiting for a file, one whose process stopped, an expired hold); else (False, the move as another
        click, process or replica left it). One transaction that locks its row: two clicks claim it once."""
        now = self._clock()
        with self.engine.transaction(row_locks=True) as db:
            move_id = "mv-" + secrets.token_hex(8)
            asked = {"id": move_id, "team_id": team_id, "channel_id": channel_id, "user_id": user_id,
                     "source_provider": source_provider, "source_job": source_job, "target_provider": target_provider,
                     "options": json.dumps(options), "state": PREPARING, "now": now,
                     "lease_until": now + PREPARE_LEASE_SECONDS}
            # The unique index on (workspace, source, target) decides between two processes inserting at once.
            if db.conn.execute(self.sql["insert_move"], asked).rowcount == 1:
                return True, self._one(db.conn, move_id)
            found = dict(db.conn.execute(self.sql["move_of_source"], asked).fetchone())
            # A move whose process stopped is taken over once its lease ends, unless its start is still to be
            # reconciled (the job may exist: reconciling links it, or frees the move).
            stale = ((found["state"] == PREPARING and (found["lease_until"] or 0) <= now and not db.conn.execute(
                self.sql["start_to_reconcile"], {"move_id": found["id"]}).fetchone())
                     or (found["state"] == HELD and (found["updated_at"] or 0) <= now - HOLD_SECONDS)
                     # A move whose job failed or was cancelled may be made again (with another model, say).
                     or (found["state"] == STARTED and db.conn.execute(
                         self.sql["job_ended_unsuccessfully"],
                         {"provider": target_provider, "job_id": found["new_job"]}).fetchone() is not None))
            if found["state"] not in RETRYABLE and not stale:
                return False, _read(found)
            db.conn.execute(self.sql["claim_again"], {**asked, "id": found["id"]})
            return True, _read({**found, "channel_id": channel_id, "user_id": user_id,
                                "options": json.dumps(options), "state": PREPARING, "note": None, "new_job": None})

    def take(self, move_id: str, state: str, *, team_id: str) -> bool:
        """Go on with a move in `state` (waiting for its file), once: False when it is not in that state any more
        (or belongs to another workspace)."""
        now = self._clock()
        with self.engine.transaction() as db:
            return db.conn.execute(self.sql["take"], {"preparing": PREPARING, "now": now, "id": move_id,
                                                      "lease_until": now + PREPARE_LEASE_SECONDS, "state": state,
                                                      "team_id": team_id}).rowcount == 1

    def get(self, move_id: str) -> dict | None:
        rows = self.engine.rows(self.sql["move"], {"id": move_id})
        return _read(rows[0]) if rows else None

    def set_state(self, move_id: str, state: str, *, note: str | None = None, options: dict | None = None) -> None:
        with self.engine.transaction() as db:
            db.conn.execute(self.sql["set_state"], {
                "state": state, "note": note, "options": json.dumps(options) if options is not None else None,
                "now": self._clock(), "id": move_id, "started": STARTED})

    def settle(self, move_id: str, note: str) -> None:
        """A move whose start ended neither started nor held (refused, failed): it may be tried again."""
        with self.engine.transaction() as db:
            db.conn.execute(self.sql["settle"], {"refused": REFUSED, "note": note, "now": self._clock(), "id": move_id,
                                                 "preparing": PREPARING})

    def started(self, move_id: str, new_job: str) -> dict | None:
        """The move's job is created: linked, once. The move (None when it was already linked to a job)."""
        with self.engine.transaction() as db:
            if db.conn.execute(self.sql["started"], {"started": STARTED, "new_job": new_job, "now": self._clock(),
                                                     "id": move_id}).rowcount != 1:
                return None
            return self._one(db.conn, move_id)

    # -- links between a job and where it moved ---------------------------------------------------------------

    def moved_from(self, provider: str, job_id: str) -> dict | None:
        """The move that made this job, if one did."""
        rows = self.engine.rows(self.sql["moved_from"], {"provider": provider, "job_id": job_id})
        return _read(rows[0]) if rows else None

    def moved_to(self, provider: str, job_id: str) -> list[dict]:
        """Where this job was moved (the new jobs, with their last known status), oldest first."""
        return [_read(r) for r in self.engine.rows(self.sql["moved_to"], {"provider": provider, "job_id": job_id})]

    # -- files uploaded by moves -----------------------------------------------------------------------------

    def uploaded(self, provider: str, sha256: str) -> str | None:
        rows = self.engine.rows(self.sql["uploaded"], {"provider": provider, "sha256": sha256})
        return rows[0]["file_id"] if rows else None

    def remember_upload(self, provider: str, sha256: str, file_id: str) -> None:
        with self.engine.transaction() as db:
            db.conn.execute(self.sql["remember_upload"], {"provider": provider, "sha256": sha256, "file_id": file_id,
                                                          "now": self._clock()})

    def _one(self, conn: Any, move_id: str) -> dict:
        return _read(dict(conn.execute(self.sql["move"], {"id": move_id}).fetchone()))


def _read(row: Any) -> dict:
    found = dict(row)
    found["options"] = json.loads(found.get("options") or "{}")
    return found
