"""Work done once per interval across every process on the database (replicas), not once per process each."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from storage import DB_ERRORS, Store

log = logging.getLogger(__name__)


class Turns:
    """The poll cycle, the metric reads and the maintenance take turns through the database: the process holding a
    task's turn runs it and keeps the turn while it keeps running it; the others skip theirs. A holder that dies is
    replaced within `hold` seconds (two intervals); one that stops gives its turns back at once."""

    def __init__(self, store: Store, worker_id: str) -> None:
        self.store = store
        self.worker = worker_id
        self.held: set[str] = set()
        self.departures = Departures(store)
        self._away = False  # the database could not be asked: said once when it goes, once when it is back
        self._away_lock = threading.Lock()

    def one_at_a_time(self, name: str, task: Callable[[], object], *, hold: float) -> Callable[[], object]:
        """`task`, run only by the process holding the turn `name` (taken, or kept, for `hold` seconds)."""

        def run() -> object:
            if not self._take(name, hold):
                return None
            try:
                return task()
            finally:
                self._take(name, hold)  # kept from the end of this run: a long run does not lose it to the next

        return run

    def _take(self, name: str, hold: float) -> bool:
        try:
            mine = self.store.leases.take_turn(name, self.worker, hold=hold)
            if not mine:
                # A holder on this machine whose process is gone (killed, crashed; restarted as this one) hands over
                # at once: a bot restarted after a crash catches up now, not when its predecessor's turn ends.
                holder = self.store.leases.turn_holder(name)
                mine = holder is not None and self.departures.gone(holder) and self.store.leases.take_turn(
                    name, self.worker, hold=hold, from_holder=holder)
        except DB_ERRORS as error:
            with self._away_lock:
                said, self._away = self._away, True
            if not said:  # (every task asks every interval: two lines a second at a 1 s interval, once)
                log.warning("could not ask the database whose turn %s is (%s); the scheduled work waits until it "
                            "answers, and says so once it does", name, error)
            self.held.discard(name)
            return False
        with self._away_lock:
            back, self._away = self._away, False
        if back:
            log.info("the database answers again; the scheduled work goes on")
        (self.held.add if mine else self.held.discard)(name)
        return mine

    def give_back(self) -> None:
        """At stop: every turn this process holds goes to the next process that asks."""
        if not self.held:
            return
        try:
            self.store.leases.end_turns(self.worker, sorted(self.held))
        except DB_ERRORS as error:
            log.warning("could not give back this process's turns (%s); they pass on when they end", error)
        self.held.clear()


# A channel's posts are made by one process at a time (replicas, or two processes on one file): the one holding its
# turn in the database, which keeps the channel's pace and Slack's Retry-After. Renewed when less than
# CHANNEL_TURN_RENEW is left, so a holder's last post is always that long before its turn can pass: by then a new
# holder's full hand of posts is what Slack allows.
CHANNEL_TURN = 10.0
CHANNEL_TURN_RENEW = 5.0
# A channel another live process holds is asked about again after this long, not at every row of every run (three
# replicas woken by every queued post asked each time: a failed take is a write under the lock). A dead holder is
# still replaced within this, or at once by a process that starts after it.
ELSEWHERE_RECHECK = 1.0
ELSEWHERE_KEPT = 4096


class ChannelTurns:
    """The channels whose posts this process makes now, through the database's turns (`channel:<id>`)."""

    def __init__(self, store: Store, worker: str, *, clock: Callable[[], float],
                 on_takeover: Callable[[str], None]) -> None:
        self.store = store
        self.worker = worker
        self.clock = clock
        self.on_takeover = on_takeover  # a channel taken from a holder that died
        self.departures = Departures(store)
        self._held: dict[str, float] = {}  # per channel whose turn this process holds: until when
        self._slack_waits: dict[str, float] = {}  # per channel: Slack's Retry-After here, which nothing goes before
        self._elsewhere: dict[str, float] = {}  # per channel another live process holds: when to ask again

    def mine(self, channel: str) -> bool:
        """Whether this process may post in `channel` now (its turn, taken or kept here; kept at least until the end
        of Slack's wait there)."""
        now = self.clock()
        held_until = self.slack_wait(channel)
        if self._held.get(channel, 0) - now > CHANNEL_TURN_RENEW:
            return True
        if self._elsewhere.get(channel, 0) > now:
            return False
        name = f"channel:{channel}"
        if self.store.leases.take_turn(name, self.worker, hold=CHANNEL_TURN, at_least_until=held_until):
            self._held[channel] = max(now + CHANNEL_TURN, held_until)
            return True
        # Its holder died (on this machine, or on PostgreSQL anywhere): taken over now, not when its turn ends. A
        # wait Slack asked of the dead holder is kept by the channel's rows, deferred until then.
        holder = self.store.leases.turn_holder(name)
        if holder is not None and self.departures.gone(holder) and self.store.leases.take_turn(
                name, self.worker, hold=CHANNEL_TURN, at_least_until=held_until, from_holder=holder):
            log.info("took over %s from %s, which is no longer running", name, holder)
            self._held[channel] = max(now + CHANNEL_TURN, held_until)
            self.on_takeover(channel)
            return True
        self._held.pop(channel, None)
        if len(self._elsewhere) >= ELSEWHERE_KEPT:  # (channels once seen elsewhere: only the current ones kept)
            self._elsewhere = {c: until for c, until in self._elsewhere.items() if until > now}
        self._elsewhere[channel] = now + ELSEWHERE_RECHECK
        return False

    def keep_until(self, channel: str, at: float) -> None:
        """Slack asked this process to wait in `channel` until `at`: the channel stays its own until then."""
        self._slack_waits[channel] = max(self.slack_wait(channel), at)
        self.store.leases.take_turn(f"channel:{channel}", self.worker, hold=CHANNEL_TURN, at_least_until=at)
        self._held[channel] = max(self._held.get(channel, 0), at)

    def slack_wait(self, channel: str) -> float:
        """Until when Slack asked this process to wait in `channel` (0: it did not)."""
        return self._slack_waits.get(channel, 0.0)

    def give_back(self) -> None:
        """Every channel held here passes to the next process that asks, except those Slack asked to wait."""
        now = self.clock()
        free = [f"channel:{c}" for c in self._held if self.slack_wait(c) <= now]
        self._held.clear()
        if free:
            self.store.leases.end_turns(self.worker, free)


def worker_id(tag: str) -> str:
    """This process's name in the turns it takes: its host, its process id, and a tag for one bot among several."""
    return f"{socket.gethostname()}:{os.getpid()}:{tag}"


class Departures:
    """Whether a turn's holder has ended, so that its turns are taken over at once rather than when they run out: a
    process on this machine (its pid is gone), or on PostgreSQL a replica on any host (its presence lock is free:
    the server ended its session). A holder found alive is not asked about again for ALIVE_FOR seconds."""

    ALIVE_FOR = 2.0

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._alive: dict[str, float] = {}  # holder -> until when it is taken as running

    def gone(self, holder: str) -> bool:
        if died_here(holder):
            return True
        now = self.clock()
        if self._alive.get(holder, 0.0) > now:
            return False
        gone = self.store.leases.gone(holder)  # (DB errors reach the caller, which waits out the outage)
        if not gone:
            if len(self._alive) > 1000:
                self._alive.clear()
            self._alive[holder] = now + self.ALIVE_FOR
        return gone


def died_here(holder: str) -> bool:
    """Whether `holder` names a process on this machine that is no longer running."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False
