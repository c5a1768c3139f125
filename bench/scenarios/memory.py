"""Resident memory of `serve` following many jobs (`memory`), idle and after its first chart (`memory-idle`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.harness import TOKEN, env_for, follow, proc_modules, rss_kb, say, tree_rss_kb
from bench.processes import ServeProcess, wait_until
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn


@contextmanager
def _serving(workdir: str, name: str, n: int) -> Iterator[tuple[FineTuningSandbox, SlackStandIn, list, ServeProcess]]:
    """`serve` following n running jobs at OpenAI's shape (polled every second), until the block ends."""
    with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
        jobs = [provider.add_job(status="running") for _ in range(n)]
        db = os.path.join(workdir, f"{name}.db")
        follow(db, jobs)
        proc = ServeProcess(env_for(db, slack, provider, POLL_INTERVAL_SECONDS="1"), fresh=True)  # (its own memory)
        try:
            yield provider, slack, jobs, proc
        finally:
            proc.terminate()


def bench_memory(workdir: str, n: int) -> None:
    with _serving(workdir, "memory", n) as (provider, slack, jobs, proc):
        time.sleep(3.5)  # a few full poll cycles over all of them
        for job in jobs[: n // 2]:
            provider.set_status(job["id"], "succeeded")
        wait_until(lambda: len(slack.posted) >= 1, timeout=10)
        time.sleep(2)
        peak_kb = tree_rss_kb(proc.proc.pid, "VmHWM")
    say("memory_followed_jobs", n)
    say("memory_peak_rss_mb", f"{peak_kb / 1024:.1f}")


def bench_memory_idle(workdir: str, n: int, settle: float = 4.5) -> None:
    """Resident memory of `serve` following n running jobs at OpenAI's shape, cards on, with no chart drawn; then the
    same process after its first chart (matplotlib is loaded with it)."""
    with _serving(workdir, "memory-idle", n) as (provider, slack, jobs, proc):
        time.sleep(settle)  # a few full poll cycles over all of them
        idle_kb = rss_kb(proc.proc.pid)
        idle_loaded = proc_modules(proc.proc.pid)
        provider.set_status(jobs[0]["id"], "succeeded")
        wait_until(lambda: slack.uploads, timeout=30)
        time.sleep(0.5)
        charted_kb = rss_kb(proc.proc.pid)
        charted_loaded = proc_modules(proc.proc.pid)
        drawer_kb = tree_rss_kb(proc.proc.pid) - charted_kb  # the drawing process (and its helper)
    say("memory_idle_followed_jobs", n)
    say("memory_idle_rss_mb", f"{idle_kb / 1024:.1f}")
    say("memory_idle_target_mb", 100)
    say("memory_after_first_chart_rss_mb", f"{charted_kb / 1024:.1f}")
    say("memory_chart_process_rss_mb", f"{drawer_kb / 1024:.1f}")
    say("memory_bot_and_chart_process_rss_mb", f"{(charted_kb + drawer_kb) / 1024:.1f}")
    say("memory_bot_and_chart_process_target_mb", 150)
    say("memory_idle_libraries_loaded", idle_loaded or "none")  # of matplotlib, numpy, aiohttp, together, tiktoken
    say("memory_after_first_chart_libraries_loaded", charted_loaded or "none")  # charts are drawn elsewhere
