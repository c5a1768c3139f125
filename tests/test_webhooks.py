"""POST /openai/webhook: verified with the SDK, deduplicated, announced through the same outbox as the poller."""

from __future__ import annotations

import json
import time

from bot.sandbox.openai import sign_webhook
from tests.conftest import WEBHOOK_SECRET, Server, delivered, wait_until


def _event(job_id: str, kind: str = "succeeded") -> str:
    return json.dumps({"id": f"evt_{job_id}", "object": "event", "created_at": int(time.time()),
                       "type": f"fine_tuning.job.{kind}", "data": {"id": job_id}})


def _followed_job(bot, provider, channel="C1"):
    job = provider.add_job(status="running")
    bot.services.store.follows.follow(channel, job, final=False, team_id="T", user_id="U", origin="start")
    return job


def test_a_signed_webhook_announces_at_once(server, bot, provider, slack):
    job = _followed_job(bot, provider)
    provider.set_status(job["id"], "succeeded")
    body = _event(job["id"])
    status, _ = server.post("/openai/webhook", body, sign_webhook(body, WEBHOOK_SECRET))
    assert status == 200
    [post] = wait_until(lambda: slack.messages_in("C1"))
    assert job["id"] in post["text"] and "ft:" in post["text"]


def test_bad_or_stale_signatures_change_nothing(server, bot, provider, slack):
    job = _followed_job(bot, provider)
    provider.set_status(job["id"], "succeeded")
    body = _event(job["id"])
    forged = sign_webhook(body, "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")
    stale = sign_webhook(body, WEBHOOK_SECRET, timestamp=int(time.time()) - 3600)
    tampered = sign_webhook(body, WEBHOOK_SECRET)
    for headers, payload in ((forged, body), (stale, body), (tampered, body.replace("succeeded", "failed")),
                             ({"content-type": "application/json"}, body)):
        status, _ = server.post("/openai/webhook", payload, headers)
        assert status == 400
    assert provider.requests_to(f"/fine_tuning/jobs/{job['id']}") == []
    assert bot.services.store.outbox.announcements() == []


def test_redelivery_and_poll_after_webhook_announce_once(server, bot, provider, slack):
    job = _followed_job(bot, provider)
    provider.set_status(job["id"], "succeeded")
    body = _event(job["id"])
    headers = sign_webhook(body, WEBHOOK_SECRET, webhook_id="wh_same")
    assert server.post("/openai/webhook", body, headers)[0] == 200
    assert server.post("/openai/webhook", body, headers)[0] == 200  # delivered at least once
    other_id = sign_webhook(body, WEBHOOK_SECRET, webhook_id="wh_other")
    assert server.post("/openai/webhook", body, other_id)[0] == 200

    def reads():
        return [r for r in provider.requests_to(f"/fine_tuning/jobs/{job['id']}", "GET")
                if not r.path.endswith("/events")]  # (the events are the success chart's, drawn after the post)

    # Two deliveries (wh_same, wh_other) are two fetches, both off the request thread; the redelivery is none.
    assert wait_until(lambda: len(reads()) >= 2 and bot.services.store.follows.job(job["id"], "openai")["final"])
    bot.services.poller.run_once()
    assert wait_until(lambda: slack.messages_in("C1"))
    delivered(bot.services.sender)
    assert len(slack.messages_in("C1")) == 1
    assert len(reads()) == 2  # the redelivery asked nothing, and neither did the poller once the job was final


def test_webhook_when_the_provider_cannot_answer_is_taken_and_polling_announces(server, bot, provider, slack):
    job = _followed_job(bot, provider)
    provider.set_status(job["id"], "succeeded")
    body = _event(job["id"])
    headers = sign_webhook(body, WEBHOOK_SECRET)
    provider.fail("status", status=500, times=2)
    assert server.post("/openai/webhook", body, headers)[0] == 200
    assert wait_until(lambda: provider.requests_to(f"/fine_tuning/jobs/{job['id']}", "GET"))
    assert server.post("/openai/webhook", body, headers) == (200, b'{"result": "already handled"}')
    bot.services.poller.run_once()  # polling is the safety net
    assert wait_until(lambda: slack.messages_in("C1"))
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    assert len(slack.messages_in("C1")) == 1


def test_a_slow_provider_never_holds_the_webhook_answer(server, bot, provider, slack):
    """The web server's threads only verify and record: fetching the job happens on the background pool."""
    job = _followed_job(bot, provider)
    provider.set_status(job["id"], "succeeded")
    hang = provider.fail("delay", delay=15.0, match=f"/fine_tuning/jobs/{job['id']}")  # held until released
    body = _event(job["id"])
    assert server.post("/openai/webhook", body, sign_webhook(body, WEBHOOK_SECRET))[0] == 200
    # Answered while the provider was still being asked: nothing is announced yet, the fetch is in flight.
    assert wait_until(lambda: provider.requests_to(f"/fine_tuning/jobs/{job['id']}", "GET"), timeout=10)
    assert slack.messages_in("C1") == [] and bot.services.store.follows.job(job["id"], "openai")["final"] == 0
    hang.release()
    assert wait_until(lambda: slack.messages_in("C1"), timeout=10)


def test_webhook_endpoint_is_off_without_a_secret(make_bot):
    bot = make_bot(providers={"OPENAI_WEBHOOK_SECRET": None})
    server = Server(bot)
    try:
        assert server.post("/openai/webhook", "{}", {"content-type": "application/json"})[0] == 404
    finally:
        server.close()
