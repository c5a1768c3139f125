"""Running it like a service: Prometheus metrics on a port of their own, JSON logs, errors to Sentry (a loopback
stand-in DSN), and a Grafana dashboard whose every query names a metric the bot exports."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import logging
import pathlib
import re
import threading
import urllib.request

import pytest

from bot import error_reports, logs, metrics, scrub
from tests.conftest import BOT_TOKEN, OPENAI_KEY, SIGNING_SECRET, ask, delivered, wait_until

ROOT = pathlib.Path(__file__).resolve().parent.parent
FAMILY = re.compile(r"^# TYPE (finetune_bot_\w+) (\w+)$", re.MULTILINE)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    """A sample's value in Prometheus' text format (0 when it has none yet)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, number = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(number)
    return 0.0


@pytest.fixture
def metered(make_bot):
    bot = make_bot(metrics_port=0, metrics_host="127.0.0.1")
    bot.start_background()
    return bot


def test_metrics_are_served_on_their_own_port_and_move_with_what_the_bot_does(metered, provider, slack):
    from tests.conftest import Server

    bot = metered
    server = Server(bot)
    try:
        assert server.get("/metrics")[0] == 404  # never on the Slack-facing port
        port = bot.exporter.port
        text = _scrape(port)
        families = dict(FAMILY.findall(text))
        for name, declared in {**metrics.RECORDED, **metrics.SCRAPED}.items():
            full = metrics.PREFIX + name + ("_total" if declared.kind == "counter" else "")
            assert families.get(full) == declared.kind, (full, families.get(full))
        job = provider.add_job(status="running")
        ask(server, slack, f"subscribe {job['id']}", channel="C0METRICS")
        assert _value(_scrape(port), "finetune_bot_jobs_followed", provider="openai", state="going") == 1
        provider.set_status(job["id"], "succeeded")
        before = _scrape(port)
        held = slack.fail("delay", match="chat.postMessage", delay=30)  # Slack slow to take the post
        bot.services.poller.run_once()
        assert wait_until(lambda: _value(_scrape(port), "finetune_bot_outbox_pending") >= 1, timeout=5)  # owed
        assert _value(_scrape(port), "finetune_bot_outbox_oldest_age_seconds") >= 0
        held.release()
        delivered(bot.services.sender)
        after = _scrape(port)
        assert (_value(after, "finetune_bot_announcements_delivered_total", kind="announcement")
                > _value(before, "finetune_bot_announcements_delivered_total", kind="announcement"))
        assert _value(after, "finetune_bot_provider_requests_total", provider="openai", outcome="ok") > 0
        assert _value(after, "finetune_bot_slack_calls_total", method="chat_postMessage", outcome="ok") > 0
        assert _value(after, "finetune_bot_ack_seconds_count", kind="command") >= 1
        assert _value(after, "finetune_bot_jobs_followed", provider="openai", state="going") == 0  # it ended
        assert _value(after, "finetune_bot_outbox_pending") == 0
        # A provider failing: its attempts are counted as retried, then failed.
        other = provider.add_job(status="running")
        ask(server, slack, f"subscribe {other['id']}", channel="C0METRICS")
        provider.fail("status", match="/fine_tuning/jobs", status=503, times=50)
        bot.services.poller.run_once()
        failing = _scrape(port)
        provider.faults.clear()
        assert (_value(failing, "finetune_bot_provider_requests_total", provider="openai", outcome="retried")
                > _value(after, "finetune_bot_provider_requests_total", provider="openai", outcome="retried"))
        assert _value(failing, "finetune_bot_provider_requests_total", provider="openai", outcome="failed") >= 1
        # Bounded labels, nothing secret: no job, channel or user id, no token or key.
        for never in (job["id"], "C0METRICS", "U0ALICE", BOT_TOKEN, OPENAI_KEY, SIGNING_SECRET):
            assert never not in after, never
    finally:
        server.close()


def test_json_logs_are_one_object_a_line_with_what_each_concerns_and_no_secret(bot, server, provider, slack):
    stream = io.StringIO()
    handler = logs.configure("INFO", [BOT_TOKEN, OPENAI_KEY], stream=stream, fmt="json")
    try:
        job = provider.add_job(status="running")
        ask(server, slack, f"subscribe {job['id']}")
        provider.set_status(job["id"], "succeeded")
        bot.services.poller.run_once()
        delivered(bot.services.sender)
        provider.fail("status", match="/fine_tuning/jobs/ftjob-missing", status=404, times=5)
        ask(server, slack, "status ftjob-missing")  # refused after the ack, on the pool: logged with its request
        try:
            raise RuntimeError(f"a failure quoting {BOT_TOKEN} and {OPENAI_KEY}")
        except RuntimeError:
            logging.getLogger("bot.test").exception("something broke")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    [sent] = [line for line in lines if line["message"].startswith("delivered") and "succeeded" in line["message"]]
    assert sent["job"] == job["id"] and sent["provider"] == "openai" and sent["channel"] == "C0GENERAL"
    refused = [line for line in lines if "refused status" in line["message"]]
    assert refused and all(re.fullmatch(r"R[0-9a-f]{10}", line.get("request") or "") for line in refused)
    [broke] = [line for line in lines if line["message"] == "something broke"]
    assert broke["level"] == "ERROR" and "[redacted]" in broke["error"]
    assert BOT_TOKEN not in stream.getvalue() and OPENAI_KEY not in stream.getvalue()


class _SentryStandIn(http.server.ThreadingHTTPServer):
    """A Sentry ingest endpoint on loopback: records every envelope it is sent."""

    def __init__(self) -> None:
        self.envelopes: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(inner) -> None:  # noqa: N805 - the handler's own self is the request
                body = inner.rfile.read(int(inner.headers.get("content-length") or 0))
                if inner.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                self.envelopes.append(body.decode("utf-8", "replace"))
                inner.send_response(200)
                inner.end_headers()
                inner.wfile.write(b"{}")

            def log_message(inner, *args) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


WORKSPACE_KEY = "plain words that are a workspace key 4521"  # (not shaped like a credential: only learning finds it)


def test_errors_go_to_sentry_scrubbed_of_every_secret():
    sentry = _SentryStandIn()
    dsn = f"http://publickey1234@127.0.0.1:{sentry.server_address[1]}/42"
    response_url = "https://hooks.slack.com/commands/T0/123/abcdefSECRET"
    try:
        error_reports.start(dsn, [BOT_TOKEN, OPENAI_KEY, "publickey1234"])
        scrub.learn(WORKSPACE_KEY)  # a workspace's own key, set with /finetune keys after the bot started
        try:
            raise ValueError(f"provider said: bad key {OPENAI_KEY}; reply to {response_url}")
        except ValueError:
            logging.getLogger("bot.jobs").exception("unexpected error in a Slack request with %s", BOT_TOKEN)
        try:
            raise RuntimeError(f"the provider refused {WORKSPACE_KEY}")
        except RuntimeError:
            logging.getLogger("bot.jobs").exception("a workspace's poll failed")
        error_reports.stop(timeout=5)
        assert wait_until(lambda: sentry.envelopes, timeout=5)
    finally:
        sentry.shutdown()
    sent = "\n".join(sentry.envelopes)
    assert "unexpected error in a Slack request" in sent and "[redacted]" in sent
    assert "a workspace's poll failed" in sent
    for secret in (BOT_TOKEN, OPENAI_KEY, "abcdefSECRET", "SECRETBOTTOKEN", WORKSPACE_KEY):
        assert secret not in sent, secret


def test_the_dashboard_queries_only_metrics_the_bot_exports():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exported = set()
    for name, declared in {**metrics.RECORDED, **metrics.SCRAPED}.items():
        full = metrics.PREFIX + name
        exported |= {full + "_total"} if declared.kind == "counter" else {full}
        if declared.kind == "histogram":
            exported |= {full + "_bucket", full + "_sum", full + "_count"}
    queried = {name for panel in dashboard["panels"] for target in panel.get("targets", ())
               for name in re.findall(r"\bfinetune_bot_\w+", target["expr"])}
    assert queried and queried <= exported, queried - exported
    assert len(dashboard["panels"]) >= 8
    alerts = (ROOT / "README.md").read_text().split("### Watching it", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"\bfinetune_bot_\w+", alerts))
    assert len(re.findall(r"^\| .* \| `.*` \|", alerts, re.MULTILINE)) >= 3 and named and named <= exported
