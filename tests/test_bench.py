"""The benchmark script still runs and prints its figures (a small load; the real figures come from bench/run.py).

The first runs `python bench/run.py` as its documentation says; the rest fork it, and the `serve` processes it starts,
from the test run's zygote (tests/bench_forked.py), but for the memory figures' processes, always exec'd: what they
check is the figures' arithmetic and the behaviour behind them, not how fast an interpreter starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import zygote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return zygote.run([sys.executable, "-m", "tests.bench_forked", *args], env=dict(os.environ), cwd=ROOT,
                      timeout=timeout)


@pytest.mark.heavy(10)
def test_bench_prints_name_value_lines():
    result = subprocess.run([sys.executable, "bench/run.py", "--only", "ack", "--only", "standins", "--small",
                             "--commands", "12", "--senders", "3"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert {"ack_p50_ms", "ack_p99_ms", "ack_max_ms", "ack_over_3s", "ack_results_lost"} <= set(figures)
    assert figures["standin_requests"] == "50" and float(figures["standin_request_p50_ms"]) > 0
    assert figures["ack_results_lost"] == "0" and figures["ack_over_3s"] == "0"


def test_bench_counts_a_long_jobs_slack_calls_and_the_throttle_cuts_them():
    result = _bench("--only", "cards", "--card-hours", "0.25", timeout=120)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert figures["cards_every_5min_card_posts"] == "1" and figures["cards_every_5min_shown_in_channel"] == "2"
    assert int(figures["cards_unthrottled_thread_replies"]) > 3 * int(figures["cards_every_5min_thread_replies"])


@pytest.mark.heavy(29)
def test_bench_measures_acks_under_load_idle_memory_and_a_sweeps_announcements():
    result = _bench("--only", "ack-load", "--only", "memory-idle", "--only", "announce-busy", "--small", "--commands",
                    "20", "--senders", "4", "--senders-apart", timeout=240)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert {"ack_load_p99_ms", "memory_idle_rss_mb", "memory_after_first_chart_rss_mb", "announce_busy_p50_s",
            "announce_busy_max_s"} <= set(figures)
    assert figures["announce_busy_announced"] == "4"
    assert figures["ack_load_senders_in_own_process"] == "True"
    assert figures["memory_idle_libraries_loaded"] == "none"  # no chart drawn, no file checked, no Together: none
    # A chart is drawn in a process of its own: the bot's never loads matplotlib, nor holds its interpreter to draw.
    assert figures["memory_after_first_chart_libraries_loaded"] == "none"
    assert float(figures["memory_chart_process_rss_mb"]) > 20


@pytest.mark.heavy(13)
def test_bench_counts_requests_per_cycle_over_three_providers():
    result = _bench("--only", "providers3", timeout=120)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    fireworks = int(figures["three_providers_fireworks_requests_per_cycle"])
    assert fireworks <= int(figures["three_providers_fireworks_budget"])
    assert int(figures["three_providers_requests_per_cycle"]) < int(figures["three_providers_naive_requests_per_cycle"])


@pytest.mark.heavy(44)
def test_bench_measures_sqlite_and_postgresql_with_one_and_three_replicas(postgres_url):
    # (on the session's server: the bench empties the database before each deployment)
    result = _bench("--only", "deploy", "--small", "--commands", "20", "--senders", "4", "--database-url", postgres_url,
                    timeout=240)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    for label in ("sqlite", "postgresql_1", "postgresql_3"):
        name = f"deploy_{label}_n60"
        assert figures[f"{name}_announced"] == "25/25", label
        assert {f"{name}_announce_p50_s", f"{name}_ack_p99_ms", f"{name}_drain_posts_per_s_over_10_channels"} <= set(
            figures)
    one, three = (float(figures[f"deploy_postgresql_{n}_n60_provider_list_reads_per_interval"]) for n in (1, 3))
    assert three <= 1.5 * one  # the poll cycle runs once per interval, not once per replica


@pytest.mark.heavy(17)
def test_bench_polls_each_workspace_with_its_own_key_on_three_replicas(postgres_url):
    result = _bench("--only", "workspaces", "--small", "--database-url", postgres_url, timeout=240)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    name = "workspaces_5x4_pg3"
    assert figures[f"{name}_keys_used_per_cycle"] == "5 of 5"  # each workspace's jobs asked with its own key
    assert figures[f"{name}_requests_with_another_workspaces_key"] == "0"
    assert figures[f"{name}_announced"] == "5/5"
    assert figures[f"{name}_announcements_posted_by_their_own_workspace"] == "5"
    # One list a workspace a cycle (5; a cycle more at the window's edge under load), not one a replica (15).
    assert float(figures[f"{name}_list_requests_per_cycle"]) < 10


@pytest.mark.heavy(8)
def test_bench_estimates_a_file_by_id_and_counts_the_watchdogs_reads():
    result = _bench("--only", "estimate", "--only", "watchdog", "--small", timeout=180)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert float(figures["estimate_10mb_estimate_usd"]) > 0 and figures["estimate_10mb_file_reads"] == "1"
    reads = [int(n) for n in figures["watchdog_metric_reads_per_cycle"].split(",")]
    assert reads[0] == 30 and figures["watchdog_jobs_read"] == "30"


@pytest.mark.heavy(14)
def test_bench_moves_a_training_file_to_together_and_fireworks():
    result = _bench("--only", "move", "--small", timeout=240)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    for target in ("together", "fireworks"):
        assert float(figures[f"move_{target}_2mb_uploaded_mb"]) == 2.0
        assert {f"move_{target}_2mb_peak_rss_mb", f"move_{target}_2mb_seconds"} <= set(figures)


def test_bench_measures_what_a_workspaces_providers_cost_to_build():
    result = _bench("--only", "provider-build", "--small", timeout=120)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert figures["provider_builds"] == "20" and float(figures["provider_build_cpu_ms_p50"]) > 0
