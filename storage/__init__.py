"""Storage for finetune-bot (SQLite by default, PostgreSQL through DATABASE_URL): followed jobs, their last known
state, and the announcement outbox."""

from storage.engines import DB_ERRORS
from storage.store import Store

__all__ = ["DB_ERRORS", "Store"]
