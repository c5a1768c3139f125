"""The store: one engine (a SQLite file by default, or PostgreSQL through a URL) and the concerns kept on it, each a
small class of its own. A caller asks the concern: `store.follows.follow(...)`, `store.outbox.claim(...)`."""

from __future__ import annotations

import time
from collections.abc import Callable

from storage.cards import Cards
from storage.channels import ChannelSettings
from storage.engines import DB_ERRORS, describe, open_engine
from storage.follows import Follows
from storage.forms import Forms
from storage.home import Home
from storage.leases import Leases
from storage.moves import MoveStore
from storage.outbox import Outbox
from storage.queries import Queries
from storage.replays import Replays
from storage.spend import SpendStore
from storage.watch import WatchStore
from storage.workspaces import Workspaces

SQL = Queries("store")  # storage/sql/store.sql

class StorageUnavailable(Exception):
    """The database cannot be opened or written; the message is one line meant for the person running the bot."""


class Store:
    """The engine and its concerns: `follows` (jobs and who follows them), `outbox` (posts owed, claimed once),
    `cards` (cards, their edits and progress), `channels` (each channel's settings), `forms` (forms, shares, model
    calls), `replays` (triggers, start intents, webhooks seen once), `leases` (turns), `spend`, `watch`, `moves`,
    `workspaces` (installations, their tokens and provider keys, sealed), `home` (each person's App Home).

    `location` is a SQLite file's path (the default) or a postgresql:// URL; `storage/engines.py` runs the one
    dialect of SQL of every concern on either."""

    def __init__(self, location: str, *, clock: Callable[[], float] = time.time, connections: int | None = None):
        self.path = str(location)
        self._clock = clock
        try:
            self.engine = open_engine(self.path, connections=connections)
        except DB_ERRORS as error:
            raise StorageUnavailable(f"the database at {describe(self.path)} cannot be used: {error}") from None
        self.where = self.engine.where
        try:
            self.engine.migrate()
        except DB_ERRORS as error:
            self.close()
            raise StorageUnavailable(f"the database at {self.where} cannot be used: {error}") from None
        self.follows = Follows(self.engine, clock)
        self.outbox = Outbox(self.engine, clock)
        self.cards = Cards(self.engine, clock)
        self.channels = ChannelSettings(self.engine, clock)
        self.forms = Forms(self.engine, clock)
        self.spend = SpendStore(self.engine, clock)
        self.replays = Replays(self.engine, clock, self.spend)
        self.leases = Leases(self.engine, clock)
        self.watch = WatchStore(self.engine, clock)
        self.moves = MoveStore(self.engine, clock)
        self.workspaces = Workspaces(self.engine, clock)
        self.home = Home(self.engine, clock)

    def connections(self) -> int:
        """How many connections are in use now (SQLite: one per live thread that used the store)."""
        return self.engine.connections()

    def open_connections(self) -> int:
        """PostgreSQL: open the pool's connections now, not in the first burst of work (SQLite: nothing to open)."""
        return self.engine.open_connections()

    def check_writable(self) -> None:
        """Write one row and commit; raises one of DB_ERRORS when the database cannot be written (read-only, full)."""
        with self.engine.transaction() as db:
            db.conn.execute(SQL["check_writable"], {"now": self._clock()})

    def close(self, *, for_good: bool = False) -> None:
        """Close every connection this store made, whichever thread made it (call once its users have stopped). A
        thread that uses the store afterwards opens a new one, unless it was closed `for_good` (its bot stopped)."""
        self.engine.close(for_good=for_good)

    def prune(self) -> dict[str, int]:
        """Forget what each concern keeps only for a while (webhook and trigger ids, closed starts, shared answers,
        an ended job's card edits and thread replies, …), in one transaction. Returns counts removed."""
        now = self._clock()
        with self.engine.transaction() as db:
            return {**self.replays.prune(db.conn, now), **self.forms.prune(db.conn, now),
                    "held_starts": self.spend.prune(db.conn, now), "job_readings": self.watch.prune(db.conn),
                    **self.leases.prune(db.conn, now), **self.outbox.prune(db.conn, now),
                    **self.workspaces.prune(db.conn, now)}
