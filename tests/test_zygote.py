"""The tests' zygote (tests/zygote.py) starts the same processes an exec'd `python -m` would: what they say, their
exit status, their signals, their streams, their environment and directory, and drawing processes that draw."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

from bot.providers.types import MetricPoint
from tests import zygote


def _chat(question: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "A."}]})


def test_a_forked_command_says_and_exits_exactly_as_an_exec_one(tmp_path):
    """Same arguments, environment and directory: the same stdout, stderr and exit status, for a clean file, a file
    with errors (exit 1) and a missing one (exit 2); the relative path resolves in the directory given."""
    (tmp_path / "clean.jsonl").write_text("".join(_chat(f"q{n}") + "\n" for n in range(10)))
    (tmp_path / "broken.jsonl").write_text(_chat("q") + "\n{oops\n")
    env = {**os.environ, "DEFAULT_MODEL": "gpt-4o-mini-2024-07-18"}
    for args in (["clean.jsonl", "--epochs", "2"], ["broken.jsonl"], ["missing.jsonl"]):
        argv = [sys.executable, "-m", "bot", "check", *args]
        fresh = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        forked = zygote.run(argv, env=env, cwd=tmp_path, timeout=60)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert [fresh.returncode, forked.returncode] == [2, 2] and "cannot read missing.jsonl" in forked.stderr


def test_a_forked_process_is_its_own_and_ends_by_its_signals(tmp_path):
    """Its own pid (not the zygote's), its stdin a pipe it waits on, and a signal ends it as it would end any
    process: SIGKILL reads -9, as subprocess says it."""
    child = zygote.popen([sys.executable, "-m", "bot", "shell", "--timeout", "30"], env=dict(os.environ),
                         cwd=str(tmp_path), stdin="pipe")
    try:
        assert child.stdout.readline().startswith("finetune-bot shell.")  # (its banner, then it waits for a line)
        with open(f"/proc/{child.pid}/status") as status:
            assert f"PPid:\t{os.getpid()}" not in status.read()  # (the zygote's child, yet a process of its own)
        assert child.poll() is None
    finally:
        child.kill()
    assert child.wait(10) == -signal.SIGKILL and child.cpu_seconds is not None


def test_a_forked_drawing_process_draws_over_its_passed_socket():
    """`start_drawing` as the bot calls it: the socket's end at its own number in the child, the chart drawn, and
    the process gone once the bot closes its end."""
    ours, theirs = socket.socketpair()
    try:
        child = zygote.start_drawing([sys.executable, "-m", "bot.drawing", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], cwd=os.getcwd())
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    conn.send(([MetricPoint(step=1, train_loss=2.0), MetricPoint(step=2, train_loss=1.0)], "a title"))
    assert conn.poll(30)
    kind, png = conn.recv()
    assert kind == "ok" and png[:8] == b"\x89PNG\r\n\x1a\n"
    conn.close()
    assert child.wait(10) == 0


def test_every_test_process_of_a_run_forks_from_the_same_zygote(tmp_path):
    """One zygote of each kind a run, not one a worker: a child forked for this test process and one forked for
    another process of the run (as a worker is: started after the zygotes, inheriting where they listen) have the
    same parent, which is neither of them."""
    script = ("import os, sys\nfrom tests import zygote\n"
              "zygote.run([sys.executable, '-m', 'bot', 'check', 'missing.jsonl'], env=dict(os.environ),\n"
              "           cwd=sys.argv[1])\n"
              "print(zygote.Zygote.get('bot').pid, os.getpid())\n")
    there = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert there.returncode == 0, there.stderr
    parent, other = (int(n) for n in there.stdout.split())
    child = zygote.popen([sys.executable, "-m", "bot", "shell", "--timeout", "30"], env=dict(os.environ),
                         cwd=str(tmp_path), stdin="pipe")
    try:
        assert child.stdout.readline().startswith("finetune-bot shell.")
        with open(f"/proc/{child.pid}/status") as status:
            assert f"PPid:\t{parent}\n" in status.read()
    finally:
        child.kill()
        child.wait(10)
    assert zygote.Zygote.get("bot").pid == parent and parent not in (os.getpid(), other)
