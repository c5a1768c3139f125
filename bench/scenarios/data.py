"""Training data: `finetune-bot check` on large files (`check`), a start's estimate from a file by its id
(`estimate`), and a move's streamed copy from one provider to another (`move`)."""

from __future__ import annotations

import os
import sys
import time

from bench.harness import say, write_training_file
from bot.sandbox.fireworks import FireworksSandbox
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn
from bot.sandbox.together import TogetherSandbox


def bench_check(workdir: str) -> None:
    import subprocess

    for megabytes in (10, 100):
        path = os.path.join(workdir, f"train{megabytes}.jsonl")
        examples = write_training_file(path, megabytes)
        started = time.perf_counter()
        script = ("import resource, sys; from bot.cli import main; code = main(['check', sys.argv[1]]); "
                  "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
        result = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                env={**os.environ, "LOG_LEVEL": "WARNING"})
        took = time.perf_counter() - started
        peak_kb = int(result.stdout.split("peak_kb")[-1].split()[0])
        assert result.returncode == 0 and f"Examples: {examples:,}" in result.stdout, result.stdout + result.stderr
        say(f"check_{megabytes}mb_examples", examples)
        say(f"check_{megabytes}mb_seconds", f"{took:.1f}")
        say(f"check_{megabytes}mb_examples_per_s", f"{examples / took:,.0f}")
        say(f"check_{megabytes}mb_mb_per_s", f"{os.path.getsize(path) / 1e6 / took:.1f}")
        say(f"check_{megabytes}mb_peak_rss_mb", f"{peak_kb / 1024:.1f}")
        os.remove(path)


def bench_estimate(workdir: str, megabytes: int = 100) -> None:
    """Estimating a start from a file already at the provider: the file read through its files API (the real
    OpenAI SDK against the stand-in), streamed and counted with the real tokenizer, in a process of its own so that
    its peak memory is its own; then the same start again (the count remembered, nothing read)."""
    import subprocess

    path = os.path.join(workdir, f"estimate{megabytes}.jsonl")
    examples = write_training_file(path, megabytes)
    with FineTuningSandbox() as provider, open(path, "rb") as data:
        provider.add_file("file-big", "big.jsonl", data.read())
        script = (
            "import resource, sys, time\n"
            "from bot.config import Settings\nfrom bot.costs import estimate_start\n"
            "from bot.providers import registry\nfrom storage import Store\n"
            "settings = Settings(env={'OPENAI_API_KEY': 'sk-bench', 'OPENAI_BASE_URL': sys.argv[1]},"
            " database_path=sys.argv[2], provider_timeout_seconds=120)\n"
            "provider = registry.configured(settings).get('openai'); store = Store(settings.database_path)\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "for _ in range(2):\n"
            "    started = time.perf_counter()\n"
            "    e = estimate_start(provider, store, training_file='file-big', model='gpt-4.1-mini',"
            " epochs=None, max_bytes=512 * 1024 * 1024)\n"
            "    print('took', time.perf_counter() - started, 'amount', e.amount, 'tokens', e.tokens)\n"
            "print('before_kb', before, 'peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
        result = subprocess.run([sys.executable, "-c", script, provider.url + "/v1",
                                 os.path.join(workdir, "estimate.db")], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                env={**os.environ, "LOG_LEVEL": "WARNING"})
        assert result.returncode == 0, result.stdout + result.stderr
        reads = len(provider.requests_to("/files/file-big/content", "GET"))
    lines = [line.split() for line in result.stdout.splitlines()]
    first, again, memory = lines[0], lines[1], lines[2]
    say(f"estimate_{megabytes}mb_examples", examples)
    say(f"estimate_{megabytes}mb_seconds", f"{float(first[1]):.1f}")
    say(f"estimate_{megabytes}mb_mb_per_s", f"{os.path.getsize(path) / 1e6 / float(first[1]):.1f}")
    say(f"estimate_{megabytes}mb_estimate_usd", f"{float(first[3]):.2f}")
    say(f"estimate_{megabytes}mb_peak_rss_mb", f"{int(memory[3]) / 1024:.1f}")
    say(f"estimate_{megabytes}mb_rss_growth_mb", f"{(int(memory[3]) - int(memory[1])) / 1024:.1f}")
    say(f"estimate_{megabytes}mb_again_seconds", f"{float(again[1]):.4f}")
    say(f"estimate_{megabytes}mb_file_reads", reads)
    os.remove(path)


def bench_move(workdir: str, sizes: tuple[int, ...] = (10, 100), target: str = "together") -> None:
    """Moving a fine-tune off OpenAI (`/finetune move`): its training file read through OpenAI's files API (the real
    SDK against the stand-in), converted and checked against the target's rules, uploaded to the target (the real
    Together or Fireworks SDK) and the job started there; in a process of its own, so that its peak memory is its
    own, at two file sizes: memory that stays flat as the file grows is memory that does not hold the file."""
    import subprocess

    script = (
        "import resource, sys, time\n"
        "from bot.app import build\nfrom bot.commands import Command\nfrom bot.config import Settings\n"
        "from bot.jobs import Caller\n"
        "env = {'FIREWORKS_API_KEY': 'fw-bench', 'FIREWORKS_ACCOUNT_ID': sys.argv[5],"
        " 'FIREWORKS_BASE_URL': sys.argv[4], 'OPENAI_API_KEY': 'sk-bench', 'OPENAI_BASE_URL': sys.argv[1],"
        " 'TOGETHER_API_KEY': 'tg-bench', 'TOGETHER_BASE_URL': sys.argv[2]}\n"
        "settings = Settings(slack_bot_token='xoxb-bench', slack_signing_secret='s', slack_api_url=sys.argv[6],"
        " database_path=sys.argv[3], provider_timeout_seconds=300, poll_interval_seconds=3600, env=env)\n"
        "bot = build(settings)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "started = time.perf_counter()\n"
        "message = bot.services.moves.run(Command('move', {'job_id': sys.argv[7], 'to': sys.argv[8]}),"
        " Caller('T0BENCH', 'C0BENCH', 'U0BENCH'))\n"
        "took = time.perf_counter() - started\n"
        "assert 'Started fine-tuning job' in message.text, message.text\n"
        "print('took', took, 'before_kb', before, 'peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "bot.stop(timeout=2)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for megabytes in sizes:
        path = os.path.join(workdir, f"move{megabytes}.jsonl")
        write_training_file(path, megabytes)
        with FineTuningSandbox() as provider, TogetherSandbox() as together, FireworksSandbox() as fireworks, \
                SlackStandIn(token="xoxb-bench") as slack, open(path, "rb") as data:
            provider.add_file("file-big", "big.jsonl", data.read())
            job = provider.add_job(status="succeeded")
            with provider.lock:
                provider.jobs[job["id"]]["training_file"] = "file-big"
            result = subprocess.run(
                [sys.executable, "-c", script, provider.url + "/v1", together.url, os.path.join(workdir, "move.db"),
                 fireworks.url, fireworks.account, slack.api_url, job["id"], target],
                capture_output=True, text=True, cwd=root, env={**os.environ, "LOG_LEVEL": "WARNING"})
            assert result.returncode == 0, result.stdout + result.stderr
            stand_in = together if target == "together" else fireworks
            uploaded = sum(len(r.body) for r in stand_in.received if r.method in {"PUT", "POST"} and len(r.body) > 1000)
        os.remove(os.path.join(workdir, "move.db"))
        words = result.stdout.split()
        took, peak = float(words[1]), int(words[5])
        say(f"move_{target}_{megabytes}mb_seconds", f"{took:.1f}")
        say(f"move_{target}_{megabytes}mb_mb_per_s", f"{os.path.getsize(path) / 1e6 / took:.1f}")
        say(f"move_{target}_{megabytes}mb_uploaded_mb", f"{uploaded / 1e6:.1f}")
        say(f"move_{target}_{megabytes}mb_peak_rss_mb", f"{peak / 1024:.1f}")
        os.remove(path)
