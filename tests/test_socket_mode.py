"""`finetune-bot socket`: the same handlers over Socket Mode, through a WebSocket stand-in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from bench.processes import wait_until
from bot.sandbox.openai import SAMPLE_FILE_ID
from tests.conftest import BOT_TOKEN, OPENAI_KEY
from tests.socket_standin import SocketModeStandIn, slash_command_envelope

APP_TOKEN = "xapp-1-test-SECRETAPPTOKEN"


def test_socket_mode_acks_over_the_socket_and_replies(tmp_path, slack, provider):
    standin = SocketModeStandIn()
    slack.app_token, slack.socket_mode_url = APP_TOKEN, standin.url
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_", "AZURE_", "TOGETHER_"))}
    env = {**base, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN, "SLACK_API_URL": slack.api_url,
           "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": provider.url + "/v1",
           "DATABASE_PATH": str(tmp_path / "socket.db"), "POLL_INTERVAL_SECONDS": "0.2", "LOG_LEVEL": "DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "socket"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert standin.connected.wait(20), "the bot never opened the socket"
        help_envelope = slash_command_envelope("help", slack.response_url("help"))
        standin.send_envelope(help_envelope)
        start = slash_command_envelope(f"start {SAMPLE_FILE_ID}", slack.response_url("start"))
        standin.send_envelope(start)
        acks = wait_until(lambda: len(standin.acks) >= 2 and standin.acks, timeout=10)
        by_id = {a["envelope_id"]: a for a in acks}
        assert "/finetune status [job_id]" in by_id[help_envelope["envelope_id"]]["payload"]["text"]
        assert start["envelope_id"] in by_id
        reply = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/start")], timeout=10)
        [job_id] = list(provider.jobs)
        assert job_id in reply[0]["text"]
        provider.set_status(job_id, "succeeded")
        assert wait_until(lambda: slack.outcomes_in("C0GENERAL"), timeout=10)  # (the outcome, not just the card)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        standin.close()
    assert proc.returncode == 0, out
    assert "connected over Socket Mode" in out and "Traceback" not in out
    assert APP_TOKEN not in out and BOT_TOKEN not in out  # (everything said at DEBUG, and still no secret)
    assert "objects made at start-up set aside from the garbage collector" in out  # (as `serve` does)


STOP_SCRIPT = """
import os, signal, sys, threading, time
from bot.cli import wait_for_stop_signal

def started():
    if sys.argv[1] == "during-start":  # the signal comes while the bot is still starting, and cuts that short
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
        return

    def signal_this_thread():  # as the kernel may: SIGTERM handed to one of the bot's own threads, not the main one
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(60)

    threading.Thread(target=signal_this_thread, daemon=True).start()

print("stopping on", wait_for_stop_signal(started), flush=True)
"""


def test_a_stop_signal_taken_by_another_thread_still_stops_the_socket_bot():
    """CI once killed a `socket` bot 15 s after its SIGTERM: the main thread slept in `signal.pause()` while the
    kernel had handed the signal to one of Bolt's threads. Each case sends its signal to a thread of its choosing."""
    for case, expected in (("other-thread", "SIGTERM"), ("during-start", "SIGINT")):
        proc = subprocess.run([sys.executable, "-c", STOP_SCRIPT, case], capture_output=True, text=True, timeout=30)
        assert (proc.returncode, proc.stdout.strip()) == (0, f"stopping on {expected}"), proc.stderr
