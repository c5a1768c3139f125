"""Guards that comments promised and no test protected: each test here fails when its one line is broken (see the
rows naming these tests in tests/mutations.py)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.messages.blocks import MAX_BLOCKS, build_message, section_block
from bot.messages.jobs import TRY_OPEN_ACTION
from bot.sandbox.slack import block_action_body, signed_headers, view_action_body, view_submission_body
from bot.scrub import Scrubber
from storage import Store
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, TOGETHER_KEY, Server, ask, start_intents, wait_until


def test_a_claim_within_its_lease_cannot_be_taken(tmp_path):
    now = [1000.0]
    store = Store(str(tmp_path / "c.db"), clock=lambda: now[0])
    store.follows.follow("C1", {"id": "ftjob-1", "status": "running", "provider": "openai"}, final=False, team_id="T",
                         user_id="U", origin="start")
    store.follows.record_jobs([({"id": "ftjob-1", "provider": "openai", "status": "succeeded"}, "succeeded")])
    [row] = store.outbox.due_announcements(limit=10)
    assert store.outbox.claim(row["key"], "first", lease_seconds=30) is not None
    now[0] += 10
    assert store.outbox.claim(row["key"], "second", lease_seconds=30) is None  # the first holder's lease is live
    now[0] += 25
    taken = store.outbox.claim(row["key"], "second", lease_seconds=30)
    assert taken is not None and taken["uncertain"]  # its lease ended: taken over, marked uncertain
    store.close()


def test_the_try_it_button_obeys_the_allow_lists(make_bot, slack, provider):
    bot = make_bot(allowed_user_ids=frozenset({"U0BOSS"}))
    server = Server(bot)
    try:
        job = provider.add_job(status="succeeded")
        body = block_action_body(TRY_OPEN_ACTION, json.dumps({"provider": "openai", "job": job["id"]}),
                                 user_id="U0MALLORY", response_url=slack.response_url("t"))
        server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
        [refused] = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/t")])
        assert "not on this bot's list" in refused["text"]
        assert [v for v in slack.view_log if v["kind"] == "open"] == []
    finally:
        server.close()


def _examples(n: int) -> bytes:
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"Q{i}?"},
                                            {"role": "assistant", "content": f"A{i}."}]}) + "\n"
                   for i in range(n)).encode()


def test_the_data_forms_confirm_checks_the_allow_lists_again(make_bot, slack, provider):
    bot = make_bot(allowed_channel_ids=frozenset({"C0TEAM"}))
    server = Server(bot)
    try:
        status, _ = server.command("upload", channel="C0TEAM", response_url=slack.response_url("form"))
        [opened] = wait_until(lambda: [v for v in slack.view_log if v["kind"] == "open"])
        form = slack.views[opened["view_id"]]
        # Recorded as opened where the bot may no longer spend (as if the lists changed after the check).
        meta = json.loads(form["private_metadata"])
        elsewhere = bot.services.store.forms.record_form("data", user_id="U0ALICE", team_id="T", channel_id="C0OTHER",
                                                         provider="openai")
        form = {**form, "private_metadata": json.dumps({**meta, "form": elsewhere})}
        file_id = slack.add_file("train.jsonl", _examples(12))
        values = {"training": {"file": {"type": "file_input", "files": [{"id": file_id}]}}}
        sub = view_submission_body(form, values)
        answer = json.loads(server.post("/slack/events", sub, signed_headers(sub, SIGNING_SECRET))[1])
        slack.answer_to_submission(form["id"], answer)
        report = wait_until(lambda: (v := slack.views[form["id"]]) and "actions" in json.dumps(v["blocks"]) and v,
                            timeout=10)
        click = view_action_body(report, "finetune_data_confirm", "upload")
        server.post("/slack/events", click, signed_headers(click, SIGNING_SECRET))
        assert wait_until(lambda: ":lock:" in json.dumps(slack.views[form["id"]]["blocks"]), timeout=10)
        assert provider.requests_to("/files", "POST") == []
    finally:
        server.close()


def test_no_message_has_more_than_fifty_blocks():
    message = build_message("many", [section_block(f"line {n}") for n in range(120)])
    assert len(message.blocks) == MAX_BLOCKS and "71 more not shown" in json.dumps(message.blocks[-1])


def test_a_response_url_named_as_such_is_scrubbed_whatever_its_host():
    said = Scrubber()("callback: response_url=https://proxy.example.com/any/path/x123 and more")
    assert "proxy.example.com" not in said and "[redacted]" in said


def test_a_traceback_in_the_log_is_scrubbed():
    from bot.logs import configure

    stream = io.StringIO()
    handler = configure("INFO", [TOGETHER_KEY], stream=stream)
    try:
        try:
            raise RuntimeError(f"the key was {TOGETHER_KEY}")
        except RuntimeError:
            logging.getLogger("finetune_bot.test").exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "RuntimeError" in stream.getvalue() and TOGETHER_KEY not in stream.getvalue()


def test_together_answers_are_capped_at_try_max_tokens(make_bot, both, slack, together):
    bot = make_bot(env=both.env,
                   try_max_tokens=77)
    server = Server(bot)
    try:
        job = together.add_job(status="completed")
        ask(server, slack, f"try {job['id']} Hello")
        chats = [r.json() for r in together.received if r.path.endswith("/chat/completions")]
        assert len(chats) == 2 and {c["max_tokens"] for c in chats} == {77}
    finally:
        server.close()


def test_a_start_closed_once_cannot_be_closed_again(tmp_path):
    store = Store(str(tmp_path / "i.db"))
    store.replays.record_intent("r1", team_id="T", channel_id="C", user_id="U", response_url="https://x",
                                training_file="f", model="m", suffix=None, provider="openai")
    assert store.replays.finish_intent("r1", job_id="ftjob-1")
    assert not store.replays.finish_intent("r1", job_id="ftjob-2")  # another process closed it first
    assert start_intents(store)[0]["job_id"] == "ftjob-1"
    store.close()


def test_an_unknown_channel_setting_is_refused(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    with pytest.raises(ValueError, match="no such channel setting"):
        store.channels.set_channel_settings("C1", "U1", colour="blue")
    store.close()


def test_the_gateway_scrubs_every_post_and_edit_whatever_reaches_it(slack):
    """The last line of defence: text that reached the gateway unscrubbed (a configured secret with no telltale
    shape) leaves it scrubbed, in a post and in a card edit, fallback text and blocks alike."""
    from slack_sdk import WebClient

    from bot.messages.blocks import Message
    from bot.slack import SlackGateway

    gateway = SlackGateway(WebClient(token=BOT_TOKEN, base_url=slack.api_url), scrub=Scrubber([TOGETHER_KEY]))
    said = Message(f"the key {TOGETHER_KEY}", [{"type": "section", "text": {"type": "mrkdwn",
                                                                             "text": f"key {TOGETHER_KEY}"}}])
    ts = gateway.post("C1", said)
    gateway.update("C1", ts, said)
    sent = json.dumps([r.params() for r in slack.received if r.path.endswith(("chat.postMessage", "chat.update"))])
    assert sent.count("[redacted]") >= 4 and TOGETHER_KEY not in sent


def test_provider_text_is_scrubbed_where_it_enters(both, together):
    """A job's error, as the adapter hands it over, holds no configured secret: nothing after it can cut the secret
    in half before a scrubber sees it whole."""
    from bot.providers import registry

    job = together.add_job(status="error")
    together.jobs[job["id"]]["_events"].append({"object": "fine-tune-event", "created_at": "2026-01-01T00:00:00Z",
                                                "type": "job_error", "level": "error",
                                                "message": f"bad key {TOGETHER_KEY} in the request"})
    adapter = registry.configured(both).get("together")
    seen = adapter.retrieve(job["id"])
    assert seen.error_message and TOGETHER_KEY not in seen.error_message and "[redacted]" in seen.error_message
    assert all(TOGETHER_KEY not in e.message for e in adapter.events(job["id"], limit=20))


def test_a_replayed_click_is_acted_on_once(server, slack, provider):
    """Refresh, Events and Try it: the same signed click sent again (same trigger_id) does nothing more."""
    from bot.messages.jobs import EVENTS_ACTION

    job = provider.add_job(status="succeeded")
    value = json.dumps({"provider": "openai", "job": job["id"]})
    for action, name in ((EVENTS_ACTION, "ev"), (TRY_OPEN_ACTION, "tr")):
        body = block_action_body(action, value, response_url=slack.response_url(name))
        for _ in range(3):
            assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
    assert wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/ev")])
    assert wait_until(lambda: [v for v in slack.view_log if v["kind"] == "open"])
    import time

    time.sleep(0.5)  # (a replay acted on would have answered by now)
    assert len([r for r in slack.responses if r["url"].endswith("/ev")]) == 1
    assert len([v for v in slack.view_log if v["kind"] == "open"]) == 1
