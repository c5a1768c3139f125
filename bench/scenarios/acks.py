"""Slack's 3-second ack under load: signed slash commands from concurrent senders against `serve`, with every
provider call slowed (`ack`), and while a backlog of announcements drains (`ack-load`)."""

from __future__ import annotations

import os
import time

from bench import harness
from bench.harness import TOKEN, env_for, follow, percentile, say, timed_commands
from bench.processes import ServeProcess, wait_until
from bot.sandbox.openai import SAMPLE_FILE_ID, FineTuningSandbox
from bot.sandbox.slack import SlackStandIn


def bench_ack(workdir: str, commands: int, senders: int) -> None:
    with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
        running = [provider.add_job(status="running") for _ in range(5)]
        provider.latency = 0.5
        proc = ServeProcess(env_for(os.path.join(workdir, "ack.db"), slack, provider, POLL_INTERVAL_SECONDS="3600"))
        try:
            texts = [f"start {SAMPLE_FILE_ID}", "list 5", f"status {running[0]['id']}",
                     f"subscribe {running[1]['id']}", "subscriptions", f"status {running[2]['id']}"]
            latencies, began, _ = timed_commands(proc, slack, commands, senders,
                                                 lambda n: (texts[n % len(texts)], f"C0LOAD{n % 7}", f"load{n}"))
            answered = wait_until(lambda: len({r["url"] for r in slack.responses}) >= commands, timeout=120,
                                  interval=0.1)
            got = len({r["url"] for r in slack.responses})
            # The burst's last answer (through its response_url): the work after the acks, every provider call 0.5 s.
            say("ack_burst_answered_s", f"{max(r['at'] for r in slack.responses) - began:.1f}")
            say("ack_commands", commands)
            say("ack_concurrent_senders", senders)
            say("ack_provider_delay_s", 0.5)
            say("ack_p50_ms", f"{percentile(latencies, 50) * 1000:.1f}")
            say("ack_p99_ms", f"{percentile(latencies, 99) * 1000:.1f}")
            say("ack_max_ms", f"{max(latencies) * 1000:.1f}")
            say("ack_over_3s", sum(1 for x in latencies if x > 3))
            say("ack_results_lost", commands - got if not answered else 0)
        finally:
            proc.terminate()


def bench_ack_under_load(workdir: str, commands: int, senders: int, followed: int = 1000, channels: int = 50,
                         settle: float = 3.0) -> None:
    """Ack latency while the bot is busy: a poll cycle over `followed` running jobs every second, and the sender
    draining outcomes in `channels` channels (a job in each succeeds as the commands start)."""
    with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
        jobs = [provider.add_job(status="running") for _ in range(followed)]
        db = os.path.join(workdir, "ack-load.db")
        follow(db, jobs[channels:])
        for k, job in enumerate(jobs[:channels]):
            follow(db, [job], channel=f"C0DRAIN{k}")
        proc = ServeProcess(env_for(db, slack, provider, POLL_INTERVAL_SECONDS="1"))
        try:
            time.sleep(settle)  # polling over all of them
            for job in jobs[:channels]:
                provider.set_status(job["id"], "succeeded")
            # The commands start as the sender starts draining, so the two overlap (counted below).
            wait_until(lambda: any(p["channel"].startswith("C0DRAIN") for p in slack.posted), timeout=30,
                       interval=0.02)
            texts = ["help", "settings", "subscriptions"]
            latencies, began, ended = timed_commands(
                proc, slack, commands, senders,
                lambda n: ((texts + [f"status {jobs[n % followed]['id']}"])[n % 4], f"C0ACK{n % 7}", f"ack{n}"))
            drained = len([p for p in slack.posted if p["channel"].startswith("C0DRAIN") and began <= p["at"] <= ended])
            span = ended - began
        finally:
            proc.terminate()
        say("ack_load_commands", commands)
        say("ack_load_concurrent_senders", senders)
        say("ack_load_senders_in_own_process", harness.SENDERS_APART)
        say("ack_load_followed_jobs_polled_each_second", followed)
        say("ack_load_channels_draining", channels)
        say("ack_load_commands_took_s", f"{span:.2f}")
        say("ack_load_outcomes_posted_meanwhile", drained)
        say("ack_load_p50_ms", f"{percentile(latencies, 50) * 1000:.1f}")
        say("ack_load_p99_ms", f"{percentile(latencies, 99) * 1000:.1f}")
        say("ack_load_max_ms", f"{max(latencies) * 1000:.1f}")
        say("ack_load_target", "p99 < 100 ms")
