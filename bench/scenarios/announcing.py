"""From a job's end at the provider to its post in Slack: through polling and webhooks (`announce`), and with
cards and progress on in busy channels (`announce-busy`)."""

from __future__ import annotations

import os
import time

from bench.harness import TOKEN, WEBHOOK_SECRET, env_for, follow, percentile, say
from bench.processes import ServeProcess, wait_until
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn
from storage import Store


def bench_announce(workdir: str, jobs: int) -> None:
    # Through polling.
    with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
        interval = 2.0
        made = [provider.add_job(status="running") for _ in range(jobs)]
        db = os.path.join(workdir, "announce-poll.db")
        for n, job in enumerate(made):
            follow(db, [job], channel=f"C0POLL{n}")
        proc = ServeProcess(env_for(db, slack, provider, POLL_INTERVAL_SECONDS=str(interval)))
        try:
            finished_at = {}
            for job in made:
                time.sleep(interval * 3 / jobs)  # outcomes spread over three poll intervals
                provider.set_status(job["id"], "succeeded")
                finished_at[job["id"]] = time.time()
            wait_until(lambda: len(slack.posted) >= jobs, timeout=30)
        finally:
            proc.terminate()
        latencies = [p["at"] - finished_at[made[int(p["channel"][6:])]["id"]] for p in slack.posted]
        say("announce_poll_interval_s", interval)
        say("announce_poll_jobs", jobs)
        say("announce_poll_p50_s", f"{percentile(latencies, 50):.2f}")
        say("announce_poll_max_s", f"{max(latencies):.2f}")
        say("announce_poll_target_s", f"{interval + 1:.2f}")
    # Through webhooks (polling set to an hour, so only the webhook can be the path).
    with FineTuningSandbox(webhook_secret=WEBHOOK_SECRET) as provider, SlackStandIn(token=TOKEN) as slack:
        made = [provider.add_job(status="running") for _ in range(jobs)]
        db = os.path.join(workdir, "announce-hook.db")
        for n, job in enumerate(made):
            follow(db, [job], channel=f"C0HOOK{n}")
        proc = ServeProcess(env_for(db, slack, provider, POLL_INTERVAL_SECONDS="3600",
                                    OPENAI_WEBHOOK_SECRET=WEBHOOK_SECRET))
        try:
            wait_until(lambda: provider.requests_to("/fine_tuning/jobs"), timeout=10)  # the start-up poll is done
            time.sleep(0.5)
            provider.webhook_url = proc.url + "/openai/webhook"
            finished_at = {}
            for job in made:
                provider.set_status(job["id"], "succeeded")
                finished_at[job["id"]] = time.time()
                time.sleep(0.05)
            wait_until(lambda: len(slack.posted) >= jobs, timeout=30)
        finally:
            proc.terminate()
        latencies = [p["at"] - finished_at[made[int(p["channel"][6:])]["id"]] for p in slack.posted]
        say("announce_webhook_jobs", jobs)
        say("announce_webhook_delivered", len(slack.posted))
        say("announce_webhook_p50_s", f"{percentile(latencies, 50):.3f}")
        say("announce_webhook_p99_s", f"{percentile(latencies, 99):.3f}")


def bench_announce_busy(workdir: str, followed: int = 300, finishing: int = 30, channels: int = 25,
                        interval: float = 1.0, runs: int = 1) -> None:
    """Announcement latency with cards and progress on: `followed` running jobs over `channels` channels (each with
    its card), then `finishing` of them succeed at once; from the provider's change to Slack's answer."""
    latencies: list[float] = []
    for run in range(runs):
        with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
            jobs = [provider.add_job(status="running") for _ in range(followed)]
            for job in jobs:
                provider.train(job["id"], 3, total=100)  # training, with metrics: progress is due on every card
            db = os.path.join(workdir, f"announce-busy{run}.db")
            store = Store(db)
            for k, job in enumerate(jobs):  # job k in channel k % channels
                store.follows.follow(f"C0BUSY{k % channels}", job, final=False, team_id="T", user_id="U0BENCH",
                                     origin="subscribe", card=True)
            store.close()
            proc = ServeProcess(env_for(db, slack, provider, POLL_INTERVAL_SECONDS=str(interval)))
            try:
                # Every card is up (thread replies are posts too, so count the cards themselves): a sweep's cards
                # take a second each in their channel, and an outcome posted meanwhile waits for the one in flight.
                wait_until(lambda: sum(1 for p in slack.posted if not p.get("thread_ts")) >= followed, timeout=120,
                           interval=0.2)
                # A provider's change comes at no particular moment of the poll cycle. Waiting on a Slack post ties
                # this moment to the cycle's (posts follow cycles): the runs spread it evenly over an interval.
                time.sleep(interval * 2 + interval * (run + 0.5) / runs)
                # Spread over the channels as a sweep's would be: every channel has one, a few have two.
                chosen = jobs[:finishing]
                finished_at = {}
                for job in chosen:
                    provider.set_status(job["id"], "succeeded")
                    finished_at[job["id"]] = time.time()
                wait_until(lambda: sum(1 for p in slack.posted if p.get("broadcast")) >= finishing, timeout=60,
                           interval=0.05)
            finally:
                proc.terminate()
            for p in slack.posted:
                if p.get("broadcast"):
                    job_id = next((j for j in finished_at if j in p["text"]), None)
                    if job_id:
                        latencies.append(p["at"] - finished_at[job_id])
                        if latencies[-1] >= max(latencies):
                            slowest = (p, finished_at[job_id], list(slack.posted))
    if os.environ.get("BENCH_TRACE"):
        p, at, posted = slowest
        for q in posted:
            if q["channel"] == p["channel"] and at - 3 <= q["at"] <= p["at"]:
                kind = "outcome" if q.get("broadcast") else "reply" if q.get("thread_ts") else "card"
                print(f"  trace {p['channel']}: {q['at'] - at:+.2f} s {kind}")
    say("announce_busy_followed_jobs", followed)
    say("announce_busy_finishing_at_once", finishing)
    say("announce_busy_channels", channels)
    say("announce_busy_interval_s", interval)
    say("announce_busy_announced", len(latencies))
    say("announce_busy_p50_s", f"{percentile(latencies, 50):.2f}")
    say("announce_busy_max_s", f"{max(latencies):.2f}")
    say("announce_busy_target", "p50 <= 1.00 s, max <= 2.00 s")
