"""Deployments (`deploy`): SQLite on one host, PostgreSQL with one replica and with three."""

from __future__ import annotations

import os
import time

from bench.harness import TOKEN, env_for, percentile, say, timed_commands
from bench.processes import ServeProcess, side_by_side, stop_all, wait_until
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn
from storage import Store


def bench_deployment(workdir: str, label: str, db: str, replicas: int, followed: int, *, commands: int = 300,
                     senders: int = 20, channels: int = 50, finishing: int = 30, draining: int = 200,
                     cycles: int = 5) -> None:
    """One deployment (`label`: SQLite on one host, or PostgreSQL with `replicas` replicas) with `followed` running
    jobs over `channels` channels: the provider's list reads per poll interval (per cycle while a cycle takes less
    than the interval); the announcement latency of `finishing` jobs succeeding at once; then `draining` more
    outcomes (a few per channel) while `commands` slash commands come from `senders` senders spread over the
    replicas: the acks' p99 and the outbox's drain rate. The list reads are counted over `cycles` intervals."""
    interval = 1.0 if followed <= 1000 else 5.0
    with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
        jobs = [provider.add_job(status="running") for _ in range(followed)]
        store = Store(db)
        for k, job in enumerate(jobs):
            store.follows.follow(f"C0DEP{k % channels}", job, final=False, team_id="T", user_id="U0BENCH",
                                 origin="subscribe")
        store.close()
        folders = [os.path.join(workdir, f"{label}-{followed}-r{n}") for n in range(replicas)]
        for folder in folders:
            os.makedirs(folder)
        procs = side_by_side(lambda folder: ServeProcess(
            env_for(db, slack, provider, POLL_INTERVAL_SECONDS=str(interval)), cwd=folder), folders)
        try:
            wait_until(lambda: provider.requests_to("/fine_tuning/jobs"), timeout=60)
            time.sleep(interval * 2)

            def lists() -> int:
                return len([r for r in provider.requests_to("/fine_tuning/jobs", "GET") if r.path.endswith("/jobs")])

            before, window = lists(), interval * cycles
            time.sleep(window)
            per_cycle = (lists() - before) / (window / interval)
            finished_at = {}
            for job in jobs[:finishing]:
                provider.set_status(job["id"], "succeeded")
                finished_at[job["id"]] = time.time()
            wait_until(lambda: len(slack.posted) >= finishing, timeout=60, interval=0.02)
            latencies = [p["at"] - finished_at[j] for p in slack.posted for j in finished_at if j in p["text"]]
            drain = jobs[finishing:finishing + draining]
            for job in drain:
                provider.set_status(job["id"], "succeeded")
            wait_until(lambda: len(slack.posted) > finishing, timeout=60, interval=0.02)
            texts = ["help", "settings", "subscriptions"]
            acks, _began, _ended = timed_commands(
                procs[0], slack, commands, senders,
                lambda n: ((texts + [f"status {jobs[n % followed]['id']}"])[n % 4], f"C0ACK{n % 7}", f"dep{n}"),
                others=tuple(procs[1:]))
            wait_until(lambda: len(slack.posted) >= finishing + len(drain), timeout=120, interval=0.05)
            drained = sorted(p["at"] for p in slack.posted[finishing:])
            cpu = [_cpu_seconds(p.proc.pid) for p in procs]
        finally:
            stop_all(procs)
        name = f"deploy_{label}_n{followed}"
        say(f"{name}_replicas", replicas)
        say(f"{name}_announced", f"{len(slack.posted)}/{finishing + len(drain)}")
        say(f"{name}_poll_interval_s", interval)
        say(f"{name}_provider_list_reads_per_interval", f"{per_cycle:.1f}")
        say(f"{name}_announce_p50_s", f"{percentile(latencies, 50):.2f}")
        say(f"{name}_announce_max_s", f"{max(latencies):.2f}")
        say(f"{name}_ack_p99_ms", f"{percentile(acks, 99) * 1000:.1f}")
        say(f"{name}_cpu_s_per_replica", " / ".join(f"{c:.1f}" for c in cpu))
        rate = (len(drained) - 1) / max(drained[-1] - drained[0], 1e-9)
        say(f"{name}_drain_posts_per_s_over_{channels}_channels", f"{rate:.1f}")


def _cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_deployments(workdir: str, sizes: list[int], database_url: str | None, kinds: set[str], **small) -> None:
    """SQLite on one host, then PostgreSQL (`--database-url`, or a throwaway server from this machine's PostgreSQL)
    with one replica and with three, each with every size of `sizes`."""
    server = None
    if database_url is None:
        from bench.postgres import ThrowawayPostgres

        server = ThrowawayPostgres().start()
    try:
        for followed in sizes:
            if "sqlite" in kinds:
                bench_deployment(workdir, "sqlite", os.path.join(workdir, f"deploy-{followed}.db"), 1, followed,
                                 **small)
            for replicas in (1, 3):
                if f"postgresql_{replicas}" not in kinds:
                    continue
                db = database_url if server is None else server.new_database()
                if server is None:
                    _empty(db)
                bench_deployment(workdir, f"postgresql_{replicas}", db, replicas, followed, **small)
    finally:
        if server is not None:
            server.stop()


def _empty(url: str) -> None:
    """A given PostgreSQL database emptied of the bot's tables, so that each deployment starts from nothing."""
    from sqlalchemy import create_engine

    from storage.schema import metadata

    engine = create_engine(url.replace("postgres://", "postgresql+psycopg://", 1).replace(
        "postgresql://", "postgresql+psycopg://", 1))
    metadata.drop_all(engine)
    engine.dispose()
