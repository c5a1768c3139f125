"""The embedded SQLite engine (the default): one file in WAL mode, a connection per thread, and a write transaction
that takes the file's lock up front. See storage/engines.py for what every engine offers."""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from storage.migrations import Database, migrations  # (sqlite-utils, imported there with numpy left out)
from storage.queries import driver_params

# How long another process may hold the write lock before we give up (SQLite's busy handler waits meanwhile).
BUSY_TIMEOUT_MS = 30_000


def is_busy(error: sqlite3.Error) -> bool:
    """Another writer holds the lock: wait and try again, keep the connection."""
    text = str(error).lower()
    return "locked" in text or "busy" in text


class _ThreadConnection:
    """One thread's connection, closed when that thread ends: Python drops a thread's locals as the thread exits, and
    this holder (unlike the connection, which sits in reference cycles until a garbage collection) goes at once. So a
    thread that used the store and ended (a pool's worker retired, a one-off thread) leaves no file handle open.

    A connection is never closed under a statement its thread is running: the sqlite3 module does not guard that,
    and the process crashed (a segmentation fault) when a bot stopping past its budget closed the connection of a
    command still writing. One in use when `close()` comes is closed by its thread as the use ends."""

    def __init__(self, db: Database, registry: dict[int, weakref.ref], lock: threading.Lock) -> None:
        self.db = db
        self._registry = registry
        self._lock = lock
        self._busy = threading.RLock()  # (a statement inside its own thread's transaction uses it again)
        self._depth = 0
        self._close_after = False
        with lock:
            registry[id(self)] = weakref.ref(self)  # (not the holder itself: it goes with its thread)

    @contextmanager
    def using(self) -> Iterator[Database]:
        with self._busy:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
        if self._close_after and not self._depth:
            self.close()

    def close(self) -> None:
        if not self._busy.acquire(blocking=False):
            self._close_after = True  # its thread is running a statement on it: closed by that thread when done
            return
        if self._depth:  # (this very thread, inside a use of it: closed as that use ends)
            self._close_after = True
            self._busy.release()
            return
        try:
            with self._lock:
                self._registry.pop(id(self), None)
            try:
                self.db.conn.close()
            except sqlite3.Error:
                pass
        finally:
            self._busy.release()

    def __del__(self) -> None:
        self.close()


class SQLiteEngine:
    """One SQLite file in WAL mode; a connection per thread; writes take the file's lock up front."""

    name = "sqlite"
    # The order rows were queued in: SQLite's own row id. No row locks: a write transaction holds the whole file.
    words = {"queue_order": "rowid", "skip_locked": "", "for_update": ""}

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.where = self.path
        self._local = threading.local()
        self._open: dict[int, weakref.ref] = {}  # every connection's holder, by id: close() closes them all
        self._open_lock = threading.Lock()
        self._closed = False

    def migrate(self) -> None:
        self._use_wal()
        with self.transaction() as db:
            migrations.apply(db)

    def _use_wal(self) -> None:
        """Put the file in WAL mode, waiting for another process that holds the write lock. SQLite does not run the
        busy handler for this one pragma (another writer in rollback mode makes it fail at once), so processes that
        start together on a new file would otherwise fail here; WAL is a property of the file, so once one of them has
        converted it the others find it so and take no lock at all."""
        conn = self.db().conn
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.01
        while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                conn.execute("PRAGMA journal_mode=wal").fetchone()
                return  # converted, or a file that cannot be WAL (in memory): nothing more to wait for
            except sqlite3.OperationalError as error:
                if not is_busy(error) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    def db(self) -> Database:
        return self._held().db

    def _held(self) -> _ThreadConnection:
        held = getattr(self._local, "held", None)
        if held is None:
            if self._closed:
                # A worker still running after its bot stopped gets no new connection to leave open behind it.
                raise sqlite3.ProgrammingError("the store is closed")
            # One connection per thread, used only by it; made shareable so that close() can close them all.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error:
                conn.close()
                raise
            conn.row_factory = sqlite3.Row
            held = _ThreadConnection(Database(conn), self._open, self._open_lock)
            self._local.held = held
        return held

    def connections(self) -> int:
        """How many connections are open now (one per thread that used the store and is still alive)."""
        with self._open_lock:
            return len(self._open)

    def _discard(self) -> None:
        """Drop this thread's connection after an error other than a busy lock: a connection opened while the file
        was read-only (or the disk full) keeps failing after the cause is gone, so the next call opens afresh."""
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            held.close()

    @contextmanager
    def transaction(self, *, row_locks: bool = False) -> Iterator[Database]:
        """A write transaction that takes the lock up front, so read-then-write never hits 'database is locked'
        (`row_locks` asks for no more than the rows it locks: SQLite has only the file's lock)."""
        try:
            with self._held().using() as db:
                db.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.conn.in_transaction:
                        db.conn.execute("ROLLBACK")
                    raise
                else:
                    db.conn.execute("COMMIT")
        except sqlite3.Error as error:
            if not is_busy(error):
                self._discard()
            raise

    def rows(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[dict]:
        """A statement's rows: a read, or one write with RETURNING, committed as it returns (autocommit)."""
        try:
            with self._held().using() as db:
                return [dict(row) for row in db.conn.execute(sql, driver_params(params))]
        except sqlite3.Error as error:
            if not is_busy(error):
                self._discard()
            raise

    def open_connections(self) -> int:
        """(A thread opens its connection to the file when it first uses the store: nothing to open ahead.)"""
        return 0

    def notify(self, topic: str) -> None:
        """(PostgreSQL wakes the other replicas; processes on one SQLite file look on their timers.)"""

    def listen(self, topic: str, on_notify: Callable[[], None], stopping: threading.Event, *,
               presence: str | None = None) -> None:
        """(Nothing to listen to on SQLite: returns at once.)"""

    def gone(self, worker: str) -> bool:
        """(On one SQLite file every process is on this machine: bot.turns.died_here tells.)"""
        return False

    def close(self, *, for_good: bool = False) -> None:
        self._closed = for_good
        with self._open_lock:
            holders = [held for ref in self._open.values() if (held := ref()) is not None]
        for held in holders:
            held.close()  # (one in use this moment: by its thread, as that use ends)
        self._local = threading.local()
