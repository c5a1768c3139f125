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

The run's main process starts one zygote of each kind before any worker (tests/conftest.py), and every test process
connects to both: one set of imports a run, not one a worker. They end with the run.
"""

from __future__ import annotations

import atexit
import gc
import io
import json
import os
import select
import shutil
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
RUN_FOLDER = "FINETUNE_TEST_ZYGOTES"  # the folder of the run's zygotes' sockets (`start_for_run`)
_run: tuple[int, list[subprocess.Popen], str] | None = None


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
    """A test process's connection to the run's zygote of one kind: asks it for processes, hears of their exits."""

    _lock = threading.Lock()
    _running: dict[str, Zygote] = {}

    @classmethod
    def get(cls, kind: str) -> Zygote:
        with cls._lock:
            if kind not in cls._running or not cls._running[kind]._alive:
                cls._running[kind] = Zygote(kind)
            return cls._running[kind]

    def __init__(self, kind: str) -> None:
        folder = os.environ.get(RUN_FOLDER) or start_for_run(*PRELOAD)
        self._log = os.path.join(folder, f"{kind}.log")  # its own output (not the worker's): read when it fails
        self._chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._chan.connect(os.path.join(folder, kind))
        except OSError as refused:
            self._chan.close()
            raise RuntimeError(f"the {kind} zygote is not running ({refused}):\n{self._said()}") from None
        self._asking = threading.Lock()  # one request at a time: its answer is the next "started" message
        self._started: list[int] = []
        self._answer = threading.Condition()
        self._children: dict[int, Forked] = {}
        self._early: dict[int, dict] = {}  # exits heard before their Forked was made
        self._alive = True
        self._ready = threading.Event()  # it has imported what it preloads, and takes requests
        self.pid: int | None = None  # the zygote's, once ready
        # Connected now, ready in a second or two: its socket and this thread are the test process's from here on, so
        # a test that counts its process's threads and open files (the soaks) never sees them arrive mid-test.
        threading.Thread(target=self._listen, name=f"zygote-{kind}", daemon=True).start()

    def _said(self) -> str:
        try:
            with open(self._log, "rb") as said:
                return said.read().decode(errors="replace")
        except OSError:
            return ""

    def _listen(self) -> None:
        while True:
            try:
                data = self._chan.recv(MESSAGE)
            except OSError:
                data = b""
            if data.startswith(b"ready "):
                self.pid = int(data.split()[1])
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
                    raise RuntimeError("the zygote did not start:\n" + self._said())
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


def start_for_run(*kinds: str) -> str:
    """One zygote of each kind for the whole run, started by its main process before any worker (tests/conftest.py)
    and shared by them all: each listens on a socket in a folder of its own, named in the environment the workers
    inherit. They end when this process closes its end of their pipe (`stop_for_run`), or ends. Returns the folder."""
    global _run
    folder = tempfile.mkdtemp(prefix="finetune-zygotes-")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours, theirs = os.pipe()
    processes = []
    for kind in kinds:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(os.path.join(folder, kind))
        listener.listen(64)
        with open(os.path.join(folder, f"{kind}.log"), "wb") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tests.zygote", kind, str(listener.fileno()), str(theirs)],
                pass_fds=[listener.fileno(), theirs], cwd=root, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT))
        listener.close()  # (the zygote's alone: once it ends, connecting is refused rather than left waiting)
    os.close(theirs)
    os.environ[RUN_FOLDER] = folder
    _run = (ours, processes, folder)
    atexit.register(stop_for_run)  # (a process that started them outside pytest leaves no folder behind either)
    return folder


def stop_for_run() -> None:
    """The run's zygotes told to end, and waited for (the processes they started are the tests' to end)."""
    global _run
    if _run is None:
        return
    ours, processes, folder = _run
    _run = None
    os.close(ours)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(folder, ignore_errors=True)
    os.environ.pop(RUN_FOLDER, None)


def start(*kinds: str) -> None:
    """This test process connected to the run's zygotes of these kinds, without waiting for them to be ready."""
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

def _serve(kind: str, listen_fd: int, run_fd: int) -> tuple[dict, list[int]] | None:
    """Fork a child for each request of each connected test process until the run ends; returns only in a child,
    with its request."""
    import importlib

    for name in PRELOAD[kind]:
        importlib.import_module(name)
    if kind == "drawing":
        from bot.charts import loss_chart
        from bot.providers.types import MetricPoint

        loss_chart([MetricPoint(step=1, train_loss=1.0, valid_loss=1.1), MetricPoint(step=2, train_loss=0.5)],
                   title="warming up")
    else:
        from bot.tokens import encoding

        encoding("o200k_base")  # (the vocabulary every start's estimate counts with: 0.5 s to build in each child)
    # What was imported is never garbage: frozen, a child's collections skip it instead of walking (and so copying)
    # every page of it: an exiting child's last collection was 0.5 s of CPU, 0.1 s frozen.
    gc.collect()
    gc.freeze()
    listener = socket.socket(fileno=listen_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    connected: list[socket.socket] = []
    owners: dict[int, socket.socket] = {}  # each child's test process: told when it exits
    while True:
        ready, _, _ = select.select([listener, run_fd, wake_r, *connected], [], [])
        if run_fd in ready:
            return None
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            _reap(owners)
        if listener in ready:
            chan, _ = listener.accept()
            _tell(chan, f"ready {os.getpid()}".encode())
            connected.append(chan)
        for chan in [c for c in connected if c in ready]:
            try:
                data, fds, _, _ = socket.recv_fds(chan, MESSAGE, 16)
            except OSError:
                data, fds = b"", []
            if not data:  # (that test process has ended)
                connected.remove(chan)
                chan.close()
                continue
            if threading.active_count() != 1:
                raise RuntimeError("the zygote must not fork with threads running")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for own in (wake_r, wake_w, run_fd):
                    os.close(own)
                for own in (listener, *connected):
                    own.close()
                return json.loads(data), fds
            for passed in fds:
                os.close(passed)
            owners[pid] = chan
            _tell(chan, json.dumps({"kind": "started", "pid": pid}).encode())
            _reap(owners)


def _tell(chan: socket.socket, message: bytes) -> None:
    try:
        chan.send(message)
    except OSError:  # (its test process has ended: nobody left to tell)
        pass


def _reap(owners: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        chan = owners.pop(pid, None)
        if chan is not None:
            _tell(chan, json.dumps({"kind": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status),
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
    child = _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    if child is not None:
        request, fds = child
        _become(request, fds)
        import runpy

        runpy.run_module(request["argv"][0], run_name="__main__", alter_sys=True)
