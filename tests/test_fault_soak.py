"""Many jobs through random faults, SIGKILLs and two processes on one database (a SQLite file, then a PostgreSQL
server): every outcome exactly once.

Run alone with `python -m pytest tests/test_fault_soak.py -s` to see its figures.
"""

from __future__ import annotations

import collections
import random
import time

import pytest

from bench.processes import ServeProcess, wait_until
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn
from storage import Store
from tests import zygote
from tests.conftest import BOT_TOKEN, OPENAI_KEY, SIGNING_SECRET, database_env

JOBS = 40
CHANNELS = tuple(f"C0CHAN{n}" for n in range(10))  # Slack allows about one post a second in each
OUTCOMES = ("succeeded", "failed", "cancelled")


def _inject(rng: random.Random, provider: FineTuningSandbox, slack: SlackStandIn) -> str:
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
    return kind


def _outcome_keys(slack: SlackStandIn) -> collections.Counter:
    """How many times each outcome announcement was posted (cards, edits and replies aside), by its key."""
    return collections.Counter(p["metadata"]["event_payload"]["key"] for p in slack.posted
                               if p.get("metadata") and p["metadata"]["event_payload"]["key"].rsplit(":", 1)[-1]
                               in OUTCOMES)


def _wait_for_empty_outbox(store: Store) -> None:
    outbox = store.outbox
    wait_until(lambda: not outbox.announcements(state="pending") and not outbox.announcements(state="sending"),
               timeout=30)


def _kill_survivors(procs: list[ServeProcess]) -> None:
    for proc in procs:
        if proc.proc.poll() is None:
            proc.kill()


@pytest.mark.heavy(29)
def test_every_outcome_announced_exactly_once(database, capsys):
    rng = random.Random(20261126)
    db = database
    with FineTuningSandbox() as provider, SlackStandIn(token=BOT_TOKEN) as slack:
        store = Store(db)
        expected = {}
        carded = set()
        coin = random.Random(7)  # (its own stream: the faults and restarts stay those of the seed above)
        for _ in range(JOBS):
            job = provider.add_job(status="running")
            for channel in rng.sample(CHANNELS, rng.randint(1, 3)):
                card = coin.random() < 0.5  # half with a card: the outcome then goes in its thread
                store.follows.follow(channel, job, final=False, team_id="T", user_id="U0OWNER", origin="subscribe",
                                     card=card)
                expected[(job["id"], channel)] = None
                if card:
                    carded.add(f"openai:{job['id']}:{channel}:card")
        env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
               "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": provider.url + "/v1", **database_env(db),
               "POLL_INTERVAL_SECONDS": "0.2", "DELIVERY_LEASE_SECONDS": "2", "PROVIDER_TIMEOUT_SECONDS": "1",
               "LOG_LEVEL": "WARNING"}
        procs = [ServeProcess(env, launch=zygote.launch), ServeProcess(env, launch=zygote.launch)]
        restarts = 0
        planned: collections.Counter = collections.Counter()  # the same for a given seed, whatever the timing
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
                    planned[_inject(rng, provider, slack)] += 1
                if rng.random() < 0.3:
                    victim = rng.randrange(len(procs))
                    procs[victim].kill()  # SIGKILL, perhaps mid-delivery
                    procs[victim] = ServeProcess(env, launch=zygote.launch)
                    restarts += 1
                # Let the processes see this step before the next: a bounded wait on them asking the provider.
                asked = len(provider.received)
                wait_until(lambda asked=asked: len(provider.received) >= asked + 2, timeout=2.0)
            provider.faults.clear()
            slack.faults.clear()
            settle_started = time.monotonic()

            def delivered():
                keys = _outcome_keys(slack)
                return len(keys) == len(expected) and keys

            wait_until(delivered, timeout=60, interval=0.2)
            settled = time.monotonic() - settle_started
            # Nothing more may arrive: the outbox is empty and both processes have run more delivery cycles since.
            _wait_for_empty_outbox(store)
            runs = [proc.cycles("deliver") for proc in procs]
            wait_until(lambda: all(p.cycles("deliver") >= r + 2 for p, r in zip(procs, runs, strict=True)),
                       timeout=10)
            for proc in procs:
                assert proc.terminate() == 0
        finally:
            _kill_survivors(procs)
        keys = _outcome_keys(slack)
        cards = collections.Counter(p["metadata"]["event_payload"]["key"] for p in slack.posted
                                    if p.get("metadata") and p["metadata"]["event_payload"]["key"].endswith(":card"))
        wanted = {f"openai:{job_id}:{channel}:{outcome}" for (job_id, channel), outcome in expected.items()}
        lost = wanted - set(keys)
        duplicated = {k: n for k, n in keys.items() if n > 1}
        faults = provider.faults_injected + slack.faults_injected
        with capsys.disabled():
            print(f"\nfault soak: jobs={JOBS} announcements={len(wanted)} faults_planned={sum(planned.values())} "
                  f"faults_injected={faults} "
                  f"restarts={restarts} processes=2 lost={len(lost)} duplicated={len(duplicated)} "
                  f"unexpected={len(set(keys) - wanted)} cards={len(cards)}/{len(carded)} "
                  f"cards_duplicated={sum(n > 1 for n in cards.values())} settled_in={settled:.1f}s")
        assert not lost and not duplicated and set(keys) == wanted
        assert set(cards) <= carded and all(n == 1 for n in cards.values())
        in_threads = [p for p in slack.posted if p.get("thread_ts") and p.get("metadata")]
        assert in_threads and all(p["broadcast"] for p in in_threads)  # outcomes in card threads, in the channel
        assert restarts > 0 and faults > 10


@pytest.mark.heavy(24)
def test_slow_slack_with_two_processes_and_a_sigterm_posts_each_outcome_once(database, capsys):
    """Slack taking 1.5 s a call, no history scope (the default manifest), two processes on one database, one of
    them stopped mid-run: a claim covers only the post it guards, so no takeover can race a post in flight."""
    db = database
    with FineTuningSandbox() as provider, SlackStandIn(token=BOT_TOKEN, history_scope=False) as slack:
        slack.latency = 1.5
        store = Store(db)
        jobs = [provider.add_job(status="running") for _ in range(12)]
        for n, job in enumerate(jobs):
            store.follows.follow(f"C0SLOW{n}", job, final=False, team_id="T", user_id="U0OWNER", origin="subscribe")
        env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
               "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": provider.url + "/v1", **database_env(db),
               "POLL_INTERVAL_SECONDS": "0.2", "DELIVERY_LEASE_SECONDS": "4", "LOG_LEVEL": "WARNING"}
        procs = [ServeProcess(env, launch=zygote.launch), ServeProcess(env, launch=zygote.launch)]
        started = time.monotonic()
        try:
            for job in jobs:
                provider.set_status(job["id"], "succeeded")
            assert wait_until(lambda: len(slack.posted) >= 3, timeout=30)
            assert procs[0].terminate() == 0  # SIGTERM while posts are in flight
            procs[0] = ServeProcess(env, launch=zygote.launch)
            assert wait_until(lambda: len({p["channel"] for p in slack.posted}) == len(jobs), timeout=60)
            _wait_for_empty_outbox(store)
            for proc in procs:
                assert proc.terminate() == 0
        finally:
            _kill_survivors(procs)
        took = time.monotonic() - started
        keys = collections.Counter(p["metadata"]["event_payload"]["key"] for p in slack.posted if p.get("metadata"))
        duplicated = {k: n for k, n in keys.items() if n > 1}
        with capsys.disabled():
            print(f"\nslow-Slack soak: slack_latency=1.5s lease=4s jobs={len(jobs)} processes=2 sigterms=1 "
                  f"posted={sum(keys.values())} duplicated={len(duplicated)} lost={len(jobs) - len(keys)} "
                  f"took={took:.1f}s")
        assert not duplicated and len(keys) == len(jobs)
