"""Promises a review and fault probes found broken: a database that turns read-only, slow and idle connections,
malformed and replayed requests, refused replies, growing lists, secrets in what is posted, and the guards that
no test protected before."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

from bot import cli
from bot.providers.openai_shape import REQUEST_KEY, OpenAIProvider, build_client
from bot.sandbox.openai import SAMPLE_FILE_ID, FineTuningSandbox
from bot.sandbox.slack import signed_headers, slash_command_body
from storage import Store
from tests.conftest import (
    BOT_TOKEN,
    OPENAI_KEY,
    SIGNING_SECRET,
    Server,
    ask,
    everything_said,
    followed_until_it_ends,
    reply_to,
    start_intents,
    wait_until,
)

# -- a database that cannot be written ------------------------------------------------------------------


def _set_read_only(path, read_only: bool) -> None:
    """Make a file unwritable even for root (the immutable attribute), or writable again."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if read_only else "-i", str(path)], check=True)
    else:
        os.chmod(path, 0o444 if read_only else 0o644)


@pytest.fixture
def unwritable(tmp_path):
    paths = []

    def make(path):
        _set_read_only(path, True)
        paths.append(path)

    yield make
    for path in paths:
        _set_read_only(path, False)


def test_a_connection_opened_while_read_only_recovers_when_the_file_is_writable_again(tmp_path, unwritable):
    path = tmp_path / "bot.db"
    store = Store(str(path))
    store.close()
    unwritable(path)
    with pytest.raises(sqlite3.Error):
        store.check_writable()
    with pytest.raises(sqlite3.Error):
        store.follows.follow("C1", {"provider": "openai", "id": "ftjob-1", "status": "running", "model": "m"},
                             final=False, team_id="T", user_id="U", origin="start")
    _set_read_only(path, False)
    store.check_writable()  # the same thread, the same store: a fresh connection, not the read-only one
    assert store.follows.follow("C1", {"provider": "openai", "id": "ftjob-1", "status": "running", "model": "m"},
                                final=False, team_id="T", user_id="U", origin="start")
    store.close()


def test_healthz_says_unhealthy_while_the_database_cannot_be_written(make_bot, tmp_path, unwritable):
    bot = make_bot()
    server = Server(bot)
    try:
        assert "scheduler" in json.loads(server.get("/healthz")[1])["reason"]  # (the database is fine)
        # Its connections closed while nothing uses them (closing one a running cycle holds is not allowed: the
        # store's contract), so that the next one opens the file as it now is.
        bot.services.store.close()
        unwritable(bot.settings.database_path)
        status, body = wait_until(lambda: (r := server.get("/healthz"))[0] == 503
                                  and "cannot be written" in r[1].decode() and r, timeout=10)
        assert status == 503 and "cannot be written" in json.loads(body)["reason"]
        _set_read_only(bot.settings.database_path, False)
        bot.start_background()
        assert wait_until(lambda: server.get("/healthz")[0] == 200, timeout=10)
    finally:
        server.close()


def test_healthz_says_unhealthy_when_the_scheduler_stops(make_bot):
    bot = make_bot()
    server = Server(bot)
    try:
        status, body = server.get("/healthz")
        assert status == 503 and json.loads(body)["reason"] == "the scheduler is not running"
    finally:
        server.close()


def _serve_env(tmp_path, monkeypatch, db) -> None:
    for name, value in {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                        "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                        "SLACK_API_URL": "http://127.0.0.1:9/api/", "DATABASE_PATH": str(db)}.items():
        monkeypatch.setenv(name, value)


def test_start_up_refuses_a_database_it_cannot_write_in_one_line(tmp_path, monkeypatch, capsys, unwritable):
    db = tmp_path / "ro.db"
    Store(str(db)).close()
    unwritable(db)
    _serve_env(tmp_path, monkeypatch, db)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("finetune-bot: the database at") and "readonly" in err


def test_start_up_refuses_a_corrupt_database_in_one_line(tmp_path, monkeypatch, capsys):
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    _serve_env(tmp_path, monkeypatch, db)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be used: file is not a database" in err


def test_a_stopped_bot_leaves_no_database_handle_open(make_bot, provider, slack):
    bot = make_bot()
    job = provider.add_job(status="running")
    bot.services.store.follows.follow("C1", job, final=False, team_id="T", user_id="U", origin="start")
    threads = [threading.Thread(target=bot.services.store.follows.channel_follows, args=("C1",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A thread that used the store and is still alive when the bot stops (a web server's worker): its connection
    # must be closed by the store, not left to the thread's end.
    release = threading.Event()

    def linger() -> None:
        bot.services.store.follows.channel_follows("C1")
        release.wait(30)

    lingering = threading.Thread(target=linger, daemon=True)
    lingering.start()
    bot.start_background()
    provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    assert wait_until(lambda: slack.posted)

    def handles() -> list[str]:
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(bot.settings.database_path):
                found.append(target)
        return found

    assert handles()
    bot.stop(timeout=30)  # (returns once the work under way is done: the budget only bounds a slow machine's wait)
    # A statement in flight on another thread keeps its closed connection's files until it ends (SQLite closes a
    # connection with unfinished statements once they are done), so this allows a loaded machine a moment.
    assert wait_until(lambda: handles() == [], timeout=10), handles()
    release.set()
    lingering.join(5)


# -- the front door -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body, content_type", [
    ("{not json", "application/json"),
    ("[1, 2]", "application/json"),
    ("payload=%5B1%5D", "application/x-www-form-urlencoded"),
    ("payload=%7Bbad", "application/x-www-form-urlencoded"),
])
def test_unsigned_malformed_bodies_get_401_and_no_traceback(server, body, content_type, caplog):
    with caplog.at_level(logging.DEBUG):
        status, _ = server.post("/slack/events", body, {"content-type": content_type})
    assert status == 401
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_signed_but_malformed_bodies_get_400_not_500(server):
    body = "payload=%5B1%5D"
    headers = {**signed_headers(body, SIGNING_SECRET), "content-type": "application/x-www-form-urlencoded"}
    assert server.post("/slack/events", body, headers)[0] in {400, 404}


def test_a_replayed_start_does_not_start_a_second_job(server, slack, provider):
    body = slash_command_body(f"start {SAMPLE_FILE_ID}", response_url=slack.response_url("first"),
                              trigger_id="1700000000.1.replayed")
    headers = signed_headers(body, SIGNING_SECRET)
    assert server.post("/slack/events", body, headers)[0] == 200
    assert "Started fine-tuning job" in reply_to(slack, "first")["text"]
    assert server.post("/slack/events", body, headers)[0] == 200  # the same signed request, inside 5 minutes
    replies = wait_until(lambda: len(slack.responses) == 2 and slack.responses)
    assert "already received this exact request" in replies[1]["text"]
    assert len(provider.jobs) == 1


def test_a_reply_slack_refuses_is_logged_and_replaced_by_a_short_one(server, slack, provider, caplog):
    slack.fail("status", match="/commands/", status=400, body={"ok": False, "error": "invalid_blocks"})
    job = provider.add_job(status="running")
    with caplog.at_level(logging.WARNING):
        reply = ask(server, slack, f"status {job['id']}")
    assert "I couldn't show the full answer: Slack said invalid_blocks" in reply["text"]
    assert job["id"] in reply["text"]
    assert "Slack refused a reply (invalid_blocks)" in caplog.text


def test_status_and_subscriptions_stay_within_slacks_limits_at_any_size(server, bot, slack, provider):
    store = bot.services.store
    for n in range(600):
        final = n % 3 != 0
        job = {"provider": "openai", "id": f"ftjob-{n:04d}", "status": "succeeded" if final else "running",
               "model": "m", "created_at": n}
        store.follows.follow("C0BUSY", job, final=final, team_id="T", user_id="U", origin="subscribe")
    first = ask(server, slack, "status", channel="C0BUSY")
    said = everything_said(first)
    assert "200 running, 400 finished" in said
    assert len(first["blocks"]) <= 50 and all(len(b.get("text", {}).get("text", "")) <= 3000
                                               for b in first["blocks"])
    assert len(json.dumps(first)) < 12_000
    assert "/finetune subscriptions 2" in said
    assert said.count(":gear:") == 20 and said.count(":white_check_mark:") == 5  # running first, then the latest few
    last = ask(server, slack, "subscriptions 30", channel="C0BUSY")
    assert "Page 30 of 30" in everything_said(last) and len(last["blocks"]) <= 50
    assert ask(server, slack, "subscriptions 1", channel="C0BUSY")["text"] == first["text"].replace(
        "Jobs this channel follows", "This channel's subscriptions")


# -- secrets never posted or logged ---------------------------------------------------------------------


def test_a_job_error_quoting_the_api_key_is_posted_redacted(server, bot, slack, provider):
    leaked = f"auth with {OPENAI_KEY} and xoxb-9-LEAKEDTOKEN1 failed"
    job = followed_until_it_ends(server, bot, slack, provider, "failed",
                                 error={"code": "bad", "param": None, "message": leaked})
    [post] = wait_until(lambda: slack.outcomes_in("C0GENERAL"))
    said = post["text"] + json.dumps(post["blocks"])
    assert OPENAI_KEY not in said and "xoxb-9-LEAKEDTOKEN1" not in said and "[redacted]" in said
    [card] = wait_until(lambda: [c for c in slack.cards_in("C0GENERAL") if c.get("edited")])  # the card, edited
    said = card["text"] + json.dumps(card["blocks"])
    assert OPENAI_KEY not in said and "xoxb-9-LEAKEDTOKEN1" not in said and "[redacted]" in said
    status = ask(server, slack, f"status {job['id']}")
    assert OPENAI_KEY not in everything_said(status)


def test_response_urls_never_reach_the_logs(make_bot, slack, provider):
    import io

    from bot import logs

    stream = io.StringIO()
    handler = logs.configure("DEBUG", [BOT_TOKEN, SIGNING_SECRET, OPENAI_KEY], stream=stream)
    secret_url = "https://hooks.slack.com/commands/T0SANDBOX/1234/SecretResponseUrlPart"
    server = Server(make_bot())
    try:
        body = slash_command_body("subscriptions", response_url=secret_url)
        server.post("/slack/events", body, signed_headers(body, "wrong-secret"))  # Bolt logs the failed signature
        stand_in_url = slack.response_url("AnotherSecretPart")
        body = slash_command_body("subscriptions", response_url=stand_in_url)
        server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
        assert wait_until(lambda: slack.responses)
    finally:
        server.close()
        logging.getLogger().removeHandler(handler)
    logged = stream.getvalue()
    assert logged  # DEBUG really was on
    assert "SecretResponseUrlPart" not in logged and "AnotherSecretPart" not in logged


# -- slow and idle connections ----------------------------------------------------------------------------


def _trickle(port: int, stop: threading.Event, opened: list) -> None:
    """A client that opens a request and sends one more byte every half second, forever."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        opened.append(sock)
        while not stop.wait(0.5):
            sock.sendall(b"a")
    except OSError:
        pass


def test_many_slow_connections_do_not_lock_slack_out(bot, slack, provider):
    server = Server(bot)
    stop = threading.Event()
    opened: list = []
    port = int(server.url.rsplit(":", 1)[1])
    trickles = [threading.Thread(target=_trickle, args=(port, stop, opened), daemon=True) for _ in range(150)]
    try:
        for t in trickles:
            t.start()
        assert wait_until(lambda: len(opened) == 150, timeout=20)
        for n in range(5):
            began = time.monotonic()
            status, ack = server.command("help")
            assert status == 200 and "finetune-bot commands" in ack["text"]
            assert time.monotonic() - began < 3.0, f"command {n} missed Slack's deadline"
        assert server.get("/healthz")[0] in {200, 503}
    finally:
        stop.set()
        for sock in opened:
            sock.close()
        server.close()


def test_one_turn_of_the_loop_takes_every_waiting_connection_up_to_the_limit():
    """waitress alone takes one connection a turn, and each turn waits for the interpreter after its poll(): a burst's
    connections sat in the backlog for most of their ack time under load."""
    from bot.web import make_server

    server = make_server(lambda environ, start_response: [], host="127.0.0.1", port=0, threads=1)
    clients = []
    try:
        before = len(server._map)  # the listening socket and the trigger
        clients = [socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) for _ in range(12)]
        time.sleep(0.2)  # handshakes done: all twelve wait in the backlog
        server.adj.connection_limit = before + 8
        server.handle_accept()  # one turn's accept
        assert len(server._map) == before + 8  # all it may take, and not one past the limit
        server.adj.connection_limit = 1000
        server.handle_accept()
        assert len(server._map) == before + 12
        server.handle_accept()  # nothing left waiting: takes nothing, and returns
        assert len(server._map) == before + 12
    finally:
        for client in clients:
            client.close()
        server.task_dispatcher.shutdown()
        server.asyncore.close_all(server._map)


def test_a_request_that_never_finishes_arriving_is_cut_off(bot):
    server = Server(bot, request_deadline=1.0)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        closed_after = None
        began = time.monotonic()
        try:
            while time.monotonic() - began < 8:
                sock.sendall(b"a")
                time.sleep(0.2)
        except OSError:
            closed_after = time.monotonic() - began
        assert closed_after is not None and closed_after < 8
        sock.close()
    finally:
        server.close()


# -- guards no test protected -------------------------------------------------------------------------------


def _adapter(sandbox) -> OpenAIProvider:
    from bot.config import Settings

    client = build_client(Settings(env={"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": sandbox.url + "/v1"},
                                   provider_timeout_seconds=2))
    return OpenAIProvider(client, secrets=[OPENAI_KEY], sleep=lambda s: None)


class _Crowded(FineTuningSandbox):
    """A provider where someone else starts a job right after ours, and whose list ignores filters if told."""

    def __init__(self, *, ignore_metadata_filter: bool = False, decoy: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.ignore_metadata_filter = ignore_metadata_filter
        self.decoy = decoy or {}

    def _create(self, body, key=None):
        answer = super()._create(body, key)
        if answer[0] == 200:
            self._new_job({"model": body["model"], "training_file": body["training_file"], **self.decoy})
        return answer

    def _list(self, query, key=None):
        if self.ignore_metadata_filter:
            query = {k: v for k, v in query.items() if not k.startswith("metadata[")}
        return super()._list(query, key)


def test_the_lost_start_is_ours_by_its_tag_even_when_the_provider_ignores_the_filter():
    with _Crowded(ignore_metadata_filter=True, decoy={"metadata": {REQUEST_KEY: "someone-else"}}) as sandbox:
        sandbox.fail("drop_after", match="/fine_tuning/jobs")
        job = _adapter(sandbox).create_job(request_id="req-mine", training_file=SAMPLE_FILE_ID,
                                           model="babbage-002")
        assert sandbox.jobs[job.id]["metadata"][REQUEST_KEY] == "req-mine"
        assert len(sandbox.requests_to("/fine_tuning/jobs", "POST")) == 1


def test_without_metadata_a_newer_job_with_another_suffix_is_not_taken_for_ours():
    with _Crowded(decoy={"suffix": "theirs"}, metadata_supported=False) as sandbox:
        adapter = _adapter(sandbox)
        adapter.metadata_supported = False
        sandbox.fail("drop_after", match="/fine_tuning/jobs")
        job = adapter.create_job(request_id="req-mine", training_file=SAMPLE_FILE_ID, model="babbage-002",
                                 suffix="mine")
        assert sandbox.jobs[job.id]["suffix"] == "mine"
        assert len(sandbox.requests_to("/fine_tuning/jobs", "POST")) == 1


def test_jobs_the_list_pages_miss_take_turns_being_retrieved(bot, provider):
    from bot.poller import Poller

    now = [1000.0]
    store = Store(bot.settings.database_path, clock=lambda: now[0])
    jobs = [{"provider": "openai", "id": f"ftjob-old{n}", "status": "running", "model": "m", "created_at": n}
            for n in range(4)]
    for job in jobs:  # not at the provider's list (someone else's organization, or deleted): retrieved one by one
        store.follows.follow("C1", job, final=False, team_id="T", user_id="U", origin="subscribe")
    poller = Poller(bot.services.provider, store, max_retrieves=2)
    asked = []
    for _ in range(2):
        before = len(provider.received)
        poller.run_once()
        asked.append({r.path.rsplit("/", 1)[-1] for r in provider.received[before:] if "ftjob-old" in r.path})
        now[0] += 10
    assert asked[0] | asked[1] == {j["id"] for j in jobs}  # every job had its turn within two cycles
    assert not asked[0] & asked[1]
    store.close()


def test_old_webhook_ids_trigger_ids_and_starts_are_forgotten(tmp_path):
    now = [1_000_000.0]
    store = Store(str(tmp_path / "p.db"), clock=lambda: now[0])
    assert store.replays.remember_webhook("wh_1") and not store.replays.remember_webhook("wh_1")
    assert store.replays.first_sight_of_trigger("t1") and not store.replays.first_sight_of_trigger("t1")
    store.replays.record_intent("r1", team_id="T", channel_id="C", user_id="U", response_url="https://x",
                                training_file="f", model="m", suffix=None, provider="openai")
    store.replays.finish_intent("r1", job_id="ftjob-1")
    store.workspaces.issue_state("an-install-never-finished", ttl=600)
    now[0] += 3600
    assert store.prune() == {"webhook_deliveries": 0, "seen_triggers": 1, "start_intents": 0,
                             "shared_answers": 0, "open_forms": 0, "card_edits_and_replies": 0, "leases": 0,
                             "model_calls": 0, "oauth_states": 1,
                             "held_starts": 0, "job_readings": 0}
    now[0] += 8 * 86400
    assert store.prune() == {"webhook_deliveries": 1, "seen_triggers": 0, "start_intents": 1,
                             "shared_answers": 0, "open_forms": 0, "card_edits_and_replies": 0, "leases": 0,
                             "model_calls": 0, "oauth_states": 0,
                             "held_starts": 0, "job_readings": 0}
    assert store.replays.remember_webhook("wh_1")  # long gone, so new again
    store.close()


def test_an_interrupted_start_that_never_reached_the_provider_is_reported_as_not_started(bot, slack, provider):
    store = bot.services.store
    store.replays.record_intent("req-lost", team_id="T", channel_id="C0GENERAL", user_id="U0ALICE",
                                response_url=slack.response_url("lost"), training_file=SAMPLE_FILE_ID,
                                model="gpt-4.1-mini-2025-04-14", suffix=None, provider="openai")
    assert bot.services.jobs.reconcile_starts(older_than=0, worker="w") == 1
    reply = reply_to(slack, "lost")
    assert "nothing was started or billed" in reply["text"]
    assert start_intents(store)[0]["state"] == "never_started" and start_intents(store)[0]["response_url"] is None
    assert store.follows.channel_follows("C0GENERAL") == []
    assert bot.services.jobs.reconcile_starts(older_than=0, worker="w") == 0  # settled once


def test_an_old_interrupted_start_is_told_by_direct_message(bot, slack, provider):
    now = [time.time() - 3600]  # the response_url has long expired
    store = Store(bot.settings.database_path, clock=lambda: now[0])
    job = provider.add_job(status="succeeded", metadata={REQUEST_KEY: "req-old"})
    store.replays.record_intent("req-old", team_id="T", channel_id="C0GENERAL", user_id="U0ALICE",
                                response_url=slack.response_url("old"), training_file=SAMPLE_FILE_ID,
                                model=job["model"], suffix=None, provider="openai")
    store.close()
    assert bot.services.jobs.reconcile_starts(older_than=60, worker="w") == 1
    [dm] = wait_until(lambda: [p for p in slack.posted if p["channel"] == "U0ALICE"])
    assert job["id"] in dm["text"] and not [r for r in slack.responses if r["url"].endswith("/old")]
    # It ended while nobody followed it: the channel is owed the outcome (the sender was woken to post it).
    assert wait_until(lambda: [p for p in slack.posted if p["channel"] == "C0GENERAL" and job["id"] in p["text"]])


def test_a_reply_that_never_reached_slack_does_not_blame_slack(caplog):
    """Issue 29: "Slack refused a reply (connection error …)" blamed Slack for a refused connection."""
    from slack_sdk import WebClient

    from bot.messages.answers import format_note
    from bot.slack import SlackGateway

    gateway = SlackGateway(WebClient(token="xoxb-test", base_url="http://127.0.0.1:9/api/"))
    with caplog.at_level(logging.WARNING):
        assert gateway.reply("http://127.0.0.1:9/commands/T/1/x", format_note("hi")) is False
    assert "could not reach Slack to send a reply" in caplog.text and "Slack refused" not in caplog.text


def test_providers_say_what_they_cannot_do_in_words_that_hold(server, slack):
    """Issue 29: OpenAI "Cannot: price estimates" while every start there shows one (the bot's): it has no estimate
    of its own."""
    said = everything_said(ask(server, slack, "providers"))
    assert "price estimates of its own" in said and "Cannot: price estimates," not in said


def test_each_shapes_sdk_loggers_are_quiet_unless_debug():
    """The SDK loggers the shapes declare (not a list in the logging module) speak only of warnings, as the command
    line configures them; LOG_LEVEL=DEBUG lets them say everything."""
    import io
    import logging

    from bot import logs
    from bot.providers import registry

    names = registry.sdk_loggers()
    assert {"openai._base_client", "together._base_client"} <= set(names)
    root = logging.getLogger()
    for level, expected in (("INFO", logging.WARNING), ("DEBUG", logging.DEBUG)):
        handler = logs.configure(level, [], stream=io.StringIO(), chatty=names)
        try:
            assert all(logging.getLogger(name).level == expected for name in names), level
        finally:
            root.removeHandler(handler)
