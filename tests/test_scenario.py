"""Scenarios through the real HTTP endpoint: requests signed as Slack signs them, replies and posts at the stand-in."""

from __future__ import annotations

import json

import pytest

from bot.sandbox.openai import SAMPLE_FILE_ID
from tests.conftest import SIGNING_SECRET, Server, ask, delivered, everything_said, reply_to, wait_until


def test_start_status_succeed_announce_once(server, slack, provider, bot):
    reply = ask(server, slack, f"start {SAMPLE_FILE_ID} suffix=support-bot epochs=2")
    assert reply["response_type"] == "ephemeral"  # the card is the channel's record; the reply is the starter's
    [job_id] = list(provider.jobs)
    assert job_id in reply["text"] and "Its card is in the channel" in reply["text"]

    created = provider.requests_to("/fine_tuning/jobs", "POST")[0].json()
    assert created["training_file"] == SAMPLE_FILE_ID
    assert created["model"] == "gpt-4.1-mini-2025-04-14"
    assert created["method"] == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    assert "hyperparameters" not in created
    assert created["metadata"]["slack_channel"] == "C0GENERAL"
    assert created["metadata"]["slack_user"] == "U0ALICE"
    [card] = wait_until(lambda: slack.cards_in("C0GENERAL"))
    assert job_id in card["text"] and "validating_files" in card["text"]

    provider.set_status(job_id, "running")
    status = ask(server, slack, f"status {job_id}")
    assert "running" in status["text"]
    assert "This channel follows this job" in everything_said(status)

    provider.set_status(job_id, "succeeded", fine_tuned_model="ft:gpt-4.1-mini-2025-04-14:acme:support-bot:AbC123")
    report = bot.services.poller.run_once()
    assert report.finished == [job_id]
    [posted] = wait_until(lambda: slack.outcomes_in("C0GENERAL"))
    assert "ft:gpt-4.1-mini-2025-04-14:acme:support-bot:AbC123" in posted["text"]
    assert "```ft:gpt-4.1-mini-2025-04-14:acme:support-bot:AbC123```" in json.dumps(posted["blocks"])
    assert posted["thread_ts"] == card["ts"] and posted["broadcast"]  # in the card's thread and in the channel

    for _ in range(3):
        assert bot.services.poller.run_once().requests == 0  # final jobs are never polled again
        delivered(bot.services.sender)
    assert len(slack.outcomes_in("C0GENERAL")) == 1
    assert [m["ts"] for m in slack.shown_in("C0GENERAL")] == [card["ts"], posted["ts"]]


def test_failed_and_cancelled_outcomes_are_announced(server, slack, provider, bot):
    failing = provider.add_job()
    cancelled = provider.add_job()
    ask(server, slack, f"subscribe {failing['id']}")
    ask(server, slack, f"subscribe {cancelled['id']}", channel="C0OTHER")
    provider.set_status(failing["id"], "failed", error={"code": "invalid_training_file",
                                                        "message": "Line 3: <!channel> bad role", "param": None})
    provider.set_status(cancelled["id"], "cancelled")
    bot.services.poller.run_once()
    general = wait_until(lambda: slack.outcomes_in("C0GENERAL"))
    other = wait_until(lambda: slack.outcomes_in("C0OTHER"))
    assert "failed" in general[0]["text"] and "Line 3" in general[0]["text"]
    # Escaped in the blocks and in the fallback text alike: Slack parses both for mentions.
    for said in (general[0]["text"], json.dumps(general[0]["blocks"])):
        assert "&lt;!channel&gt;" in said and "<!channel>" not in said
    assert "cancelled" in other[0]["text"]


def test_every_following_channel_is_told(server, slack, provider, bot):
    reply = ask(server, slack, f"start {SAMPLE_FILE_ID}", channel="C0ONE")
    [job_id] = list(provider.jobs)
    assert job_id in reply["text"]
    ask(server, slack, f"subscribe {job_id}", channel="C0TWO")
    assert wait_until(lambda: slack.cards_in("C0ONE") and slack.cards_in("C0TWO"))  # (cards up while it runs)
    provider.set_status(job_id, "succeeded")
    bot.services.poller.run_once()
    assert wait_until(lambda: slack.outcomes_in("C0ONE") and slack.outcomes_in("C0TWO"))
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    assert len(slack.outcomes_in("C0ONE")) == 1 and len(slack.outcomes_in("C0TWO")) == 1
    assert len(slack.cards_in("C0ONE")) == 1 and len(slack.cards_in("C0TWO")) == 1  # a card in each


def test_status_list_and_subscriptions(server, slack, provider):
    jobs = [provider.add_job(status="running"), provider.add_job(status="succeeded"), provider.add_job()]
    listing = ask(server, slack, "list 2")
    assert jobs[2]["id"] in listing["text"] and jobs[1]["id"] in listing["text"]
    assert jobs[0]["id"] not in listing["text"]
    assert provider.requests_to("/fine_tuning/jobs", "GET")[-1].query["limit"] == ["2"]
    assert ask(server, slack, "list")  # default 10
    assert provider.requests_to("/fine_tuning/jobs", "GET")[-1].query["limit"] == ["10"]

    ask(server, slack, f"subscribe {jobs[0]['id']}")
    done = ask(server, slack, f"subscribe {jobs[1]['id']}")
    assert "already finished" in done["text"]
    again = ask(server, slack, f"subscribe {jobs[0]['id']}")
    assert "already follows" in again["text"]

    subs = ask(server, slack, "subscriptions")
    assert jobs[0]["id"] in subs["text"] and "running" in subs["text"]
    here = ask(server, slack, "status")
    assert jobs[0]["id"] in here["text"]
    assert "doesn't follow" in ask(server, slack, "subscriptions", channel="C0EMPTY")["text"]

    gone = ask(server, slack, f"unsubscribe {jobs[0]['id']}")
    assert "no longer follows" in gone["text"]
    assert "doesn't follow" in ask(server, slack, f"unsubscribe {jobs[0]['id']}")["text"]
    assert jobs[0]["id"] not in ask(server, slack, "subscriptions")["text"]


def test_status_shows_everything_a_user_needs(server, slack, provider):
    job = provider.add_job(status="succeeded", fine_tuned_model="ft:gpt-4.1-mini-2025-04-14:acme::Xyz")
    status = ask(server, slack, f"status {job['id']}")
    said = everything_said(status)
    for part in ("succeeded", "gpt-4.1-mini-2025-04-14", "ft:gpt-4.1-mini-2025-04-14:acme::Xyz",
                 "Trained tokens", "Created", "Finished", "Latest events", "successfully completed"):
        assert part in said, part
    failed = provider.add_job(status="failed")
    assert "invalid training file" in everything_said(ask(server, slack, f"status {failed['id']}"))


def test_cancel_pause_resume(server, slack, provider):
    job = provider.add_job(status="running")
    assert "Pausing" in ask(server, slack, f"pause {job['id']}")["text"]
    provider.set_status(job["id"], "paused")
    assert "Resumed" in ask(server, slack, f"resume {job['id']}")["text"]
    assert "Cancelled" in ask(server, slack, f"cancel {job['id']}")["text"]
    refused = ask(server, slack, f"cancel {job['id']}")
    assert "has already finished (cancelled) and cannot be cancelled" in refused["text"]
    assert "Could not cancel" in refused["text"]


def test_provider_errors_are_shown_in_their_own_words(server, slack, provider):
    unknown = ask(server, slack, "start file-doesnotexist")
    assert "invalid training_file: file-doesnotexist" in unknown["text"]
    missing = ask(server, slack, "status ftjob-nope")
    assert "Could not find fine-tune job: ftjob-nope" in missing["text"]
    provider.refuse_new_jobs = (403, "Fine-tuning is no longer available to organizations <b>new</b> to it.")
    refused = ask(server, slack, f"start {SAMPLE_FILE_ID}")
    assert "no longer available" in refused["text"]
    assert "&lt;b&gt;new&lt;/b&gt;" in json.dumps(refused["blocks"])


def test_bad_input_gets_a_friendly_answer_at_once(server, slack, provider):
    cases = {
        "frobnicate": "don't know the command `frobnicate`",
        f"start {SAMPLE_FILE_ID} epochs=lots": "`epochs` must be a whole number from 1 to 50",
        f"start {SAMPLE_FILE_ID} colour=blue": "has no option `colour`",
        "status ftjob-<bad>": "is not a valid job_id",
        "cancel": "needs a job_id",
        "list 1000": "from 1 to 100",
    }
    for text, expected in cases.items():
        status, ack = server.command(text, response_url=slack.response_url("bad"))
        assert status == 200
        assert expected in ack["text"], (text, ack["text"])
    assert provider.received == []  # nothing reached the provider
    help_ack = server.command("")[1]
    assert "/finetune cancel &lt;job_id&gt;" in help_ack["text"]  # escaped, as all fallback text
    assert server.command("help")[1]["text"] == help_ack["text"]


def test_private_channel_without_the_bot_is_warned_at_once(server, slack, provider):
    slack.invisible_channels.add("G0SECRET")
    reply = ask(server, slack, f"start {SAMPLE_FILE_ID}", channel="G0SECRET")
    assert "`/invite` <@UFINETUNEBOT>" in everything_said(reply)  # the name this workspace gave the app
    job = provider.add_job(status="running")
    assert "`/invite` <@UFINETUNEBOT>" in everything_said(ask(server, slack, f"subscribe {job['id']}",
                                                            channel="G0SECRET"))
    assert "/invite" not in everything_said(ask(server, slack, f"subscribe {job['id']}", channel="C0PUBLIC"))


def test_signature_checks_refuse_with_no_side_effect(server, slack, provider):
    from bot.sandbox.slack import signed_headers, slash_command_body

    body = slash_command_body(f"start {SAMPLE_FILE_ID}", response_url=slack.response_url("x"))
    good = signed_headers(body, SIGNING_SECRET)
    attempts = {
        "unsigned": (body, {"content-type": "application/x-www-form-urlencoded"}),
        "wrong secret": (body, signed_headers(body, "not-the-secret")),
        "tampered": (body.replace("start", "cancel"), good),
        "stale": (body, signed_headers(body, SIGNING_SECRET, timestamp=int(good["x-slack-request-timestamp"]) - 301)),
    }
    for name, (payload, headers) in attempts.items():
        status, raw = server.post("/slack/events", payload, headers)
        assert status == 401, name
    assert provider.received == [] and slack.responses == [] and slack.posted == []


def test_health_and_unknown_paths(server, bot):
    bot.start_background()
    assert wait_until(lambda: server.get("/healthz")[0] == 200)
    # The first poll runs at start; once it has finished, health counts it.
    health = wait_until(lambda: (h := json.loads(server.get("/healthz")[1]))["cycles"].get("poll") and h)
    assert health["ok"] is True and health["reason"] == "ok" and health["cycles"]["poll"] >= 1
    assert server.get("/nope")[0] == 404
    assert server.get("/slack/events")[0] == 405


def test_ack_comes_before_the_slow_provider_work(server, slack, provider):
    provider.fail("delay", delay=1.5, match="/fine_tuning/jobs")
    status, ack = server.command(f"start {SAMPLE_FILE_ID}", response_url=slack.response_url("slow"))
    assert status == 200 and ack == {}
    assert slack.responses == [] and provider.jobs == {}  # answered while the provider was still working
    assert wait_until(lambda: slack.responses, timeout=10)
    assert list(provider.jobs)[0] in slack.responses[0]["text"]


def test_unexpected_errors_get_an_apology_with_an_id(server, slack, bot, caplog):
    import sqlite3

    with sqlite3.connect(bot.settings.database_path) as db:  # a database broken behind the bot's back
        db.execute("DROP TABLE subscriptions")
    reply = ask(server, slack, "subscriptions")
    assert "Sorry, something went wrong on my side" in reply["text"]
    error_id = reply["text"].rsplit(" ", 1)[-1]
    assert error_id in caplog.text


def test_oauth_variables_in_the_environment_do_not_switch_bolt_to_oauth(monkeypatch, make_bot, slack, provider):
    from tests.conftest import Server

    monkeypatch.setenv("SLACK_CLIENT_ID", "111.222")
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "client-secret")
    server = Server(make_bot())
    try:
        job = provider.add_job(status="running")
        assert "now follows" in ask(server, slack, f"subscribe {job['id']}")["text"]
        assert slack.requests_to("auth.test") == []
    finally:
        server.close()


def test_a_channel_slack_refuses_shows_why_in_subscriptions(server, slack, provider, bot):
    slack.channel_errors["C0ARCHIVED"] = "is_archived"
    job = provider.add_job(status="running")
    ask(server, slack, f"subscribe {job['id']}", channel="C0ARCHIVED")
    provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    outbox = bot.services.store.outbox
    wait_until(lambda: [a for a in outbox.announcements(state="failed") if a["kind"] == "announcement"])
    subs = ask(server, slack, "subscriptions", channel="C0ARCHIVED")
    assert "I could not post here" in everything_said(subs) and "is_archived" in everything_said(subs)
    [dm] = wait_until(lambda: [p for p in slack.posted if p["channel"] == "U0ALICE"])
    assert "is_archived" in dm["text"]


@pytest.mark.heavy(22)
def test_many_outcomes_do_not_leak_threads_or_connections(bot, provider, slack):
    import os
    import threading

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    jobs = [provider.add_job(status="running") for _ in range(60)]
    for n, job in enumerate(jobs):
        bot.services.store.follows.follow(f"C0LEAK{n}", job, final=False, team_id="T", user_id="U", origin="start")
    bot.services.poller.run_once()
    # The first outcome, its post and its chart make the threads that live as long as the bot (the sender's, the
    # chart's) and their connections; from then on nothing may grow.
    provider.set_status(jobs[0]["id"], "succeeded")
    bot.services.poller.run_once()
    assert wait_until(lambda: len(slack.posted) == 1 and len(slack.uploads) == 1, timeout=20)
    files, threads = open_files(), threading.active_count()
    for job in jobs[1:]:
        provider.set_status(job["id"], "succeeded")
        bot.services.poller.run_once()  # each outcome wakes the sender
    assert wait_until(lambda: len(slack.posted) == 60, timeout=20)
    # Each success's chart, in its thread: sixty charts are 15 s of drawing on a free core, more beside heavy tests
    assert wait_until(lambda: len(slack.uploads) == 60, timeout=90)
    assert open_files() - files < 3 and threading.active_count() - threads < 2


def test_a_job_started_when_the_database_fails_is_still_reported_with_its_id(server, slack, provider, bot):
    import sqlite3

    with sqlite3.connect(bot.settings.database_path) as db:
        db.execute("DROP TABLE subscriptions")
    reply = ask(server, slack, f"start {SAMPLE_FILE_ID}")
    [job_id] = list(provider.jobs)
    assert job_id in reply["text"]
    assert f"/finetune subscribe {job_id}" in everything_said(reply)


def _click(server, slack, job_id: str, *, user: str = "U0ALICE", name: str = "click") -> int:
    from bot.sandbox.slack import block_action_body, signed_headers

    body = block_action_body("cancel_job", job_id, user_id=user, response_url=slack.response_url(name))
    return server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0]


def test_the_cancel_button_cancels_after_slacks_confirmation(server, slack, provider):
    ask(server, slack, f"start {SAMPLE_FILE_ID}")
    [job_id] = list(provider.jobs)
    [card] = wait_until(lambda: slack.cards_in("C0GENERAL"))
    [button] = [e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]
                if e["action_id"] == "cancel_job"]
    assert button["value"] == job_id and button["confirm"]["deny"]["text"] == "Keep it running"
    assert _click(server, slack, job_id) == 200
    assert "Cancelled" in reply_to(slack, "click")["text"]
    assert provider.jobs[job_id]["status"] == "cancelled"


def test_the_cancel_button_obeys_the_allow_list(make_bot, slack, provider):
    from tests.conftest import Server

    server = Server(make_bot(allowed_user_ids=frozenset({"U0BOSS"})))
    try:
        job = provider.add_job(status="running")
        assert _click(server, slack, job["id"], user="U0INTERN", name="denied") == 200
        assert "ALLOWED_USER_IDS" in reply_to(slack, "denied")["text"]
        assert provider.jobs[job["id"]]["status"] == "running"
    finally:
        server.close()


def test_a_job_followed_by_direct_message(server, slack, provider, bot):
    job = provider.add_job(status="running")
    reply = ask(server, slack, f"subscribe {job['id']} dm")
    assert "I'll tell you in a direct message when it finishes" in reply["text"]
    assert reply.get("response_type") != "in_channel"  # nothing said in the channel
    said = everything_said(ask(server, slack, "subscriptions"))
    assert "You follow 1 job(s) by direct message" in said and job["id"] in said
    provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    [posted] = wait_until(lambda: slack.messages_in("D0ALICE"))
    assert job["id"] in posted["text"] and slack.messages_in("C0GENERAL") == []
    other = provider.add_job(status="running")
    ask(server, slack, f"subscribe {other['id']} dm")
    assert "no longer follow" in ask(server, slack, f"unsubscribe {other['id']} dm")["text"]
    provider.set_status(other["id"], "succeeded")
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    assert len(slack.messages_in("D0ALICE")) == 1


def test_channel_settings_change_what_the_channel_hears(make_bot, slack, provider):
    bot = make_bot(allowed_user_ids=frozenset({"U0ALICE"}))
    server = Server(bot)
    try:
        shown = ask(server, slack, "settings")
        assert "every outcome" in everything_said(shown) and "Mentions of who started or subscribed: *on*" in (
            everything_said(shown))
        assert "not on this bot's list" in ask(server, slack, "settings outcomes=failures", user="U0MALLORY")["text"]
        assert "`outcomes` must be `all` or `failures`" in ask(server, slack, "settings outcomes=some")["text"]
        changed = ask(server, slack, "settings outcomes=failures mentions=off")
        assert "failures only" in everything_said(changed) and changed["response_type"] == "in_channel"
        ok, bad = provider.add_job(status="running"), provider.add_job(status="running")
        ask(server, slack, f"subscribe {ok['id']}")
        ask(server, slack, f"subscribe {bad['id']}")
        provider.set_status(ok["id"], "succeeded")
        provider.set_status(bad["id"], "failed")
        bot.services.poller.run_once()
        owed = [a["job_id"] for a in bot.services.store.outbox.announcements() if a["kind"] == "announcement"]
        assert owed == [bad["id"]]  # only the failure is owed
        [posted] = wait_until(lambda: slack.outcomes_in("C0GENERAL"))
        assert bad["id"] in posted["text"]
        assert "<@U0ALICE>" not in json.dumps(posted["blocks"])  # mentions off
    finally:
        server.close()


def test_refresh_shows_the_job_as_it_is_now_and_events_answer_the_clicker(server, slack, provider):
    from bot.sandbox.slack import block_action_body, signed_headers

    # Cards off: plain messages, as before cards (the start reply in the channel, with the job's buttons).
    assert "with a thread: *off*" in everything_said(ask(server, slack, "settings cards=off"))
    reply = ask(server, slack, f"start {SAMPLE_FILE_ID}")
    assert reply["response_type"] == "in_channel"
    [job_id] = list(provider.jobs)
    buttons = {e["action_id"]: e for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert set(buttons) == {"refresh_job", "job_events", "cancel_job"}
    provider.set_status(job_id, "running")
    body = block_action_body("refresh_job", buttons["refresh_job"]["value"], response_url=slack.response_url("rf"))
    server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    refreshed = reply_to(slack, "rf")
    assert refreshed["replace_original"] is True and refreshed["response_type"] == "in_channel"
    assert f"Job {job_id}: running" in refreshed["text"]
    body = block_action_body("job_events", buttons["job_events"]["value"], response_url=slack.response_url("ev"))
    server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    events = reply_to(slack, "ev")
    assert events["replace_original"] is False and events["response_type"] == "ephemeral"
    assert "Fine-tuning job started" in everything_said(events)
    provider.set_status(job_id, "succeeded")
    body = block_action_body("refresh_job", buttons["refresh_job"]["value"], response_url=slack.response_url("rf2"))
    server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    final = reply_to(slack, "rf2")
    assert "succeeded" in final["text"] and "cancel_job" not in json.dumps(final["blocks"])  # nothing to cancel
