"""finetune-bot's performance figures, measured on this machine against `finetune-bot serve` and loopback stand-ins.

    python bench/run.py            # every figure, one `name: value` a line (about a minute)

1. ack latency under load: 300 signed slash commands from 20 concurrent senders, every provider call slowed 0.5 s;
2. poll cost: provider requests per poll cycle with 0, 10, 100 and 1,000 followed jobs still running, beside what
   one `retrieve` per job (the naive design) costs;
3. announcement latency: job final at the provider -> message posted, through polling and through webhooks;
4. memory: peak resident memory of the serve process tree with 1,000 followed jobs;
5. two providers: requests per poll cycle at each with 300 followed jobs split between OpenAI's shape and Together
   AI's, and the announcement latency of OpenAI jobs while Together AI answers every request with a 503; three
   providers (`providers3`): the same with 300 jobs over OpenAI's, Together AI's and Fireworks AI's shapes;
6. checking training data: `finetune-bot check` on 10 MB and 100 MB JSONL files: examples per second, MB per second,
   and the peak memory of the process (flat with file size: the file is read as a stream);
7. trying a model: the time `try` adds over the slower of the two models' own answers (both are asked at once);
8. cards: the Slack calls one long job costs its channel (card posts, card edits, thread replies) over two hours of
   training with a metrics step every 10 s, polled every 30 s, at each progress interval (and with none), beside
   Slack's limits: about one post a second per channel, chat.update in Tier 3 (about 50 a minute);
9. deployments (`deploy`): SQLite on one host, PostgreSQL with one replica and with three, at 300 and 10,000 followed
   jobs: the provider's list reads per poll cycle, announcement latency p50/max (30 succeeding at once), the acks' p99
   with 20 senders spread over the replicas while 200 outcomes drain over 50 channels, and that drain's rate;
10. spend and the watchdog (`estimate`, `watchdog`): estimating a start from a 100 MB file by its id (read through
   the provider's files API, streamed: time and peak memory, then again with its count remembered), and the
   watchdog's metric reads per poll cycle with 300 jobs training at the default intervals.

`BENCH_TRACE=1` with `--only announce-busy` also prints the slowest outcome's channel: every post there from three
seconds before the provider's change to that outcome, so a figure over its target says what it waited behind.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bot.sandbox.fireworks import FireworksSandbox  # noqa: E402
from bot.sandbox.openai import SAMPLE_FILE_ID, FineTuningSandbox  # noqa: E402
from bot.sandbox.slack import SlackStandIn, signed_headers, slash_command_body  # noqa: E402
from bot.sandbox.together import TogetherSandbox  # noqa: E402
from storage import Store  # noqa: E402
from storage.engines import is_postgres  # noqa: E402
from tests.process import ServeProcess, wait_until  # noqa: E402

TOKEN = "xoxb-bench-token"
SECRET = "bench-signing-secret"
WEBHOOK_SECRET = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQta2V5LTEyMzQ1"


SENDERS_APART = False  # --senders-apart


def say(name: str, value) -> None:
    print(f"{name}: {value}", flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def env_for(db: str, slack: SlackStandIn, provider: FineTuningSandbox, **extra) -> dict:
    where = {"DATABASE_URL": db} if is_postgres(db) else {"DATABASE_PATH": db}
    return {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.api_url,
            "OPENAI_API_KEY": "sk-bench-key-0000000000", "OPENAI_BASE_URL": provider.url + "/v1",
            **where, "LOG_LEVEL": "WARNING", **extra}


def follow(db: str, jobs: list[dict], channel: str = "C0BENCH", *, watchdog: str | None = None) -> None:
    store = Store(db)
    if watchdog:
        store.channels.set_channel_settings(channel, "U0BENCH", watchdog=watchdog)
    for job in jobs:
        store.follows.follow(channel, job, final=False, team_id="T", user_id="U0BENCH", origin="subscribe")
    store.close()


def _whole(answer: bytes) -> bool:
    """Whether an HTTP answer has arrived whole: its headers, and as much body as their Content-Length says."""
    head, found, body = bytes(answer).partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False  # no length: read to the end


def send_signed(url: str | list[str], requests: list[tuple[str, dict]],
                senders: int) -> tuple[list[float], float, float]:
    """POST each signed (body, headers) to `url` (or to each of several in turn: replicas behind a load balancer)
    from `senders` threads at once: the seconds each took to answer, and when the first was sent and the last
    answered.

    Each request's bytes are made before its clock starts and sent on a new connection of its own over a plain
    socket; the clock stops when its answer is whole (its Content-Length, as an HTTP client reads it). So the time
    is the server's (connect, accept, answer) with as little of the sender's own as can be: urllib also built an
    opener and parsed each answer's headers with the email package, in 20 threads sharing one interpreter with the
    stand-ins, and that was most of what it reported (the bot's own accept-to-close p50 was 8 ms, urllib's 36)."""
    latencies: list[float] = []
    lock = threading.Lock()
    urls = [url] if isinstance(url, str) else url
    prepared = []
    for n, (body, headers) in enumerate(requests):
        where = urllib.parse.urlsplit(urls[n % len(urls)])
        data = body.encode()
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items()
                       if name.lower() not in {"content-length", "connection", "host"})
        raw = (f"POST {where.path} HTTP/1.1\r\nHost: {where.netloc}\r\n{head}Content-Length: {len(data)}\r\n"
               "Connection: close\r\n\r\n").encode() + data
        prepared.append(((where.hostname, where.port), raw))

    def send(item: tuple[tuple[str, int], bytes]) -> None:
        address, raw = item
        started = time.perf_counter()
        with socket.create_connection(address, timeout=30) as conn:
            conn.sendall(raw)
            answer = bytearray()
            while (chunk := conn.recv(65536)) and not _whole(answer := answer + chunk):
                pass
            took = time.perf_counter() - started  # the answer whole, as an HTTP client reads it (Content-Length)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the bot answered {bytes(answer[:60])!r}")
        with lock:
            latencies.append(took)

    began = time.time()
    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(send, prepared))
    return latencies, began, time.time()


def timed_commands(proc, slack: SlackStandIn, commands: int, senders: int,  # noqa: ANN001
                   command, *, others: tuple = ()) -> tuple[list[float], float, float]:
    """Send `commands` signed slash commands from `senders` threads at once (`command(n)` gives the nth one's text,
    channel and response_url name); the seconds each took to be acked, and when they began and ended. With
    `--senders-apart` the senders run in a process of their own (started before the clock does), as a load generator
    should; by default they share this process with the stand-ins, as the figures before them were measured."""
    requests = []
    for n in range(commands):
        text, channel, reply = command(n)
        body = slash_command_body(text, channel_id=channel, response_url=slack.response_url(reply))
        requests.append((body, signed_headers(body, SECRET)))
    urls = [p.url + "/slack/events" for p in (proc, *others)]
    if not SENDERS_APART:
        return send_signed(urls, requests, senders)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(time.time).result()  # started and ready
        return pool.submit(send_signed, urls, requests, senders).result()


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
        say("ack_load_senders_in_own_process", SENDERS_APART)
        say("ack_load_followed_jobs_polled_each_second", followed)
        say("ack_load_channels_draining", channels)
        say("ack_load_commands_took_s", f"{span:.2f}")
        say("ack_load_outcomes_posted_meanwhile", drained)
        say("ack_load_p50_ms", f"{percentile(latencies, 50) * 1000:.1f}")
        say("ack_load_p99_ms", f"{percentile(latencies, 99) * 1000:.1f}")
        say("ack_load_max_ms", f"{max(latencies) * 1000:.1f}")
        say("ack_load_target", "p99 < 100 ms")


def bursts(times: list[float], gap: float) -> list[int]:
    """Request counts per poll cycle: requests closer together than `gap` belong to one cycle."""
    counts: list[int] = []
    last = None
    for t in sorted(times):
        if last is None or t - last > gap:
            counts.append(0)
        counts[-1] += 1
        last = t
    return counts


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


def write_training_file(path: str, megabytes: int) -> int:
    """A chat-format file of about `megabytes` MB (varied, realistic examples); returns how many examples."""
    import json

    words = ("the model answers questions about orders refunds shipping delays and account settings politely "
             "with short clear sentences and asks for an order number when it needs one").split()
    count, size = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while size < megabytes * 1_000_000:
            question = " ".join(words[(count + i) % len(words)] for i in range(40))
            answer = " ".join(words[(count * 7 + i) % len(words)] for i in range(120))
            line = json.dumps({"messages": [{"role": "system", "content": "You are a support assistant."},
                                            {"role": "user", "content": f"#{count}: {question}?"},
                                            {"role": "assistant", "content": answer}]}) + "\n"
            out.write(line)
            size += len(line)
            count += 1
    return count


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
            "settings = Settings(openai_api_key='sk-bench', openai_base_url=sys.argv[1], database_path=sys.argv[2],"
            " provider_timeout_seconds=120)\n"
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
        " 'FIREWORKS_BASE_URL': sys.argv[4]}\n"
        "settings = Settings(slack_bot_token='xoxb-bench', slack_signing_secret='s', slack_api_url=sys.argv[6],"
        " openai_api_key='sk-bench', openai_base_url=sys.argv[1], together_api_key='tg-bench',"
        " together_base_url=sys.argv[2], database_path=sys.argv[3], provider_timeout_seconds=300,"
        " poll_interval_seconds=3600, env=env)\n"
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


def bench_watchdog(workdir: str, running: int = 300, cycles: int = 8) -> None:
    """The watchdog's metric reads per poll cycle with `running` jobs training, at the default intervals (a poll
    cycle a minute, each job's metrics at most once a minute), over `cycles` cycles of a clock that is moved on a
    minute a cycle: the real poller, watchdog, store and OpenAI SDK against the stand-in."""
    from bot.config import Settings
    from bot.poller import Poller
    from bot.providers import registry
    from bot.watchdog import Watchdog

    now = [time.time()]
    with FineTuningSandbox() as provider:
        jobs = [provider.add_job(status="running") for _ in range(running)]
        for job in jobs:
            provider.report(job["id"], 1, 2.0)
        settings = Settings(openai_api_key="sk-bench", openai_base_url=provider.url + "/v1",
                            database_path=os.path.join(workdir, "watchdog.db"))
        store = Store(settings.database_path, clock=lambda: now[0])
        for job in jobs:
            store.follows.follow("C0BENCH", job, final=False, team_id="T", user_id="U0BENCH", origin="start")
        watchdog = Watchdog(store, every=settings.metrics_interval_seconds, clock=lambda: now[0],
                            stall_seconds=60 * settings.watchdog_stall_minutes,
                            interval=settings.poll_interval_seconds)
        poller = Poller(registry.configured(settings), store, interval=settings.poll_interval_seconds,
                        watchdog=watchdog)
        per_cycle, took = [], []
        for _ in range(cycles):
            before = len(provider.requests_to("/events", "GET"))
            poller.run_once(progress=False)
            started = time.perf_counter()
            poller.read_progress()
            took.append(time.perf_counter() - started)
            per_cycle.append(len(provider.requests_to("/events", "GET")) - before)
            now[0] += settings.poll_interval_seconds
        read_at = [r["metrics_read_at"] for r in store.engine.rows("SELECT metrics_read_at FROM jobs")]
        poller.close()
        store.close()
    say("watchdog_running_jobs", running)
    say("watchdog_metric_reads_per_cycle", ",".join(map(str, per_cycle)))
    say("watchdog_metric_reads_cap", watchdog.max_reads)
    say("watchdog_cycle_reads_seconds_max", f"{max(took):.2f}")
    say("watchdog_jobs_read", sum(1 for at in read_at if at))
    say("watchdog_minutes_between_reads_of_a_job", f"{running / watchdog.max_reads:.0f}")


def bench_try(workdir: str, tries: int = 20) -> None:
    from bot.config import Settings
    from bot.providers import registry
    from bot.trying import TryService

    with FineTuningSandbox() as provider:
        job = provider.add_job(status="succeeded")
        provider.chat_latency = {job["fine_tuned_model"]: 0.3, "gpt-4.1-mini-2025-04-14": 0.5}
        settings = Settings(openai_api_key="sk-bench", openai_base_url=provider.url + "/v1",
                            database_path=os.path.join(workdir, "try.db"))
        store = Store(settings.database_path)
        providers = registry.configured(settings)
        store.follows.follow("C0BENCH", {"id": job["id"], "provider": "openai", "status": "succeeded",
                                         "model": job["model"],
                                 "fine_tuned_model": job["fine_tuned_model"]}, final=True, team_id="T",
                     user_id="U0BENCH", origin="subscribe")
        trying = TryService(providers, store, None, None, max_tokens=256, max_prompt_chars=4000,
                            max_file_bytes=10**6)
        target = trying.resolve(job["fine_tuned_model"], None, None)
        added = []
        for _ in range(tries):
            started = time.perf_counter()
            tuned, base = trying.ask_both(target, [{"role": "user", "content": "What's the capital of France?"}])
            wall = time.perf_counter() - started
            assert tuned.error is None and base.error is None
            added.append(wall - max(tuned.seconds, base.seconds))
        store.close()
        say("try_tries", tries)
        say("try_model_latencies_s", "0.3 (fine-tuned) / 0.5 (base)")
        say("try_added_over_slower_model_p50_ms", f"{percentile(added, 50) * 1000:.1f}")
        say("try_added_over_slower_model_max_ms", f"{max(added) * 1000:.1f}")
        say("try_sequential_would_add_ms", "300")


def bench_cards(workdir: str, hours: float = 2.0, step_seconds: int = 10, poll_seconds: int = 30) -> None:
    """A long job's Slack cost per channel, on an injected clock: real store, poller, adapter and sender."""
    from slack_sdk import WebClient

    from bot.config import Settings
    from bot.delivery import AnnouncementSender
    from bot.poller import Poller
    from bot.providers.openai_shape import OpenAIProvider, build_client
    from bot.slack import SlackGateway

    class Clock:
        def __init__(self) -> None:
            self.now = 1_000_000.0

        def __call__(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            self.now += seconds

    total_steps = int(hours * 3600 / step_seconds)
    for minutes in (0, 1, 5, 15):
        with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
            clock = Clock()
            settings = Settings(openai_api_key="sk-bench", openai_base_url=provider.url + "/v1")
            store = Store(os.path.join(workdir, f"cards-{minutes}.db"), clock=clock)
            client = WebClient(token=TOKEN, base_url=slack.api_url, timeout=5, retry_handlers=[])
            sender = AnnouncementSender(store, SlackGateway(client), worker_id="bench", clock=clock,
                                        sleep=clock.sleep)
            poller = Poller(OpenAIProvider(build_client(settings), sleep=lambda s: None), store,
                            interval=poll_seconds)
            store.channels.set_channel_settings("C0BENCH", "U0BENCH", progress_minutes=minutes)
            job = provider.add_job(status="queued")
            store.follows.follow("C0BENCH", job, final=False, team_id="T", user_id="U0BENCH", origin="start", card=True)
            sender.deliver_due()
            provider.set_status(job["id"], "running")
            started, per_minute = clock.now, {}
            while clock.now - started < hours * 3600:
                provider.train(job["id"], min(total_steps, int((clock.now - started) / step_seconds) + 1),
                               total=total_steps)
                before = len(slack.received)
                poller.run_once()
                sender.deliver_due()
                minute = int((clock.now - started) // 60)
                per_minute[minute] = per_minute.get(minute, 0) + len(slack.received) - before
                clock.now = max(clock.now, started + (int((clock.now - started) // poll_seconds) + 1) * poll_seconds)
            provider.set_status(job["id"], "succeeded")
            poller.run_once()
            sender.deliver_due()
            posts = [p for p in slack.posted if not p["thread_ts"]]  # the card itself
            replies = [p for p in slack.posted if p["thread_ts"]]  # status changes, progress, the outcome
            metric_reads = len(provider.requests_to(f"/fine_tuning/jobs/{job['id']}/events", "GET"))
            label = f"every_{minutes}min" if minutes else "unthrottled"  # (0: the naive design, a reply a poll)
            say(f"cards_{label}_card_posts", len(posts))
            say(f"cards_{label}_card_edits", len(slack.updates))
            say(f"cards_{label}_thread_replies", len(replies))
            say(f"cards_{label}_shown_in_channel", len(slack.shown_in("C0BENCH")))
            say(f"cards_{label}_slack_calls_total", len(posts) + len(slack.updates) + len(replies))
            say(f"cards_{label}_busiest_minute_calls", max(per_minute.values()))
            say(f"cards_{label}_provider_metric_reads", metric_reads)
            sender.stop()
            store.close()
    say("cards_job", f"{hours:g} h, {total_steps} metric steps (one every {step_seconds} s), polled every "
                     f"{poll_seconds} s")


def bench_memory(workdir: str, n: int) -> None:
    with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
        jobs = [provider.add_job(status="running") for _ in range(n)]
        db = os.path.join(workdir, "memory.db")
        follow(db, jobs)
        proc = ServeProcess(env_for(db, slack, provider, POLL_INTERVAL_SECONDS="1"))
        try:
            time.sleep(3.5)  # a few full poll cycles over all of them
            for job in jobs[: n // 2]:
                provider.set_status(job["id"], "succeeded")
            wait_until(lambda: len(slack.posted) >= 1, timeout=10)
            time.sleep(2)
            peak_kb = tree_rss_kb(proc.proc.pid, "VmHWM")
        finally:
            proc.terminate()
        say("memory_followed_jobs", n)
        say("memory_peak_rss_mb", f"{peak_kb / 1024:.1f}")


def bench_memory_idle(workdir: str, n: int, settle: float = 4.5) -> None:
    """Resident memory of `serve` following n running jobs at OpenAI's shape, cards on, with no chart drawn; then the
    same process after its first chart (matplotlib is loaded with it)."""
    with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
        jobs = [provider.add_job(status="running") for _ in range(n)]
        db = os.path.join(workdir, "memory-idle.db")
        follow(db, jobs)
        proc = ServeProcess(env_for(db, slack, provider, POLL_INTERVAL_SECONDS="1"))
        try:
            time.sleep(settle)  # a few full poll cycles over all of them
            idle_kb = rss_kb(proc.proc.pid)
            idle_loaded = proc_modules(proc.proc.pid)
            provider.set_status(jobs[0]["id"], "succeeded")
            wait_until(lambda: slack.uploads, timeout=30)
            time.sleep(0.5)
            charted_kb = rss_kb(proc.proc.pid)
            charted_loaded = proc_modules(proc.proc.pid)
            drawer_kb = tree_rss_kb(proc.proc.pid) - charted_kb  # the drawing process (and its helper)
        finally:
            proc.terminate()
        say("memory_idle_followed_jobs", n)
        say("memory_idle_rss_mb", f"{idle_kb / 1024:.1f}")
        say("memory_idle_target_mb", 100)
        say("memory_after_first_chart_rss_mb", f"{charted_kb / 1024:.1f}")
        say("memory_chart_process_rss_mb", f"{drawer_kb / 1024:.1f}")
        say("memory_idle_libraries_loaded", idle_loaded or "none")  # of matplotlib, together, tiktoken
        say("memory_after_first_chart_libraries_loaded", charted_loaded or "none")  # charts are drawn elsewhere


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory now (VmRSS), or its peak (VmHWM), in kB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def children_of(pid: int) -> list[int]:
    """A process's children, whichever of its threads started them (each thread's task lists its own)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(c) for c in children.read().split()]
        except OSError:
            continue
    return found


def tree_rss_kb(pid: int, field: str = "VmRSS") -> int:
    """Resident memory now (VmRSS), or peak (VmHWM), summed over a process and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += rss_kb(current, field)
            stack += children_of(current)
        except (OSError, StopIteration):
            continue
    return total


def proc_modules(pid: int) -> str:
    """Which heavy libraries a process has mapped (their shared objects show in /proc/PID/maps)."""
    with open(f"/proc/{pid}/maps") as maps:
        text = maps.read()
    return ",".join(name for name in ("matplotlib", "together", "tiktoken") if f"/{name}/" in text)


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
        procs = []
        for n in range(replicas):
            folder = os.path.join(workdir, f"{label}-{followed}-r{n}")
            os.makedirs(folder)
            procs.append(ServeProcess(env_for(db, slack, provider, POLL_INTERVAL_SECONDS=str(interval)), cwd=folder))
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
        finally:
            for proc in procs:
                proc.terminate()
        name = f"deploy_{label}_n{followed}"
        say(f"{name}_replicas", replicas)
        say(f"{name}_announced", f"{len(slack.posted)}/{finishing + len(drain)}")
        say(f"{name}_poll_interval_s", interval)
        say(f"{name}_provider_list_reads_per_interval", f"{per_cycle:.1f}")
        say(f"{name}_announce_p50_s", f"{percentile(latencies, 50):.2f}")
        say(f"{name}_announce_max_s", f"{max(latencies):.2f}")
        say(f"{name}_ack_p99_ms", f"{percentile(acks, 99) * 1000:.1f}")
        rate = (len(drained) - 1) / max(drained[-1] - drained[0], 1e-9)
        say(f"{name}_drain_posts_per_s_over_{channels}_channels", f"{rate:.1f}")


def bench_deployments(workdir: str, sizes: list[int], database_url: str | None, kinds: set[str], **small) -> None:
    """SQLite on one host, then PostgreSQL (`--database-url`, or a throwaway server from this machine's PostgreSQL)
    with one replica and with three, each with every size of `sizes`."""
    server = None
    if database_url is None:
        from tests.postgres import ThrowawayPostgres

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


PARTS = ["ack", "ack-load", "poll", "announce", "announce-busy", "memory", "memory-idle", "providers", "providers3",
         "check", "try", "cards", "deploy", "estimate", "watchdog", "move"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--card-hours", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=1, help="repeat announce-busy this many times (figures pooled)")
    parser.add_argument("--small", action="store_true",
                        help="tiny sizes for announce-busy, memory-idle, ack-load and deploy: that they run, not their "
                             "figures")
    parser.add_argument("--senders-apart", action="store_true",
                        help="send the ack benches' commands from a process of their own")
    parser.add_argument("--database-url", help="deploy: this PostgreSQL database (emptied first) rather than a "
                        "throwaway server")
    parser.add_argument("--deploy-sizes", default="300,10000", help="deploy: followed jobs, comma-separated")
    parser.add_argument("--deploy-kinds", default="sqlite,postgresql_1,postgresql_3",
                        help="deploy: which deployments, comma-separated")
    args = parser.parse_args()
    global SENDERS_APART
    SENDERS_APART = args.senders_apart
    chosen = set(args.only or PARTS)
    say("machine_cores", os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="finetune-bot-bench-") as workdir:
        if "ack" in chosen:
            bench_ack(workdir, args.commands, args.senders)
        if "ack-load" in chosen:
            bench_ack_under_load(workdir, args.commands, args.senders, **({"followed": 60, "channels": 5, "settle": 1.5}
                                                                          if args.small else {}))
        if "poll" in chosen:
            bench_poll_cost(workdir, [10, 100, 1000])
        if "announce" in chosen:
            bench_announce(workdir, 50)
        if "memory" in chosen:
            bench_memory(workdir, 1000)
        if "memory-idle" in chosen:
            bench_memory_idle(workdir, 50, settle=2.0) if args.small else bench_memory_idle(workdir, 1000)
        if "announce-busy" in chosen:
            bench_announce_busy(workdir, runs=args.runs, **({"followed": 12, "finishing": 4, "channels": 3}
                                                            if args.small else {}))
        if "providers" in chosen:
            bench_two_providers(workdir, 300)
        if "providers3" in chosen:
            bench_three_providers(workdir, 300)
        if "check" in chosen:
            bench_check(workdir)
        if "try" in chosen:
            bench_try(workdir)
        if "estimate" in chosen:
            bench_estimate(workdir, 10 if args.small else 100)
        if "move" in chosen:
            for target in ("together", "fireworks"):
                bench_move(workdir, (2,) if args.small else (10, 100), target)
        if "watchdog" in chosen:
            bench_watchdog(workdir, 30 if args.small else 300, 3 if args.small else 8)
        if "cards" in chosen:
            bench_cards(workdir, hours=args.card_hours)
        if "deploy" in chosen:
            small = {"commands": args.commands, "senders": args.senders}
            if args.small:
                small.update(channels=10, finishing=5, draining=20, cycles=3)
            bench_deployments(workdir, [60] if args.small else [int(n) for n in args.deploy_sizes.split(",")],
                              args.database_url, set(args.deploy_kinds.split(",")), **small)


if __name__ == "__main__":
    main()
