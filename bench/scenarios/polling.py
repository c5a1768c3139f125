"""What a poll cycle costs: provider requests per cycle by followed jobs (`poll`), and over two and three
providers with one of them failing (`providers`, `providers3`)."""

from __future__ import annotations

import os
import time

from bench.harness import TOKEN, bursts, env_for, follow, percentile, say
from bench.processes import ServeProcess, wait_until
from bot.sandbox.fireworks import FireworksSandbox
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn
from bot.sandbox.together import TogetherSandbox


def bench_poll_cost(workdir: str, sizes: list[int]) -> None:
    for n in [0, *sizes]:
        with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
            jobs = [provider.add_job(status="running") for _ in range(n)]
            for _ in range(20):
                provider.add_job(status="succeeded")  # the organization's other, newer jobs
            db = os.path.join(workdir, f"poll{n}.db")
            follow(db, jobs)
            interval = 1.5
            proc = ServeProcess(env_for(db, slack, provider, POLL_INTERVAL_SECONDS=str(interval)))
            try:
                time.sleep(interval * 3.5)
            finally:
                proc.terminate()
            times = [r.at for r in provider.requests_to("/fine_tuning/jobs")]
            cycles = bursts(times, gap=interval / 2)
            per_cycle = max(cycles) if cycles else 0
            label = f"poll_requests_per_cycle_n{n}" if n else "poll_requests_per_cycle_none_active"
            say(label, per_cycle)
            if n:
                say(f"poll_naive_requests_per_cycle_n{n}", n)
                say(f"poll_ratio_naive_over_ours_n{n}", f"{n / max(per_cycle, 1):.1f}")
                say(f"poll_target_n{n}", -(-n // 100) + 2)


def bench_two_providers(workdir: str, n: int) -> None:
    half = n // 2
    with FineTuningSandbox() as provider, TogetherSandbox() as together, SlackStandIn(token=TOKEN) as slack:
        openai_jobs = [provider.add_job(status="running") for _ in range(half)]
        together_jobs = [together.add_job(status="running") for _ in range(n - half)]
        for _ in range(20):  # each organization's other, newer jobs
            provider.add_job(status="succeeded")
            together.add_job(status="completed")
        db = os.path.join(workdir, "two.db")
        follow(db, openai_jobs[20:])
        for k, job in enumerate(openai_jobs[:20]):  # a channel each: Slack's pace per channel is not the figure
            follow(db, [job], channel=f"C0TWO{k}")
        follow(db, [{"id": j["id"], "provider": "together", "status": j["status"], "model": j["model"]}
                    for j in together_jobs])
        interval = 1.5
        extra = {"TOGETHER_API_KEY": "tgp-bench-key", "TOGETHER_BASE_URL": together.url,
                 "POLL_INTERVAL_SECONDS": str(interval), "PROVIDER_TIMEOUT_SECONDS": "2"}
        proc = ServeProcess(env_for(db, slack, provider, **extra))
        try:
            time.sleep(interval * 3.5)
            openai_cycles = bursts([r.at for r in provider.requests_to("/fine_tuning/jobs")], gap=interval / 2)
            together_cycles = bursts([r.at for r in together.requests_to("/v1/fine-tunes")], gap=interval / 2)
            say("two_providers_followed_jobs", f"{half}+{n - half}")
            say("two_providers_openai_requests_per_cycle", max(openai_cycles))
            say("two_providers_together_requests_per_cycle", max(together_cycles))
            say("two_providers_requests_per_cycle", max(openai_cycles) + max(together_cycles))
            say("two_providers_naive_requests_per_cycle", n)
            # Together AI goes down; OpenAI's outcomes must come as fast as before.
            together.fail("status", match="/v1/fine-tunes", status=503, times=10**6,
                          body={"error": {"message": "Service unavailable", "type": "server_error"}})
            time.sleep(interval)
            finished_at = {}
            for job in openai_jobs[:20]:
                provider.set_status(job["id"], "succeeded")
                finished_at[job["id"]] = time.time()
                time.sleep(interval / 10)
            wait_until(lambda: len(slack.posted) >= 20, timeout=30)
        finally:
            proc.terminate()
        latencies = [p["at"] - finished_at[p["text"].split()[2]] for p in slack.posted
                     if p["text"].split()[2] in finished_at]
        say("two_providers_outage_openai_announced", len(latencies))
        say("two_providers_outage_openai_announce_p50_s", f"{percentile(latencies, 50):.2f}")
        say("two_providers_outage_openai_announce_max_s", f"{max(latencies):.2f}")
        say("two_providers_outage_target_s", f"{interval + 1:.2f}")


def bench_three_providers(workdir: str, n: int) -> None:
    """Provider requests per poll cycle with `n` followed jobs split over OpenAI's shape, Together AI's and
    Fireworks AI's (each organization with 20 newer jobs of its own beside them)."""
    third = n // 3
    with (FineTuningSandbox() as provider, TogetherSandbox() as together, FireworksSandbox() as fireworks,
          SlackStandIn(token=TOKEN) as slack):
        openai_jobs = [provider.add_job(status="running") for _ in range(third)]
        together_jobs = [together.add_job(status="running") for _ in range(third)]
        fireworks_jobs = [fireworks.add_job(status="running") for _ in range(n - 2 * third)]
        for _ in range(20):
            provider.add_job(status="succeeded")
            together.add_job(status="completed")
            fireworks.add_job(status="succeeded")
        db = os.path.join(workdir, "three.db")
        # The poll cycle's requests alone: the watchdog's metric reads are measured on their own (bench_watchdog).
        follow(db, openai_jobs, watchdog="off")
        follow(db, [{"id": j["id"], "provider": "together", "status": j["status"], "model": j["model"]}
                    for j in together_jobs])
        follow(db, [{"id": j["name"].rsplit("/", 1)[-1], "provider": "fireworks", "status": "running",
                     "model": j["baseModel"]} for j in fireworks_jobs])
        interval = 1.5
        extra = {"TOGETHER_API_KEY": "tgp-bench-key", "TOGETHER_BASE_URL": together.url,
                 "FIREWORKS_API_KEY": "fw-bench-key", "FIREWORKS_ACCOUNT_ID": fireworks.account,
                 "FIREWORKS_BASE_URL": fireworks.url, "POLL_INTERVAL_SECONDS": str(interval),
                 "PROVIDER_TIMEOUT_SECONDS": "2"}
        proc = ServeProcess(env_for(db, slack, provider, **extra))
        try:
            time.sleep(interval * 3.5)
            cycles = {"openai": bursts([r.at for r in provider.requests_to("/fine_tuning/jobs")], gap=interval / 2),
                      "together": bursts([r.at for r in together.requests_to("/v1/fine-tunes")], gap=interval / 2),
                      "fireworks": bursts([r.at for r in fireworks.requests_to("/supervisedFineTuningJobs")],
                                          gap=interval / 2)}
        finally:
            proc.terminate()
        say("three_providers_followed_jobs", f"{third}+{third}+{n - 2 * third}")
        for name, counts in cycles.items():
            say(f"three_providers_{name}_requests_per_cycle", max(counts))
        say("three_providers_requests_per_cycle", sum(max(counts) for counts in cycles.values()))
        say("three_providers_naive_requests_per_cycle", n)
        say("three_providers_fireworks_budget", -(-(n - 2 * third) // 200) + 2)
