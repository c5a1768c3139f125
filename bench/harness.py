"""What every scenario shares: figures printed one `name: value` a line, the stand-ins' environment for a
`serve` process, signed commands sent at once, and a process tree's memory."""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn, signed_headers, slash_command_body
from storage import Store
from storage.engines import is_postgres

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
    return ",".join(name for name in ("matplotlib", "numpy", "aiohttp", "together", "tiktoken") if f"/{name}/" in text)
