"""Requests seen once: Slack triggers (a replayed form), starts in flight (intents, reconciled after a crash) and
provider webhook deliveries. One concern of the store, over its engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from storage.queries import Queries
from storage.scope import current_workspace

SQL = Queries("replays")  # storage/sql/replays.sql

WEBHOOK_RETENTION_SECONDS = 7 * 86400  # providers redeliver for at most a few days
TRIGGER_RETENTION_SECONDS = 600  # Slack refuses a request older than 5 minutes, so a replay is younger than this
INTENT_RETENTION_SECONDS = 7 * 86400


class Replays:
    """Triggers, start intents and webhook deliveries, each handled once."""

    def __init__(self, engine: Any, clock: Callable[[], float], spend: Any) -> None:
        self.engine = engine
        self._clock = clock
        self.spend = spend  # a start's reservation of its channel's budget counts what the month has committed

    def first_sight_of_trigger(self, trigger_id: str) -> bool:
        """Remember a Slack trigger_id; False when it was seen before (the same signed request, replayed)."""
        with self.engine.transaction() as db:
            return db.conn.execute(SQL["see_trigger"], {"trigger_id": trigger_id, "now": self._clock()}).rowcount == 1

    def record_intent(self, request_id: str, *, team_id: str, channel_id: str, user_id: str,
                      response_url: str | None, training_file: str, model: str, suffix: str | None,
                      provider: str, estimate: float | None = None, approved_by: str | None = None,
                      move_id: str | None = None, budget: float | None = None,
                      month: tuple[float, float] | None = None) -> float | None:
        """Write down a start before the provider is asked, so a crash in between can be reconciled. With a
        `budget`, the start is admitted only if the month's committed spend (`month`: its bounds) with its estimate
        stays within it, decided in the same transaction as the write (starts racing each other are counted):
        returns None when admitted, else the committed spend that refused it (and nothing is written)."""
        with self.engine.transaction() as db:
            if budget is not None and month is not None:
                committed = self.spend.committed(db.conn, channel_id, *month)
                if committed + (estimate or 0) > budget:
                    return committed
            db.conn.execute(SQL["record_intent"], {
                "request_id": request_id, "provider": provider, "team_id": team_id, "channel_id": channel_id,
                "user_id": user_id, "response_url": response_url, "training_file": training_file, "model": model,
                "suffix": suffix, "now": self._clock(), "estimate": estimate, "approved_by": approved_by,
                "move_id": move_id, "workspace": current_workspace() or None})
        return None

    def finish_intent(self, request_id: str, *, job_id: str | None, state: str = "done") -> bool:
        """Close an intent (its response_url, a credential, is forgotten); False when another process closed it."""
        with self.engine.transaction() as db:
            return db.conn.execute(SQL["finish_intent"], {"state": state, "job_id": job_id,
                                                          "request_id": request_id}).rowcount == 1

    def claim_orphaned_intents(self, *, older_than: float, worker: str) -> list[dict]:
        """Pending starts older than `older_than` seconds (whoever made them is gone), each handed to one caller."""
        cutoff = self._clock() - older_than
        with self.engine.transaction() as db:
            rows = [dict(r) for r in db.conn.execute(SQL["orphaned_intents"], {"cutoff": cutoff})]
            db.conn.executemany(SQL["reconcile_intent"], [{"state": f"reconciling:{worker}",
                                                            "request_id": r["request_id"]} for r in rows])
        return rows

    def reopen_intent(self, request_id: str) -> None:
        """Hand a start back for a later reconciling pass (the provider could not be asked this time)."""
        with self.engine.transaction() as db:
            db.conn.execute(SQL["reopen_intent"], {"request_id": request_id})

    def remember_webhook(self, webhook_id: str) -> bool:
        """Remember a webhook delivery; False when it was handled before (the provider delivered it again)."""
        with self.engine.transaction() as db:
            return db.conn.execute(SQL["remember_webhook"], {"webhook_id": webhook_id, "now": self._clock()}
                                   ).rowcount == 1

    @staticmethod
    def prune(conn: Any, now: float) -> dict[str, int]:
        """Forget webhook ids and trigger ids once no replay can come, and closed starts after a week."""
        return {
            "webhook_deliveries": conn.execute(SQL["prune_webhooks"],
                                               {"before": now - WEBHOOK_RETENTION_SECONDS}).rowcount,
            "seen_triggers": conn.execute(SQL["prune_triggers"], {"before": now - TRIGGER_RETENTION_SECONDS}).rowcount,
            "start_intents": conn.execute(SQL["prune_intents"], {"before": now - INTENT_RETENTION_SECONDS}).rowcount,
        }
