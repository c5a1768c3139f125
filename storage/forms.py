"""What a user opened or was shown: forms answered once, shared answers claimed once, and how many model calls a
user made this minute. One concern of the store, over its engine."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from storage.queries import Queries

SQL = Queries("forms")  # storage/sql/forms.sql

SHARE_RETENTION_SECONDS = 86400  # a tried answer can be shared for a day
FORM_RETENTION_SECONDS = 86400  # a form left open longer than a day is answered as expired


class Forms:
    """Forms, shared answers and model-call counts."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    def take_model_calls(self, user_id: str, count: int, *, limit: int, window: float = 60.0) -> float | None:
        """Count `count` prompts against a person's `limit` a `window`, in one write transaction (every process and
        replica counts the same rows): None when taken, else the seconds until enough of the window has passed."""
        now = self._clock()
        with self.engine.transaction() as db:
            rows = db.conn.execute(SQL["model_calls_within"], {"user_id": user_id, "since": now - window}).fetchall()
            used = sum(row["count"] for row in rows)
            if used + count > limit:
                freed, wait = used + count - limit, window
                for row in rows:  # the oldest prompts leave the window first
                    freed -= row["count"]
                    if freed <= 0:
                        wait = row["at"] + window - now
                        break
                return max(1.0, wait)
            db.conn.execute(SQL["count_model_calls"], {"id": secrets.token_hex(8), "user_id": user_id, "now": now,
                                                       "count": count})
        return None

    def keep_answer(self, user_id: str, channel_id: str, message: dict) -> str:
        """Keep a message only its asker sees, so a button can share it in `channel_id` later; returns its id."""
        share_id = secrets.token_hex(12)
        with self.engine.transaction() as db:
            db.conn.execute(SQL["keep_answer"], {"id": share_id, "user_id": user_id, "channel_id": channel_id,
                                                 "message": json.dumps(message), "now": self._clock()})
        return share_id

    def claim_share(self, share_id: str, user_id: str) -> tuple[str, dict | None]:
        """Take a kept answer to share it, once: ('ok', answer) for its asker the first time; else ('gone', None),
        ('not_yours', None) or ('shared', None). The claim and the check are one transaction, so two clicks at once
        (or two processes) share it once; `unclaim_share` gives it back when the post fails."""
        with self.engine.transaction() as db:
            rows = [dict(r) for r in db.conn.execute(SQL["shared_answer"], {"id": share_id})]
            if not rows:
                return "gone", None
            if rows[0]["user_id"] != user_id:
                return "not_yours", None
            if rows[0]["shared_at"] is not None:
                return "shared", None
            db.conn.execute(SQL["mark_shared"], {"now": self._clock(), "id": share_id})
        return "ok", {**rows[0], "message": json.loads(rows[0]["message"])}

    def unclaim_share(self, share_id: str) -> None:
        with self.engine.transaction() as db:
            db.conn.execute(SQL["unmark_shared"], {"id": share_id})

    def record_form(self, kind: str, *, user_id: str, team_id: str, channel_id: str, provider: str | None = None,
                    job_id: str | None = None, form_id: str | None = None) -> str:
        """Remember a form about to be opened: who opens it, from which channel, about what. Returns its id (new and
        unguessable unless given), for the form to carry."""
        form_id = form_id or secrets.token_urlsafe(18)
        with self.engine.transaction() as db:
            db.conn.execute(SQL["record_form"], {"form_id": form_id, "kind": kind, "user_id": user_id,
                                                 "team_id": team_id, "channel_id": channel_id, "provider": provider,
                                                 "job_id": job_id, "now": self._clock()})
        return form_id

    def form(self, form_id: str, kind: str) -> dict | None:
        """A form of `kind` the bot opened, as recorded then; None for one it never opened (or long gone)."""
        rows = self.engine.rows(SQL["form"], {"form_id": form_id, "kind": kind})
        return rows[0] if rows else None

    def claim_form(self, form_id: str, kind: str, user_id: str) -> tuple[str, dict | None]:
        """Take a form's submission, once: ('ok', form) for the person who opened it, the first time; else
        ('unknown', None), ('not_yours', None) or ('submitted', None). One transaction, so a replayed or doubled
        submission, in any process, does nothing."""
        with self.engine.transaction() as db:
            row = db.conn.execute(SQL["form"], {"form_id": form_id, "kind": kind}).fetchone()
            if row is None:
                return "unknown", None
            if row["user_id"] != user_id:
                return "not_yours", None
            if row["submitted_at"] is not None:
                return "submitted", None
            db.conn.execute(SQL["mark_submitted"], {"now": self._clock(), "form_id": form_id})
        return "ok", dict(row)

    @staticmethod
    def prune(conn: Any, now: float) -> dict[str, int]:
        """Forget shared answers and open forms past their day, and model calls past their hour."""
        return {
            "shared_answers": conn.execute(SQL["prune_answers"], {"before": now - SHARE_RETENTION_SECONDS}).rowcount,
            "open_forms": conn.execute(SQL["prune_forms"], {"before": now - FORM_RETENTION_SECONDS}).rowcount,
            "model_calls": conn.execute(SQL["prune_model_calls"], {"before": now - 3600}).rowcount,
        }
