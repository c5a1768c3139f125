"""Messages are pure functions: escaped, within Slack's limits, carrying what a user needs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.commands import Problem
from bot.messages import (
    MAX_BLOCKS,
    MAX_SECTION,
    escape,
    format_announcement,
    format_followed,
    format_job_list,
    format_job_status,
    format_problem,
    format_provider_error,
    format_started,
)
from bot.providers.types import Job, JobEvent, ProviderError

HOSTILE = ["<!channel>", "<!here>", "<@U123ADMIN>", "<https://evil.example|click me>", "<#C0SECRET>",
           "&lt;!channel&gt;", "a & b"]


def _all_text(message) -> str:
    return message.text + json.dumps(message.blocks)


def test_escape_neutralises_mentions_and_links():
    for text in HOSTILE:
        escaped = escape(text)
        assert "<" not in escaped and ">" not in escaped
    assert escape("a & b <c>") == "a &amp; b &lt;c&gt;"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_untrusted_job_fields_cannot_inject(hostile):
    row = {"job_id": "ftjob-1", "outcome": "failed", "model": hostile, "error_message": hostile,
           "error_code": hostile, "fine_tuned_model": hostile, "trained_tokens": 5, "finished_at": 100,
           "job_created_at": 40, "channel_id": "C1"}
    for outcome in ("succeeded", "failed", "cancelled"):
        blocks = json.dumps(format_announcement({**row, "outcome": outcome}).blocks)
        assert hostile.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in blocks or outcome == \
            "cancelled"
        assert "<!channel>" not in blocks and "<@U123ADMIN>" not in blocks and "<https://evil" not in blocks
    job = Job(id="ftjob-1", status="failed", model=hostile, error_message=hostile, error_code=hostile,
              fine_tuned_model=hostile, suffix=hostile)
    for message in (format_job_status(job, [JobEvent(1, "info", hostile)], followed_here=False),
                    format_started(job), format_job_list([job]),
                    format_provider_error("start", ProviderError(hostile)),
                    format_followed([{"job_id": "j", "status": hostile, "fine_tuned_model": hostile,
                                      "delivery_error": hostile}], title="t"),
                    format_problem(Problem(hostile, "/finetune x <y>"))):
        blocks = json.dumps(message.blocks)
        for raw in ("<!channel>", "<!here>", "<@U123ADMIN>", "<https://evil", "<#C0SECRET>"):
            assert raw not in blocks


def test_success_announcement_names_the_model_prominently():
    message = format_announcement({"job_id": "ftjob-9", "outcome": "succeeded", "model": "gpt-4.1-mini",
                                   "fine_tuned_model": "ft:gpt-4.1-mini:acme:bot:1", "trained_tokens": 12345,
                                   "job_created_at": 1000, "finished_at": 1000 + 3720, "channel_id": "C1"})
    assert "ft:gpt-4.1-mini:acme:bot:1" in message.text
    assert message.blocks[0]["type"] == "header"
    assert message.blocks[1]["text"]["text"].endswith("```ft:gpt-4.1-mini:acme:bot:1```")
    said = _all_text(message)
    assert "12,345" in said and "1h 2m" in said and "ftjob-9" in said and "gpt-4.1-mini" in said


def test_limits_are_enforced_in_one_place():
    many = [Job(id=f"ftjob-{i}", status="running", model="m" * 100) for i in range(100)]
    message = format_job_list(many)
    assert len(message.blocks) <= MAX_BLOCKS
    long_error = Job(id="j", status="failed", model="m", error_message="x" * 10_000)
    for block in format_job_status(long_error, [], followed_here=True).blocks:
        if block.get("text"):
            assert len(block["text"]["text"]) <= MAX_SECTION
    assert len(format_job_status(long_error, [], followed_here=True).text) <= 3000


def test_every_message_has_a_plain_text_fallback():
    job = Job(id="j", status="running", model="m")
    for message in (format_started(job), format_job_status(job, [], followed_here=True),
                    format_job_list([job]), format_followed([], title="t")):
        assert message.text.strip()


def test_sandbox_messages_say_so():
    message = format_started(Job(id="j", status="queued", model="m")).as_sandbox()
    assert message.text.startswith("[sandbox]")
    assert "Sandbox provider" in json.dumps(message.blocks[-1])


def test_announcements_name_who_started_or_followed_and_nothing_forged():
    row = {"job_id": "j", "outcome": "succeeded", "model": "m", "fine_tuned_model": "ft:m", "channel_id": "C1"}
    started = json.dumps(format_announcement({**row, "user_id": "U0ALICE", "origin": "start"}).blocks)
    assert "Started by <@U0ALICE>" in started
    followed = json.dumps(format_announcement({**row, "user_id": "U0BOB", "origin": "subscribe"}).blocks)
    assert "Followed here by <@U0BOB>" in followed
    forged = json.dumps(format_announcement({**row, "user_id": "U1> <!channel", "origin": "start"}).blocks)
    assert "<!channel" not in forged and "Started by" not in forged


@given(st.text())
def test_escape_always_removes_angle_brackets_and_round_trips(text):
    escaped = escape(text)
    assert "<" not in escaped and ">" not in escaped
    assert escaped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == text
