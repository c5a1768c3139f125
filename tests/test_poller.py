"""The poll cycle: a flat number of provider requests, nothing when idle, and patience when the provider fails."""

from __future__ import annotations

import math

import pytest

from bot.poller import Poller
from bot.providers.openai_shape import OpenAIProvider, build_client


def _follow(bot, job, channel="C1"):
    return bot.services.store.follows.follow(channel, job, final=False, team_id="T", user_id="U",
                                             origin="subscribe")


def _requests(provider) -> int:
    return len(provider.requests_to("/fine_tuning/jobs"))


def test_no_active_jobs_no_requests(bot, provider):
    assert bot.services.poller.run_once().requests == 0
    done = provider.add_job(status="succeeded")
    _follow(bot, done)
    bot.services.store.follows.record_jobs([({**done}, "succeeded")])
    assert bot.services.poller.run_once().requests == 0
    assert _requests(provider) == 0


@pytest.mark.parametrize("followed", [2, 10, 100, 250])
def test_poll_cost_stays_flat(bot, provider, followed):
    jobs = [provider.add_job(status="running") for _ in range(followed)]
    for _ in range(20):
        provider.add_job(status="succeeded")  # newer jobs nobody here follows
    for job in jobs:
        _follow(bot, job)
    before = _requests(provider)
    report = bot.services.poller.run_once()
    assert report.observed == followed
    assert report.requests == _requests(provider) - before
    assert report.requests <= math.ceil(followed / 100) + 2


def test_jobs_outside_recent_pages_are_retrieved(bot, provider):
    old = provider.add_job(status="running")
    recent = provider.add_job(status="running")
    for _ in range(250):
        provider.add_job()  # more newer jobs than the page budget covers
    _follow(bot, old)
    _follow(bot, recent)
    report = bot.services.poller.run_once()
    assert report.observed == 2
    assert report.requests == 2 + 2  # two pages, then one retrieve for each job they did not cover
    assert provider.requests_to(f"/fine_tuning/jobs/{old['id']}", "GET")


def test_unknown_and_paused_statuses_keep_being_polled(bot, provider):
    job = provider.add_job(status="running")
    _follow(bot, job)
    for status in ("pausing", "paused", "pending", "created", "some_new_status"):
        provider.jobs[job["id"]]["status"] = status
        report = bot.services.poller.run_once()
        assert report.queued == 0 and report.error is None
        assert bot.services.store.follows.job(job["id"], "openai")["status"] == status
        assert bot.services.store.follows.job(job["id"], "openai")["final"] == 0


def test_provider_outage_backs_off_resumes_and_marks_nothing_final(bot, provider, slack):
    job = provider.add_job(status="running")
    _follow(bot, job)
    poller = Poller(bot.services.provider, bot.services.store, interval=1)
    provider.fail("status", status=503, times=100)
    first = poller.run_once()
    assert first.error and first.requests == 0
    skipped = [poller.run_once().skipped for _ in range(1)]
    assert skipped == [True]
    second = poller.run_once()
    assert second.error
    assert [poller.run_once().skipped for _ in range(2)] == [True, True]  # the wait doubles
    provider.faults.clear()
    provider.set_status(job["id"], "succeeded")
    recovered = poller.run_once()
    assert recovered.error is None and recovered.queued == 1
    assert bot.services.store.follows.job(job["id"], "openai")["final"] == 1


@pytest.mark.parametrize("interval, longest_pause", [(60, 120), (30, 120), (1, 17), (600, 600)])
def test_an_outage_never_pauses_polling_for_more_than_two_minutes(bot, provider, interval, longest_pause):
    job = provider.add_job(status="running")
    _follow(bot, job)
    adapter = OpenAIProvider(build_client(bot.settings), sleep=lambda seconds: None)  # its retries wait for nothing
    poller = Poller(adapter, bot.services.store, interval=interval)
    provider.fail("status", status=503, times=10_000)
    asked_at = []
    for cycle in range(int(4 * longest_pause / interval)):
        before = len(provider.received)
        poller.run_once()
        if len(provider.received) > before:
            asked_at.append(cycle * interval)
    pauses = {b - a for a, b in zip(asked_at, asked_at[1:], strict=False)}
    assert max(pauses) == longest_pause  # the doubling stops at the cap, measured in time, not cycles
def test_a_404_for_one_job_does_not_stop_the_others(bot, provider):
    gone = {"provider": "openai", "id": "ftjob-deleted", "status": "running", "model": "m", "created_at": 1}
    alive = provider.add_job(status="running")
    _follow(bot, gone)
    _follow(bot, alive)
    provider.set_status(alive["id"], "succeeded")
    report = bot.services.poller.run_once()
    assert report.queued == 1 and report.error is None
    assert bot.services.store.follows.job("ftjob-deleted", "openai")["final"] == 0


def _follow_at_together(bot, job, channel="C1"):
    fields = {"id": job["id"], "provider": "together", "status": job["status"], "model": job["model"],
              "created_at": 1}
    return bot.services.store.follows.follow(channel, fields, final=False, team_id="T", user_id="U", origin="subscribe")


def test_together_is_asked_with_its_cheapest_call(make_bot, both, provider, together):
    bot = make_bot(env=both.env)
    jobs = [together.add_job(status="running") for _ in range(5)]
    _follow_at_together(bot, jobs[0])
    one = bot.services.poller.run_once()
    assert one.requests_by_provider == {"together": 1}  # one job: one retrieve beats listing every job
    assert [r.path for r in together.received] == [f"/v1/fine-tunes/{jobs[0]['id']}"]
    for job in jobs[1:]:
        _follow_at_together(bot, job)
    together.received.clear()
    five = bot.services.poller.run_once()
    assert five.requests_by_provider == {"together": 1} and five.observed == 5  # one list answers for all
    assert [r.path for r in together.received] == ["/v1/fine-tunes"]
    assert provider.received == []  # OpenAI has nothing followed: it is not asked

    together.set_status(jobs[2]["id"], "error", error="Loss became NaN at step 40")
    together.received.clear()
    failed = bot.services.poller.run_once()
    # The list says "error" but not why: that job alone is read whole, with its events.
    assert failed.finished == [jobs[2]["id"]] and failed.requests == 2
    assert bot.services.store.follows.job(jobs[2]["id"], "together")["error_message"] == "Loss became NaN at step 40"


def test_an_outcome_on_the_first_page_is_posted_while_later_pages_are_still_coming(bot, provider, slack):
    """Each page is recorded as it arrives: a slow hundredth page never holds back an outcome on the first."""
    import threading

    from bench.processes import wait_until

    jobs = [provider.add_job(status="running") for _ in range(250)]  # three pages of 100, newest first
    for job in jobs:
        _follow(bot, job)
    newest = jobs[-1]
    provider.set_status(newest["id"], "succeeded")  # on the first page
    slow = provider.fail("delay", match="/v1/fine_tuning/jobs", exact=True, method="GET", delay=30, skip=1)
    cycle = threading.Thread(target=bot.services.poller.run_once)
    cycle.start()
    try:
        assert wait_until(lambda: slack.outcomes_in("C1"), timeout=10)  # posted by the sender the page woke
        assert cycle.is_alive()  # while the second page is still on its way
    finally:
        slow.release()
        cycle.join(10)
    assert [p for p in slack.outcomes_in("C1") if newest["id"] in p["text"]]
