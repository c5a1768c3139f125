"""Running `finetune-bot serve` as a real process for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


# How a `ServeProcess` not told otherwise starts: exec'd (None), as the benchmarks' figures need; or, in the tests'
# smoke runs of the benchmarks (tests/bench_forked.py), forked from the test run's zygote (tests/zygote.py).
DEFAULT_LAUNCH: Callable | None = None


class ServeProcess:
    """`python -m bot serve` on a free port, its log collected; `url` once it answers /healthz."""

    def __init__(self, env: dict[str, str], *, args: tuple[str, ...] = (), cwd: str | None = None,
                 launch: Callable | None = None, fresh: bool = False):
        """`launch(argv, env=, cwd=)` starts the process and returns it as `subprocess.Popen` would, its stderr into
        its stdout as text (the tests fork it from a process that has imported the bot: tests/zygote.py); by
        default `DEFAULT_LAUNCH`. `fresh`: exec'd whatever the default, for a figure only a fresh interpreter gives
        (its memory)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_", "AZURE_"))}
        self.env = {**base, "PORT": "0", **env}
        self.log: list[str] = []
        argv = [sys.executable, "-m", "bot", "serve", *args]
        launch = None if fresh else launch or DEFAULT_LAUNCH
        if launch is None:
            self.proc = subprocess.Popen(argv, env=self.env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True)
        else:
            self.proc = launch(argv, env=self.env, cwd=cwd)
        self._port = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self._port.wait(30):
            self.kill()
            raise RuntimeError("finetune-bot serve did not start:\n" + "".join(self.log))
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line)
            found = re.search(r"serving on [^:]+:(\d+)", line)
            if found:
                self.port = int(found[1])
                self._port.set()

    def health(self) -> dict:
        """What /healthz says (its JSON, whatever the status), or {} when the process does not answer."""
        import json
        import urllib.error

        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            return json.loads(error.read())
        except OSError:
            return {}

    def command(self, text: str, response_url: str, channel: str = "C0GENERAL") -> int:
        """A `/finetune` command, signed with this process's signing secret, as Slack sends it; the HTTP status."""
        from bot.sandbox.slack import signed_headers, slash_command_body

        body = slash_command_body(text, channel_id=channel, response_url=response_url)
        request = urllib.request.Request(self.url + "/slack/events", data=body.encode(), method="POST",
                                         headers=signed_headers(body, self.env["SLACK_SIGNING_SECRET"]))
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    def cycles(self, name: str = "poll") -> int:
        return int(self.health().get("cycles", {}).get(name, 0))

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def terminate(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def memory_kb(self) -> int:
        """Peak resident memory (VmHWM) of the process."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01):
    """Poll `predicate` until it is truthy or `timeout` passes; returns its last value (bounded, never a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def side_by_side(make: Callable[[T], ServeProcess], each: Iterable[T]) -> list[ServeProcess]:
    """`serve` processes started at once (each takes a second or so to come up), one per item of `each`."""
    items = list(each)
    with ThreadPoolExecutor(max(1, len(items))) as starting:
        return list(starting.map(make, items))


def stop_all(procs: Iterable[ServeProcess]) -> None:
    """Each process ended (SIGTERM, then SIGKILL past its wait), all at once."""
    procs = list(procs)
    with ThreadPoolExecutor(max(1, len(procs))) as stopping:
        list(stopping.map(lambda proc: proc.terminate(), procs))
