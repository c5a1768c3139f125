"""The watchdog: its rules on scripted metric streams, and what it says and does through the real SDKs against the
stand-ins (a warning once per job and kind, in the card's thread, a cancel at the provider once)."""

from __future__ import annotations

import json
import logging
import math
import sqlite3

import pytest

from bot.watchdog import MAX_METRIC_READS_PER_MINUTE, Watchdog, findings
from tests.conftest import ask, delivered, everything_said, wait_until

STALL = 1800.0


def readings(train, valid=None, *, every: float = 60.0, start: float = 1000.0, steps=None):
    """A scripted stream: one reading a minute, steps 10, 20, … unless given."""
    valid = valid or [None] * len(train)
    steps = steps or [10 * (i + 1) for i in range(len(train))]
    return [{"step": s, "train_loss": t, "valid_loss": v, "read_at": start + i * every}
            for i, (s, t, v) in enumerate(zip(steps, train, valid, strict=True))]


def kinds(stream, *, training: bool = True, now: float | None = None) -> list[str]:
    now = now if now is not None else stream[-1]["read_at"] + 1
    return [f.kind for f in findings(stream, training=training, now=now, stall_seconds=STALL)]


def test_a_healthy_run_with_noise_raises_nothing():
    noisy = [2.0, 1.8, 1.85, 1.6, 1.62, 1.4, 1.45, 1.3, 1.28, 1.31, 1.2]  # falling, with single bumps
    assert kinds(readings(noisy, [2.1, 1.9, 1.8, 1.7, 1.65, 1.6, 1.55, 1.5, 1.45, 1.44, 1.43])) == []
    assert kinds(readings([2.0, 1.6, 1.3, 1.1, 1.0, 1.15])) == []  # one bump of 15%: a noisy batch, not a trend


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_nan_or_infinite_loss_is_found_at_once(bad):
    assert kinds(readings([2.0, bad])) == ["nan"]
    assert kinds(readings([2.0, 1.5], [1.9, bad])) == ["nan"]


def test_a_training_loss_rising_three_readings_running_past_a_tenth_above_its_low():
    assert kinds(readings([2.0, 1.5, 1.4, 1.5, 1.6, 1.7])) == ["rising"]
    assert kinds(readings([2.0, 1.5, 1.4, 1.42, 1.44, 1.46])) == []  # rising, but within a tenth of its low
    assert kinds(readings([2.0, 1.5, 1.4, 1.6, 1.55, 1.7])) == []  # not three rises in a row
    assert kinds(readings([1.4, 1.6, 1.7])) == []  # too few readings to call


def test_a_stalled_run_is_one_training_with_no_new_step_for_the_stall_time():
    stream = readings([2.0, 1.5, 1.5], steps=[10, 20, 20], every=600)
    later = stream[-1]["read_at"] + STALL
    assert kinds(stream, now=later) == []  # its step 20 was first read 40 minutes before, but read again recently
    stale = readings([2.0, 1.5], steps=[10, 20], every=60)
    assert kinds(stale, now=stale[-1]["read_at"] + STALL + 1) == ["stalled"]
    assert kinds(stale, now=stale[-1]["read_at"] + STALL + 1, training=False) == []  # paused or queued: not stalled


def test_overfitting_is_validation_loss_rising_while_training_loss_falls():
    assert kinds(readings([2.0, 1.8, 1.6, 1.4], [1.50, 1.55, 1.62, 1.70])) == ["overfitting"]
    assert kinds(readings([2.0, 1.8, 1.6, 1.4], [1.50, 1.51, 1.52, 1.53])) == []  # within 5%
    assert kinds(readings([2.0, 2.1, 2.2, 2.3], [1.50, 1.55, 1.62, 1.70])) != ["overfitting"]  # both rising


# -- through the real SDKs and stand-ins ----------------------------------------------------------------------


def eager(bot):
    """The bot's watchdog reading every job at every cycle (the interval's own test is below)."""
    bot.services.poller.watchdog.every = 0
    return bot


def _running_card(server, slack, provider, bot, *, channel="C0GENERAL"):
    """A job started from #general (its card up), running, seen by a cycle."""
    ask(server, slack, "start file-sample", channel=channel)
    [job_id] = list(provider.jobs)
    provider.set_status(job_id, "running")
    bot.services.poller.run_once(progress=False)
    wait_until(lambda: slack.cards_in(channel))
    return job_id


def watch(bot) -> None:
    bot.services.poller.run_once(progress=False)
    bot.services.poller.read_progress()
    delivered(bot.services.sender)


def warnings_in(slack, channel="C0GENERAL"):
    return [m for m in slack.messages_in(channel) if "rotating_light" in everything_said(m)]


def delivered_warnings(bot, slack, channel="C0GENERAL"):
    """The warnings in `channel` once the outbox has drained (a channel's posts are paced a second apart)."""
    return wait_until(lambda: (bot.services.sender.deliver_due(), warnings_in(slack, channel))[1]
                      if not bot.services.store.outbox.announcements(state="pending") else
                      (bot.services.sender.deliver_due(), None)[1], 10)


def test_a_nan_loss_is_warned_once_in_the_cards_thread_mentioning_the_starter(server, slack, provider, bot):
    eager(bot)
    job_id = _running_card(server, slack, provider, bot)
    provider.report(job_id, 5, 1.9)
    watch(bot)
    assert warnings_in(slack) == []
    provider.report(job_id, 6, math.nan)
    for _ in range(3):  # read at every cycle: said once all the same
        watch(bot)
    [warning] = delivered_warnings(bot, slack)
    card = slack.cards_in("C0GENERAL")[0]
    assert warning["thread_ts"] == card["ts"] and not warning.get("broadcast")
    said = everything_said(warning)
    assert "<@U0ALICE>" in said and "not a number" in said and "step 6" in said
    assert "cancel_job" in said  # a Cancel button
    assert "nan" in warning["text"].lower()
    assert provider.requests_to(f"/fine_tuning/jobs/{job_id}/cancel", "POST") == []


def test_watchdog_cancel_cancels_at_the_provider_once_and_says_why_in_the_thread_and_channel(server, slack, provider,
                                                                                              bot):
    eager(bot)
    ask(server, slack, "settings watchdog=cancel")
    job_id = _running_card(server, slack, provider, bot)
    for step, loss in ((1, 1.2), (2, 1.0), (3, 0.9), (4, 1.0), (5, 1.1), (6, 1.3)):
        provider.report(job_id, step, loss)
        watch(bot)
    [warning] = delivered_warnings(bot, slack)
    assert warning.get("broadcast") and "I cancelled it" in everything_said(warning)
    assert "1 → 1.1 → 1.3" in everything_said(warning) or "0.9 → 1 → 1.1 → 1.3" in everything_said(warning)
    assert len(provider.requests_to(f"/fine_tuning/jobs/{job_id}/cancel", "POST")) == 1
    assert bot.services.store.follows.job(job_id, "openai")["status"] == "cancelled"
    watch(bot)
    assert len(provider.requests_to(f"/fine_tuning/jobs/{job_id}/cancel", "POST")) == 1
    assert "cancel_job" not in json.dumps(warning["blocks"])  # nothing left to cancel


def test_watchdog_off_reads_nothing_and_says_nothing(server, slack, provider, bot):
    eager(bot)
    ask(server, slack, "settings watchdog=off progress=off")
    job_id = _running_card(server, slack, provider, bot)
    provider.report(job_id, 3, math.nan)
    before = len(provider.requests_to(f"/fine_tuning/jobs/{job_id}/events", "GET"))
    watch(bot)
    assert len(provider.requests_to(f"/fine_tuning/jobs/{job_id}/events", "GET")) == before
    assert warnings_in(slack) == []


def test_a_cycles_share_of_reads_follows_the_poll_interval_so_a_short_one_asks_no_more():
    share = {interval: Watchdog(None, every=60, stall_seconds=STALL, clock=lambda: 0.0, interval=interval).max_reads
             for interval in (0.05, 1, 30, 60, 3600)}
    assert share == {0.05: 1, 1: 2, 30: 50, 60: MAX_METRIC_READS_PER_MINUTE, 3600: MAX_METRIC_READS_PER_MINUTE}


def test_metrics_are_read_at_most_every_interval_and_within_the_cap(settings, provider, slack, make_bot):
    bot = make_bot(metrics_interval_seconds=3600, poll_interval_seconds=60)
    store = bot.services.store
    jobs = [provider.add_job(status="running") for _ in range(MAX_METRIC_READS_PER_MINUTE + 10)]
    for job in jobs:
        store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U0ALICE", origin="subscribe")
    store.channels.set_channel_settings("C0GENERAL", "U0ALICE", progress=False)

    def reads() -> int:
        return sum(len(provider.requests_to(f"/fine_tuning/jobs/{j['id']}/events", "GET")) for j in jobs)

    bot.services.poller.run_once(progress=False)
    bot.services.poller.read_progress()
    assert reads() == MAX_METRIC_READS_PER_MINUTE  # the cap; the rest wait for the next cycle
    bot.services.poller.read_progress()
    assert reads() == len(jobs)  # those that waited
    bot.services.poller.read_progress()
    assert reads() == len(jobs)  # and none again within the interval


def test_together_metrics_reach_the_same_rules(both, slack, together, make_bot):
    bot = eager(make_bot(env=both.env))
    store = bot.services.store
    job = together.add_job(status="running")
    store.follows.follow("C0GENERAL", {**job, "provider": "together"}, final=False, team_id="T", user_id="U0ALICE",
                         origin="start")
    store.channels.set_channel_settings("C0GENERAL", "U0ALICE", progress=False)
    for step, (train, valid) in enumerate(((2.0, 1.50), (1.8, 1.55), (1.6, 1.62), (1.4, 1.70)), start=1):
        together.report(job["id"], step, train, valid)
        watch(bot)
    [warning] = delivered_warnings(bot, slack)
    assert "overfitting" in warning["text"] and "1.5 → 1.55 → 1.62 → 1.7" in warning["text"]
    assert bot.services.store.watch.marks("together", job["id"]) == ["overfitting"]


def test_two_processes_finding_the_same_thing_warn_once(settings, provider, slack, make_bot):
    first, second = eager(make_bot()), eager(make_bot())
    job = provider.add_job(status="running")
    first.services.store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U0ALICE", origin="start")
    first.services.store.channels.set_channel_settings("C0GENERAL", "U0ALICE", progress=False)
    provider.report(job["id"], 2, math.inf)
    for bot in (first, second):
        bot.services.poller.run_once(progress=False)
        bot.services.poller.read_progress()
    for bot in (first, second):
        delivered(bot.services.sender)
    assert len(delivered_warnings(first, slack)) == 1
    assert first.services.store.watch.marks("openai", job["id"]) == ["nan"]


def test_a_run_the_provider_will_not_cancel_is_warned_with_what_it_said(server, slack, provider, bot):
    eager(bot)
    ask(server, slack, "settings watchdog=cancel")
    job_id = _running_card(server, slack, provider, bot)
    provider.fail(match="/cancel", status=400, times=5,
                  body={"error": {"message": "Job cannot be cancelled in its current state", "type": "invalid"}})
    provider.report(job_id, 2, math.nan)
    watch(bot)
    [warning] = delivered_warnings(bot, slack)
    said = everything_said(warning)
    assert "cannot be cancelled in its current state" in said and "could not" in said
    assert "cancel_job" in said  # still running: the Cancel button stays
    assert len(provider.requests_to(f"/fine_tuning/jobs/{job_id}/cancel", "POST")) == 1  # tried once, not each cycle
    watch(bot)
    assert len(provider.requests_to(f"/fine_tuning/jobs/{job_id}/cancel", "POST")) == 1


def _claimed_and_stopped(bot, job_id):
    """What a process leaves when it stops during the cancel a finding asked for: the finding claimed (so no other
    process acts on it), the cancel not known to be sent, nothing said."""
    claim = bot.services.store.watch.claim("openai", job_id, "nan", {"step": 2, "which": "training", "value": "nan"},
                                           lambda followers: True)
    assert claim is not None and claim.cancelling and claim.queued == 0


def test_a_cancel_whose_process_stopped_before_its_warning_is_finished_once_by_maintenance(settings, provider, slack,
                                                                                           make_bot):
    first, second = eager(make_bot()), eager(make_bot())  # two processes on one database
    job = provider.add_job(status="running")
    first.services.store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U0ALICE", origin="start")
    first.services.store.channels.set_channel_settings("C0GENERAL", "U0ALICE", progress=False, watchdog="cancel")
    first.services.poller.run_once(progress=False)
    _claimed_and_stopped(first, job["id"])
    cancels = f"/fine_tuning/jobs/{job['id']}/cancel"
    # While the claim could still be a living process's, nothing is done over its head.
    assert second.services.poller.watchdog.finish_interrupted(second.services.providers, older_than=3600) == 0
    assert provider.requests_to(cancels, "POST") == []
    # Then one process finishes it: the cancel sent once, the warning said once, whoever else tries.
    done = [bot.services.poller.watchdog.finish_interrupted(bot.services.providers, older_than=0)
            for bot in (second, first, second)]
    assert sorted(done) == [0, 0, 1]
    assert len(provider.requests_to(cancels, "POST")) == 1
    [warning] = delivered_warnings(second, slack)
    assert "I cancelled it" in everything_said(warning)
    provider.report(job["id"], 3, math.nan)
    watch(first)  # the finding is said: the rules find it again and say nothing more
    assert len(delivered_warnings(first, slack)) == 1 and len(provider.requests_to(cancels, "POST")) == 1


def test_an_unsaid_finding_is_taken_over_by_one_process_at_a_time_on_both_engines(database):
    from storage import Store

    now = [1000.0]
    first, second = Store(database, clock=lambda: now[0]), Store(database, clock=lambda: now[0])
    try:
        first.follows.follow("C1", {"id": "j1", "provider": "openai", "status": "running"}, final=False, team_id="T",
                     user_id="U1", origin="start")
        assert first.watch.claim("openai", "j1", "nan", {"step": 1}, lambda followers: True).cancelling
        now[0] += 600
        assert first.watch.unsaid(older_than=300) == second.watch.unsaid(older_than=300) != []  # both see it
        assert first.watch.take_over("openai", "j1", "nan", older_than=300) is not None
        assert second.watch.take_over("openai", "j1", "nan", older_than=300) is None  # the first has it now
        now[0] += 600  # …and stopped in turn
        followers = second.watch.take_over("openai", "j1", "nan", older_than=300)
        assert [f["channel_id"] for f in followers] == ["C1"]
        assert second.watch.say("openai", "j1", "nan", {"step": 1}, followers) == 1
        now[0] += 600
        assert second.watch.unsaid(older_than=300) == []
        assert first.watch.take_over("openai", "j1", "nan", older_than=300) is None
    finally:
        first.close()
        second.close()


def test_the_maintenance_run_finishes_an_interrupted_cancel_once_its_claim_is_older_than_any_living_one(
        settings, provider, slack):
    from bot.app import build

    now = [1_800_000_000.0]
    bot = build(settings, clock=lambda: now[0])
    try:
        job = provider.add_job(status="running")
        bot.services.store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U0ALICE", origin="start")
        bot.services.store.channels.set_channel_settings("C0GENERAL", "U0ALICE", progress=False, watchdog="cancel")
        bot.services.poller.run_once(progress=False)
        _claimed_and_stopped(bot, job["id"])
        maintain = bot.scheduler.get_job("maintain").func
        cancels = f"/fine_tuning/jobs/{job['id']}/cancel"
        maintain()
        assert provider.requests_to(cancels, "POST") == []  # its process may be cancelling it still
        now[0] += 8 * settings.provider_timeout_seconds + 1  # every request that process could make, over
        bot.services.turns.give_back()  # (the maintenance turn is held for two intervals)
        maintain()
        assert len(provider.requests_to(cancels, "POST")) == 1
        # Its warning is queued once, saying the run was cancelled (delivering it is the sender's, shown above; this
        # bot's clock stands still, and the channel's pace with it).
        [warning] = [a for a in bot.services.store.outbox.announcements() if a["kind"] == "watchdog"]
        assert json.loads(warning["detail"])["cancel"] == "cancelled"
        bot.services.turns.give_back()
        maintain()
        assert len(provider.requests_to(cancels, "POST")) == 1
        assert len([a for a in bot.services.store.outbox.announcements() if a["kind"] == "watchdog"]) == 1
    finally:
        bot.stop(timeout=2)


def test_an_interrupted_cancel_of_a_job_that_ended_meanwhile_is_said_without_one(bot, provider, slack):
    eager(bot)
    job = provider.add_job(status="running")
    store = bot.services.store
    store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U0ALICE", origin="start")
    store.channels.set_channel_settings("C0GENERAL", "U0ALICE", progress=False, watchdog="cancel")
    bot.services.poller.run_once(progress=False)
    _claimed_and_stopped(bot, job["id"])
    provider.set_status(job["id"], "failed")
    bot.services.poller.run_once(progress=False)
    assert bot.services.poller.watchdog.finish_interrupted(bot.services.providers, older_than=0) == 1
    assert provider.requests_to(f"/fine_tuning/jobs/{job['id']}/cancel", "POST") == []
    said = " ".join(everything_said(w) for w in delivered_warnings(bot, slack))
    assert "not a number" in said
    assert "I cancelled it" not in said and "cancel_job" not in said


def test_a_warning_that_cannot_be_queued_leaves_its_finding_unclaimed_for_the_next_read(bot, provider, slack,
                                                                                         monkeypatch):
    """Found and said, or neither: a warning (no cancel asked) is queued in the claim's own transaction."""
    import storage.watch

    eager(bot)
    job = provider.add_job(status="running")
    store = bot.services.store
    store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U0ALICE", origin="start")
    store.channels.set_channel_settings("C0GENERAL", "U0ALICE", progress=False)
    provider.report(job["id"], 2, math.nan)
    bot.services.poller.run_once(progress=False)

    def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patched:
        patched.setattr(storage.watch, "queue_kind", disk_full)
        try:
            bot.services.poller.read_progress()  # reads the NaN, finds it, cannot queue its warning
        except sqlite3.OperationalError:
            pass  # (the scheduler's run reports it; the next run tries again)
    assert store.watch.readings("openai", job["id"])  # it was read…
    assert store.watch.marks("openai", job["id"]) == []  # …and not claimed: the next read finds it again
    store.watch.record_reading("openai", job["id"], 3, math.nan, None)
    bot.services.poller.watchdog.judge(bot.services.providers.get("openai"), _job(bot, job["id"]))
    assert store.watch.marks("openai", job["id"]) == ["nan"]
    assert len(delivered_warnings(bot, slack)) == 1


def _job(bot, job_id):
    return bot.services.providers.get("openai").retrieve(job_id)


def test_a_run_with_no_new_step_for_the_stall_time_is_warned_of_as_stalled(settings, provider, slack):
    from bot.app import build

    now = [1_800_000_000.0]
    bot = build(settings, clock=lambda: now[0])
    try:
        eager(bot)
        store = bot.services.store
        job = provider.add_job(status="running")
        store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U0ALICE", origin="start")
        store.channels.set_channel_settings("C0GENERAL", "U0ALICE", progress=False)
        provider.report(job["id"], 7, 1.5)
        watch(bot)
        now[0] += 29 * 60
        watch(bot)
        assert warnings_in(slack) == []  # 29 minutes at step 7: not yet
        now[0] += 2 * 60
        watch(bot)
        [warning] = delivered_warnings(bot, slack)
        assert "stopped making progress" in warning["text"] and "Still at step 7 after 31 minutes" in warning["text"]
        provider.report(job["id"], 8, 1.4)
        now[0] += 60
        watch(bot)
        assert len(warnings_in(slack)) == 1  # moving again: nothing more (and said once per job and kind)
    finally:
        bot.stop(timeout=2)


def test_a_channel_with_mentions_off_is_not_pinged_by_a_warning():
    from bot.messages.cards import Subscription, format_watchdog
    from bot.providers.types import Job

    job = Job(id="ftjob-1", status="running", model="m")
    detail = {"kind": "nan", "which": "training", "value": "nan", "step": 3}
    quiet = format_watchdog(job, detail, Subscription("C1", "U0ALICE", "start", mention=False))
    loud = format_watchdog(job, detail, Subscription("C1", "U0ALICE", "start", mention=True))
    assert "<@" not in json.dumps(quiet.blocks) and "started by `U0ALICE`" in json.dumps(quiet.blocks)
    assert "<@U0ALICE>, your fine-tuning job" in json.dumps(loud.blocks)


# -- everything a provider reports is hostile (issue 28) -------------------------------------------------------


@pytest.mark.parametrize("absurd", [10**30, 1e300, math.inf, math.nan, -5, True, "12"])
def test_one_absurd_step_at_a_provider_silences_nothing(both, slack, together, make_bot, absurd, caplog):
    """A job reporting step 10**30 (a Together row here) made every progress cycle at that provider fail with
    'Python int too large to convert to SQLite INTEGER': no progress and no warnings for any of its jobs."""
    bot = eager(make_bot(env=both.env))
    store = bot.services.store
    bad, good = together.add_job(status="running"), together.add_job(status="running")
    for job in (bad, good):
        store.follows.follow("C0GENERAL", {**job, "provider": "together"}, final=False, team_id="T", user_id="U0ALICE",
                             origin="start")
    together.report(bad["id"], 1, 2.0)
    with together.lock:
        together.jobs[bad["id"]]["_metrics"].append({"train/global_step": absurd, "train/loss": 10**400})
    together.report(good["id"], 1, 2.0)
    together.report(good["id"], 2, math.nan)
    for _ in range(3):
        watch(bot)
    [warning] = delivered_warnings(bot, slack)
    assert good["id"] in everything_said(warning)
    assert [r["step"] for r in store.watch.readings("together", bad["id"])] == [1]  # the absurd row skipped
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_fault_in_one_jobs_reading_leaves_the_others_read_and_is_logged_once(server, slack, provider, bot, caplog):
    """Isolation: whatever fails for one job (here its reading cannot be recorded), the others go on."""
    eager(bot)
    first = _running_card(server, slack, provider, bot)
    second = provider.add_job(status="running")
    ask(server, slack, f"subscribe {second['id']}")
    bot.services.poller.run_once(progress=False)
    record = bot.services.store.watch.record_reading

    def faulty(provider_name, job_id, *args):
        if job_id == first:
            raise RuntimeError("a fault in this job's reading")
        return record(provider_name, job_id, *args)

    bot.services.store.watch.record_reading = faulty
    provider.report(first, 5, 1.0)
    provider.report(second["id"], 5, math.nan)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            watch(bot)
    [warning] = delivered_warnings(bot, slack)
    assert second["id"] in everything_said(warning)
    logged = [r for r in caplog.records if "failed; the other jobs go on" in r.getMessage()]
    assert {r.getMessage().split(" of ")[1].split(" failed")[0] for r in logged} == {first}
    assert len({r.getMessage() for r in logged}) == len(logged)  # each (job, what) said once


def test_a_jobs_absurd_numbers_are_unknown_and_its_long_text_cut():
    from bot.providers.types import MAX_TEXT, Job, MetricPoint

    job = Job(id="j", status="running", model="m", trained_tokens=10**30, created_at=math.nan, finished_at=-1,
              n_epochs=True, cost=math.inf, provider_estimate=-3.0, error_message="x" * (MAX_TEXT * 50))
    assert (job.trained_tokens, job.created_at, job.finished_at, job.n_epochs) == (None, None, None, None)
    assert (job.cost, job.provider_estimate) == (None, None) and len(job.error_message) == MAX_TEXT
    assert Job(id="j", status="running", model="m", trained_tokens=1234.0, cost=2).trained_tokens == 1234
    point = MetricPoint(3, math.nan, 1, total_steps=10**40, percent=250, epoch=-1)
    assert (point.total_steps, point.percent, point.epoch) == (None, None, None) and math.isnan(point.train_loss)
    with pytest.raises(ValueError):
        MetricPoint(10**30)


# -- guards no test noticed (issue 29) -------------------------------------------------------------------------------


def test_a_channel_that_only_follows_a_job_cannot_have_it_cancelled(server, slack, provider, bot):
    """`watchdog=cancel` is the starting channel's say: a channel that merely follows someone's job (here with
    watchdog=cancel) is warned, and the job is not cancelled."""
    eager(bot)
    job_id = _running_card(server, slack, provider, bot)  # started from #general (watchdog=warn)
    ask(server, slack, f"subscribe {job_id}", channel="C0FOLLOWER")
    ask(server, slack, "settings watchdog=cancel", channel="C0FOLLOWER")
    provider.report(job_id, 5, 1.0)
    watch(bot)
    provider.report(job_id, 6, math.nan)
    watch(bot)
    assert delivered_warnings(bot, slack, "C0FOLLOWER")
    assert provider.requests_to(f"/fine_tuning/jobs/{job_id}/cancel", "POST") == []


def test_overfitting_needs_the_training_loss_to_have_fallen():
    """Validation loss rising with training loss flat is not overfitting (the run is not learning the training set
    better while it gets worse elsewhere)."""
    assert kinds(readings([1.4, 1.4, 1.4, 1.4], [1.50, 1.55, 1.62, 1.70])) == []
    assert kinds(readings([1.4, 1.3, 1.2, 1.1], [1.50, 1.55, 1.62, 1.70])) == ["overfitting"]
