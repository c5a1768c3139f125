"""Replicas on PostgreSQL waking each other: NOTIFY when there is something to do, LISTEN on a connection of its
own (outside the pool) for when another replica says so. SQLite has no such thing: its processes look on timers."""

from __future__ import annotations

import threading
from collections.abc import Callable

LISTEN_POLL_S = 1.0  # how often a listening replica looks whether it is stopping
# The class of the session advisory locks that say a replica is running (two-key locks: apart from the write lock's
# one-key space), the second key the server's hashtext() of its worker id.
PRESENCE_CLASS = 0x66746270  # "ftbp"


def listen(conninfo: str, topic: str, on_notify: Callable[[], None], stopping: threading.Event, *,
           connect_timeout: float, presence: str | None = None) -> None:
    """Call `on_notify` each time `topic` is notified (and once when listening begins, for whatever was queued
    while it was not), until `stopping` is set; the connection is made again after the server goes away. With
    `presence` (this process's worker id), the connection also holds that worker's presence lock while it lives:
    when the process dies, wherever it ran, the server ends its session and the lock is free."""
    import psycopg

    pause = 0.5
    while not stopping.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=int(connect_timeout),
                                 application_name="finetune-bot-listen") as conn:
                conn.execute(f"LISTEN {_quoted(topic)}")
                if presence is not None:
                    conn.execute("SELECT pg_advisory_lock(%s::int, hashtext(%s))", (PRESENCE_CLASS, presence))
                    conn.execute("INSERT INTO presences (worker_id, since) VALUES (%s, extract(epoch FROM now()))"
                                 " ON CONFLICT (worker_id) DO UPDATE SET since = excluded.since", (presence,))
                on_notify()
                pause = 0.5
                while not stopping.is_set():
                    for _ in conn.notifies(timeout=LISTEN_POLL_S):
                        on_notify()
        except psycopg.Error:
            stopping.wait(pause)  # the server away: the timers deliver meanwhile; listened to again once it is back
            pause = min(pause * 2, 10.0)


def _quoted(topic: str) -> str:
    """A topic's name as an identifier: ours are fixed words; anything else is refused, never quoted in."""
    if not topic.replace("_", "").isalnum():
        raise ValueError(f"not a topic name: {topic!r}")
    return topic
