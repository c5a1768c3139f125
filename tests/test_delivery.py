"""The outbox sender against a Slack stand-in that refuses, slows down and drops answers on demand.

The clock is injected and the sender's waits advance it, so minutes of Slack rate limiting take milliseconds.
"""

from __future__ import annotations

import logging
import threading

import pytest
from slack_sdk import WebClient

from bot.delivery import AnnouncementSender
from bot.slack import SlackGateway
from storage import Store
from tests.conftest import BOT_TOKEN, claim_due, delivered, wait_until


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(database, clock):
    """The outbox on each engine: every delivery promise below holds on SQLite and on PostgreSQL."""
    store = Store(database, clock=clock)
    yield store
    store.close()


def _sender(store, slack, clock, worker="w1", **kwargs) -> AnnouncementSender:
    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url, timeout=2, retry_handlers=[])
    return AnnouncementSender(store, SlackGateway(client), worker_id=worker, clock=clock, sleep=clock.sleep,
                              lease_seconds=30, **kwargs)


def _finish(store, job_id="ftjob-1", channels=("C1",), outcome="succeeded"):
    for channel in channels:
        store.follows.follow(channel, {"provider": "openai", "id": job_id, "status": "running", "model": "m",
                                       "created_at": 1}, final=False, team_id="T", user_id="U0OWNER", origin="start")
    job = {"provider": "openai", "id": job_id, "status": outcome, "fine_tuned_model": "ft:m:x"}
    return store.follows.record_jobs([(job, outcome)])


def _keys(slack, channel=None) -> list[str]:
    return [p["metadata"]["event_payload"]["key"] for p in slack.posted
            if p.get("metadata") and (channel is None or p["channel"] == channel)]


def test_posts_once_with_a_key_in_message_metadata(store, slack, clock):
    _finish(store)
    report = _sender(store, slack, clock).deliver_due()
    assert report.sent == 1
    [post] = slack.posted
    assert post["metadata"] == {"event_type": "finetune_bot_announcement",
                                "event_payload": {"key": "openai:ftjob-1:C1:succeeded"}}
    assert _sender(store, slack, clock).deliver_due().sent == 0
    assert len(slack.posted) == 1


def test_a_row_of_a_kind_this_bot_cannot_send_is_failed_with_why_and_the_rest_go(store, slack, clock):
    """A row a newer bot queued (a kind this one has no way to send) ends failed, saying so; it never stops the
    delivery of the others."""
    _finish(store, "ftjob-1")
    store.outbox.queue_notice("hologram", "openai", "ftjob-1", "C1", key="openai:ftjob-1:C1:hologram", detail={})
    report = _sender(store, slack, clock).deliver_due()
    assert report.sent == 1 and report.failed == 1 and len(slack.posted) == 1
    assert store.outbox.announcement("openai:ftjob-1:C1:hologram")["last_error"] == "no way to send a 'hologram' here"


def test_rate_limit_honours_retry_after_for_the_whole_channel(store, slack, clock):
    _finish(store, "ftjob-1")
    _finish(store, "ftjob-2")
    slack.fail("status", match="chat.postMessage", status=429, retry_after=30)
    sender = _sender(store, slack, clock)
    report = sender.deliver_due()
    assert report.sent == 0 and report.waited == 1
    assert len(slack.requests_to("chat.postMessage")) == 1  # the channel was not hammered
    assert all(row["next_attempt_at"] >= clock.now + 29 for row in store.outbox.announcements(state="pending"))
    clock.now += 28
    assert sender.deliver_due().sent == 0
    clock.now += 3
    assert sender.deliver_due().sent == 2  # one a second in the channel, waited for within the run
    assert len(slack.posted) == 2


@pytest.mark.heavy(12)
def test_minutes_of_rate_limiting_spend_no_attempts_and_lose_nothing(store, slack, clock):
    """A burst can keep Slack at 429 for minutes: waiting because Slack asked us to is never a failure."""
    _finish(store)
    slack.fail("status", match="chat.postMessage", status=429, retry_after=1, times=400)  # about seven minutes
    sender = _sender(store, slack, clock)
    started = clock.now
    for _ in range(1000):
        if sender.deliver_due().sent:
            break
        clock.now += 1  # the scheduler's next run
    assert clock.now - started >= 400
    assert _keys(slack) == ["openai:ftjob-1:C1:succeeded"]
    [row] = store.outbox.announcements()
    assert row["state"] == "sent" and row["attempts"] == 0
    assert len(slack.requests_to("chat.postMessage")) == 401


def test_real_failures_give_up_by_elapsed_time_and_say_why(store, slack, clock):
    _finish(store)
    slack.fail("status", match="chat.postMessage", status=503, times=10_000)
    sender = _sender(store, slack, clock, give_up_seconds=3600)
    for _ in range(200):
        delivered(sender)
        if store.outbox.announcements(state="failed"):
            break
        clock.now += 60
    [failed] = store.outbox.announcements(state="failed")
    assert failed["last_error"].startswith("gave up after 1h") and "http_503" in failed["last_error"]
    assert clock.now - failed["created_at"] >= 3600
    assert store.follows.channel_follows("C1")[0]["delivery_error"] == failed["last_error"]
    # Nothing gave up before the hour was out, however many attempts that took.
    assert failed["attempts"] >= 10


def test_the_owners_direct_message_waits_out_rate_limits_too(store, slack, clock):
    _finish(store, channels=("C0GONE",))
    slack.channel_errors["C0GONE"] = "is_archived"
    slack.fail("status", match="chat.postMessage", status=429, retry_after=5, times=3)
    sender = _sender(store, slack, clock)
    for _ in range(50):
        delivered(sender)
        if [p for p in slack.posted if p["channel"] == "U0OWNER"]:
            break
        clock.now += 1
    [dm] = [p for p in slack.posted if p["channel"] == "U0OWNER"]
    assert "is_archived" in dm["text"] and "ftjob-1" in dm["text"]
    assert {r["kind"]: r["state"] for r in store.outbox.announcements()} == {"announcement": "failed",
                                                                        "delivery_problem": "sent"}


def test_server_errors_back_off_and_recover(store, slack, clock):
    _finish(store)
    slack.fail("status", match="chat.postMessage", status=503, times=3)
    sender = _sender(store, slack, clock)
    for _ in range(3):
        assert sender.deliver_due().retried == 1
        clock.now += 600
    assert sender.deliver_due().sent == 1
    assert len(slack.posted) == 1


@pytest.mark.parametrize("reason", ["channel_not_found", "not_in_channel", "is_archived", "invalid_auth",
                                    "msg_too_long", "msg_blocks_too_long", "invalid_arguments", "some_new_error"])
def test_permanent_refusals_are_recorded_and_the_owner_is_told(store, slack, clock, reason):
    _finish(store, channels=("C0GONE",))
    slack.channel_errors["C0GONE"] = reason
    report = _sender(store, slack, clock).deliver_due()
    assert report.failed == 1 and report.retried == 0
    [row] = store.outbox.announcements(state="failed")
    assert row["last_error"] == reason
    assert store.follows.channel_follows("C0GONE")[0]["delivery_error"] == reason
    if reason != "invalid_auth":
        [dm] = slack.posted
        assert dm["channel"] == "U0OWNER" and reason in dm["text"]
    clock.now += 10_000
    _sender(store, slack, clock).deliver_due()
    assert len(slack.requests_to("chat.postMessage")) <= 3  # not retried: one try, one plain-text try, one DM


@pytest.mark.parametrize("reason", ["internal_error", "fatal_error", "service_unavailable"])
def test_slacks_own_transient_errors_are_retried(store, slack, clock, reason):
    _finish(store)
    slack.fail("status", match="chat.postMessage", status=200, body={"ok": False, "error": reason})
    sender = _sender(store, slack, clock)
    assert sender.deliver_due().retried == 1
    clock.now += 600
    assert sender.deliver_due().sent == 1


def test_refused_blocks_still_deliver_the_outcome_as_plain_text(store, slack, clock):
    _finish(store)
    slack.fail("status", match="chat.postMessage", status=200, body={"ok": False, "error": "invalid_blocks"})
    assert _sender(store, slack, clock).deliver_due().sent == 1
    [post] = slack.posted
    assert post["blocks"] in (None, [], "") and "ft:m:x" in post["text"]


def test_lost_answer_is_checked_in_history_before_reposting(store, slack, clock):
    _finish(store)
    slack.fail("drop_after", match="chat.postMessage")  # Slack posted, the answer never came back
    sender = _sender(store, slack, clock)
    assert sender.deliver_due().retried == 1
    assert len(slack.posted) == 1
    clock.now += 600
    report = sender.deliver_due()
    assert report.found_already_posted == 1 and report.sent == 0
    assert len(slack.posted) == 1
    assert store.outbox.announcements(state="sent")[0]["message_ts"] == slack.posted[0]["ts"]


def test_without_history_scope_it_reposts_and_logs_the_possible_duplicate(store, slack, clock, caplog):
    slack.history_scope = False
    _finish(store)
    slack.fail("drop_after", match="chat.postMessage")
    sender = _sender(store, slack, clock)
    delivered(sender)
    clock.now += 600
    with caplog.at_level(logging.WARNING):
        assert sender.deliver_due().sent == 1
    assert "may be a duplicate" in caplog.text
    assert len(slack.posted) == 2


def test_a_dead_senders_claim_is_taken_over_after_its_lease(store, slack, clock):
    _finish(store)
    claim_due(store, "dead-worker", limit=10, lease_seconds=30)  # claimed, then the process died
    sender = _sender(store, slack, clock, worker="w2")
    assert sender.deliver_due().sent == 0
    clock.now += 31
    assert sender.deliver_due().sent == 1
    assert len(slack.posted) == 1


def test_a_claim_is_held_only_for_the_post_it_guards(store, slack, clock):
    """Claiming a whole batch let a slow Slack outlive the lease while later rows still waited their turn."""
    for n in range(5):
        _finish(store, f"ftjob-{n}", channels=(f"C{n}",))
    slack.latency = 0.05
    seen_claims = []
    slack.listeners.append(lambda kind, record: seen_claims.append(len(store.outbox.announcements(state="sending"))))
    assert _sender(store, slack, clock).deliver_due().sent == 5
    assert seen_claims == [1] * 5  # each post happened while exactly its own row was claimed


def test_connection_refused_is_retried(store, clock, slack):
    _finish(store)
    client = WebClient(token=BOT_TOKEN, base_url="http://127.0.0.1:9/api/", timeout=1, retry_handlers=[])
    sender = AnnouncementSender(store, SlackGateway(client), worker_id="w", clock=clock, sleep=clock.sleep)
    assert sender.deliver_due().retried == 1
    assert store.outbox.announcements(state="pending")[0]["last_error"].startswith("connection error")


def test_one_busy_channel_drains_at_one_post_a_second_without_spending_attempts(store, slack, clock):
    for n in range(10):
        _finish(store, f"ftjob-{n}")
    sender = _sender(store, slack, clock)
    posted_at = []
    slack.listeners.append(lambda kind, record: posted_at.append(clock.now) if kind == "post" else None)
    assert sender.deliver_due().sent == 10  # one run, waiting out the channel's pace between posts
    # Slack's one a second, not one every two: a quiet channel's first three outcomes go at once (a short burst,
    # which Slack allows), then one a second.
    assert 7.0 <= clock.slept <= 8.5
    assert {a["attempts"] for a in store.outbox.announcements()} == {0}
    times = [r.at for r in slack.requests_to("chat.postMessage")]
    assert len(times) == 10
    gaps = [b - a for a, b in zip(posted_at, posted_at[1:], strict=False)]
    assert gaps[0] < 0.5 and gaps[1] < 0.5 and all(gap >= 0.99 for gap in gaps[2:])  # no burst while one is owed


def test_unfollowing_drops_an_announcement_not_yet_sent(store, slack, clock):
    _finish(store, channels=("C1", "C2"))
    assert store.follows.unfollow("C1", "ftjob-1", "openai")
    assert _sender(store, slack, clock).deliver_due().sent == 1
    assert _keys(slack) == ["openai:ftjob-1:C2:succeeded"]


def test_an_outcome_owed_twice_is_queued_and_posted_once(store, slack, clock):
    """Two processes reconciling the same interrupted start both say the channel is owed the outcome: the
    outbox's key, inserted or ignored, is what keeps that to one post, before and after it is sent."""
    job = {"provider": "openai", "id": "ftjob-r", "status": "succeeded", "model": "m", "fine_tuned_model": "ft:m:r",
           "created_at": 1}
    store.follows.follow("C1", job, final=True, team_id="T", user_id="U1", origin="start", announce="succeeded")
    store.follows.follow("C1", job, final=True, team_id="T", user_id="U1", origin="start", announce="succeeded")
    sender = _sender(store, slack, clock)
    assert sender.deliver_due().sent == 1
    store.follows.follow("C1", job, final=True, team_id="T", user_id="U1", origin="start", announce="succeeded")
    clock.now += 10
    assert sender.deliver_due().sent == 0
    assert _keys(slack) == ["openai:ftjob-r:C1:succeeded"]
    assert store.outbox.announcements()[0]["state"] == "sent"


def test_two_processes_keep_one_channels_pace_between_them(store, slack, clock):
    """Replicas (or two processes on one file) each run a sender: a channel's posts are made by one of them at a
    time, so Slack sees one pace (three at once, then one a second), not one per process. Here the second sender
    runs whenever the first waits, as a replica's scheduled run would."""
    for n in range(10):
        _finish(store, f"ftjob-{n}")
    second = _sender(store, slack, clock, worker="w2")
    woken = []

    def first_waits(seconds):
        clock.sleep(seconds)
        woken.append(second.deliver_due().sent)

    first = AnnouncementSender(store, SlackGateway(WebClient(token=BOT_TOKEN, base_url=slack.api_url, timeout=2,
                                                             retry_handlers=[])),
                               worker_id="w1", clock=clock, sleep=first_waits, lease_seconds=30)
    posted_at = []
    slack.listeners.append(lambda kind, record: posted_at.append(clock.now) if kind == "post" else None)
    assert first.deliver_due().sent == 10
    assert woken and set(woken) == {0}  # the second found every row due in a channel the first posts in
    assert {a["claimed_by"] for a in store.outbox.announcements()} == {"w1"}
    gaps = [b - a for a, b in zip(posted_at, posted_at[1:], strict=False)]
    assert gaps[0] < 0.5 and gaps[1] < 0.5 and all(gap >= 0.99 for gap in gaps[2:])


def test_a_channels_turn_passes_on_when_its_process_dies_and_slacks_wait_outlives_it(store, slack, clock):
    """The process posting in a channel dies: another takes the channel once its turn has run out. Slack had asked
    that process to wait 60 s: nobody posts there before those 60 s are over, whichever process it is."""
    _finish(store, "ftjob-1", channels=("C1", "C2"))
    first, second = _sender(store, slack, clock, worker="w1"), _sender(store, slack, clock, worker="w2")
    slack.fail("status", match="chat.postMessage", status=429, retry_after=60)
    report = first.deliver_due()  # one channel refused (the first holds it for 60 s); the other's post goes
    assert (report.waited, report.sent) == (1, 1)
    waited = slack.requests_to("chat.postMessage")[0].params()["channel"]
    _finish(store, "ftjob-2", channels=(waited,))  # more for the waiting channel; the first process dies now
    for step in (15, 30, 14):
        clock.now += step
        assert second.deliver_due().sent == 0, step  # its turn outlives the process, for Slack's 60 s
    clock.now += 2
    assert second.deliver_due().sent == 2
    assert sorted(_keys(slack, waited)) == [f"openai:ftjob-1:{waited}:succeeded", f"openai:ftjob-2:{waited}:succeeded"]


def test_on_postgresql_an_outcome_queued_by_one_replica_wakes_the_one_that_posts_in_its_channel(make_bot, slack,
                                                                                                provider,
                                                                                                postgres_url):
    """LISTEN/NOTIFY: replica B holds the channel's turn; A records the outcome (its poll turn). B posts it at once,
    woken by A's notification: neither replica's scheduler runs here, so nothing else would deliver it."""
    a, b = make_bot(database_url=postgres_url), make_bot(database_url=postgres_url)
    listener = threading.Thread(target=b.services.sender.listen, daemon=True)
    listener.start()
    first, second = provider.add_job(status="running"), provider.add_job(status="running")
    for job in (first, second):
        b.services.store.follows.follow("C0WAKE", {**job, "provider": "openai"}, final=False, team_id="T",
                                        user_id="U", origin="subscribe")
    provider.set_status(first["id"], "succeeded")
    b.services.poller.run_once()
    delivered(b.services.sender)  # B posts there: the channel's turn is B's now
    assert len(slack.outcomes_in("C0WAKE")) == 1
    provider.set_status(second["id"], "succeeded")
    a.services.poller.run_once()  # A queues the outcome and kicks its own sender, which may not post in C0WAKE
    delivered(a.services.sender)
    assert wait_until(lambda: len(slack.outcomes_in("C0WAKE")) == 2, timeout=5)
    b.services.sender.stop()
    listener.join(5)
    assert not listener.is_alive()  # it ends with the bot


def test_a_channel_turn_held_by_a_process_that_died_here_is_taken_over_at_once(bot, provider, slack):
    """A replica restarted after a crash posts in the channels its predecessor held now, not when their turns end
    (a turn Slack's Retry-After lengthened is kept by the deferred rows themselves: none is due before it)."""
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"{socket.gethostname()}:{int(gone.stdout)}:crashed"
    assert int(gone.stdout) != os.getpid()
    bot.services.store.leases.take_turn("channel:C0TAKEN", dead, hold=600)  # held for ten more minutes
    job = provider.add_job(status="running")
    bot.services.store.follows.follow("C0TAKEN", {**job, "provider": "openai"}, final=False, team_id="T",
                                      user_id="U", origin="subscribe")
    provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    assert slack.outcomes_in("C0TAKEN")
    assert bot.services.store.leases.turn_holder("channel:C0TAKEN") == bot.services.sender.worker_id


def _outcome_owed_in_a_channel_held_by(bot, provider, channel: str, holder: str) -> None:
    """A job of `channel` succeeds, its outcome queued, while `holder` holds the channel's turn."""
    store = bot.services.store
    store.leases.take_turn(f"channel:{channel}", holder, hold=600)
    job = provider.add_job(status="running")
    store.follows.follow(channel, job, final=False, team_id="T", user_id="U", origin="subscribe")
    provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()


def test_a_channel_turn_held_by_a_replica_on_another_host_is_kept_while_it_runs_and_taken_when_it_dies(
        make_bot, provider, slack, postgres_url):
    """On PostgreSQL a replica holds a presence lock on its listening connection while it runs, wherever it runs;
    when its process dies the server ends that session and frees the lock, and the channels it held are taken over
    at once by a replica on another host, not when their turns end."""
    import threading

    from storage.notify import listen
    from storage.outbox import OUTBOX_TOPIC

    bot = make_bot(database_url=postgres_url)
    elsewhere = "another-host:4242:replica"  # (not this machine's: no pid here can say whether it runs)
    stopping = threading.Event()
    other = threading.Thread(target=listen, args=(postgres_url, OUTBOX_TOPIC, lambda: None, stopping),
                             kwargs={"connect_timeout": 5, "presence": elsewhere}, daemon=True)
    other.start()
    store = bot.services.store
    assert wait_until(lambda: store.engine.rows("SELECT 1 FROM presences WHERE worker_id = ?", (elsewhere,)),
                      timeout=10)
    _outcome_owed_in_a_channel_held_by(bot, provider, "C0ELSE", elsewhere)
    delivered(bot.services.sender)
    assert slack.outcomes_in("C0ELSE") == [] and store.leases.turn_holder("channel:C0ELSE") == elsewhere
    stopping.set()  # its process ends: its session, and its presence lock with it
    other.join(5)
    assert wait_until(lambda: (bot.services.sender.deliver_due(), slack.outcomes_in("C0ELSE"))[1], timeout=10)
    assert store.leases.turn_holder("channel:C0ELSE") == bot.services.sender.worker_id


def test_a_channel_another_live_process_posts_in_is_asked_about_once_a_second(bot, provider, slack):
    """Issue 32: every replica is woken by every queued post, and each asked the database about every due row of a
    channel another replica held, every time (a failed take is a write under the lock): most of the database's
    writes while the outbox drained on three replicas. Now once a second per channel; the holder's death is still
    noticed then."""
    import os
    import socket
    import time

    store = bot.services.store
    holder = f"{socket.gethostname()}:{os.getpid()}:another"  # alive: a process on this machine that runs
    _outcome_owed_in_a_channel_held_by(bot, provider, "C0HELD", holder)
    asked = []
    store.engine.db().conn.set_trace_callback(lambda sql: asked.append(sql) if "leases" in sql else None)
    try:
        for _ in range(5):  # five wake-ups within the second: the database asked once
            bot.services.sender.deliver_due()
        assert len([sql for sql in asked if sql.startswith("INSERT INTO leases")]) == 1, asked
        assert slack.outcomes_in("C0HELD") == []
        time.sleep(1.1)
        bot.services.sender.deliver_due()  # a second on: asked again
        assert len([sql for sql in asked if sql.startswith("INSERT INTO leases")]) == 2, asked
    finally:
        store.engine.db().conn.set_trace_callback(None)


def test_a_channel_taken_over_from_a_dead_process_starts_with_no_posts_in_hand(bot, provider, slack):
    """The dead holder may have spent the channel's burst just before it died: the first posts after the takeover
    go at Slack's pace of one a second, so no four posts in the channel come within a second."""
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    bot.services.store.leases.take_turn("channel:C0BURST", f"{socket.gethostname()}:{int(gone.stdout)}:x",
                                        hold=600)
    jobs = [provider.add_job(status="running") for _ in range(3)]
    for job in jobs:
        bot.services.store.follows.follow("C0BURST", {**job, "provider": "openai"}, final=False, team_id="T",
                                          user_id="U", origin="subscribe")
        provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    assert wait_until(lambda: (bot.services.sender.deliver_due(), len(slack.outcomes_in("C0BURST")) == 3)[1],
                      timeout=10)
    times = [p["at"] for p in slack.outcomes_in("C0BURST")]
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 0.9
