"""SQLite storage for finetune-bot: followed jobs, their last known state, and the announcement outbox."""

from storage.store import Store

__all__ = ["Store"]
