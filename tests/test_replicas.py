"""Several processes (replicas) on one database: each periodic task runs in one of them per interval, and a process
that dies hands its turns on. On SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
import os
import socket
from dataclasses import replace

from bot.app import build
from bot.turns import Turns
from storage import Store
from storage.engines import is_postgres


def _on(settings, database: str):
    return replace(settings, database_url=database) if is_postgres(database) else replace(settings,
                                                                                          database_path=database)


def test_replicas_poll_once_per_interval_and_a_dead_ones_turn_passes_on(settings, provider, database):
    now = [1_000_000.0]
    settings = replace(_on(settings, database), poll_interval_seconds=1.0)
    # (Workers named on other machines: a holder here that is gone would hand over at once, as the next test shows.)
    bots = [build(settings, clock=lambda: now[0], worker_id=f"replica-{n}.example:1{n}:x") for n in range(3)]
    try:
        for _ in range(3):
            bots[0].services.store.follow("C1", provider.add_job(status="running"), final=False, team_id="T",
                                          user_id="U", origin="subscribe")
        polls = [bot.scheduler.get_job("poll").func for bot in bots]
        asked = []
        for _ in range(4):
            for poll in polls:  # every replica's scheduler fires in each interval
                before = len(provider.received)
                poll()
                asked.append(len(provider.received) - before)
            now[0] += 1.0
        # One replica asks the provider each interval; the others skip theirs.
        assert [n > 0 for n in asked] == [True, False, False] * 4
        # The first replica dies (its scheduler fires no more). Its turn lasts two intervals from its last run: one
        # interval is skipped, and the next replica to ask at the second takes over.
        asked = []
        for _ in range(3):
            for poll in polls[1:]:
                before = len(provider.received)
                poll()
                asked.append(len(provider.received) - before)
            now[0] += 1.0
        assert [n > 0 for n in asked] == [False, False, True, False, True, False]
        assert bots[1].services.store.turn_holder("poll") == "replica-1.example:11:x"
    finally:
        for bot in bots:
            bot.stop(timeout=2)


def _exit_at_once() -> None:
    return None


def test_a_turn_held_by_a_process_gone_from_this_machine_is_taken_at_once(database):
    """A bot restarted after a crash on the same machine catches up now, not when its predecessor's turn ends; a
    live process's turn stays its own."""
    process = multiprocessing.get_context("spawn").Process(target=_exit_at_once)
    process.start()
    process.join(30)
    host = socket.gethostname()
    store = Store(database)
    ran = []
    try:
        assert store.take_turn("poll", f"{host}:{process.pid}:dead", hold=3600)
        assert store.take_turn("progress", f"{host}:{os.getppid()}:alive", hold=3600)
        turns = Turns(store, f"{host}:{os.getpid()}:me")
        turns.one_at_a_time("poll", lambda: ran.append("poll"), hold=2)()
        turns.one_at_a_time("progress", lambda: ran.append("progress"), hold=2)()
        assert ran == ["poll"] and store.turn_holder("poll") == f"{host}:{os.getpid()}:me"
        turns.give_back()
        assert Turns(store, "elsewhere:1:x").one_at_a_time("poll", lambda: ran.append("next"), hold=2)() is None
        assert ran == ["poll", "next"]  # given back at stop: the next process asking has it at once
    finally:
        store.close()
