"""The benchmark script still runs and prints its figures (a small load; the real figures come from bench/run.py)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_prints_name_value_lines():
    result = subprocess.run([sys.executable, "bench/run.py", "--only", "ack", "--commands", "12", "--senders", "3"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    figures = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert {"ack_p50_ms", "ack_p99_ms", "ack_max_ms", "ack_over_3s", "ack_results_lost"} <= set(figures)
    assert figures["ack_results_lost"] == "0" and figures["ack_over_3s"] == "0"
