"""Where the store's SQL runs: the embedded SQLite file (the default) or a PostgreSQL server (`DATABASE_URL`).

The store writes one dialect of SQL with `?` placeholders (tests/test_schema.py has a real PostgreSQL plan every
statement it runs). An engine owns what differs: connections and their pool, how a write transaction takes the
lock that makes read-then-write safe across threads, processes and replicas, the few words each spells its own way,
the schema's creation, and which errors mean "try again". SQLAlchemy and psycopg are imported by the PostgreSQL engine
only, so the SQLite bot does not carry them (about 30 MB).
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from storage.migrations import apply_postgres
from storage.queries import driver_params
from storage.sqlite_engine import SQLiteEngine, is_busy


class DatabaseError(Exception):
    """PostgreSQL refused or could not be reached; SQLite's errors stay sqlite3.Error. Catch `DB_ERRORS` for both."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, DatabaseError)


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))


def describe(location: str) -> str:
    """Where the database is, for a log line or an error: a file's path, or a server's host, port and database with
    no user or password (the URL's secret part never reaches a log, a message or /healthz)."""
    if not is_postgres(location):
        return location
    parts = urlsplit(location)
    host = parts.hostname or "localhost"
    return f"PostgreSQL database {parts.path.lstrip('/') or '(default)'!r} on {host}:{parts.port or 5432}"


def open_engine(location: str, *, connections: int | None = None):
    """An engine for a file path or a postgresql:// URL (`connections`: the PostgreSQL pool's size; None: POOL_SIZE)."""
    if not is_postgres(location):
        return SQLiteEngine(location)
    return PostgresEngine(location, pool_size=connections or POOL_SIZE)


def is_transient(error: Exception) -> bool:
    """Whether an error is worth waiting out (a lock held elsewhere, a server restarting), not a fault of ours."""
    if isinstance(error, DatabaseError):
        return error.transient
    return isinstance(error, sqlite3.Error) and is_busy(error)


# -- PostgreSQL ---------------------------------------------------------------------------------------

# The key of the transaction-scoped advisory lock every write transaction takes: what BEGIN IMMEDIATE is on SQLite.
# Writes are a few milliseconds each, so one at a time across all replicas costs nothing this bot can notice, and the
# store's read-then-write methods keep the one meaning they have on SQLite. (Arbitrary, fixed: "ftbot" in ASCII.)
WRITE_LOCK = 0x6674626F74
MIGRATION_LOCK = WRITE_LOCK + 1
STATEMENT_TIMEOUT_MS = 15_000  # a stuck query never holds an ack or a poll cycle for longer
LOCK_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5
POOL_SIZE = 8  # a store's connections kept open for reuse (the bot sizes its own: bot.app.CONNECTIONS)
POOL_OVERFLOW = 8  # more, opened when that many are busy at once and closed when given back
POOL_WAIT_S = 10
# SQLSTATE classes and codes worth waiting out: a lost connection, the server starting or shutting down, a lock
# or statement timeout, a deadlock or serialization failure, too many connections.
TRANSIENT_STATES = ("08", "57P", "53300", "55P03", "57014", "40001", "40P01")
_PLACEHOLDER = re.compile(r"\?")
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class Row:
    """A row by column name or by position, as sqlite3.Row is, so the store reads both engines' rows alike."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._index[key]] if isinstance(key, str) else self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _row_factory(cursor):  # noqa: ANN001, ANN202 - psycopg's RowFactory protocol
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


@functools.lru_cache(maxsize=512)
def _to_pyformat(sql: str, named: bool = False) -> str:
    """The store's placeholders as psycopg's (a literal % doubled): `?` as `%s`, or with `named` parameters (a dict)
    `:name` as `%(name)s`. The store's SQL has neither in a string, and a cast (`::int`) is not a name."""
    sql = sql.replace("%", "%%")
    return _NAMED.sub(r"%(\1)s", sql) if named else _PLACEHOLDER.sub("%s", sql)


class _PostgresConnection:
    """A pooled psycopg connection that speaks the store's SQL (`?` placeholders, or `:name` with a dict)."""

    def __init__(self, raw) -> None:  # noqa: ANN001 - SQLAlchemy's pooled DBAPI connection
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()):  # noqa: ANN201 - a psycopg cursor
        cursor = self.raw.cursor()
        cursor.execute(_to_pyformat(sql, isinstance(params, Mapping)), driver_params(params))
        return cursor

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]):  # noqa: ANN201
        cursor = self.raw.cursor()
        seq = [driver_params(p) for p in seq]
        cursor.executemany(_to_pyformat(sql, bool(seq) and isinstance(seq[0], dict)), seq)
        return cursor


class _Unit:
    """What a transaction hands the store: `.conn`, as sqlite-utils' Database has."""

    def __init__(self, conn: _PostgresConnection) -> None:
        self.conn = conn


def _sqlalchemy_url(location: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if location.startswith(prefix):
            return "postgresql+psycopg://" + location[len(prefix):]
    raise ValueError("not a PostgreSQL URL")


# What a failed connection says, and the one line we say for it (the server's words carry no password).
_CONNECT_CAUSES = (
    ("password authentication failed", "the server refused the password (check DATABASE_URL's user and password)"),
    ("no password supplied", "the server asks for a password and DATABASE_URL has none"),
    ("does not exist", None),  # a missing database or user: the server's own words name which
    ("connection refused", "nothing answers there (connection refused): is the server running, and the port right?"),
    ("timeout expired", "the server did not answer in time (a firewall, or the wrong host?)"),
    ("could not translate host name", "its host name is not known (check DATABASE_URL's host)"),
    ("name or service not known", "its host name is not known (check DATABASE_URL's host)"),
    ("too many connections", "the server has no connection to spare (too many clients)"),
    ("is starting up", "the server is still starting; try again in a moment"),
    ("shutting down", "the server is shutting down"),
    ("ssl", None),
)


def _translate(error: Exception) -> DatabaseError:
    """A psycopg or pool error as ours: one line, no URL, no password; transient when waiting may cure it."""
    import psycopg
    from sqlalchemy import exc

    if isinstance(error, exc.TimeoutError):
        return DatabaseError("no free connection in the pool (every one busy)", transient=True)
    original = getattr(error, "orig", None) or error
    state = getattr(original, "sqlstate", None) or ""
    transient = isinstance(original, psycopg.OperationalError) or state.startswith(TRANSIENT_STATES)
    lines = [line.strip() for line in str(original).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(original).__name__
    if "FATAL:" in first:  # "connection to server at … failed: FATAL:  database "x" does not exist"
        first = first.split("FATAL:", 1)[1].strip()
    lowered = first.lower()
    for words, said in _CONNECT_CAUSES:
        if words in lowered:
            first = said or first
            break
    return DatabaseError(first, transient=transient)


class PostgresEngine:
    """A PostgreSQL server through SQLAlchemy's pool and psycopg 3; every write transaction takes one advisory lock."""

    name = "postgresql"
    # The identity column the declared outbox has for the queue order; row locks that skip rows another holds.
    words = {"queue_order": "seq", "skip_locked": " FOR UPDATE SKIP LOCKED", "for_update": " FOR UPDATE"}

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        from sqlalchemy import create_engine

        self.where = describe(url)
        self.pool_size = pool_size
        options = f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={LOCK_TIMEOUT_MS}"
        self.engine = create_engine(
            _sqlalchemy_url(url), pool_size=pool_size, max_overflow=POOL_OVERFLOW, pool_timeout=POOL_WAIT_S,
            pool_recycle=1800, hide_parameters=True,  # (a dropped connection is replaced on first use, not pinged)
            connect_args={"connect_timeout": int(connect_timeout), "options": options,
                          "application_name": "finetune-bot"},
        )
        self._closed = False

    def migrate(self) -> None:
        """Create the declared tables in a new database, or apply to an existing one the steps it has not had; once,
        however many replicas start together: a session advisory lock makes the others wait for the first, then
        find everything done."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
                try:
                    apply_postgres(conn)
                    # Fresh planner statistics at every start: a table filled since the last autovacuum (a restore, a
                    # burst of follows) would otherwise be planned as if nearly empty.
                    conn.exec_driver_sql("ANALYZE")
                    conn.commit()
                finally:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
                    conn.commit()
        except DatabaseError:
            raise
        except Exception as error:  # noqa: BLE001 - every driver and pool error becomes one line of ours
            raise _translate(error) from None

    @contextmanager
    def _connection(self, first: str, params: Sequence[Any] | Mapping[str, Any] = (), *,
                    autocommit: bool) -> Iterator[tuple[_PostgresConnection, Any]]:
        """A pooled connection with its first statement run: (the connection, that statement's cursor). A pooled
        connection the server dropped meanwhile (it restarted, a failover) fails on that first statement and is
        replaced once, so no round trip is spent checking each connection before use. Reads run in autocommit (one
        round trip); a transaction commits when the block ends."""
        for attempt in (1, 2):
            raw = self._checkout(autocommit)
            conn = _PostgresConnection(raw)
            try:
                cursor = conn.execute(first, params)
            except BaseException as error:
                broken = self._end(raw)
                raw.close()
                if broken and attempt == 1 and _is_driver_error(error):
                    continue
                if _is_driver_error(error):
                    raise _translate(error) from None
                raise
            break
        try:
            yield conn, cursor
            raw.commit()
        except DatabaseError:
            self._end(raw)
            raise
        except BaseException as error:
            broken = self._end(raw)
            if broken or _is_driver_error(error):
                raise _translate(error) from None
            raise
        finally:
            raw.close()  # back to the pool (rolled back there if still open)

    def _checkout(self, autocommit: bool):  # noqa: ANN202 - SQLAlchemy's pooled DBAPI connection
        if self._closed:
            raise DatabaseError("the store is closed")
        try:
            raw = self.engine.raw_connection()
        except Exception as error:  # noqa: BLE001
            raise _translate(error) from None
        driver = raw.driver_connection
        driver.row_factory = _row_factory
        if driver.autocommit != autocommit:
            driver.autocommit = autocommit
        return raw

    @staticmethod
    def _end(raw) -> bool:  # noqa: ANN001
        """Roll back after a failure; a connection that cannot even do that is dropped from the pool."""
        try:
            if raw.driver_connection.closed or raw.driver_connection.broken:
                raise ConnectionError
            raw.rollback()
            return False
        except Exception:  # noqa: BLE001 - the connection is gone; the pool makes a new one
            raw.invalidate()
            return True

    @contextmanager
    def transaction(self, *, row_locks: bool = False) -> Iterator[_Unit]:
        """A write transaction holding the write lock every other one takes; with `row_locks`, one that locks only
        the rows it reads FOR UPDATE (each of its statements must be safe beside the lock-holding writers: a claim)."""
        first = "SELECT 1" if row_locks else f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        with self._connection(first, autocommit=False) as (conn, _):
            yield _Unit(conn)

    def rows(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[dict]:
        """A statement's rows: a read, or one write with RETURNING, committed as it returns (autocommit)."""
        with self._connection(sql, driver_params(params), autocommit=True) as (_, cursor):
            return [dict(row) for row in cursor]

    def connections(self) -> int:
        """Connections checked out of the pool now (the pool keeps idle ones open for reuse: that is its job)."""
        return self.engine.pool.checkedout()

    def open_connections(self) -> int:
        """Open the pool's connections now, before the first burst of work wants them: each new one is a server
        process and a SCRAM exchange (about 16 ms of CPU on the two ends), which a burst of commands would otherwise
        pay, one connection at a time, just when every core is wanted. They are opened side by side, so a server
        far away costs the start one connection's round trips, not one per connection. Returns how many the pool
        now keeps open; raises (having given back what it opened) when the server refused any."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.pool_size, thread_name_prefix="finetune-connect") as opening:
            # (all held at once: an idle one taken is not counted twice)
            attempts = [opening.submit(self._checkout, True) for _ in range(self.pool_size)]
        refused = None
        for attempt in attempts:
            try:
                attempt.result().close()  # back to the pool, which keeps up to pool_size
            except DatabaseError as error:
                refused = refused or error
        if refused is not None:
            raise refused
        return self.engine.pool.checkedin()

    def notify(self, topic: str) -> None:
        """Wake every replica listening on `topic` (PostgreSQL's NOTIFY: one statement, delivered at once)."""
        with self._connection("SELECT pg_notify(?, '')", (topic,), autocommit=True):
            pass

    def listen(self, topic: str, on_notify: Callable[[], None], stopping: threading.Event, *,
               presence: str | None = None) -> None:
        """Call `on_notify` each time a replica notifies `topic`, until `stopping` is set (storage/notify.py); with
        `presence`, holding that worker's presence lock meanwhile."""
        from storage.notify import listen

        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        listen(conninfo, topic, on_notify, stopping, connect_timeout=CONNECT_TIMEOUT_S, presence=presence)

    def gone(self, worker: str) -> bool:
        """Whether `worker` announced its presence lock and no longer holds it: its process ended, on whichever host
        (one statement; the lock it tries is the transaction's, let go at once)."""
        from storage.notify import PRESENCE_CLASS

        with self._connection("SELECT EXISTS (SELECT 1 FROM presences WHERE worker_id = ?)"
                              " AND pg_try_advisory_xact_lock(?::int, hashtext(?))", (worker, PRESENCE_CLASS, worker),
                              autocommit=True) as (_, cursor):
            return bool(cursor.fetchone()[0])

    def close(self, *, for_good: bool = False) -> None:
        self._closed = for_good
        self.engine.dispose()


def _is_driver_error(error: BaseException) -> bool:
    import psycopg
    from sqlalchemy import exc

    return isinstance(error, (psycopg.Error, exc.SQLAlchemyError))
