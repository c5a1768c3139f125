"""Who may do what, and secrets that never reach a log line or a reply."""

from __future__ import annotations

import io
import logging

import pytest

from bot import logs
from bot.sandbox.provider import SAMPLE_FILE_ID
from tests.conftest import BOT_TOKEN, OPENAI_KEY, SIGNING_SECRET, WEBHOOK_SECRET, Server, ask, everything_said


@pytest.fixture
def guarded(make_bot):
    bot = make_bot(allowed_user_ids=frozenset({"U0BOSS"}), allowed_channel_ids=frozenset({"C0ML"}))
    server = Server(bot)
    yield server
    server.close()


@pytest.mark.parametrize("text", [f"start {SAMPLE_FILE_ID}", "cancel ftjob-1", "pause ftjob-1", "resume ftjob-1"])
def test_costly_commands_need_an_allowed_user(guarded, slack, provider, text):
    status, ack = guarded.command(text, user="U0INTERN", channel="C0ML")
    assert status == 200 and "ALLOWED_USER_IDS" in ack["text"]
    assert provider.received == []


@pytest.mark.parametrize("text", [f"start {SAMPLE_FILE_ID}", "cancel ftjob-1"])
def test_costly_commands_need_an_allowed_channel(guarded, slack, provider, text):
    status, ack = guarded.command(text, user="U0BOSS", channel="C0RANDOM")
    assert "ALLOWED_CHANNEL_IDS" in ack["text"]
    assert provider.received == []


def test_allowed_user_in_allowed_channel_may_start(guarded, slack, provider):
    reply = ask(guarded, slack, f"start {SAMPLE_FILE_ID}", user="U0BOSS", channel="C0ML")
    assert "Started fine-tuning job" in reply["text"]


def test_read_only_commands_stay_open(guarded, slack, provider):
    job = provider.add_job(status="running")
    for text in (f"status {job['id']}", "list", "subscriptions", f"subscribe {job['id']}", "help"):
        said = everything_said(ask(guarded, slack, text, user="U0INTERN", channel="C0RANDOM"))
        assert "ALLOWED_" not in said, text


def test_no_secret_reaches_logs_or_replies_at_debug(make_bot, slack, provider):
    stream = io.StringIO()
    handler = logs.configure("DEBUG", [BOT_TOKEN, SIGNING_SECRET, OPENAI_KEY, WEBHOOK_SECRET], stream=stream)
    try:
        bot = make_bot()
        server = Server(bot)
        try:
            replies = []
            server.command("status ftjob-1", secret="wrong-secret")  # fails the signature check
            server.post("/openai/webhook", "{}", {"webhook-id": "x", "webhook-timestamp": "1",
                                                  "webhook-signature": "v1,bad"})
            provider.fail("status", status=401, body={"error": {
                "message": f"Incorrect API key provided: {OPENAI_KEY}. Request: Authorization: Bearer {OPENAI_KEY}",
                "code": "invalid_api_key"}})
            replies.append(ask(server, slack, "list"))
            provider.fail("status", status=500, times=3)
            replies.append(ask(server, slack, f"start {SAMPLE_FILE_ID}"))
            replies.append(ask(server, slack, f"start {SAMPLE_FILE_ID}"))
            job = provider.add_job(status="running")
            replies.append(ask(server, slack, f"subscribe {job['id']}"))
            provider.set_status(job["id"], "succeeded")
            bot.services.poller.run_once()
            bot.services.sender.deliver_due()
        finally:
            server.close()
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "DEBUG" in text and len(text) > 1000  # the SDKs really were talking at debug level
    said = text + "".join(everything_said(r) for r in replies) + str(slack.posted)
    for secret in (BOT_TOKEN, SIGNING_SECRET, OPENAI_KEY, WEBHOOK_SECRET, "SECRETBOTTOKEN", "SECRETOPENAIKEY"):
        assert secret not in said, secret
    assert "[redacted]" in everything_said(replies[0])


def test_redaction_catches_token_shapes_it_was_not_told_about():
    redact = logs.RedactSecrets([]).redact
    assert redact("token xoxb-1234-5678-abcdefgh and sk-proj-abcdefghijklmnop") == \
        "token [redacted] and [redacted]"


def _raw(url: str, headers: dict[str, bytes], body: bytes = b"token=x&text=status") -> bytes:
    """One request over a plain socket, its header values sent as the bytes given (as a hostile client would)."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    lines = [b"POST /slack/events HTTP/1.1", b"Host: " + where.netloc.encode(),
             b"Content-Type: application/x-www-form-urlencoded", b"Content-Length: " + str(len(body)).encode(),
             b"Connection: close"] + [name.encode() + b": " + value for name, value in headers.items()]
    with socket.create_connection((where.hostname, where.port), timeout=10) as conn:
        conn.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("timestamp,signature", [
    (b"abc", b"v0=" + b"0" * 64), (b"nan", b"v0=" + b"0" * 64), (b"9" * 5000, b"v0=" + b"0" * 64),
    ("١٧٠٠٠٠٠٠٠٠".encode(), b"v0=" + b"0" * 64), (b"1700000000", "v0=é".encode() + b"0" * 62),
    (b"-1", b"v0=abc"), (b"1e9", b"v0=" + b"0" * 64), (b"", b""), (b"1700000000", b"v0=" + b"0" * 6400),
])
def test_malformed_signature_headers_are_a_401_and_at_most_one_log_line(server, timestamp, signature, caplog):
    """Issue 28: these were a 500 and a traceback each (slack_sdk's verifier raised); 2,000 wrote 1.38 MB of log."""
    with caplog.at_level(logging.INFO):
        answers = [_raw(server.url, {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature})
                   for _ in range(30)]
    assert all(a.startswith(b"HTTP/1.1 401") for a in answers), answers[0][:200]
    said = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(said) <= 1 and not any(r.exc_info for r in caplog.records), [r.getMessage() for r in said]


def test_the_refusal_count_is_said_again_after_its_interval():
    from bot.web import RefusalLog

    now = {"t": 0.0}
    refusals = RefusalLog(every=60, clock=lambda: now["t"])
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("bot.web").addHandler(handler)
    try:
        for step in range(200):
            now["t"] = step
            refusals.refused()
    finally:
        logging.getLogger("bot.web").removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "refused 1 request(s) without a valid Slack signature", *[
            "refused 60 request(s) without a valid Slack signature in the last 60s"] * 3]
