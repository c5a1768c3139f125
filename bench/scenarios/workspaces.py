"""Many workspaces (`workspaces`): installed through Slack's OAuth flow, each with its own OpenAI key (its own account
at the sandbox) and its own followed jobs, on PostgreSQL with three replicas. The provider requests a poll cycle
makes, per workspace's key, and how soon an outcome reaches Slack."""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from urllib.parse import parse_qs, urlencode, urlsplit

from bench.harness import SECRET, percentile, say
from bench.processes import ServeProcess, side_by_side, stop_all, wait_until
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn
from bot.sandbox.slack_oauth import CLIENT_ID, CLIENT_SECRET
from bot.vault import Vault
from storage import Store

SEALING_KEY = "l5nD2Vx8o8C8H0VTVUzYQn3VxAcvXW9Jw8rYj8iQZ6w="  # a Fernet key for the bench's own database only


def _get(url: str) -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("GET", parts.path + ("?" + parts.query if parts.query else ""))
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def _install(proc: ServeProcess, slack: SlackStandIn, team: str) -> None:
    """Add to Slack, approve, come back: the real flow, through one replica."""
    status, headers = _get(proc.url + "/slack/install")
    state = parse_qs(urlsplit(headers["location"]).query)["state"][0]
    status, _ = _get(proc.url + "/slack/oauth_redirect?" + urlencode({"code": slack.grant(team), "state": state}))
    assert status == 200, status


def bench_workspaces(database_url: str, *, workspaces: int = 50, per_workspace: int = 20, replicas: int = 3,
                     interval: float = 5.0, finishing: int = 30, cycles: int = 3) -> None:
    with FineTuningSandbox() as provider, SlackStandIn() as slack:
        provider.accounts = True  # each key its own account: a workspace's listing holds only its own jobs
        env = {"SLACK_CLIENT_ID": CLIENT_ID, "SLACK_CLIENT_SECRET": CLIENT_SECRET, "ENCRYPTION_KEYS": SEALING_KEY,
               "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.api_url, "DATABASE_URL": database_url,
               "OPENAI_BASE_URL": provider.url + "/v1", "POLL_INTERVAL_SECONDS": str(interval),
               "LOG_LEVEL": "WARNING"}  # (no OPENAI_API_KEY: every workspace brings its own)
        procs = [ServeProcess(env)]
        try:
            teams = [f"T0BENCH{n:03d}" for n in range(workspaces)]
            for team in teams:
                _install(procs[0], slack, team)
            store, vault = Store(database_url), Vault([SEALING_KEY])
            keys, jobs = {}, []
            for team in teams:
                workspace, key = f"T:{team}", f"sk-bench-{team.lower()}-000000000000"
                keys[key] = team
                store.workspaces.set_key(workspace, "openai", sealed=vault.seal(json.dumps({"OPENAI_API_KEY": key})),
                                         last4=key[-4:], user_id="U0ADMIN")
                for k in range(per_workspace):
                    job = provider.add_job(status="running", _account=key)
                    channel = f"C{team[1:]}X{k % 2}"
                    store.follows.follow(channel, job, final=False, team_id=team, user_id="U0BENCH",
                                         origin="subscribe")
                    store.workspaces.claim_job("openai", job["id"], workspace)
                    store.workspaces.note_channel(channel, workspace)
                    jobs.append(job)
            store.close()
            procs += side_by_side(lambda _: ServeProcess(env), range(replicas - 1))
            wait_until(lambda: provider.requests_to("/fine_tuning/jobs", "GET"), timeout=60)
            time.sleep(interval * 2)

            def lists() -> list:
                return [r for r in provider.requests_to("/fine_tuning/jobs", "GET") if r.path.endswith("/jobs")]

            before, began = len(lists()), time.monotonic()
            time.sleep(interval * cycles)
            # On a loaded machine a cycle can outlast the window (once none fell in it): the window then widens until
            # a cycle's worth of lists is in it, and the rates below are over the time it really took.
            wait_until(lambda: len(lists()) - before >= workspaces, timeout=60, interval=interval / 4)
            window, cycles = lists()[before:], (time.monotonic() - began) / interval
            by_key = Counter(r.headers.get("authorization", "").removeprefix("Bearer ") for r in window)
            finished_at = {}
            for job in jobs[::max(1, len(jobs) // finishing)][:finishing]:
                provider.set_status(job["id"], "succeeded")
                finished_at[job["id"]] = time.time()
            wait_until(lambda: len(slack.posted) >= len(finished_at), timeout=120, interval=0.02)
            latencies = [p["at"] - finished_at[j] for p in slack.posted for j in finished_at if j in p["text"]]
            posters = {p["by"] for p in slack.posted}
        finally:
            stop_all(procs)
    name = f"workspaces_{workspaces}x{per_workspace}_pg{replicas}"
    say(f"{name}_poll_interval_s", interval)
    say(f"{name}_list_requests_per_cycle", f"{len(window) / cycles:.1f}")
    say(f"{name}_keys_used_per_cycle", f"{len(by_key) / 1:.0f} of {workspaces}")
    say(f"{name}_requests_per_key_per_cycle_max", f"{max(by_key.values(), default=0) / cycles:.1f}")
    say(f"{name}_requests_with_another_workspaces_key", sum(n for k, n in by_key.items() if k not in keys))
    say(f"{name}_announced", f"{len(latencies)}/{len(finished_at)}")
    say(f"{name}_announcements_posted_by_their_own_workspace", sum(
        1 for p in slack.posted if p["by"] and p["channel"].startswith(f"C{(p['by'][0] or '')[1:]}X")))
    say(f"{name}_announce_p50_s", f"{percentile(latencies, 50):.2f}")
    say(f"{name}_announce_max_s", f"{max(latencies):.2f}")
    say(f"{name}_workspaces_posting", len(posters))


def bench_provider_builds(builds: int) -> None:
    """What a workspace's providers cost to build (the keyring does it for each workspace's keys as they are first
    used or replaced): OpenAI, Together and Fireworks configured with keys of their own, `builds` times, in CPU time.
    Nothing is asked of any provider (building one makes its SDK client; no request)."""
    from bot.config import Settings
    from bot.providers import registry

    def settings_for(n: int) -> Settings:
        return Settings(slack_bot_token="xoxb-bench", env={
            "OPENAI_API_KEY": f"sk-bench-{n:012d}", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "TOGETHER_API_KEY": f"tg-bench-{n:012d}", "TOGETHER_BASE_URL": "http://127.0.0.1:9",
            "FIREWORKS_API_KEY": f"fw-bench-{n:012d}", "FIREWORKS_ACCOUNT_ID": "bench",
            "FIREWORKS_BASE_URL": "http://127.0.0.1:9"})

    for provider in registry.configured(settings_for(0)):  # the SDKs imported: their one-time cost is not a build's
        provider.close()
    cpu = []
    for n in range(1, builds + 1):
        began = time.process_time()
        providers = registry.configured(settings_for(n))
        cpu.append(time.process_time() - began)
        for provider in providers:
            provider.close()
    say("provider_builds", builds)
    say("provider_build_cpu_ms_p50", f"{percentile(cpu, 50) * 1000:.1f}")
    say("provider_build_cpu_ms_max", f"{max(cpu) * 1000:.1f}")
