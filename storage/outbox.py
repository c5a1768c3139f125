"""Queueing into the outbox, shared by the store's concerns: a row's key is what makes its post happen once."""

from __future__ import annotations

import json
from typing import Any


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
