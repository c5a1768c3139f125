"""A job's card and its thread: posted once, edited in place, throttled progress, the outcome in thread and channel.

The outbox-level tests run the real poller, adapter, store and sender against the provider and Slack stand-ins with
an injected clock (the sender's waits advance it), so an hour of training takes milliseconds. The scenarios go
through the real HTTP endpoint with requests signed as Slack signs them.
"""

from __future__ import annotations

import json
import struct
import threading

import pytest
from slack_sdk import WebClient

from bot.delivery import AnnouncementSender
from bot.messages.blocks import MAX_BLOCKS, MAX_SECTION
from bot.messages.cards import Subscription, format_card
from bot.poller import Poller
from bot.providers.openai_shape import OpenAIProvider, build_client
from bot.providers.types import Job
from bot.sandbox.openai import SAMPLE_FILE_ID
from bot.sandbox.slack import block_action_body, signed_headers
from bot.slack import SlackGateway
from storage import Store
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, Server, ask, delivered, everything_said, reply_to, wait_until
from tests.test_delivery import Clock


class Desk:
    """One bot's moving parts on an injected clock: store, poller (real adapter) and sender."""

    def __init__(self, path, settings, provider, slack, clock, worker="w1"):
        self.clock, self.provider, self.slack = clock, provider, slack
        self.store = Store(str(path), clock=clock)
        client = WebClient(token=BOT_TOKEN, base_url=slack.api_url, timeout=2, retry_handlers=[])
        self.sender = AnnouncementSender(self.store, SlackGateway(client), worker_id=worker, clock=clock,
                                         sleep=clock.sleep, lease_seconds=30)
        self.adapter = OpenAIProvider(build_client(settings), sleep=lambda seconds: None)
        self.poller = Poller(self.adapter, self.store, interval=30)

    def follow(self, job, channel="C1", user="U0OWNER"):
        self.store.follows.follow(channel, job, final=False, team_id="T", user_id=user, origin="start", card=True)

    def cycle(self):
        """One poll, then delivery of whatever it queued."""
        report = self.poller.run_once()
        delivered(self.sender)
        return report

    def card(self, channel="C1"):
        [card] = self.slack.cards_in(channel)
        return card

    def close(self):
        self.sender.stop()
        self.store.close()


@pytest.fixture
def clock():
    return Clock()  # (in the past: the stand-in's message ts are real time, and history is read from the clock's)


@pytest.fixture
def desk(tmp_path, settings, provider, slack, clock):
    desk = Desk(tmp_path / "cards.db", settings, provider, slack, clock)
    yield desk
    desk.close()


def _metric_reads(provider, job_id):
    return len(provider.requests_to(f"/fine_tuning/jobs/{job_id}/events", "GET"))


# -- the card and its edits -------------------------------------------------------------------------------------


def test_one_card_per_channel_edited_in_place_as_the_job_moves(desk, provider, slack):
    job = provider.add_job()  # validating_files
    desk.follow(job)
    desk.follow(job, channel="C2", user="U0BOB")
    delivered(desk.sender)
    card = desk.card()
    assert job["id"] in card["text"] and "validating_files" in card["text"]
    followers = desk.store.follows.followers(job["id"], "openai")
    assert [f["card_ts"] for f in followers if f["channel_id"] == "C1"] == [card["ts"]]
    buttons = [e["action_id"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == ["refresh_job", "job_events", "cancel_job"]
    for status in ("queued", "running"):
        provider.set_status(job["id"], status)
        desk.cycle()
        assert status in desk.card()["text"] and desk.card()["ts"] == card["ts"]
    provider.set_status(job["id"], "succeeded")
    desk.cycle()
    desk.cycle()
    done = desk.card()
    assert "succeeded" in done["text"] and "ft:" in done["text"] and done["ts"] == card["ts"]
    assert "try_open" in json.dumps(done["blocks"]) and "cancel_job" not in json.dumps(done["blocks"])
    # One edit per status change per card, nothing more: three changes, two cards.
    assert len([u for u in slack.updates if u["channel"] == "C1"]) == 3
    assert len([u for u in slack.updates if u["channel"] == "C2"]) == 3
    assert len(slack.cards_in("C1")) == 1 and len(slack.cards_in("C2")) == 1
    # The thread: each status change, then the outcome, shown in the channel as well.
    thread = slack.thread("C1", card["ts"])
    assert ["queued" in thread[0]["text"], "running" in thread[1]["text"]] == [True, True]
    [outcome] = slack.outcomes_in("C1")
    assert outcome is thread[-1] and outcome["broadcast"] and "<@U0OWNER>" in json.dumps(outcome["blocks"])
    assert [m["ts"] for m in slack.shown_in("C1")] == [card["ts"], outcome["ts"]]  # the channel: card, outcome


def test_progress_replies_are_throttled_to_the_channels_interval(desk, provider, slack, clock):
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    card = desk.card()
    # Forty polls 30 s apart (twenty minutes), five new steps of metrics before each one.
    for n in range(40):
        provider.train(job["id"], 5 * (n + 1), total=200)
        desk.cycle()
        clock.now += 30
    replies = [r for r in slack.thread("C1", card["ts"]) if "Step" in r["text"]]
    assert 4 <= len(replies) <= 5  # one every five minutes (the default), not forty
    assert "Step 5 of 200" in replies[0]["text"] and "training loss" in replies[0]["text"]
    steps = [int(r["text"].split("Step ")[1].split()[0]) for r in replies]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert _metric_reads(provider, job["id"]) == len(replies)  # the provider is asked only when a reply is due
    assert slack.shown_in("C1") == [card]  # progress stays in the thread, never the channel


def test_two_processes_that_both_found_a_reply_due_queue_one(tmp_path, clock):
    """Both processes asked progress_due before either queued: the queueing transaction decides, and only once."""
    one, two = Store(str(tmp_path / "p.db"), clock=clock), Store(str(tmp_path / "p.db"), clock=clock)
    try:
        one.follows.follow("C1", {"provider": "openai", "id": "ftjob-1", "status": "running", "model": "m"},
                           final=False, team_id="T", user_id="U1", origin="start", card=True)
        one.cards.set_card("C1", "ftjob-1", "openai", ts="1.000001")
        assert one.cards.progress_due("openai", ["ftjob-1"]) == two.cards.progress_due("openai",
                                                                                       ["ftjob-1"]) == ["ftjob-1"]
        assert one.cards.queue_progress("openai", "ftjob-1", 2, {"step": 2}) == 1
        assert two.cards.queue_progress("openai", "ftjob-1", 3, {"step": 3}) == 0
        clock.now += 301
        assert two.cards.queue_progress("openai", "ftjob-1", 3, {"step": 3}) == 1
        clock.now += 301
        assert one.cards.queue_progress("openai", "ftjob-1", 3, {"step": 3}) == 0  # never a step already shown
    finally:
        one.close()
        two.close()


def test_a_thread_tells_a_status_change_before_the_steps_after_it(desk, provider, slack):
    job = provider.add_job(status="queued")
    desk.follow(job)
    delivered(desk.sender)
    provider.set_status(job["id"], "running")
    provider.train(job["id"], 3, total=10)
    desk.cycle()  # one poll sees both: the new status and three steps of training
    thread = [r["text"] for r in slack.thread("C1", desk.card()["ts"])]
    assert len(thread) == 2 and "queued → running" in thread[0] and "Step 3 of 10" in thread[1]


def test_the_cap_on_metric_reads_reaches_every_job_in_turn(desk, provider, slack, clock):
    desk.poller.max_progress_reads = 2
    jobs = [provider.add_job(status="running") for _ in range(5)]
    for job in jobs:
        desk.follow(job, channel=f"C{job['id'][-6:]}")
    for job in jobs:  # every job has a step to tell (one with none yet is asked again a cycle later, by design)
        provider.train(job["id"], 1, total=10)
    delivered(desk.sender)
    reads = []
    for _ in range(3):  # three cycles, two reads each: every job is asked once, none twice in its interval
        desk.cycle()
        clock.now += 30
        reads.append(sum(_metric_reads(provider, job["id"]) for job in jobs))
    assert reads == [2, 4, 5] and [_metric_reads(provider, job["id"]) for job in jobs] == [1] * 5
    assert len(slack.thread(f"C{jobs[0]['id'][-6:]}", desk.card(f"C{jobs[0]['id'][-6:]}")["ts"])) == 1


def test_a_job_with_no_new_step_is_not_read_every_poll(desk, provider, slack, clock):
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    provider.train(job["id"], 3, total=10)
    desk.cycle()  # step 3: a reply
    for _ in range(20):  # then ten minutes of polls, 30 s apart, with no new step (stalled)
        desk.cycle()
        clock.now += 30
    assert _metric_reads(provider, job["id"]) == 2  # the step, then once at five minutes: not twenty times
    assert len(slack.thread("C1", desk.card()["ts"])) == 1


def test_a_job_not_yet_training_is_not_read_and_its_first_steps_come_at_once(desk, provider, slack, clock):
    job = provider.add_job(status="queued")  # no metrics while validating or queued
    desk.follow(job)
    delivered(desk.sender)
    for _ in range(10):
        desk.cycle()
        clock.now += 30
    assert _metric_reads(provider, job["id"]) == 0
    provider.set_status(job["id"], "running")
    desk.cycle()  # training, but no step reported yet: asked again next cycle, not five minutes later
    clock.now += 30
    provider.train(job["id"], 2, total=10)
    desk.cycle()
    delivered(desk.sender)
    assert any("Step 2 of 10" in r["text"] for r in slack.thread("C1", desk.card()["ts"]))


def test_a_few_polls_of_many_metrics_make_one_reply(desk, provider, slack, clock):
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    for n in range(4):
        provider.train(job["id"], 50 * (n + 1), total=1000)
        desk.cycle()
        clock.now += 60
    assert len([r for r in slack.thread("C1", desk.card()["ts"]) if "Step" in r["text"]]) == 1


def test_progress_shows_the_providers_estimated_finish(desk, provider, slack):
    job = provider.add_job(status="running", estimated_finish=1_800_003_600)
    desk.follow(job)
    delivered(desk.sender)
    provider.train(job["id"], 3, total=10)
    desk.cycle()
    [reply] = slack.thread("C1", desk.card()["ts"])
    assert "Step 3 of 10" in reply["text"] and "expected to finish 2027-01-15 09:00 UTC" in reply["text"]
    assert "<!date^1800003600^" in json.dumps(reply["blocks"])  # in each reader's own time zone


# -- exactly once, whatever Slack does --------------------------------------------------------------------------


def test_the_outcome_survives_a_lost_answer_and_a_restart_exactly_once(tmp_path, settings, desk, provider, slack,
                                                                         clock):
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    card = desk.card()
    provider.set_status(job["id"], "succeeded")
    slack.fail("drop_after", match="chat.postMessage")  # Slack posts the outcome; its answer never comes back
    desk.cycle()
    clock.now += 600
    desk.sender.deliver_due()  # uncertain: the channel's history (broadcasts included) shows it landed
    again = Desk(tmp_path / "cards.db", settings, provider, slack, clock, worker="w2")  # a restart
    try:
        for _ in range(3):
            again.cycle()
            clock.now += 600
    finally:
        again.close()
    [outcome] = slack.outcomes_in("C1")
    assert outcome["thread_ts"] == card["ts"] and outcome["broadcast"]
    [row] = [a for a in desk.store.outbox.announcements() if a["kind"] == "announcement"]
    assert row["state"] == "sent" and row["message_ts"] == outcome["ts"]  # found in the history, not posted again


def test_a_card_whose_answer_was_lost_is_found_not_posted_again(desk, provider, slack, clock):
    slack.fail("drop_after", match="chat.postMessage")  # the card is posted; its answer never comes back
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    clock.now += 600
    desk.sender.deliver_due()  # uncertain: found in the channel's history by its key
    card = desk.card()  # exactly one
    assert [f["card_ts"] for f in desk.store.follows.followers(job["id"], "openai")] == [card["ts"]]  # and its ts kept
    provider.set_status(job["id"], "succeeded")
    desk.cycle()
    [outcome] = slack.outcomes_in("C1")
    assert outcome["thread_ts"] == card["ts"]


def test_two_processes_post_one_card_and_one_outcome(tmp_path, settings, provider, slack, clock):
    slack.latency = 0.05  # slow Slack: both processes are mid-post at once
    one = Desk(tmp_path / "two.db", settings, provider, slack, clock, worker="w1")
    two = Desk(tmp_path / "two.db", settings, provider, slack, clock, worker="w2")
    try:
        job = provider.add_job(status="running")
        one.follow(job)
        two.follow(job)

        def both_cycle() -> None:
            for _ in range(3):
                threads = [threading.Thread(target=d.cycle) for d in (one, two)]
                [t.start() for t in threads]
                [t.join() for t in threads]
                clock.now += 60

        both_cycle()  # the card
        provider.set_status(job["id"], "succeeded")
        both_cycle()  # the outcome, in its thread
        assert len(slack.cards_in("C1")) == 1 and len(slack.outcomes_in("C1")) == 1
    finally:
        one.close()
        two.close()


def test_a_card_still_owed_when_its_job_ends_gives_way_to_the_outcome(desk, provider, slack, clock):
    slack.fail("status", match="chat.postMessage", status=503, times=1)  # the card's first post fails
    job = provider.add_job(status="queued")
    desk.follow(job)
    delivered(desk.sender)
    assert slack.cards_in("C1") == []
    provider.set_status(job["id"], "running")
    desk.poller.run_once()
    provider.set_status(job["id"], "succeeded")
    desk.cycle()  # the edits and the outcome are due before the card's retry
    clock.now += 10
    delivered(desk.sender)
    [outcome] = slack.outcomes_in("C1")
    # One message for the outcome, in the channel: not a card of an ended job and then its announcement.
    assert slack.messages_in("C1") == [outcome] and outcome["thread_ts"] is None
    assert slack.updates == [] and slack.cards_in("C1") == []


def test_progress_replies_are_at_most_once(desk, provider, slack, clock):
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    card = desk.card()
    provider.train(job["id"], 2, total=10)
    slack.fail("drop_after", match="chat.postMessage")  # the reply lands; its answer is lost
    desk.cycle()
    clock.now += 600
    delivered(desk.sender)
    assert len(slack.thread("C1", card["ts"])) == 1  # not posted again
    provider.train(job["id"], 6)
    desk.poller.run_once()  # a reply is queued...
    provider.set_status(job["id"], "succeeded")
    desk.cycle()  # ...but the job ended before it went out: its outcome says the rest
    thread = slack.thread("C1", card["ts"])
    assert len(thread) == 2 and thread[-1] is slack.outcomes_in("C1")[0]


def test_following_again_gets_a_new_card(desk, provider, slack):
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    assert desk.store.follows.unfollow("C1", job["id"], "openai")
    desk.follow(job)
    delivered(desk.sender)
    first, second = slack.cards_in("C1")
    assert [f["card_ts"] for f in desk.store.follows.followers(job["id"], "openai")] == [second["ts"]]


def test_an_ended_jobs_edits_and_replies_are_pruned_but_its_card_and_outcome_kept(desk, provider, slack, clock):
    job = provider.add_job(status="queued")
    running = provider.add_job(status="queued")
    for followed in (job, running):
        desk.follow(followed)
    delivered(desk.sender)
    for followed in (job, running):
        provider.set_status(followed["id"], "running")
        provider.train(followed["id"], 2)
    desk.cycle()
    provider.set_status(job["id"], "succeeded")
    desk.cycle()
    kinds = sorted(a["kind"] for a in desk.store.outbox.announcements() if a["job_id"] == job["id"])
    assert kinds == ["announcement", "card", "card_update", "card_update", "progress", "progress"]
    clock.now += 8 * 86400
    assert desk.store.prune()["card_edits_and_replies"] == 4  # the ended job's; the running one's stay
    assert sorted(a["kind"] for a in desk.store.outbox.announcements() if a["job_id"] == job["id"]) == [
        "announcement", "card"]
    assert len([a for a in desk.store.outbox.announcements() if a["job_id"] == running["id"]]) == 4
    desk.cycle()
    assert len(slack.outcomes_in("C1")) == 1  # nothing comes back


def test_one_edit_of_a_card_at_a_time_across_processes(desk, provider, slack, clock):
    """Each edit draws the job as it is when made; two made at once by two processes could land out of order and
    leave the card showing the older state. So while one is in flight, the other waits."""
    job = provider.add_job(status="queued")
    desk.follow(job)
    delivered(desk.sender)
    provider.set_status(job["id"], "running")
    desk.poller.run_once()
    provider.set_status(job["id"], "succeeded")
    desk.poller.run_once()
    edits = sorted(a["key"] for a in desk.store.outbox.announcements() if a["kind"] == "card_update")
    assert desk.store.outbox.claim(edits[0], "another-process", lease_seconds=30)  # mid-edit, in another process
    delivered(desk.sender)
    assert slack.updates == []  # the newer edit waited
    clock.now += 31  # the other process's lease ends (it died mid-edit)
    delivered(desk.sender)
    assert "succeeded" in desk.card()["text"] and len(slack.updates) >= 1


def test_in_a_busy_channel_an_outcome_goes_before_a_wave_of_edits(desk, provider, slack):
    desk.sender.batch = 10  # (fewer than the edits and replies due: which rows a delivery reads first decides it)
    jobs = [provider.add_job(status="queued") for _ in range(12)]
    for job in jobs:
        desk.follow(job)
    delivered(desk.sender)
    desk.clock.now += 60  # a quiet minute: the channel's burst of posts is back in hand
    for job in jobs:
        provider.set_status(job["id"], "running")  # a sweep starts training: 12 edits and 12 thread replies...
    desk.poller.run_once()
    provider.set_status(jobs[5]["id"], "failed", error={"code": "x", "message": "boom", "param": None})
    desk.cycle()  # ...queued before this outcome
    [outcome] = slack.outcomes_in("C1")
    replies_before = [p for p in slack.posted if p["thread_ts"] and p["at"] < outcome["at"]]
    assert replies_before == []  # the outcome went first of the posts, at the channel's pace
    # Card edits (chat.update, a rate tier of its own) keep their own pace: they never hold a post back.
    posts_after_cards = [p for p in slack.posted if p["thread_ts"]]
    assert posts_after_cards[0] is outcome or posts_after_cards[0]["ts"] == outcome["ts"]
    assert len(slack.updates) == 12 and len(slack.cards_in("C1")) == 12


def test_an_outcome_goes_before_the_cards_of_other_jobs_still_going_up(desk, provider, slack):
    done, late = provider.add_job(status="running"), provider.add_job(status="running")
    desk.follow(done)
    desk.sender.deliver_due()  # its card is up
    sweep = [provider.add_job(status="running") for _ in range(6)]
    for job in [*sweep[:3], late, *sweep[3:]]:
        desk.follow(job)  # seven cards queued, a second apart at the channel's pace
    provider.set_status(done["id"], "succeeded")
    provider.set_status(late["id"], "failed", error={"code": "x", "message": "boom", "param": None})
    desk.cycle()
    posts = [p for p in slack.posted if p["channel"] == "C1"]
    # Both outcomes go before the sweep's cards (an outcome never waits for other jobs' cards); the failed job's
    # card, still owed when it ended, gives way to its outcome (one message for it, in the channel).
    said = [("outcome" if (p["metadata"] or {}).get("event_payload", {}).get("key", "").endswith(("succeeded",
             "failed")) else "card") + (f":{j}" if (j := next((x["id"][-6:] for x in (done, late)
                                                               if x["id"] in p["text"]), None)) else "")
            for p in posts[1:]]
    assert sorted(said[:2]) == sorted([f"outcome:{done['id'][-6:]}", f"outcome:{late['id'][-6:]}"])
    assert f"card:{late['id'][-6:]}" not in said
    assert len(posts) == 1 + 6 + 2


def test_a_deleted_card_never_costs_the_outcome(desk, provider, slack):
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    card = desk.card()
    slack.delete_message("C1", card["ts"])
    provider.set_status(job["id"], "succeeded")
    desk.cycle()
    desk.cycle()
    [outcome] = slack.outcomes_in("C1")
    assert outcome["thread_ts"] is None and job["id"] in outcome["text"]  # a plain message in the channel
    assert [f["card_ts"] for f in desk.store.follows.followers(job["id"], "openai")] == [""]  # known to be gone
    assert slack.updates == []


def test_a_card_gone_before_the_outcome_still_lets_it_through(desk, provider, slack):
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    provider.set_status(job["id"], "failed", error={"code": "x", "message": "boom", "param": None})
    desk.poller.run_once()
    # The card's edit was made (edits keep a pace of their own), and then the card was deleted: only the outcome's
    # own post can find that out.
    with desk.store.engine.transaction() as db:
        db.conn.execute("UPDATE announcements SET state = 'sent' WHERE kind = 'card_update'")
    slack.delete_message("C1", desk.card()["ts"])
    delivered(desk.sender)
    [outcome] = slack.outcomes_in("C1")
    assert outcome["thread_ts"] is None and "boom" in outcome["text"]


def test_a_card_slack_refuses_falls_back_to_plain_messages(desk, provider, slack):
    slack.fail("status", match="chat.postMessage", status=200, times=1,
               body={"ok": False, "error": "restricted_action"})
    job = provider.add_job(status="running")
    desk.follow(job)
    delivered(desk.sender)
    assert slack.cards_in("C1") == []
    provider.set_status(job["id"], "running")
    provider.train(job["id"], 4)
    provider.set_status(job["id"], "succeeded")
    desk.cycle()
    [outcome] = slack.outcomes_in("C1")
    assert outcome["thread_ts"] is None and slack.messages_in("C1") == [outcome]  # no thread, nothing else
    assert not [a for a in desk.store.outbox.announcements() if a["kind"] in {"card_update", "progress"}]  # none queued


def test_card_edits_wait_out_slacks_rate_limit_and_spend_no_attempt(desk, provider, slack, clock):
    job = provider.add_job(status="queued")
    desk.follow(job)
    delivered(desk.sender)
    slack.fail("status", match="chat.update", status=429, retry_after=40)
    provider.set_status(job["id"], "running")
    desk.poller.run_once()
    start = clock.now
    report = desk.sender.deliver_due()
    assert report.waited == 1 and slack.updates == []
    clock.now = start + 41
    delivered(desk.sender)
    assert "running" in desk.card()["text"] and len(slack.updates) == 1
    assert all(a["attempts"] == 0 for a in desk.store.outbox.announcements())


def test_a_card_edit_slack_finds_too_long_is_made_as_plain_text(desk, provider, slack):
    job = provider.add_job(status="queued")
    desk.follow(job)
    delivered(desk.sender)
    slack.fail("status", match="chat.update", status=200, times=1, body={"ok": False, "error": "msg_too_long"})
    provider.set_status(job["id"], "running")
    desk.cycle()
    [update] = slack.updates
    assert update["blocks"] in (None, [], "[]") and "running" in update["text"]


# -- settings ----------------------------------------------------------------------------------------------------


def test_each_setting_changes_what_is_posted(desk, provider, slack, clock):
    desk.store.channels.set_channel_settings("C0PLAIN", "U1", cards=False)
    desk.store.channels.set_channel_settings("C0QUIET", "U1", progress=False, mentions=False)
    desk.store.channels.set_channel_settings("C0CHATTY", "U1", progress_minutes=1)
    desk.store.channels.set_channel_settings("C0FAIL", "U1", outcomes="failures")
    job = provider.add_job(status="queued")
    for channel in ("C0PLAIN", "C0QUIET", "C0CHATTY", "C0FAIL", "C0DEFAULT"):
        desk.follow(job, channel=channel)
    delivered(desk.sender)
    provider.set_status(job["id"], "running")
    for n in range(10):  # ten minutes of training, a poll a minute
        provider.train(job["id"], n + 1, total=10)
        desk.cycle()
        clock.now += 60
    provider.set_status(job["id"], "succeeded")
    desk.cycle()
    desk.cycle()

    def replies(channel):
        return [r for r in slack.thread(channel, slack.cards_in(channel)[0]["ts"])] if slack.cards_in(channel) else []

    assert slack.cards_in("C0PLAIN") == [] and [m["thread_ts"] for m in slack.messages_in("C0PLAIN")] == [None]
    assert len(replies("C0QUIET")) == 1 and "<@" not in json.dumps(slack.messages_in("C0QUIET"))  # outcome only
    assert "U0OWNER" in json.dumps(slack.cards_in("C0QUIET")[0]["blocks"])  # named, not mentioned
    chatty = [r for r in replies("C0CHATTY") if "Step" in r["text"]]
    default = [r for r in replies("C0DEFAULT") if "Step" in r["text"]]
    assert len(chatty) >= 9 and len(default) == 2  # every minute, or every five
    assert slack.outcomes_in("C0FAIL") == [] and "succeeded" in slack.cards_in("C0FAIL")[0]["text"]
    assert len(slack.outcomes_in("C0DEFAULT")) == 1


def test_settings_are_changed_by_command_and_bad_values_named(make_bot, slack, provider):
    bot = make_bot(allowed_user_ids=frozenset({"U0ALICE"}))
    server = Server(bot)
    try:
        shown = everything_said(ask(server, slack, "settings"))
        assert "with a thread: *on*" in shown and "every 5 minutes" in shown
        assert "`every` must be a whole number from 1 to 1440" in ask(server, slack, "settings every=0")["text"]
        assert "`cards` must be `true` or `false`" in ask(server, slack, "settings cards=maybe")["text"]
        assert "not on this bot's list" in ask(server, slack, "settings cards=off", user="U0MALLORY")["text"]
        changed = everything_said(ask(server, slack, "settings cards=off progress=off every=15"))
        assert "with a thread: *off*" in changed and "thread: *off*  (`progress=on|off`" in changed
        assert "every 15 minutes" not in changed  # (no interval to name while progress is off)
        on = everything_said(ask(server, slack, "settings progress=on"))
        assert "*on*, at most one reply every 15 minutes" in on
        ask(server, slack, "settings progress=off")
        row = bot.services.store.channels.channel_settings("C0GENERAL")
        assert (row["cards"], row["progress"], row["progress_minutes"]) == (0, 0, 15)
        job = provider.add_job(status="running")
        reply = ask(server, slack, f"subscribe {job['id']}")
        assert reply["response_type"] == "in_channel" and "I'll post here when it finishes" in reply["text"]
        assert bot.services.store.cards.card("C0GENERAL", job["id"], "openai") is None
    finally:
        server.close()


# -- buttons on the card ----------------------------------------------------------------------------------------


def _press(server, slack, card, action_id, *, user="U0ALICE", name="press"):
    [button] = [e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]
                if e["action_id"] == action_id]
    body = block_action_body(action_id, button["value"], user_id=user, response_url=slack.response_url(name),
                             message_ts=card["ts"])
    assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
    return button


def test_refresh_events_and_cancel_from_the_card(server, slack, provider, bot):
    ask(server, slack, f"start {SAMPLE_FILE_ID}")
    [job_id] = list(provider.jobs)
    [card] = wait_until(lambda: slack.cards_in("C0GENERAL"))
    provider.set_status(job_id, "running")
    _press(server, slack, card, "refresh_job", name="rf")
    refreshed = reply_to(slack, "rf")
    assert refreshed["replace_original"] is True and refreshed["response_type"] == "in_channel"
    assert "Fine-tuning job: in progress" in json.dumps(refreshed["blocks"]) and "running" in refreshed["text"]
    assert "refresh_job" in json.dumps(refreshed["blocks"])  # still a card, buttons and all
    _press(server, slack, card, "job_events", name="ev")
    events = reply_to(slack, "ev")
    assert events["response_type"] == "ephemeral" and "Fine-tuning job started" in everything_said(events)
    button = _press(server, slack, card, "cancel_job", name="cx")
    assert button["confirm"]["title"]["text"] == "Cancel this job?"  # Slack's dialog comes first
    assert "Cancelled" in reply_to(slack, "cx")["text"] and provider.jobs[job_id]["status"] == "cancelled"
    [outcome] = wait_until(lambda: slack.outcomes_in("C0GENERAL"))
    assert "cancelled" in outcome["text"] and outcome["thread_ts"] == card["ts"]
    assert wait_until(lambda: "cancelled" in slack.cards_in("C0GENERAL")[0]["text"])


def test_a_card_says_so_when_its_channel_stops_following(server, slack, provider, bot):
    job = provider.add_job(status="running")
    ask(server, slack, f"subscribe {job['id']}")
    [card] = wait_until(lambda: slack.cards_in("C0GENERAL"))
    assert wait_until(lambda: bot.services.store.cards.card("C0GENERAL", job["id"], "openai")["card_ts"])
    assert "no longer follows" in ask(server, slack, f"unsubscribe {job['id']}")["text"]
    [edit] = slack.updates
    assert edit["ts"] == card["ts"] and "This channel no longer follows this job" in json.dumps(edit["blocks"])
    provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    assert slack.outcomes_in("C0GENERAL") == [] and len(slack.updates) == 1  # nothing more about it here
    _press(server, slack, card, "refresh_job", name="rf")  # a Refresh still draws it as not followed
    assert "no longer follows" in json.dumps(reply_to(slack, "rf")["blocks"])


def test_a_cards_cancel_is_refused_outside_the_allow_list(make_bot, slack, provider):
    bot = make_bot(allowed_user_ids=frozenset({"U0ALICE"}))
    server = Server(bot)
    try:
        ask(server, slack, f"start {SAMPLE_FILE_ID}")
        [job_id] = list(provider.jobs)
        [card] = wait_until(lambda: slack.cards_in("C0GENERAL"))
        _press(server, slack, card, "cancel_job", user="U0INTERN", name="no")
        assert "ALLOWED_USER_IDS" in reply_to(slack, "no")["text"]
        assert provider.jobs[job_id]["status"] != "cancelled"
    finally:
        server.close()


# -- the chart in the card's thread, and Block Kit's limits --------------------------------------------------


def test_the_success_chart_goes_into_the_cards_thread(server, slack, provider, bot):
    ask(server, slack, f"start {SAMPLE_FILE_ID}")
    [job_id] = list(provider.jobs)
    [card] = wait_until(lambda: slack.cards_in("C0GENERAL"))
    provider.set_status(job_id, "succeeded")
    bot.services.poller.run_once()
    [upload] = wait_until(lambda: slack.uploads, timeout=20)
    assert upload["channel"] == "C0GENERAL" and upload["thread_ts"] == card["ts"]
    png = upload["_content"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 800 and height >= 450


def test_a_card_stays_within_block_kits_limits_whatever_the_job_says():
    huge = "x<!channel>" * 2000
    job = Job(id="ftjob-1", status="failed", model=huge, error_message=huge, error_code=huge, training_file=huge,
              suffix=huge, fine_tuned_model=huge, created_at=1, finished_at=2)
    message = format_card(job, Subscription("C1", "U0ALICE", "start"))
    assert len(message.blocks) <= MAX_BLOCKS and len(message.text) <= 3000
    for block in message.blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert len((block.get("text") or {}).get("text", "")) <= MAX_SECTION
            assert len(block.get("fields") or []) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields") or [])
    said = json.dumps(message.blocks)
    assert "(cut: the whole error is 22,000 characters; `/finetune status ftjob-1` shows it)" in said
    assert "<!channel>" not in said and "<!channel>" not in message.text


def test_a_together_job_gets_its_card_and_progress_from_togethers_metrics(make_bot, both, slack, together):
    bot = make_bot(env=both.env)
    server = Server(bot)
    try:
        ask(server, slack, f"start {SAMPLE_FILE_ID} provider=together")
        [job_id] = list(together.jobs)
        [card] = wait_until(lambda: slack.cards_in("C0GENERAL"))
        assert "Together AI" in card["text"] and "pending" in card["text"]
        assert wait_until(lambda: bot.services.store.cards.card("C0GENERAL", job_id, "together")["card_ts"])  # kept
        together.set_status(job_id, "running")
        together.train(job_id, 3)
        bot.services.poller.run_once()
        replies = wait_until(lambda: [r for r in slack.thread("C0GENERAL", card["ts"]) if "Step 3" in r["text"]])
        assert "training loss" in replies[0]["text"]
        assert together.requests_to(f"/v1/fine-tunes/{job_id}/metrics")
        assert wait_until(lambda: "running" in slack.cards_in("C0GENERAL")[0]["text"])
    finally:
        server.close()


def test_a_card_edit_never_holds_back_a_post_in_its_channel(desk, provider, slack, clock):
    """chat.update has a rate tier of its own: an edit spends none of the channel's post-a-second pace."""
    job = provider.add_job(status="queued")
    desk.follow(job)
    delivered(desk.sender)
    clock.now += 5
    provider.set_status(job["id"], "running")
    desk.poller.run_once()  # a status change: the card's edit and a reply in its thread, queued together
    started = clock.now
    delivered(desk.sender)
    [edit] = slack.updates
    [reply] = [p for p in slack.posted if p["thread_ts"]]
    assert clock.now == started  # both went at once: the reply did not wait out a second after the edit
    assert "running" in edit["text"] and "running" in reply["text"]


class _TickingClock(Clock):
    """A clock that moves on a little at every reading, as a busy sender's does."""

    def __call__(self) -> float:
        self.now += 0.02
        return self.now


def test_an_outcome_that_falls_due_amid_a_wave_of_edits_goes_next(tmp_path, settings, provider, slack):
    clock = _TickingClock()
    desk = Desk(tmp_path / "wave.db", settings, provider, slack, clock)
    try:
        jobs = [provider.add_job(status="queued") for _ in range(20)]
        for k, job in enumerate(jobs):
            desk.follow(job, channel=f"C{k}")
        lone = provider.add_job(status="running")
        desk.follow(lone, channel="CLONE")
        desk.sender.deliver_due()  # every card up
        for job in jobs:
            provider.set_status(job["id"], "running")  # twenty card edits (and replies), due now
        provider.set_status(lone["id"], "succeeded")
        desk.store.channels.set_channel_settings("CLONE", "U", progress=False)
        desk.poller.run_once(progress=False)
        desk.sender._not_before["CLONE"] = clock.now + 0.3  # its channel posted a moment ago: due shortly
        delivered(desk.sender)
        [outcome] = slack.outcomes_in("CLONE")
        edits_after = [u for u in slack.updates if u["at"] > outcome["at"]]
        assert edits_after  # it went amid the wave, not after all twenty edits
    finally:
        desk.close()


def test_an_outcome_does_not_wait_out_a_progress_replys_spacing_but_outcomes_keep_theirs(desk, provider, slack,
                                                                                        clock):
    jobs = [provider.add_job(status="running") for _ in range(3)]
    for job in jobs:
        desk.follow(job)
    desk.sender.deliver_due()  # the cards
    provider.train(jobs[0]["id"], 3, total=10)
    desk.poller.run_once()
    desk.sender.deliver_due()  # a progress reply in the channel, just now
    for job in jobs:
        provider.set_status(job["id"], "succeeded")
    desk.poller.run_once(progress=False)
    posted_at = []
    slack.listeners.append(lambda kind, record: posted_at.append(clock.now) if kind == "post" else None)
    started = clock.now
    delivered(desk.sender)
    assert len(slack.outcomes_in("C1")) == 3 and len(posted_at) == 3
    assert posted_at[:2] == [started, started]  # two at once, though a reply was posted a moment before
    assert posted_at[2] - posted_at[1] >= 1.0  # the third a second later: outcomes keep the channel's pace


def test_a_reply_never_takes_the_posts_kept_for_a_waves_outcomes(desk, provider, slack, clock):
    jobs = [provider.add_job(status="running") for _ in range(5)]
    for job in jobs:
        desk.follow(job)
    desk.sender.deliver_due()  # five cards, a second apart
    clock.now += 60  # the channel is quiet: every post in hand
    posted_at = []
    slack.listeners.append(lambda kind, record: posted_at.append(clock.now) if kind == "post" else None)
    for job in jobs[:2]:
        provider.set_status(job["id"], "succeeded")
    desk.poller.run_once(progress=False)
    delivered(desk.sender)
    assert len(slack.outcomes_in("C1")) == 2 and posted_at == [posted_at[0]] * 2  # two at once
    clock.now = max(clock.now, posted_at[-1] + 1.0)  # a post back in hand (the card edits may have taken longer)...
    provider.train(jobs[2]["id"], 3, total=10)
    desk.poller.run_once()  # ...and a progress reply due
    desk.sender.deliver_due()  # the reply waits until every post is back: it may not take one kept for outcomes
    assert len(posted_at) == 3
    for job in jobs[3:]:
        provider.set_status(job["id"], "succeeded")
    desk.poller.run_once(progress=False)
    started = clock.now
    delivered(desk.sender)
    assert len(slack.outcomes_in("C1")) == 4 and posted_at[-2:] == [started, started]  # both at once, not behind it


def _two_outcomes_wait_out_slacks_30_seconds(desk, slack, clock) -> None:
    """Slack said wait 30 s in C1: nothing is posted there 2 s on; 30 s later both queued outcomes are."""
    clock.now += 2
    delivered(desk.sender)
    assert slack.outcomes_in("C1") == []
    clock.now += 30
    delivered(desk.sender)
    assert len(slack.outcomes_in("C1")) == 2


def test_slack_asking_to_wait_is_obeyed_after_a_progress_reply_too(desk, provider, slack, clock):
    job, other = provider.add_job(status="running"), provider.add_job(status="running")
    desk.follow(job)
    desk.follow(other)
    delivered(desk.sender)
    provider.train(job["id"], 3, total=10)
    desk.poller.run_once()
    desk.sender.deliver_due()  # a progress reply, just now
    provider.set_status(job["id"], "succeeded")
    desk.poller.run_once(progress=False)
    slack.fail("status", match="chat.postMessage", status=429, retry_after=30, times=1)
    desk.sender.deliver_due()  # Slack says: wait 30 s
    provider.set_status(other["id"], "succeeded")
    desk.poller.run_once(progress=False)  # another outcome for the channel, queued during Slack's wait
    _two_outcomes_wait_out_slacks_30_seconds(desk, slack, clock)


def test_slack_asking_to_wait_for_a_progress_reply_holds_back_the_outcomes_that_follow(desk, provider, slack,
                                                                                       clock):
    """Neither the outcome's right to follow a reply at once nor a quiet channel's burst of two outruns a 429."""
    job, other = provider.add_job(status="running"), provider.add_job(status="running")
    desk.follow(job)
    desk.follow(other)
    delivered(desk.sender)
    clock.now += 60  # a quiet channel: a burst of two in hand
    provider.train(job["id"], 3, total=10)
    desk.poller.run_once()
    slack.fail("status", match="chat.postMessage", status=429, retry_after=30, times=1)
    desk.sender.deliver_due()  # the progress reply: Slack says wait 30 s
    provider.set_status(job["id"], "succeeded")
    provider.set_status(other["id"], "succeeded")
    desk.poller.run_once(progress=False)  # two outcomes queued during Slack's wait
    _two_outcomes_wait_out_slacks_30_seconds(desk, slack, clock)


def test_a_reply_waiting_its_turn_holds_back_no_outcome(desk, provider, slack, clock):
    from bot.delivery import DeliveryReport

    running, done = provider.add_job(status="running"), provider.add_job(status="running")
    for job in (running, done):
        desk.follow(job)
    delivered(desk.sender)
    provider.train(running["id"], 3, total=10)
    desk.poller.run_once()
    desk.sender.deliver_due()  # a reply, just now: the channel's next post waits a second
    provider.train(running["id"], 6, total=10)
    clock.now += 400  # (the next progress reply is due)
    provider.set_status(done["id"], "succeeded")
    desk.poller.run_once()
    desk.sender._not_before["C1"] = clock.now + 1  # as if that reply had just gone
    rows = {row["kind"]: row for row in desk.store.outbox.due_announcements(limit=10)}
    desk.sender._deliver(rows["progress"], DeliveryReport())  # the reply must wait its turn...
    outcome = desk.store.outbox.announcement(rows["announcement"]["key"])
    assert outcome["next_attempt_at"] <= clock.now  # ...and holds the outcome back with it no more


def test_a_reply_about_an_earlier_state_never_comes_after_a_later_ones(desk, provider, slack, clock):
    """Issue 29: a thread showed "pending → running", then progress, then "validating": a reply held back (waiting for
    its card, for Slack, for the channel's pace) was passed by the replies queued after it. A reply now waits for
    every older one of its job in its channel."""
    job = provider.add_job(status="validating_files")
    desk.follow(job)
    desk.sender.deliver_due()  # the card
    provider.set_status(job["id"], "queued")
    desk.poller.run_once()  # the first status reply, queued...
    with desk.store.engine.transaction() as db:  # ...and held back for a while (whatever the reason)
        db.conn.execute("UPDATE announcements SET next_attempt_at = ? WHERE kind = 'progress'", (clock.now + 20,))
    provider.set_status(job["id"], "running")
    desk.poller.run_once()  # a later state's reply, due at once
    for _ in range(40):
        clock.now += 1
        delivered(desk.sender)
    replies = [r["text"] for r in slack.thread("C1", desk.card()["ts"])]
    said = [text.split(": ", 1)[1] for text in replies if text.startswith("Status of")]
    assert said == ["validating_files → queued", "queued → running"], replies


def test_a_card_that_would_go_up_after_its_job_ended_gives_way_to_the_announcement(bot, provider, slack):
    """A takeover or an outage: the job ended before its card was posted. The channel sees one message for the
    outcome (the announcement, in the channel), not a card and then its own announcement."""
    job = provider.add_job(status="running")
    bot.services.store.follows.follow("C0LATE", {**job, "provider": "openai"}, final=False, team_id="T", user_id="U",
                                      origin="start", card=True)
    provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    shown = slack.shown_in("C0LATE")
    assert len(shown) == 1 and slack.cards_in("C0LATE") == []
    assert [p["ts"] for p in slack.outcomes_in("C0LATE")] == [shown[0]["ts"]]
    [card_row] = [a for a in bot.services.store.outbox.announcements() if a["kind"] == "card"]
    assert card_row["state"] == "skipped"
