"""`finetune-bot serve` as a real process over HTTP: the scheduler, SIGTERM, and SIGKILL with a restart."""

from __future__ import annotations

import json
import re

import pytest

from bench.processes import ServeProcess, wait_until
from bot.sandbox.openai import SAMPLE_FILE_ID
from storage import Store
from tests import zygote
from tests.conftest import BOT_TOKEN, OPENAI_KEY, SIGNING_SECRET


def _env(tmp_path, slack, provider) -> dict:
    return {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
            "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": provider.url + "/v1",
            "DATABASE_PATH": str(tmp_path / "serve.db"), "POLL_INTERVAL_SECONDS": "0.2"}


def _sent(env: dict, kind: str) -> bool:
    store = Store(env["DATABASE_PATH"])
    try:
        return any(row["kind"] == kind for row in store.outbox.announcements(state="sent"))
    finally:
        store.close()


def test_serve_end_to_end_and_sigterm(tmp_path, slack, provider):
    proc = ServeProcess({**_env(tmp_path, slack, provider), "LOG_LEVEL": "DEBUG"})
    try:
        assert proc.healthy()
        assert proc.command(f"start {SAMPLE_FILE_ID}", slack.response_url("start")) == 200
        reply = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/start")])
        [job_id] = list(provider.jobs)
        assert job_id in reply[0]["text"]
        assert wait_until(lambda: slack.cards_in("C0GENERAL"), timeout=10)  # (its card up while it runs)
        provider.set_status(job_id, "succeeded")
        posted = wait_until(lambda: slack.outcomes_in("C0GENERAL"), timeout=10)
        assert posted and provider.jobs[job_id]["fine_tuned_model"] in posted[0]["text"]
        assert proc.terminate() == 0
        log = "".join(proc.log)
        assert "received SIGTERM; stopping" in log and "Traceback" not in log
        # (what start-up made is out of the collector's sight: a full collection in a burst held every ack for
        # 100-400 ms; bot.app.set_aside_start_up)
        set_aside = re.search(r"(\d+) objects made at start-up set aside from the garbage collector", log)
        assert set_aside and int(set_aside[1]) > 10_000
        assert BOT_TOKEN not in log and OPENAI_KEY not in log  # (everything said, and still no secret)
    finally:
        if proc.proc.poll() is None:
            proc.kill()
    assert len(slack.outcomes_in("C0GENERAL")) == 1 and len(slack.cards_in("C0GENERAL")) == 1


@pytest.mark.heavy(13)
def test_outcome_while_killed_is_announced_after_restart_once(tmp_path, slack, provider):
    job = provider.add_job(status="running")
    env = _env(tmp_path, slack, provider)
    first = ServeProcess(env, launch=zygote.launch)
    try:
        assert first.command(f"subscribe {job['id']}", slack.response_url("sub")) == 200
        assert wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/sub")])
        # Its card first, posted and recorded as sent: a process killed between the two holds the card, and the
        # outcome after it, until its lease ends (a minute); the fault soak covers that kill.
        assert wait_until(lambda: slack.cards_in("C0GENERAL"), timeout=10)
        assert wait_until(lambda: _sent(env, "card"), timeout=10)
    finally:
        first.kill()  # SIGKILL: no chance to clean up
    provider.set_status(job["id"], "succeeded")
    second = ServeProcess(env, launch=zygote.launch)
    try:
        assert wait_until(lambda: slack.outcomes_in("C0GENERAL"), timeout=10)
        assert second.terminate() == 0
    finally:
        if second.proc.poll() is None:
            second.kill()
    third = ServeProcess(env, launch=zygote.launch)  # and once more: nothing is announced twice
    try:
        assert wait_until(lambda: third.cycles("poll") >= 3 and third.cycles("deliver") >= 3, timeout=10)
        assert third.terminate() == 0
    finally:
        if third.proc.poll() is None:
            third.kill()
    assert len(slack.outcomes_in("C0GENERAL")) == 1 and len(slack.cards_in("C0GENERAL")) == 1
    assert json.dumps(slack.outcomes_in("C0GENERAL")[0]["metadata"]).count(job["id"]) == 1


@pytest.mark.heavy(7)
def test_serve_sandbox_needs_no_provider_and_says_so(tmp_path, slack):
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
           "DATABASE_PATH": str(tmp_path / "sandbox.db"), "POLL_INTERVAL_SECONDS": "0.2",
           "SANDBOX_PACE_SECONDS": "0.1"}
    proc = ServeProcess(env, args=("--sandbox",), launch=zygote.launch)
    try:
        assert "(provider: sandbox: openai, together, fireworks)" in "".join(proc.log)
        assert proc.command(f"start {SAMPLE_FILE_ID}", slack.response_url("sb")) == 200
        reply = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/sb")])
        assert reply[0]["text"].startswith("[sandbox] Started fine-tuning job")
        posted = wait_until(lambda: slack.outcomes_in("C0GENERAL"), timeout=10)
        assert posted[0]["text"].startswith("[sandbox] Fine-tuning job") and "ft:" in posted[0]["text"]
        assert "Sandbox provider" in json.dumps(posted[0]["blocks"])
        assert proc.terminate() == 0
    finally:
        if proc.proc.poll() is None:
            proc.kill()


@pytest.mark.heavy(8)
def test_a_start_killed_mid_request_is_followed_and_its_user_told_after_restart(tmp_path, slack, provider):
    """SIGKILL while the provider is creating the job: the job exists and is billed, nobody heard of it. On restart
    the bot finds it by the request id it wrote down first, follows it, and tells the person who typed the command."""
    env = _env(tmp_path, slack, provider)
    provider.fail("delay", delay=2.0, match="/fine_tuning/jobs")  # the create is slow; the job is made at its end
    first = ServeProcess({**env, "PROVIDER_TIMEOUT_SECONDS": "30"}, launch=zygote.launch)
    try:
        assert first.command(f"start {SAMPLE_FILE_ID} suffix=crash", slack.response_url("crash")) == 200
        assert wait_until(lambda: provider.requests_to("/fine_tuning/jobs", "POST"), timeout=10)
    finally:
        first.kill()  # mid-request: no reply, no subscription
    assert wait_until(lambda: provider.jobs, timeout=10)  # ...but the provider still made (and bills) the job
    [job_id] = list(provider.jobs)
    assert not [r for r in slack.responses if r["url"].endswith("/crash")]
    second = ServeProcess({**env, "PROVIDER_TIMEOUT_SECONDS": "0.5"}, launch=zygote.launch)
    try:
        reply = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/crash")], timeout=20)
        assert reply and job_id in reply[0]["text"] and "did go through" in reply[0]["text"]
        assert wait_until(lambda: slack.cards_in("C0GENERAL"), timeout=10)  # (its card up while it runs)
        provider.set_status(job_id, "succeeded")
        assert wait_until(lambda: slack.outcomes_in("C0GENERAL"), timeout=10)
        assert second.terminate() == 0
    finally:
        if second.proc.poll() is None:
            second.kill()
    assert len(provider.jobs) == 1 and len(provider.requests_to("/fine_tuning/jobs", "POST")) == 1
    [outcome], [card] = slack.outcomes_in("C0GENERAL"), slack.cards_in("C0GENERAL")
    assert job_id in outcome["text"] and outcome["thread_ts"] == card["ts"]  # the reconciled job got its card


def test_a_killed_bot_leaves_no_drawing_process_behind(tmp_path, slack, provider):
    """The drawing process ends when the bot's end of its pipe closes, however the bot ended: SIGKILL included (no
    `stop`, no atexit), so a crashed or OOM-killed bot leaves no matplotlib process holding memory on the host."""
    import os

    job = provider.add_job(status="running")
    provider.train(job["id"], 3, total=10)
    proc = ServeProcess(_env(tmp_path, slack, provider), launch=zygote.launch)
    store = Store(str(tmp_path / "serve.db"))
    store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U", origin="subscribe")
    store.close()
    provider.set_status(job["id"], "succeeded")
    assert wait_until(lambda: slack.uploads, timeout=30)  # a chart was drawn: the drawing process is up
    children = set()
    for task in os.listdir(f"/proc/{proc.proc.pid}/task"):
        with open(f"/proc/{proc.proc.pid}/task/{task}/children") as listed:
            children |= {int(c) for c in listed.read().split()}
    assert children
    proc.kill()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    assert wait_until(lambda: not any(alive(pid) for pid in children), timeout=10)
