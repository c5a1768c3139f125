"""Many jobs through random faults, SIGKILLs and two processes on one database: every outcome exactly once.

Run alone with `python -m pytest tests/test_fault_soak.py -s` to see its figures.
"""

from __future__ import annotations

import collections
import random
import time

from bot.sandbox.provider import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn
from storage import Store
from tests.conftest import BOT_TOKEN, OPENAI_KEY, SIGNING_SECRET
from tests.process import ServeProcess, wait_until

JOBS = 40
CHANNELS = tuple(f"C0CHAN{n}" for n in range(10))  # Slack allows about one post a second in each
OUTCOMES = ("succeeded", "failed", "cancelled")


def _inject(rng: random.Random, provider: FineTuningSandbox, slack: SlackStandIn) -> None:
    kind = rng.choice(["provider-5xx", "provider-429", "provider-drop", "provider-slow",
                       "slack-429", "slack-5xx", "slack-drop", "slack-lost-answer"])
    if kind == "provider-5xx":
        provider.fail("status", status=rng.choice([500, 502, 503]), times=rng.randint(1, 3))
    elif kind == "provider-429":
        provider.fail("status", status=429, retry_after=0.2, times=rng.randint(1, 3))
    elif kind == "provider-drop":
        provider.fail("drop", times=rng.randint(1, 2))
    elif kind == "provider-slow":
        provider.fail("delay", delay=0.5)
    elif kind == "slack-429":
        slack.fail("status", match="chat.postMessage", status=429, retry_after=1)
    elif kind == "slack-5xx":
        slack.fail("status", match="chat.postMessage", status=503, times=rng.randint(1, 2))
    elif kind == "slack-drop":
        slack.fail("drop", match="chat.postMessage")
    else:
        slack.fail("drop_after", match="chat.postMessage")  # posted, answer lost


def test_every_outcome_announced_exactly_once(tmp_path, capsys):
    rng = random.Random(20261126)
    db = str(tmp_path / "shared.db")
    with FineTuningSandbox() as provider, SlackStandIn(token=BOT_TOKEN) as slack:
        store = Store(db)
        expected = {}
        for _ in range(JOBS):
            job = provider.add_job(status="running")
            for channel in rng.sample(CHANNELS, rng.randint(1, 3)):
                store.follow(channel, job, final=False, team_id="T", user_id="U0OWNER", origin="subscribe")
                expected[(job["id"], channel)] = None
        env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
               "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": provider.url + "/v1", "DATABASE_PATH": db,
               "POLL_INTERVAL_SECONDS": "0.2", "DELIVERY_LEASE_SECONDS": "2", "PROVIDER_TIMEOUT_SECONDS": "1",
               "LOG_LEVEL": "WARNING"}
        procs = [ServeProcess(env), ServeProcess(env)]
        restarts = 0
        try:
            pending = [job_id for job_id in provider.jobs]
            rng.shuffle(pending)
            while pending:
                for _ in range(rng.randint(1, 4)):
                    if pending:
                        job_id = pending.pop()
                        outcome = rng.choice(OUTCOMES)
                        provider.set_status(job_id, outcome)
                        for key in expected:
                            if key[0] == job_id:
                                expected[key] = outcome
                for _ in range(rng.randint(1, 2)):
                    _inject(rng, provider, slack)
                if rng.random() < 0.3:
                    victim = rng.randrange(len(procs))
                    procs[victim].kill()  # SIGKILL, perhaps mid-delivery
                    procs[victim] = ServeProcess(env)
                    restarts += 1
                time.sleep(rng.uniform(0.05, 0.3))
            provider.faults.clear()
            slack.faults.clear()
            settle_started = time.monotonic()

            def delivered():
                keys = collections.Counter(
                    p["metadata"]["event_payload"]["key"] for p in slack.posted if p.get("metadata"))
                return len(keys) == len(expected) and keys

            wait_until(delivered, timeout=60, interval=0.2)
            settled = time.monotonic() - settle_started
            time.sleep(1.0)  # a few more cycles: nothing more may arrive
            for proc in procs:
                assert proc.terminate() == 0
        finally:
            for proc in procs:
                if proc.proc.poll() is None:
                    proc.kill()
        keys = collections.Counter(p["metadata"]["event_payload"]["key"] for p in slack.posted if p.get("metadata"))
        wanted = {f"{job_id}:{channel}:{outcome}" for (job_id, channel), outcome in expected.items()}
        lost = wanted - set(keys)
        duplicated = {k: n for k, n in keys.items() if n > 1}
        faults = provider.faults_injected + slack.faults_injected
        with capsys.disabled():
            print(f"\nfault soak: jobs={JOBS} announcements={len(wanted)} faults_injected={faults} "
                  f"restarts={restarts} processes=2 lost={len(lost)} duplicated={len(duplicated)} "
                  f"unexpected={len(set(keys) - wanted)} settled_in={settled:.1f}s")
        assert not lost and not duplicated and set(keys) == wanted
        assert restarts > 0 and faults > 10
