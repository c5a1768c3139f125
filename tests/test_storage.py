"""Storage on a real SQLite file and a real PostgreSQL server: schema, subscriptions, the outbox, and two processes
at once."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pathlib
import re
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlite_utils import Database

from bench.processes import wait_until
from storage import Store
from storage.migrations import migrations
from tests.conftest import claim_due, start_intents
from tests.storage_processes import hammer, open_store

ROOT = pathlib.Path(__file__).resolve().parent.parent

EXPECTED_COLUMNS = {
    "jobs": ["provider", "id", "status", "state", "final", "model", "fine_tuned_model", "trained_tokens",
             "training_file", "suffix", "created_at", "finished_at", "error_code", "error_message", "observed_at",
             "polled_at", "revision", "cost", "estimate", "approved_by", "metrics_read_at"],
    "subscriptions": ["channel_id", "provider", "job_id", "team_id", "user_id", "origin", "created_at",
                      "delivery_error", "card_ts", "card_revision", "progress_at", "progress_step"],
    "announcements": ["key", "job_id", "channel_id", "outcome", "user_id", "state", "attempts", "created_at",
                      "next_attempt_at", "lease_until", "claimed_by", "uncertain", "sent_at", "message_ts",
                      "last_error", "origin", "kind", "about_channel", "provider", "detail"],
    "webhook_deliveries": ["webhook_id", "received_at"],
    "start_intents": ["request_id", "team_id", "channel_id", "user_id", "response_url", "training_file", "model",
                      "suffix", "created_at", "state", "job_id", "provider", "estimate", "approved_by", "move_id",
                      "workspace"],
    "seen_triggers": ["trigger_id", "seen_at"],
    "health": ["id", "written_at"],
    "shared_answers": ["id", "user_id", "channel_id", "message", "created_at", "shared_at"],
    "channel_settings": ["workspace", "channel_id", "outcomes", "mentions", "updated_by", "updated_at", "cards",
                         "progress", "progress_minutes", "confirm_above", "budget", "watchdog"],
    "open_forms": ["form_id", "kind", "user_id", "team_id", "channel_id", "provider", "job_id", "created_at",
                   "submitted_at"],
    "leases": ["name", "holder", "held_until"],
    "file_tokens": ["provider", "file_id", "model", "billable_per_epoch", "examples", "counted_at"],
    "held_starts": ["id", "team_id", "channel_id", "user_id", "provider", "command", "estimate", "reason",
                    "created_at", "expires_at", "state", "decided_by", "decided_at", "message_ts", "workspace"],
    "job_readings": ["provider", "job_id", "step", "train_loss", "valid_loss", "read_at"],
    "watch_marks": ["provider", "job_id", "kind", "detail", "at", "said_at"],
    "moves": ["id", "team_id", "channel_id", "user_id", "source_provider", "source_job", "target_provider", "options",
              "state", "new_job", "note", "created_at", "updated_at", "lease_until"],
    "moved_files": ["provider", "sha256", "file_id", "uploaded_at"],
    "model_calls": ["id", "user_id", "at", "count"],
    "installations": ["key", "enterprise_id", "team_id", "is_enterprise_install", "app_id", "bot_user_id", "bot_id",
                      "bot_scopes", "bot_token", "bot_refresh_token", "bot_token_expires_at", "installer_user_id",
                      "installed_at", "refresh_holder", "refresh_until"],
    "oauth_states": ["state", "expires_at"],
    "workspace_keys": ["workspace", "provider", "sealed", "last4", "set_by", "set_at"],
    "channel_workspaces": ["channel_id", "workspace", "seen_at"],
    "home_refreshes": ["user_id", "due_at"],
    "job_owners": ["provider", "job_id", "workspace", "claimed_at"],
    "presences": ["worker_id", "since"],
}
MIGRATIONS = ["m001_initial", "m002_foundation", "m003_providers", "m004_shared_answers", "m005_channel_settings",
              "m006_cards", "m007_shared_once", "m008_forms_and_indexes", "m009_leases",
              "m010_spend_and_watchdog", "m011_watch_marks_said", "m012_moves", "m013_workspaces",
              "m014_home", "m015_job_owners", "m016_presences", "m017_workspace_scope"]


def _job(job_id="ftjob-1", status="running", **extra):
    return {"provider": "openai", "id": job_id, "status": status, "model": "m", "created_at": 100, **extra}


def test_migrations_build_the_schema(tmp_path):
    path = tmp_path / "fresh.db"
    Store(str(path)).close()
    db = Database(str(path))
    tables = {t: [c.name for c in db[t].columns] for t in db.table_names() if not t.startswith("_")}
    assert tables == EXPECTED_COLUMNS
    assert [m.name for m in migrations.applied(db)] == MIGRATIONS
    assert db.journal_mode == "wal"
    Store(str(path)).close()  # applying again is a no-op
    assert len(migrations.applied(Database(str(path)))) == len(MIGRATIONS)


def test_follow_and_unfollow(database):
    store = Store(database)
    assert store.follows.follow("C1", _job(), final=False, team_id="T", user_id="U", origin="start")
    assert not store.follows.follow("C1", _job(), final=False, team_id="T", user_id="U", origin="subscribe")
    assert store.follows.follow("C2", _job(), final=False, team_id="T", user_id="U2", origin="subscribe")
    assert [r["job_id"] for r in store.follows.channel_follows("C1")] == ["ftjob-1"]
    assert [j["id"] for j in store.follows.active_jobs()] == ["ftjob-1"]
    assert store.follows.unfollow("C1", "ftjob-1", "openai") and not store.follows.unfollow("C1", "ftjob-1", "openai")
    assert store.follows.unfollow("C2", "ftjob-1", "openai")
    assert store.follows.active_jobs() == [] and not store.follows.has_active_jobs()


def test_an_outcome_is_queued_once_per_channel(database):
    store = Store(database)
    for channel in ("C1", "C2"):
        store.follows.follow(channel, _job(), final=False, team_id="T", user_id="U", origin="start")
    assert store.follows.record_jobs([(_job(status="queued"), None)]) == 0
    assert store.follows.record_jobs([(_job(status="succeeded", fine_tuned_model="ft:m"), "succeeded")]) == 2
    assert store.follows.record_jobs([(_job(status="succeeded"), "succeeded")]) == 0
    assert store.follows.record_jobs([(_job(status="running"), None)]) == 0  # a final job never goes back
    assert store.follows.job("ftjob-1", "openai")["status"] == "succeeded"
    assert sorted(a["key"] for a in store.outbox.announcements()) == ["openai:ftjob-1:C1:succeeded",
                                                                "openai:ftjob-1:C2:succeeded"]


def test_unfollowed_jobs_are_not_recorded(database):
    store = Store(database)
    assert store.follows.record_jobs([(_job("ftjob-unknown", "succeeded"), "succeeded")]) == 0
    assert store.follows.job("ftjob-unknown", "openai") is None


def test_claims_expire_and_are_taken_over_as_uncertain(database):
    now = [1000.0]
    store = Store(database, clock=lambda: now[0])
    store.follows.follow("C1", _job(), final=False, team_id="T", user_id="U", origin="start")
    store.follows.record_jobs([(_job(status="failed"), "failed")])
    [claimed] = claim_due(store, "a", limit=10, lease_seconds=30)
    assert claimed["uncertain"] == 0 and claimed["outcome"] == "failed"
    assert claim_due(store, "b", limit=10, lease_seconds=30) == []
    now[0] += 31  # "a" died holding the claim
    [taken] = claim_due(store, "b", limit=10, lease_seconds=30)
    assert taken["uncertain"] == 1 and taken["claimed_by"] == "b"
    assert not store.outbox.mark_sent(taken["key"], "a", "1.1")  # the dead holder's late answer changes nothing
    assert store.outbox.mark_sent(taken["key"], "b", "1.2")
    assert store.outbox.announcements(state="sent")[0]["message_ts"] == "1.2"


def test_two_processes_on_one_database_queue_and_claim_each_announcement_once(database):
    path = database
    store = Store(path)
    jobs = 150
    for i in range(jobs):
        for channel in ("C1", "C2"):
            store.follows.follow(channel, _job(f"ftjob-{i}"), final=False, team_id="T", user_id="U", origin="start")
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=hammer, args=(path, f"w{n}", jobs, out)) for n in range(2)]
    for w in workers:
        w.start()
    results = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0  # no "database is locked"
    sent = results[0] + results[1]
    assert len(sent) == len(set(sent)) == jobs * 2
    assert len(store.outbox.announcements(state="sent")) == jobs * 2


def _open_together(location: str, processes: int = 4) -> None:
    """Open a store at `location` from several processes at once; each must come up."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    procs = [context.Process(target=open_store, args=(location, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    assert sorted(out.get(timeout=60) for _ in procs) == ["ok"] * processes
    for p in procs:
        p.join(timeout=30)


@pytest.mark.heavy(15)
def test_migrations_from_processes_starting_together_do_not_collide(tmp_path):
    for round_ in range(3):
        path = str(tmp_path / f"race{round_}.db")
        _open_together(path)
        assert len(migrations.applied(Database(path))) == len(MIGRATIONS)


@pytest.mark.heavy(19)
def test_replicas_starting_together_on_an_empty_postgresql_database_all_come_up(postgres_server):
    """Four processes create the tables of a new PostgreSQL database at once: one does, under the migration lock;
    the others wait for it and find them there (without the lock, CREATE TABLE races fail some of them)."""
    for _round in range(2):
        url = postgres_server.new_database()
        _open_together(url)
        store = Store(url)
        assert store.follows.follow("C1", _job(), final=False, team_id="T", user_id="U", origin="start")
        store.close()


def test_opening_waits_for_a_writer_that_holds_a_new_file_in_rollback_mode(tmp_path):
    # Another process writing a new file before anyone made it WAL: SQLite fails the WAL pragma at once rather than
    # run the busy handler, so without waiting of our own the second bot to start would not start.
    path = str(tmp_path / "new.db")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE elsewhere (x)")
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    store = Store(path)
    try:
        assert store.engine.db().conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert len(migrations.applied(store.engine.db())) == len(MIGRATIONS)
    finally:
        store.close()
        other.close()


def database_from_before_providers(path: str, running: str = "ftjob-old") -> None:
    """A database as the bot wrote it before jobs were named by provider (migrations m001 and m002 only)."""
    db = Database(path)
    migrations.apply(db, stop_before="m003_providers")
    db["jobs"].insert_all([
        {"id": running, "status": "running", "final": 0, "model": "m", "created_at": 1},
        {"id": "ftjob-done", "status": "succeeded", "final": 1, "model": "m", "fine_tuned_model": "ft:m:x",
         "created_at": 1, "finished_at": 9},
    ])
    db["subscriptions"].insert_all([
        {"channel_id": "C1", "job_id": job, "team_id": "T", "user_id": "U1", "origin": "start", "created_at": 1}
        for job in (running, "ftjob-done")
    ])
    db["announcements"].insert({"key": "ftjob-done:C1:succeeded", "job_id": "ftjob-done", "channel_id": "C1",
                                "outcome": "succeeded", "user_id": "U1", "origin": "start", "kind": "announcement",
                                "state": "pending", "attempts": 0, "created_at": 2, "next_attempt_at": 2})
    db["start_intents"].insert({"request_id": "r1", "channel_id": "C1", "state": "pending", "created_at": 3,
                                "training_file": "file-1", "model": "m"})
    db.conn.close()


def test_a_database_from_before_providers_keeps_its_jobs_follows_and_outbox(tmp_path):
    path = str(tmp_path / "old.db")
    database_from_before_providers(path)
    store = Store(path)
    assert [m.name for m in migrations.applied(Database(path))] == MIGRATIONS
    assert store.follows.active_jobs()[0]["provider"] == ""  # nobody's until start-up says whose
    assert store.follows.adopt_unnamed("azure") == 2
    assert store.follows.adopt_unnamed("openai") == 0  # once only
    assert [(r["provider"], r["id"], r["state"]) for r in store.follows.active_jobs()] == [("azure", "ftjob-old",
                                                                                            "going")]
    assert store.follows.job("ftjob-done", "azure")["state"] == "succeeded"
    assert [f["channel_id"] for f in store.follows.followers("ftjob-old", "azure")] == ["C1"]
    assert store.outbox.announcement("azure:ftjob-done:C1:succeeded")["state"] == "pending"
    # The outcome already queued is not queued again when seen again.
    assert store.follows.record_jobs([({"id": "ftjob-done", "provider": "azure", "status": "succeeded"},
                                       "succeeded")]) == 0
    assert len(store.outbox.announcements()) == 1
    assert start_intents(store)[0]["provider"] == "azure"
    assert store.follows.unfollow("C1", "ftjob-old", "azure")


def test_two_providers_may_use_the_same_job_id(database):
    store = Store(database)
    for provider in ("openai", "together"):
        store.follows.follow("C1", {**_job("job-1"), "provider": provider}, final=False, team_id="T", user_id="U",
                             origin="start")
    assert sorted(store.follows.providers_of("job-1")) == ["openai", "together"]
    assert store.follows.record_jobs([({**_job("job-1", "completed"), "provider": "together"}, "succeeded")]) == 1
    assert [a["key"] for a in store.outbox.announcements()] == ["together:job-1:C1:succeeded"]
    assert [(r["provider"], r["final"]) for r in store.follows.active_jobs()] == [("openai", 0)]


def test_read_then_write_is_one_step_for_every_thread_at_once(database):
    """What the store reads and then writes in one transaction holds however many connections race it: each answer
    is shared once, each form submitted once, a job followed from eight threads at once is made once (no duplicate
    key error), and two settings changed at once are both kept. (On SQLite, BEGIN IMMEDIATE; on PostgreSQL, the
    write lock every write transaction takes.)"""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    store = Store(database)
    threads = 8
    with ThreadPoolExecutor(threads) as pool:

        def all_at_once(calls):
            gate = threading.Barrier(len(calls))
            return list(pool.map(lambda call: (gate.wait(), call())[1], calls))

        for round_ in range(10):
            share = store.forms.keep_answer("U1", "C1", {"text": "hi"})
            said = all_at_once([partial(store.forms.claim_share, share, "U1")] * threads)
            assert sorted(s for s, _ in said) == ["ok"] + ["shared"] * (threads - 1)
            form = store.forms.record_form("start", user_id="U1", team_id="T", channel_id="C1")
            said = all_at_once([partial(store.forms.claim_form, form, "start", "U1")] * threads)
            assert sorted(s for s, _ in said) == ["ok"] + ["submitted"] * (threads - 1)
            job = _job(f"ftjob-race-{round_}")
            new = all_at_once([partial(store.follows.follow, f"C{n}", job, final=False, team_id="T", user_id="U",
                                       origin="start") for n in range(threads)])
            assert new == [True] * threads
            channel = f"CSET{round_}"
            changes = [{"progress_minutes": 7}, {"outcomes": "failures"}] * (threads // 2)
            all_at_once([partial(store.channels.set_channel_settings, channel, "U", **c) for c in changes])
            settings = store.channels.channel_settings(channel)
            assert (settings["progress_minutes"], settings["outcomes"]) == (7, "failures")
    store.close()


def test_a_turn_is_one_holders_until_it_ends_or_is_given_back(database):
    """The poll cycle's turn (and each channel's): one holder at a time across processes; a holder that stops asking
    (died) is replaced when its turn ends; one that stops gives it back at once."""
    now = [1000.0]
    store = Store(database, clock=lambda: now[0])
    assert store.leases.take_turn("poll", "a", hold=2.0)
    assert not store.leases.take_turn("poll", "b", hold=2.0)
    now[0] += 1.5
    assert store.leases.take_turn("poll", "a", hold=2.0)  # kept: its turn now ends at 1003.5
    now[0] += 1.9
    assert not store.leases.take_turn("poll", "b", hold=2.0)
    now[0] += 0.2  # "a" asked no more (it died): its turn has ended
    assert store.leases.take_turn("poll", "b", hold=2.0) and not store.leases.take_turn("poll", "a", hold=2.0)
    assert store.leases.end_turns("b", ["poll"]) == 1 and store.leases.take_turn("poll", "a",
                                                                                 hold=2.0)  # b stopped: given back
    assert store.leases.take_turn("channel:C1", "b", hold=1.0, at_least_until=now[0] + 30)  # Slack said: wait 30 s
    assert store.leases.take_turn("channel:C1", "b", hold=1.0)  # asking again does not shorten it
    now[0] += 10
    assert not store.leases.take_turn("channel:C1", "a", hold=1.0)
    assert [(t["name"], t["holder"]) for t in store.leases.turns()] == [("channel:C1", "b"), ("poll", "a")]
    now[0] += 700
    assert store.prune()["leases"] == 2
    store.close()


def test_a_stuck_query_or_a_held_lock_ends_at_the_timeout_on_postgresql(postgres_url):
    """A query that never ends, or a write waiting on a lock another client holds, is cut off at the statement
    timeout (15 s in the bot; 0.3 s here) as an error worth retrying, and its connection goes back to the pool: an ack
    or a poll cycle is never held for good."""
    import psycopg

    from storage.engines import WRITE_LOCK, DatabaseError, PostgresEngine

    Store(postgres_url).close()
    engine = PostgresEngine(postgres_url, statement_timeout_ms=300)
    other = psycopg.connect(postgres_url)
    try:
        with pytest.raises(DatabaseError, match="statement timeout") as stuck:
            engine.rows("SELECT pg_sleep(30)")
        assert stuck.value.transient
        other.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")  # a writer that never commits
        with pytest.raises(DatabaseError, match="statement timeout"), engine.transaction() as unit:
            unit.conn.execute("SELECT 1")
        assert engine.connections() == 0
        other.rollback()
        with engine.transaction() as unit:
            assert unit.conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        other.close()
        engine.close()


def test_pooled_connections_the_server_dropped_are_replaced_without_an_error(postgres_server):
    """After PostgreSQL restarts (a deploy, a failover) every pooled connection is dead: the first use of each is
    replaced by a new one at once, so no read or write fails for it (and none is spent pinging before every use)."""
    from bench.postgres import ThrowawayPostgres

    if postgres_server.given:
        pytest.skip("needs a server of its own to restart (TEST_DATABASE_URL names a shared one)")
    server = ThrowawayPostgres().start()
    try:
        store = Store(server.new_database())
        assert store.follows.follow("C1", _job(), final=False, team_id="T", user_id="U", origin="start")
        store.follows.job("ftjob-1", "openai")
        server.halt()
        server.resume()
        assert store.follows.job("ftjob-1", "openai")["status"] == "running"  # read on a connection from before
        assert store.replays.first_sight_of_trigger("after")  # and a write
        store.close()
    finally:
        server.stop()


def _sessions(conn, name: str = "finetune-bot") -> set[int]:  # noqa: ANN001 - a psycopg connection
    """The server processes of the bot's connections to `conn`'s database now, by application name (the pool's
    "finetune-bot", the listener's "finetune-bot-listen", both "finetune-bot%"); the server's other databases are
    other tests'."""
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s"
                        " AND datname = current_database()", (name,))
    return {row[0] for row in rows}


def _pool_sessions(url: str, name: str = "finetune-bot") -> set[int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return _sessions(conn, name)


def _at_once(store: Store, count: int) -> None:
    """`count` reads at the same moment, each holding its connection a little while."""
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda _: store.engine.rows("SELECT pg_sleep(0.2)"), range(count)))


def test_a_store_opens_its_pool_ahead_and_keeps_it_so_a_burst_opens_no_connection(postgres_url):
    """Each new PostgreSQL connection is a server process and a SCRAM exchange (about 16 ms of CPU on the two ends):
    opened ahead, the pool's connections answer as many statements at once as it holds, and stay open after."""
    store = Store(postgres_url, connections=6)
    try:
        assert store.open_connections() == 6
        before = _pool_sessions(postgres_url)
        assert len(before) == 6
        _at_once(store, 6)
        assert _pool_sessions(postgres_url) == before  # none opened in the burst, none closed after it
        _at_once(store, 9)  # past the pool: three more for the moment, closed when given back
        assert wait_until(lambda: _pool_sessions(postgres_url) == before, 5)
    finally:
        store.close()


def test_a_started_bot_answers_a_burst_of_commands_on_connections_already_open(make_bot, postgres_url):
    """A bot on PostgreSQL opens its pool when it starts, sized for the work it runs at once (its command workers,
    the sender, the poll cycle, the metric reads, maintenance): as many statements at once as it has command workers
    find their connections open. (With the pool of 8 it had, each command past the eighth opened a connection and
    closed it again: 28-36 server processes and SCRAM exchanges in one 1.2 s burst on three replicas.)"""
    from bot.app import WORKERS

    bot = make_bot(database_url=postgres_url)
    bot.start_background()
    store = bot.services.store
    assert store.engine.pool_size > WORKERS
    before = _pool_sessions(postgres_url)
    assert len(before) >= store.engine.pool_size
    _at_once(store, WORKERS)
    assert _pool_sessions(postgres_url) == before
    # What the deploy guide (and the README) count a replica: its pool, the pool's overflow in a burst, the listener.
    from storage.engines import POOL_OVERFLOW

    counted = int(re.search(r"each\s+replica needs up to (\d+) of the server's connections",
                            (ROOT / "docs" / "deploy.md").read_text())[1])
    assert counted == store.engine.pool_size + POOL_OVERFLOW + 1
    import psycopg

    assert wait_until(lambda: _pool_sessions(postgres_url, "finetune-bot-listen"), 10)
    peak, done = [0], threading.Event()

    def watch() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            while not done.is_set():
                peak[0] = max(peak[0], len(_sessions(conn, "finetune-bot%")))
                time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        _at_once(store, 2 * counted)  # (twice as many at once as it may open: the rest wait for a connection)
    finally:
        done.set()
        watcher.join()
    assert peak[0] == counted


class _FarServer:
    """A relay to a PostgreSQL server that lets each new connection through only after `delay` seconds (a server far
    away, as a start sees it), counting how many wait at the same moment."""

    def __init__(self, port: int, delay: float = 0.3) -> None:
        self.port_to, self.delay = port, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.waiting = self.most_waiting = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with self._lock:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
        time.sleep(self.delay)
        with self._lock:
            self.waiting -= 1
        server = socket.create_connection(("127.0.0.1", self.port_to))

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                sink.close()
                source.close()

        threading.Thread(target=pump, args=(server, client), daemon=True).start()
        pump(client, server)

    def close(self) -> None:
        self.listener.close()


def test_the_pool_is_opened_side_by_side_so_a_far_server_costs_the_start_one_connections_wait(postgres_url):
    """Each connection to a far server waits its round trips before it is open: the pool's are opened at the same
    time, so the start waits about as long as for one of them, not for each in turn."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(postgres_url)
    far = _FarServer(parts.port)
    store = Store(urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{far.port}")), connections=8)
    try:
        assert store.open_connections() == 8
        assert far.most_waiting >= 4  # (one at a time, never more than 1 would have waited)
        assert store.follows.active_jobs() == []  # (and they work, through the relay)
    finally:
        store.close()
        far.close()


def test_a_bot_starts_on_a_server_with_fewer_connections_to_spare_than_its_pool(make_bot, postgres_url, caplog):
    """A server (or a role) that allows fewer connections than the pool holds refuses some of them at the start:
    the bot says so in one line and starts, with what it was given, and each further one opens when needed."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    role = f"few_{os.getpid()}_{time.monotonic_ns()}"  # (roles are the server's, not the database's)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'few-pw' CONNECTION LIMIT 5")
        conn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    parts = urlsplit(postgres_url)
    bot = make_bot(database_url=urlunsplit(parts._replace(netloc=f"{role}:few-pw@{parts.hostname}:{parts.port}")))
    caplog.set_level(logging.INFO, logger="bot.app")
    bot.start_background()
    said = [r.getMessage() for r in caplog.records if "connections ahead" in r.getMessage()]
    assert len(said) == 1 and "no connection to spare" in said[0] and "few-pw" not in said[0]
    assert bot.services.store.follows.active_jobs() == []  # (and it answers, on the connections it has)


def test_an_unchanged_job_is_rewritten_once_a_minute_not_every_cycle(database):
    """A poll that finds a running job as it was writes nothing for it, except to refresh its "as of" once a minute;
    a change is written at once."""
    now = [1000.0]
    store = Store(database, clock=lambda: now[0])
    store.follows.follow("C1", _job(), final=False, team_id="T", user_id="U", origin="start")
    for _ in range(5):
        now[0] += 10
        store.follows.record_jobs([(_job(), None)])
    assert store.follows.job("ftjob-1", "openai")["observed_at"] == 1000.0
    now[0] += 15  # 65 s since it was last written
    store.follows.record_jobs([(_job(), None)])
    assert store.follows.job("ftjob-1", "openai")["observed_at"] == 1065.0
    now[0] += 1
    store.follows.record_jobs([(_job(status="validating_files"), None)])
    stored = store.follows.job("ftjob-1", "openai")
    assert (stored["observed_at"], stored["status"]) == (1066.0, "validating_files")
    store.close()


def test_a_claim_skips_a_row_another_replica_holds_and_waits_for_no_other_writer(postgres_url):
    """On PostgreSQL a claim locks its row alone (FOR UPDATE SKIP LOCKED): a row another replica is claiming this
    moment is skipped at once (not waited for), and a claim does not queue behind the write lock other writes take."""
    import psycopg

    from storage.engines import WRITE_LOCK

    store = Store(postgres_url)
    store.follows.follow("C1", _job(), final=False, team_id="T", user_id="U", origin="start")
    store.follows.record_jobs([(_job(status="succeeded"), "succeeded")])
    [row] = store.outbox.announcements(state="pending")
    other = psycopg.connect(postgres_url)
    try:
        other.execute("SELECT key FROM announcements FOR UPDATE")  # another replica, mid-claim
        assert store.outbox.claim(row["key"], "w2", lease_seconds=30) is None
        other.rollback()
        other.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")  # another replica, mid-write elsewhere
        claimed = store.outbox.claim(row["key"], "w2", lease_seconds=30)
        assert claimed is not None and claimed["claimed_by"] == "w2"
    finally:
        other.close()
        store.close()


def test_a_postgresql_database_takes_each_later_schema_step_once(postgres_url, monkeypatch):
    """A new database is made from the declared tables and marked as having every step; a step added later (here,
    one of the test's own) is applied to it once, at the next start, however many starts follow; a step SQLite
    alone took stops start-up with one line naming it."""
    import psycopg

    from storage import migrations as steps
    from storage.store import StorageUnavailable

    Store(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM _finetune_migrations ORDER BY name")] == steps.STEPS
    monkeypatch.setattr(steps, "STEPS", [*steps.STEPS, "m999_note"])
    monkeypatch.setitem(steps.SQL_STEPS, "m999_note", ("ALTER TABLE jobs ADD COLUMN note TEXT",))
    for _ in range(2):  # (a second ADD COLUMN would fail the start)
        Store(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(note) FROM jobs").fetchone()[0] == 0  # the column is there
        assert conn.execute("SELECT count(*) FROM _finetune_migrations WHERE name = 'm999_note'").fetchone()[0] == 1
    monkeypatch.setattr(steps, "STEPS", [*steps.STEPS, "m1000_sqlite_only"])
    with pytest.raises(StorageUnavailable, match="lacks schema step m1000_sqlite_only"):
        Store(postgres_url)


def test_a_step_written_once_upgrades_an_existing_database_on_either_engine(database):
    """`sql_step`s are one body for both engines: a database made before m016 (its table dropped, its step not
    recorded) gets it at the next start, once, on SQLite as on PostgreSQL."""
    store = Store(database)
    store.close()
    if database.startswith("postgresql"):
        import psycopg

        with psycopg.connect(database) as conn:
            conn.execute("DROP TABLE presences")
            conn.execute("DELETE FROM _finetune_migrations WHERE name = 'm016_presences'")
    else:
        import sqlite3

        conn = sqlite3.connect(database)
        conn.execute("DROP TABLE presences")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm016_presences'")
        conn.commit()
        conn.close()
    for _ in range(2):
        store = Store(database)
        store.engine.rows("SELECT worker_id, since FROM presences")  # (there again)
        store.close()


def test_a_channels_settings_from_before_workspaces_were_told_apart_are_kept_for_each_workspace(database):
    """m017 rebuilds the channel settings with a workspace in their key: a database of m016's shape keeps every
    channel's settings (under '', the one workspace of a bot of one token), which each workspace then sees until it
    changes its own; on SQLite as on PostgreSQL."""
    from storage.scope import WORKSPACE

    Store(database).close()
    old = ("CREATE TABLE channel_settings (channel_id TEXT PRIMARY KEY NOT NULL, outcomes TEXT NOT NULL DEFAULT 'all',"
           " mentions BIGINT NOT NULL DEFAULT 1, updated_by TEXT, updated_at DOUBLE PRECISION,"
           " cards BIGINT NOT NULL DEFAULT 1, progress BIGINT NOT NULL DEFAULT 1,"
           " progress_minutes BIGINT NOT NULL DEFAULT 5, confirm_above DOUBLE PRECISION, budget DOUBLE PRECISION,"
           " watchdog TEXT NOT NULL DEFAULT 'warn')")
    back = ["DROP TABLE channel_settings", old, "ALTER TABLE start_intents DROP COLUMN workspace",
            "ALTER TABLE held_starts DROP COLUMN workspace",
            "INSERT INTO channel_settings (channel_id, outcomes, budget, updated_by)"
            " VALUES ('C1', 'failures', 25, 'U')"]
    if database.startswith("postgresql"):
        import psycopg

        with psycopg.connect(database) as conn:
            for statement in back:
                conn.execute(statement)
            conn.execute("DELETE FROM _finetune_migrations WHERE name = 'm017_workspace_scope'")
    else:
        import sqlite3

        conn = sqlite3.connect(database)
        for statement in back:
            conn.execute(statement)
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm017_workspace_scope'")
        conn.commit()
        conn.close()
    store = Store(database)
    try:
        for workspace in (None, "T:T0ONE", "T:T0TWO"):
            token = WORKSPACE.set(workspace)
            try:
                settings = store.channels.channel_settings("C1")
                assert (settings["outcomes"], settings["budget"]) == ("failures", 25.0), workspace
            finally:
                WORKSPACE.reset(token)
        token = WORKSPACE.set("T:T0ONE")
        try:
            store.channels.set_channel_settings("C1", "U1", budget=10.0)
            assert store.channels.channel_settings("C1")["outcomes"] == "failures"  # (the rest kept as it was)
        finally:
            WORKSPACE.reset(token)
        assert store.channels.channel_settings("C1")["budget"] == 25.0  # (the channel's own, for everyone else)
    finally:
        store.close()


_CLOSE_UNDER_A_STATEMENT = """
import sys, threading, time
from storage.engines import open_engine
engine = open_engine(sys.argv[1])
engine.migrate()
said = {}
def work():
    with engine.transaction() as db:
        said["rows"] = db.conn.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
                                       " WHERE x < 3000000) SELECT count(*) FROM c").fetchone()[0]
        db.conn.execute("INSERT INTO leases (name, holder, held_until) VALUES ('t', 'w', 0)")
    said["committed"] = True
worker = threading.Thread(target=work)
worker.start()
time.sleep(0.2)  # the worker is inside its statement
engine.close(for_good=True)
worker.join()
try:
    engine.rows("SELECT 1")
except Exception as error:
    said["afterwards"] = type(error).__name__
print(said, engine.connections())
"""


def test_a_store_closed_while_a_thread_runs_a_statement_lets_it_finish_then_closes_its_connection(tmp_path):
    """A bot stopping past its budget closed the SQLite connection of a command still writing, under its statement:
    the sqlite3 module does not guard that, and the process died of a segmentation fault (seen in the suite). Now
    the statement and its transaction finish, the connection is closed as its use ends, and nothing new is opened."""
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", _CLOSE_UNDER_A_STATEMENT, str(tmp_path / "bot.db")], cwd=root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "{'rows': 3000000, 'committed': True, 'afterwards': 'ProgrammingError'} 0"
    assert Store(str(tmp_path / "bot.db")).leases.turn_holder("t") == "w"


def test_a_job_that_names_no_provider_is_refused_and_nothing_is_written(tmp_path):
    """Storage knows no provider of its own (it assumed OpenAI's for a job that named none): a job to store says
    whose it is, or nothing is stored."""
    store = Store(str(tmp_path / "bot.db"))
    nameless = {"id": "ftjob-1", "status": "running", "model": "m"}
    with pytest.raises(ValueError, match="names no provider"):
        store.follows.follow("C1", nameless, final=False, team_id="T", user_id="U", origin="start")
    with pytest.raises(ValueError, match="names no provider"):
        store.follows.record_jobs([(nameless, None)])
    assert store.follows.channel_follows("C1") == [] and store.follows.active_jobs() == []


def test_lists_of_ids_longer_than_an_engines_parameter_limit_are_asked_in_slices(tmp_path):
    """A poll of thousands of jobs asks about them by id lists; each statement stays under the engine's limit on
    parameters (PostgreSQL's is 65,535; an older SQLite's 999, set here on this thread's connection), and what is
    ordered across slices is ordered whole (the watchdog's longest-waiting first)."""
    now = [1000.0]
    store = Store(str(tmp_path / "bot.db"), clock=lambda: now[0])
    try:
        with store.engine.transaction() as db:  # (this thread's connection, which the calls below use)
            db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        ids = [f"ftjob-{n}" for n in range(1200)]
        for job_id in (ids[0], ids[1100]):
            store.follows.follow("C1", {"id": job_id, "provider": "openai", "status": "running"}, final=False,
                                 team_id="T", user_id="U", origin="subscribe")
        store.watch.record_reading("openai", ids[1100], None, None, None)  # read at 1000
        now[0] = 2000.0
        store.watch.record_reading("openai", ids[0], None, None, None)  # read later: waits less
        assert store.watch.metrics_due("openai", ids, every=0) == [ids[1100], ids[0]]
        assert store.cards.progress_due("openai", ids) == []
        store.follows.mark_polled([("openai", job_id) for job_id in ids])
        assert store.follows.record_jobs([({"id": job_id, "provider": "openai", "status": "running"}, None)
                                          for job_id in ids]) == 0
        assert store.workspaces.owners([("openai", job_id) for job_id in ids]) == {}
    finally:
        store.close()
