"""The outbox sender against a Slack stand-in that refuses, slows down and drops answers on demand."""

from __future__ import annotations

import logging

import pytest
from slack_sdk import WebClient

from bot.delivery import AnnouncementSender
from bot.slack import SlackGateway
from storage import Store
from tests.conftest import BOT_TOKEN


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    store = Store(str(tmp_path / "outbox.db"), clock=clock)
    yield store
    store.close()


def _sender(store, slack, clock, worker="w1") -> AnnouncementSender:
    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url, timeout=2, retry_handlers=[])
    return AnnouncementSender(store, SlackGateway(client), worker_id=worker, clock=clock, lease_seconds=30)


def _finish(store, job_id="ftjob-1", channels=("C1",), outcome="succeeded"):
    for channel in channels:
        store.follow(channel, {"id": job_id, "status": "running", "model": "m", "created_at": 1},
                     final=False, team_id="T", user_id="U0OWNER", origin="start")
    return store.record_jobs([({"id": job_id, "status": outcome, "fine_tuned_model": "ft:m:x"}, outcome)])


def test_posts_once_with_a_key_in_message_metadata(store, slack, clock):
    _finish(store)
    report = _sender(store, slack, clock).deliver_due()
    assert report.sent == 1
    [post] = slack.posted
    assert post["metadata"] == {"event_type": "finetune_bot_announcement",
                                "event_payload": {"key": "ftjob-1:C1:succeeded"}}
    assert _sender(store, slack, clock).deliver_due().sent == 0
    assert len(slack.posted) == 1


def test_rate_limit_honours_retry_after_for_the_whole_channel(store, slack, clock):
    _finish(store, "ftjob-1")
    _finish(store, "ftjob-2")
    slack.fail("status", match="chat.postMessage", status=429, retry_after=30)
    sender = _sender(store, slack, clock)
    report = sender.deliver_due()
    assert report.sent == 0 and report.retried == 2
    assert len(slack.requests_to("chat.postMessage")) == 1  # the channel was not hammered
    clock.now += 29
    assert sender.deliver_due().sent == 0
    clock.now += 2
    assert sender.deliver_due().sent == 1  # one a second in a channel
    clock.now += 1.1
    assert sender.deliver_due().sent == 1
    assert len(slack.posted) == 2


def test_server_errors_back_off_and_recover(store, slack, clock):
    _finish(store)
    slack.fail("status", match="chat.postMessage", status=503, times=3)
    sender = _sender(store, slack, clock)
    for _ in range(3):
        assert sender.deliver_due().retried == 1
        clock.now += 600
    assert sender.deliver_due().sent == 1
    assert len(slack.posted) == 1


@pytest.mark.parametrize("reason", ["channel_not_found", "not_in_channel", "is_archived", "invalid_auth"])
def test_permanent_refusals_are_recorded_and_the_owner_is_told(store, slack, clock, reason):
    _finish(store, channels=("C0GONE",))
    slack.channel_errors["C0GONE"] = reason
    report = _sender(store, slack, clock).deliver_due()
    assert report.failed == 1
    [row] = store.announcements()
    assert row["state"] == "failed" and row["last_error"] == reason
    assert store.channel_follows("C0GONE")[0]["delivery_error"] == reason
    if reason != "invalid_auth":
        [dm] = slack.posted
        assert dm["channel"] == "U0OWNER" and reason in dm["text"]
    clock.now += 10_000
    assert _sender(store, slack, clock).deliver_due().sent == 0  # not retried forever


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
    assert store.announcements(state="sent")[0]["message_ts"] == slack.posted[0]["ts"]


def test_without_history_scope_it_reposts_and_logs_the_possible_duplicate(store, slack, clock, caplog):
    slack.history_scope = False
    _finish(store)
    slack.fail("drop_after", match="chat.postMessage")
    sender = _sender(store, slack, clock)
    sender.deliver_due()
    clock.now += 600
    with caplog.at_level(logging.WARNING):
        assert sender.deliver_due().sent == 1
    assert "may be a duplicate" in caplog.text
    assert len(slack.posted) == 2


def test_a_dead_senders_claim_is_taken_over_after_its_lease(store, slack, clock):
    _finish(store)
    store.claim_announcements("dead-worker", limit=10, lease_seconds=30)  # claimed, then the process died
    sender = _sender(store, slack, clock, worker="w2")
    assert sender.deliver_due().sent == 0
    clock.now += 31
    assert sender.deliver_due().sent == 1
    assert len(slack.posted) == 1


def test_connection_refused_is_retried(store, clock, slack):
    _finish(store)
    client = WebClient(token=BOT_TOKEN, base_url="http://127.0.0.1:9/api/", timeout=1, retry_handlers=[])
    sender = AnnouncementSender(store, SlackGateway(client), worker_id="w", clock=clock)
    assert sender.deliver_due().retried == 1
    assert store.announcements(state="pending")[0]["last_error"].startswith("connection error")


def test_one_post_a_second_per_channel_without_spending_attempts(store, slack, clock):
    for n in range(3):
        _finish(store, f"ftjob-{n}")
    sender = _sender(store, slack, clock)
    assert sender.deliver_due().sent == 1
    assert [a["attempts"] for a in store.announcements(state="pending")] == [0, 0]
    assert sender.deliver_due().sent == 0
    clock.now += 1.0
    assert sender.deliver_due().sent == 1
    clock.now += 1.0
    assert sender.deliver_due().sent == 1
    assert len(slack.posted) == 3
