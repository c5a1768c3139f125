"""Processes for the tests (`python -m bot ...` and the drawing process), forked from one that has already imported
what they import.

A `finetune-bot serve` or `shell` spends about 1.7 s of CPU importing before it does anything (the providers' SDKs
build some 1,400 pydantic types), a drawing process about 1 s (matplotlib), and the suite starts dozens of each on a
2-core machine. Forked from a process that has imported them once (a zygote, as Android starts its apps), a child
starts in milliseconds and is otherwise the same process an exec'd `python -m ...` would be: its own pid, signals,
exit status, standard streams, threads, sockets and children; its environment, working directory and arguments what
the test gave; it runs the module as `-m` would, and ends as an interpreter does (non-daemon threads joined, atexit
run, streams flushed).

Only what a fresh interpreter does before the bot's own code runs is not exercised here: the tests of that (the
README's Quick start, warnings before the shell's banner, which libraries a SQLite bot loads) exec `python -m bot`
themselves.

Each test process starts one zygote of each kind when it starts (tests/conftest.py); each ends when that process
closes its end of the socket.
"""

from __future__ import annotations

import gc
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence

# What each kind of process imports before it does anything: `serve`, `socket` and `shell` (the sandbox's stand-ins and
# every provider's SDK); the drawing process (matplotlib, which also draws one chart there first: its fonts loaded).
# Anything else the processes import, they import themselves as an exec'd process would.
PRELOAD = {
    "bot": ("bot.cli", "bot.app", "bot.web", "bot.shell", "bot.sandbox.slack", "bot.sandbox.openai",
            "bot.sandbox.together", "bot.sandbox.fireworks", "openai", "together", "fireworks", "slack_bolt",
            "slack_sdk.socket_mode", "sqlalchemy", "waitress", "apscheduler.schedulers.background"),
    "drawing": ("bot.charts",),
}
MESSAGE = 1 << 20


class Forked:
    """Our end of one forked process, as much of `subprocess.Popen` as the tests use."""

    def __init__(self, args: list[str], pid: int, stdin, stdout, stderr) -> None:  # noqa: ANN001
        self.args, self.pid = args, pid
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: int | None = None
        self.cpu_seconds: float | None = None  # its user and system CPU, once it has ended
        self._ended = threading.Event()

    def _exited(self, message: dict) -> None:
        self.returncode, self.cpu_seconds = message["code"], message["cpu"]
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # (not yet reaped, so the pid is still this process's)
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: str | None = None, timeout: float | None = None) -> tuple[str, str]:  # noqa: A002
        """Write `input` and close stdin, read stdout and stderr to their ends, wait for the exit."""
        read: dict[str, str] = {}

        def drain(name: str, stream) -> None:  # noqa: ANN001
            read[name] = stream.read() if stream else None

        readers = [threading.Thread(target=drain, args=(name, stream), daemon=True)
                   for name, stream in (("out", self.stdout), ("err", self.stderr)) if stream]
        for reader in readers:
            reader.start()
        if self.stdin:
            try:
                if input:
                    self.stdin.write(input)
                self.stdin.close()
            except BrokenPipeError:
                pass
        self.wait(timeout)
        for reader in readers:
            reader.join(timeout)
        return read.get("out"), read.get("err")


class Zygote:
    """The test process's end of one zygote: starts it, asks it for processes, hears of their exits."""

    _lock = threading.Lock()
    _running: dict[str, Zygote] = {}

    @classmethod
    def get(cls, kind: str) -> Zygote:
        with cls._lock:
            if kind not in cls._running or not cls._running[kind]._alive:
                cls._running[kind] = Zygote(kind)
            return cls._running[kind]

    def __init__(self, kind: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._said = tempfile.TemporaryFile()  # its own output (not the worker's): read when it fails to start
        self._process = subprocess.Popen([sys.executable, "-m", "tests.zygote", kind, str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], cwd=root, stdin=subprocess.DEVNULL,
                                         stdout=self._said, stderr=subprocess.STDOUT)
        theirs.close()
        self._chan = ours
        self._asking = threading.Lock()  # one request at a time: its answer is the next "started" message
        self._started: list[int] = []
        self._answer = threading.Condition()
        self._children: dict[int, Forked] = {}
        self._early: dict[int, dict] = {}  # exits heard before their Forked was made
        self._alive = True
        self._ready = threading.Event()  # it has imported what it preloads, and takes requests
        # Started now, ready in a second or two: its socket and this thread are the test process's from here on, so
        # a test that counts its process's threads and open files (the soaks) never sees them arrive mid-test.
        threading.Thread(target=self._listen, name=f"zygote-{kind}", daemon=True).start()

    def _listen(self) -> None:
        while True:
            try:
                data = self._chan.recv(MESSAGE)
            except OSError:
                data = b""
            if data == b"ready":
                self._ready.set()
                continue
            if not data:
                with self._answer:
                    self._alive = False
                    self._answer.notify_all()
                self._ready.set()  # (to wake a request waiting for it, which then says why it ended)
                return
            message = json.loads(data)
            with self._answer:
                if message["kind"] == "started":
                    self._started.append(message["pid"])
                    self._answer.notify_all()
                else:
                    child = self._children.pop(message["pid"], None)
                    if child is None:
                        self._early[message["pid"]] = message
                    else:
                        child._exited(message)

    def popen(self, args: list[str], *, env: Mapping[str, str], cwd: str | None = None, stdin: str = "devnull",
              stdout: str = "pipe", stderr: str = "pipe", pass_fds: Sequence[int] = ()) -> Forked:
        """`args` (`[sys.executable, "-m", module, ...]`) run as `subprocess.Popen` would run them, with text pipes
        where asked: stdin "pipe" or "devnull"; stdout "pipe" or "inherit"; stderr "pipe", "stdout" or "inherit";
        `pass_fds` kept at their numbers."""
        if args[:2] != [sys.executable, "-m"] or len(args) < 3:
            raise ValueError(f"a zygote runs `python -m module ...`, not {args}")
        ours: dict[str, int] = {}
        theirs: list[int] = []
        try:
            if stdin == "pipe":
                child_in, ours["stdin"] = os.pipe()
            else:
                child_in = os.open(os.devnull, os.O_RDONLY)
            theirs.append(child_in)
            if stdout == "pipe":
                ours["stdout"], child_out = os.pipe()
            else:
                child_out = os.dup(1)
            theirs.append(child_out)
            if stderr == "pipe":
                ours["stderr"], child_err = os.pipe()
            else:
                child_err = os.dup(child_out if stderr == "stdout" else 2)
            theirs.append(child_err)
            theirs.extend(os.dup(fd) for fd in pass_fds)
            request = json.dumps({"argv": args[2:], "env": dict(env), "cwd": os.path.abspath(cwd or os.getcwd()),
                                  "fds": [0, 1, 2, *pass_fds]})
            with self._asking:
                if not self._ready.wait(60) or not self._alive:
                    self._process.wait(10)
                    self._said.seek(0)
                    raise RuntimeError("the zygote did not start:\n" + self._said.read().decode(errors="replace"))
                socket.send_fds(self._chan, [request.encode()], theirs)
                with self._answer:
                    if not self._answer.wait_for(lambda: self._started or not self._alive, timeout=30):
                        raise RuntimeError("the zygote did not answer")
                    if not self._started:
                        raise RuntimeError("the zygote ended")
                    pid = self._started.pop(0)
                    streams = {name: os.fdopen(fd, "w" if name == "stdin" else "r") for name, fd in ours.items()}
                    ours.clear()
                    child = Forked(args, pid, streams.get("stdin"), streams.get("stdout"), streams.get("stderr"))
                    if pid in self._early:
                        child._exited(self._early.pop(pid))
                    else:
                        self._children[pid] = child
                    return child
        finally:
            for fd in [*theirs, *ours.values()]:
                os.close(fd)


def start(*kinds: str) -> None:
    """These kinds of zygote started (once a test process), without waiting for them to be ready."""
    for kind in kinds:
        Zygote.get(kind)


def popen(args: list[str], **kwargs) -> Forked:
    """`Zygote.popen` on this test process's zygote for the bot (started on first use)."""
    return Zygote.get("bot").popen(args, **kwargs)


def launch(args: list[str], *, env: Mapping[str, str], cwd: str | None = None) -> Forked:
    """As `bench.processes.ServeProcess(launch=...)` wants it: stderr into stdout."""
    return popen(args, env=env, cwd=cwd, stderr="stdout")


def start_drawing(args: list[str], *, pass_fds: Sequence[int], cwd: str) -> Forked:
    """As `bot.app.build(start_drawing=...)` wants it: the drawing process, forked from a zygote that has imported
    matplotlib and drawn a chart; its output is the test process's, as a drawing process's is its bot's."""
    return Zygote.get("drawing").popen(args, env=os.environ, cwd=cwd, stdout="inherit", stderr="inherit",
                                       pass_fds=pass_fds)


def run(args: list[str], *, input: str | None = None, timeout: float | None = None,  # noqa: A002
        **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(args, input=..., capture_output=True, text=True, timeout=...)`, forked."""
    child = popen(args, stdin="pipe", **kwargs)
    try:
        out, err = child.communicate(input, timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(10)
        raise
    return subprocess.CompletedProcess(args, child.returncode, out, err)


# --- the zygote's side ---------------------------------------------------------------------------------------------

def _serve(kind: str, fd: int) -> tuple[dict, list[int]] | None:
    """Fork a child for each request until the test process goes; returns only in a child, with its request."""
    import importlib

    for name in PRELOAD[kind]:
        importlib.import_module(name)
    if kind == "drawing":
        from bot.charts import loss_chart
        from bot.providers.types import MetricPoint

        loss_chart([MetricPoint(step=1, train_loss=1.0, valid_loss=1.1), MetricPoint(step=2, train_loss=0.5)],
                   title="warming up")
    # What was imported is never garbage: frozen, a child's collections skip it instead of walking (and so copying)
    # every page of it: an exiting child's last collection was 0.5 s of CPU, 0.1 s frozen.
    gc.collect()
    gc.freeze()
    chan = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    chan.send(b"ready")
    while True:
        ready, _, _ = select.select([chan, wake_r], [], [])
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            _reap(chan)
        if chan in ready:
            data, fds, _, _ = socket.recv_fds(chan, MESSAGE, 16)
            if not data:
                return None
            if threading.active_count() != 1:
                raise RuntimeError("the zygote must not fork with threads running")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for own in (wake_r, wake_w):
                    os.close(own)
                chan.close()
                return json.loads(data), fds
            for passed in fds:
                os.close(passed)
            chan.send(json.dumps({"kind": "started", "pid": pid}).encode())
            _reap(chan)


def _reap(chan: socket.socket) -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        chan.send(json.dumps({"kind": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status),
                              "cpu": usage.ru_utime + usage.ru_stime}).encode())


def _become(request: dict, fds: list[int]) -> None:
    """This child as `python -m <module> <args>` would start: its streams and passed descriptors at their numbers,
    its environment, directory and arguments."""
    import fcntl

    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # (out of the way of every target number first)
    for fd in fds:
        os.close(fd)
    for target, fd in zip(request["fds"], high, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]
    # The standard streams as the interpreter makes them on pipes: block-buffered stdout, line-buffered stderr.
    encoding = sys.stdout.encoding
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(open(0, "rb", closefd=False), encoding=encoding)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(open(1, "wb", closefd=False), encoding=encoding,
                                                   errors="strict")
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(open(2, "wb", closefd=False), encoding=encoding,
                                                   errors="backslashreplace", line_buffering=True)
    sys.argv = ["-m", *request["argv"][1:]]  # (runpy puts the module's path first, as `-m` does)


if __name__ == "__main__":
    child = _serve(sys.argv[1], int(sys.argv[2]))
    if child is not None:
        request, fds = child
        _become(request, fds)
        import runpy

        runpy.run_module(request["argv"][0], run_name="__main__", alter_sys=True)
