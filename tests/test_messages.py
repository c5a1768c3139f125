"""Messages are pure functions: escaped, within Slack's limits, carrying what a user needs."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.commands import Problem
from bot.comparison import TrySide, format_comparison, format_try, format_two_fine_tunes
from bot.costs import Estimate
from bot.messages.answers import (
    ProviderInfo,
    format_apology,
    format_database_unavailable,
    format_help,
    format_note,
    format_problem,
    format_provider_error,
    format_providers,
    format_refusal,
    format_replay,
    format_settings,
    format_stopped_taking_jobs,
    format_unknown_provider,
)
from bot.messages.blocks import MAX_BLOCKS, MAX_SECTION, clip, code, escape, when
from bot.messages.cards import (
    Subscription,
    format_announcement,
    format_card,
    format_delivery_problem,
    format_progress,
    format_watchdog,
)
from bot.messages.jobs import (
    FollowsPage,
    format_action,
    format_events,
    format_followed,
    format_job_list,
    format_job_status,
    format_start_reconciled,
    format_started,
    format_subscribed,
    format_unsubscribed,
)
from bot.messages.money import format_approval_request, format_held, format_hold_decided, format_spend
from bot.move_messages import (
    format_move_needs_file,
    format_move_refused,
    format_moving,
    format_retiring,
    format_retiring_notice,
    move_links,
)
from bot.providers.types import ChatAnswer, Job, JobEvent, ProviderError

HOSTILE = ["<!channel>", "<!here>", "<@U123ADMIN>", "<https://evil.example|click me>", "<#C0SECRET>",
           "&lt;!channel&gt;", "a & b", "``` <!channel> ```", "`<!here>`"]
LIVE = ("<!channel", "<!here", "<@U123ADMIN", "<https://evil", "<#C0SECRET", "<!everyone")


def _all_text(message) -> str:
    return message.text + json.dumps(message.blocks)


SETTINGS = {"outcomes": "all", "mentions": 1, "cards": 1, "progress": 1, "progress_minutes": 5}


def _every_message(hostile: str) -> dict:
    """Every formatter in bot.messages' modules, fed the hostile string wherever it takes untrusted text."""
    job = Job(id="ftjob-1", status=hostile, model=hostile, error_message=hostile, error_code=hostile,
              fine_tuned_model=hostile, suffix=hostile, training_file=hostile, created_at=40, finished_at=100,
              provider=hostile)
    row = {"job_id": hostile, "status": hostile, "fine_tuned_model": hostile, "delivery_error": hostile,
           "observed_at": 5}
    subscription = Subscription("C1", "U0ALICE", "start")
    hold = {"id": "h1", "user_id": hostile, "estimate": 12.5, "reason": hostile, "decided_by": hostile,
            "command": {"training_file": hostile, "provider": hostile, "model": hostile, "suffix": hostile}}
    row = {**row, "id": "ftjob-2", "provider": "openai", "model": hostile, "final": 0, "estimate": 1.5,
           "user_id": "U0ALICE", "origin": "start"}
    links = move_links({"source_job": hostile, "source_provider": hostile},
                       [{"new_job": hostile, "target_provider": hostile, "new_status": hostile, "new_state": None}])
    entry = {"provider": hostile, "job": hostile, "model": hostile, "fine_tuned_model": hostile, "date": "2027-01-06",
             "what": hostile, "source": hostile}
    today = date(2026, 12, 6)
    moved_from = {"source_job": hostile, "source_provider": hostile}
    return {
        "format_two_fine_tunes": [format_two_fine_tunes(
            (replace(job, id=hostile), hostile), (job, hostile), hostile, hostile,
            [(3, hostile, TrySide("A", hostile, ChatAnswer(hostile), None, 1.0),
              TrySide("B", hostile, None, hostile, 1.0))])],
        "format_moving": [format_moving(replace(job, id=hostile), hostile, [hostile], started=format_note(hostile)),
                          format_moving(job, hostile, [hostile], report=[hostile], role=hostile)],
        "format_move_refused": [format_move_refused(job, hostile, {"user_id": hostile, "new_job": hostile,
                                                                   "state": state})
                                for state in ("started", "held", "preparing")],
        "format_move_needs_file": [format_move_needs_file({"id": hostile, "options": {"model": hostile}}, job, hostile,
                                                          hostile, role=hostile)],
        "format_retiring": [format_retiring([entry, {**entry, "moved": [(hostile, hostile)]}], today=today),
                            format_retiring([], today=today)],
        "format_retiring_notice": [format_retiring_notice({"date": "2027-01-06", "days": 30, "entries": [entry],
                                                           "more": 3})],
        "format_help": [format_help()],
        "format_problem": [format_problem(Problem(hostile, "/finetune x <y>"))],
        "format_refusal": [format_refusal(hostile)],
        "format_provider_error": [format_provider_error(hostile, ProviderError(hostile, code=hostile, status=400))],
        "format_replay": [format_replay()],
        "format_apology": [format_apology(hostile)],
        "format_database_unavailable": [format_database_unavailable(hostile)],
        "format_started": [format_started(job, [escape(hostile)]), format_started(job, [escape(hostile)], card=True)],
        "format_job_status": [format_job_status(job, [JobEvent(1, "info", hostile)], followed_here=False),
                              format_job_status(job, [], followed_here=True, links=links)],
        "format_job_list": [format_job_list([job]), format_job_list([job], where=hostile, unreachable=[hostile]),
                            format_job_list([], unreachable=[hostile])],
        "format_try": [format_try(hostile, TrySide(hostile, hostile, ChatAnswer(hostile * 400, 1, 2, "length"), None,
                                                   1.0),
                                  TrySide(hostile, hostile, None, hostile, 0.5), provider=hostile, system=hostile,
                                  share_id="s1")],
        "format_comparison": [format_comparison(hostile, hostile, hostile, [
            (3, hostile, TrySide("Fine-tuned", hostile, ChatAnswer(hostile), None, 1.0),
             TrySide("Base", hostile, None, hostile, 1.0))], provider=hostile)],
        "format_note": [format_note(hostile), format_note(hostile, emoji=":x:")],
        "format_settings": [format_settings(SETTINGS, changed=False),
                            format_settings({**SETTINGS, "outcomes": "failures", "mentions": 0, "cards": 0,
                                             "progress": 0, "progress_minutes": 1}, changed=True)],
        "format_card": [format_card(job, subscription), format_card(replace(job, error_message=hostile * 400),
                                                                    Subscription("C1", hostile, hostile, False)),
                        format_card(job, subscription, followed=False), format_card(job, subscription, links=links)],
        "format_progress": [format_progress(job, {"from": hostile, "to": hostile}),
                            format_progress(job, {"step": 5, "total_steps": 10, "train_loss": 0.5,
                                                  "valid_loss": 0.6, "finish_at": 1_800_000_000})],
        "format_events": [format_events(job, [JobEvent(1, "info", hostile)]), format_events(job, [])],
        "format_unknown_provider": [format_unknown_provider(hostile, [hostile], hostile)],
        "format_providers": [format_providers([ProviderInfo(hostile, True, [hostile], [hostile], [hostile], hostile,
                                                            False)])],
        "format_stopped_taking_jobs": [format_stopped_taking_jobs(ProviderError(hostile, provider=hostile), [hostile]),
                                       format_stopped_taking_jobs(ProviderError(hostile), [])],
        "format_followed": [format_followed(FollowsPage(1, 2, 1, 1, [row], [row]), title=hostile),
                            format_followed(FollowsPage(1, 1, 0, 0, [], []), title=hostile, by_dm=[row])],
        "format_start_reconciled": [format_start_reconciled(job, hostile), format_start_reconciled(None, hostile)],
        "format_action": [format_action(a, job) for a in ("cancel", "pause", "resume")],
        "format_subscribed": [format_subscribed(job, new=True), format_subscribed(replace(job, status="running"),
                                                                                  new=False),
                              format_subscribed(replace(job, status="running", state=""), new=True, by_dm=True)],
        "format_unsubscribed": [format_unsubscribed(hostile, existed=True), format_unsubscribed(hostile,
                                                                                                existed=False),
                                format_unsubscribed(hostile, existed=True, by_dm=True)],
        "format_announcement": [format_announcement(job, outcome, subscription, moved_from=moved_from)
                                for outcome in ("succeeded", "failed", "cancelled")],
        "format_delivery_problem": [format_delivery_problem(job, hostile, hostile, hostile, bot_user_id=hostile),
                                    format_delivery_problem(job, "failed", "C0REAL", "not_in_channel")],
        "format_held": [format_held("h1", hold["command"], Estimate(None, unknown_because=hostile), hostile,
                                    needs_approval=approval, unasked=unasked)
                        for approval, unasked in ((False, None), (True, None), (True, hostile))],
        "format_approval_request": [format_approval_request(hold)],
        "format_hold_decided": [format_hold_decided({**hold, "state": state}, outcome=hostile)
                                for state in ("approved", "denied", "expired", "started")],
        "format_spend": [format_spend("November 2026", [row, {**row, "id": hostile, "provider": hostile,
                                                              "model": hostile, "final": 1, "cost": 1.5,
                                                              "origin": "start", "user_id": hostile}],
                                      {"jobs": 2, "estimated": 3.0, "actual": 1.5, "running": 1.5, "spent": 3.0,
                                       "unknown": 1}, page=1, pages=2, provider=hostile)],
        "format_watchdog": [format_watchdog(replace(job, status="running", state=""), {"kind": kind, **numbers},
                                            subscription)
                            for kind, numbers in (("nan", {"which": hostile, "value": hostile, "step": 3}),
                                                  ("rising", {"steps": [1, 2], "losses": [hostile], "low": 1.0}),
                                                  ("stalled", {"step": 4, "minutes": 40, "cancel": hostile}),
                                                  ("overfitting", {"valid": [hostile], "train": [1.0],
                                                                   "cancel": "cancelled"}))],
    }


def test_every_formatter_is_covered_by_the_hostile_text_test():
    import importlib

    from bot import comparison, move_messages

    surfaces = [importlib.import_module(f"bot.messages.{name}")
                for name in ("answers", "blocks", "cards", "jobs", "money")]
    formatters = {name for module in (*surfaces, comparison, move_messages) for name, value in vars(module).items()
                  if name.startswith("format_") and callable(value)}
    assert formatters == set(_every_message("x"))


@pytest.mark.parametrize("hostile", HOSTILE)
def test_untrusted_text_is_inert_everywhere_in_every_message(hostile):
    """Blocks and the fallback `text` alike: Slack parses both for mentions and shows `text` in notifications."""
    for name, produced in _every_message(hostile).items():
        for message in produced:
            for part, said in (("text", message.text), ("blocks", json.dumps(message.blocks))):
                for live in LIVE:
                    assert live not in said, (name, part, said)
                # No bare & from untrusted text: every one is the start of an entity we wrote.
                assert not re.search(r"&(?!amp;|lt;|gt;)", said), (name, part)


def test_escape_neutralises_mentions_and_links():
    for text in HOSTILE:
        escaped = escape(text)
        assert "<" not in escaped and ">" not in escaped
    assert escape("a & b <c>") == "a &amp; b &lt;c&gt;"


def test_code_spans_cannot_be_closed_from_inside():
    assert code("a`b") == "`a'b`"
    message = format_announcement(Job(id="j", status="succeeded", model="m", fine_tuned_model="x```y"),
                                  "succeeded", Subscription("C1"))
    assert message.blocks[1]["text"]["text"].count("```") == 2


def test_success_announcement_names_the_model_prominently():
    job = Job(id="ftjob-9", status="succeeded", model="gpt-4.1-mini", fine_tuned_model="ft:gpt-4.1-mini:acme:bot:1",
              trained_tokens=12345, created_at=1000, finished_at=1000 + 3720)
    message = format_announcement(job, "succeeded", Subscription("C1"))
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
    for name, produced in _every_message("x").items():
        for message in produced:
            assert message.text.strip(), name


def test_sandbox_messages_say_so():
    message = format_started(Job(id="j", status="queued", model="m")).as_sandbox()
    assert message.text.startswith("[sandbox]")
    assert "Sandbox provider" in json.dumps(message.blocks[-1])


def test_announcements_name_who_started_or_followed_and_nothing_forged():
    job = Job(id="j", status="succeeded", model="m", fine_tuned_model="ft:m")
    started = json.dumps(format_announcement(job, "succeeded", Subscription("C1", "U0ALICE", "start")).blocks)
    assert "Started by <@U0ALICE>" in started
    followed = json.dumps(format_announcement(job, "succeeded", Subscription("C1", "U0BOB", "subscribe")).blocks)
    assert "Followed here by <@U0BOB>" in followed
    forged = json.dumps(format_announcement(job, "succeeded", Subscription("C1", "U1> <!channel", "start")).blocks)
    assert "<!channel" not in forged and "Started by" not in forged


@given(st.text())
def test_escape_always_removes_angle_brackets_and_round_trips(text):
    escaped = escape(text)
    assert "<" not in escaped and ">" not in escaped
    assert escaped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == text


@given(st.text(alphabet="<>&`ab \n", max_size=400), st.integers(20, 300))
def test_cutting_never_splits_an_entity_or_leaves_a_code_block_open(raw, limit):
    body = clip(f"*Error*\n```{escape(raw.replace('`', chr(39)))}``` and {code(raw)}", limit)
    assert len(body) <= limit
    assert not re.search(r"&(?!amp;|lt;|gt;)", body)  # never half an &lt;
    assert body.count("```") % 2 == 0


def test_times_are_shown_in_utc_whatever_the_machines_time_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        assert time.localtime(1_700_000_000).tm_hour != 22  # the machine's own zone really is elsewhere
        assert when(1_700_000_000).endswith("|2023-11-14 22:13 UTC>")
        job = Job(id="j", status="succeeded", model="m", created_at=1_700_000_000, finished_at=1_700_003_600)
        assert "2023-11-14 23:13 UTC" in json.dumps(format_job_status(job, [], followed_here=True).blocks)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_help_names_every_subcommand_within_slacks_limits():
    from bot.commands import SUBCOMMANDS

    help_message = format_help()
    said = json.dumps(help_message.blocks)
    assert all(f"/finetune {s.name}" in said for s in SUBCOMMANDS)
    assert all(len(b["text"]["text"]) <= 2500 for b in help_message.blocks if b["type"] == "section")
    # One section a subcommand, its usage first: evenly spaced wherever it is shown (packed into shared sections,
    # some entries lost the blank line between them).
    sections = [b["text"]["text"] for b in help_message.blocks if b["type"] == "section"]
    assert len(sections) == len(SUBCOMMANDS) and all(f"/finetune {s.name}" in t.split("\n")[0]
                                                      for s, t in zip(SUBCOMMANDS, sections, strict=True))


LONG = ["x" * 5000, "<!channel> " * 400, "ftjob-" + "9" * 122, "meta-llama/" + "M" * 240, "é" * 3000]


@pytest.mark.parametrize("hostile", HOSTILE[:3] + LONG)
def test_every_message_is_within_slacks_documented_limits(hostile):
    """Every formatter, fed hostile and very long text (ids, model names, errors, answers), builds a message that
    slack_sdk's models accept and that keeps every limit Slack documents."""
    from tests.slack_limits import assert_within_slack_limits

    for name, produced in _every_message(hostile).items():
        for message in produced:
            try:
                assert_within_slack_limits({"text": message.text, "blocks": message.blocks}, kind="message")
            except Exception as error:
                raise AssertionError(f"{name}: {error}") from None


@pytest.mark.parametrize("hostile", HOSTILE[:2] + LONG)
def test_every_view_is_within_slacks_documented_limits(hostile):
    from bot.comparison import TrySide, format_try
    from bot.views import (
        data_done_view,
        data_form_view,
        data_progress_view,
        data_report_view,
        move_done_view,
        move_form_view,
        try_modal_view,
        try_result_view,
    )
    from tests.slack_limits import assert_within_slack_limits

    metadata = json.dumps({"mode": "start", "provider": "openai", "form": "f" * 24})
    answers = format_try(hostile, TrySide("Fine-tuned", hostile, ChatAnswer(hostile * 3), None, 1.0),
                         TrySide("Base", hostile, None, hostile, 1.0), provider="openai", share_id="s1")
    views = {
        "form": data_form_view("start", provider="openai", models=[hostile] * 150, default_model=hostile,
                               metadata=metadata),
        "progress": data_progress_view("check", hostile, metadata=metadata),
        "report": data_report_view("upload", [hostile] * 300, filename=hostile, ok=True, metadata=metadata,
                                   confirm=hostile),
        "done": data_done_view("start", hostile),
        "try": try_modal_view(model=hostile, metadata=json.dumps({"form": "f" * 24}), max_prompt_chars=100_000),
        "try answers": try_result_view(answers),
        "moving form": data_form_view("start", provider="together", models=[hostile] * 150, default_model=hostile,
                                      metadata=metadata, intro=hostile * 5, suffix=hostile * 10, epochs=50),
        "move": move_form_view(job_id=hostile, source=hostile, base=hostile, targets=[hostile] * 120, model=hostile * 9,
                               metadata=metadata, estimate=hostile * 40),
        "move done": move_done_view(format_try(hostile, TrySide("A", hostile, None, hostile, 1.0),
                                               TrySide("B", hostile, None, hostile, 1.0), provider="x")),
    }
    for name, view in views.items():
        try:
            assert_within_slack_limits(view, kind="view")
        except Exception as error:
            raise AssertionError(f"{name}: {error}") from None
