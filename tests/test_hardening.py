"""What production and attackers find that scenarios do not: leaks over hundreds of cycles, pools that wait on
themselves, downloads from hostile addresses, garbage from a provider, replayed forms, secrets cut in half, and views
real Slack refuses."""

from __future__ import annotations

import gc
import itertools
import json
import os
import threading
import time
import urllib.request

import pytest
from slack_sdk import WebClient

from bot.messages.jobs import TRY_OPEN_ACTION
from bot.providers.types import ProviderError
from bot.sandbox.http import StandInServer
from bot.sandbox.slack import block_action_body, signed_headers, view_submission_body
from bot.slack import FileUnavailable, SlackGateway
from bot.views import try_modal_view
from tests.conftest import (
    BOT_TOKEN,
    OPENAI_KEY,
    SIGNING_SECRET,
    TOGETHER_KEY,
    Server,
    ask,
    delivered,
    everything_said,
    wait_until,
)
from tests.slack_limits import assert_within_slack_limits

PROMPT = "What's the capital of France?"


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- 1. nothing leaks per cycle ------------------------------------------------------------------------------------


def test_hundreds_of_poll_cycles_with_two_providers_leave_files_threads_and_connections_flat(make_bot, both,
                                                                                              provider, together):
    bot = make_bot(env=both.env)
    for _ in range(3):  # several jobs running at each provider, all followed: each cycle asks both, side by side
        provider.add_job(status="running")
        together.add_job(status="running")
    store = bot.services.store
    for job in provider.jobs.values():
        store.follows.follow("C0GENERAL", {**job, "provider": "openai"}, final=False, team_id="T", user_id="U",
                             origin="test")
    for job in together.jobs.values():
        store.follows.follow("C0GENERAL", {"id": job["id"], "status": job["status"], "provider": "together"},
                             final=False,
                     team_id="T", user_id="U", origin="test")

    for job_id in provider.jobs:
        provider.report(job_id, 1, 2.0)
    for job_id in together.jobs:
        together.report(job_id, 1, 2.0)
    bot.services.poller.watchdog.every = 0  # the watchdog reads every job's metrics whenever it runs
    maintain = bot.scheduler.get_job("maintain").func
    cycles = itertools.count()

    def cycle() -> None:
        report = bot.services.poller.run_once()
        assert set(report.requests_by_provider) == {"openai", "together"} and not report.errors
        if next(cycles) % 10 == 0:
            bot.services.poller.read_progress()  # (every tenth cycle: a metric read costs more than a cycle)
            maintain()  # reconciling starts, finishing interrupted watchdog cancels, pruning

    for _ in range(20):  # warm up: every pool thread made, every connection opened
        cycle()
    assert {len(store.watch.readings("openai", job_id)) for job_id in provider.jobs} == {1}
    gc.collect()
    files, threads, connections, rss = _open_files(), threading.active_count(), store.connections(), _rss_mb()
    for _ in range(300):
        cycle()
    gc.collect()
    print(f"\npoll soak, 300 cycles with two providers and the watchdog: open files {files} -> {_open_files()}, "
          f"threads {threads} -> "
          f"{threading.active_count()}, connections {connections} -> {store.connections()}, "
          f"RSS {rss:.1f} -> {_rss_mb():.1f} MB")
    assert store.connections() <= connections
    assert threading.active_count() <= threads  # (threads of the tests before it may still be ending)
    assert _open_files() <= files + 2  # (a keep-alive socket to a stand-in may come or go)
    assert _rss_mb() - rss < 25


def test_hundreds_of_commands_in_bursts_leave_files_threads_and_memory_flat(bot, slack):
    """Each turn of the server's loop accepts every connection waiting: bursts of twenty at once, 400 in all, through
    the real server, leave no socket, thread or memory behind."""
    from concurrent.futures import ThreadPoolExecutor

    from bot.sandbox.slack import slash_command_body

    server = Server(bot)

    def burst() -> None:
        def one(n: int) -> int:
            body = slash_command_body("help", channel_id="C0GENERAL", response_url=slack.response_url(f"soak{n}"))
            return server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0]

        with ThreadPoolExecutor(20) as pool:
            assert set(pool.map(one, range(20))) == {200}

    try:
        for _ in range(3):  # warm up: every server thread made
            burst()
        gc.collect()
        files, threads, rss = _open_files(), threading.active_count(), _rss_mb()
        for _ in range(20):
            burst()
        wait_until(lambda: _open_files() <= files, 5)  # (the server closes each connection after its answer)
        gc.collect()
        print(f"\ncommand soak, 400 in bursts of 20: open files {files} -> {_open_files()}, threads {threads} -> "
              f"{threading.active_count()}, RSS {rss:.1f} -> {_rss_mb():.1f} MB")
        assert _open_files() <= files
        assert threading.active_count() <= threads
        assert _rss_mb() - rss < 15
    finally:
        server.close()


def test_a_thread_that_used_the_store_and_ended_leaves_no_connection_behind(bot):
    store = bot.services.store
    before, files = store.connections(), _open_files()
    for _ in range(50):
        worker = threading.Thread(target=store.follows.active_jobs)
        worker.start()
        worker.join()
    assert store.connections() == before and _open_files() <= files + 1


def test_charts_after_announcements_reuse_one_thread(bot, provider):
    job = provider.add_job(status="succeeded")
    charts = bot.services.charts
    charts.after_announced({"kind": "announcement", "outcome": "succeeded", "job_id": job["id"],
                            "provider": "openai", "channel_id": "C0GENERAL"}, "1.0")
    charts.wait_idle(30)
    connections = bot.services.store.connections()
    for n in range(8):
        charts.after_announced({"kind": "announcement", "outcome": "succeeded", "job_id": job["id"],
                                "provider": "openai", "channel_id": "C0GENERAL"}, f"{n}.0")
        charts.wait_idle(30)
    assert [t.name for t in threading.enumerate() if t.name.startswith("finetune-chart")] == ["finetune-chart_0"]
    assert bot.services.store.connections() <= connections  # (other threads, a stand-in's, come and go)


# -- 2. no pool waits on itself ------------------------------------------------------------------------------------


def _examples(n: int) -> bytes:
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                            {"role": "assistant", "content": f"Answer {i}."}]}) + "\n"
                   for i in range(n)).encode()


def test_compare_twenty_then_try_both_answer(server, slack, provider):
    provider.add_file("file-long", "long.jsonl", _examples(25))
    job = provider.add_job(status="succeeded", training_file="file-long")
    compared = everything_said(ask(server, slack, f"compare {job['id']} n=20"))
    assert "20 examples" in compared
    # (Alice has sent her 20 prompts this minute; Bob has his own.)
    tried = everything_said(ask(server, slack, f"try {job['id']} {PROMPT}", user="U0BOB"))
    assert "Fine-tuned" in tried and "Base" in tried


def _open_try_form(server, slack, job_id: str, user: str = "U0ALICE", channel: str = "C0GENERAL") -> dict:
    before = {v["view_id"] for v in slack.view_log if v["kind"] == "open"}
    value = json.dumps({"provider": "openai", "job": job_id})
    body = block_action_body(TRY_OPEN_ACTION, value, user_id=user, channel_id=channel,
                             response_url=slack.response_url(f"t{time.monotonic_ns()}"))
    assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
    [opened] = wait_until(lambda: [v for v in slack.view_log if v["kind"] == "open" and v["view_id"] not in before])
    return slack.views[opened["view_id"]]


def _prompt(text: str) -> dict:
    return {"prompt": {"value": {"type": "plain_text_input", "value": text}}}


def _submit(server, form: dict, text: str = PROMPT, user: str = "U0ALICE") -> tuple[dict, str]:
    body = view_submission_body(form, _prompt(text), user_id=user)
    status, raw = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    assert status == 200
    return json.loads(raw), body


def _chats(stand_in) -> list:
    return [r for r in stand_in.received if r.method == "POST" and r.path.endswith("/chat/completions")]


def test_twenty_try_it_forms_at_once_all_answer(server, slack, provider):
    job = provider.add_job(status="succeeded")
    provider.chat_latency = {job["fine_tuned_model"]: 0.3, "gpt-4.1-mini-2025-04-14": 0.3}
    forms = [_open_try_form(server, slack, job["id"]) for _ in range(20)]
    answers = {}

    def submit(form: dict) -> None:
        answers[form["id"]], _ = _submit(server, form)

    senders = [threading.Thread(target=submit, args=(form,)) for form in forms]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(10)
    for form in forms:
        slack.answer_to_submission(form["id"], answers[form["id"]])
    done = wait_until(lambda: all("Fine-tuned" in json.dumps(slack.views[f["id"]]["blocks"]) for f in forms),
                      timeout=30)
    assert done, "some forms never got their answers"
    assert len(_chats(provider)) == 40


# -- 3 and 5. downloads: an overall deadline, Slack's hosts only, the token nowhere else ----------------------------


class _FileHost(StandInServer):
    """Any web server a download address might point at: records what it was sent, answers with a file, or with a
    redirect to `redirect_to`."""

    def __init__(self, redirect_to: str | None = None) -> None:
        super().__init__()
        self.redirect_to = redirect_to

    def answer(self, request):
        if self.redirect_to:
            return 302, {"location": self.redirect_to, "content-length": "0"}, b""
        return 200, {"content-type": "application/octet-stream"}, _examples(12)


def _gateway(api_url: str) -> SlackGateway:
    return SlackGateway(WebClient(token=BOT_TOKEN, base_url=api_url))


def test_a_download_trickling_a_byte_at_a_time_ends_at_its_deadline():
    with _FileHost() as host:
        fault = host.fail("trickle", delay=0.2, times=1)
        gateway = _gateway(host.url + "/api/")
        started = time.monotonic()
        with pytest.raises(FileUnavailable, match="longer than 1 s"):
            gateway.download(host.url + "/files-pri/T-F1/download/a.jsonl", max_bytes=10**6, deadline_seconds=1.0)
        took = time.monotonic() - started
        fault.release()
    assert took < 5, took  # per read, each byte came in time: only the overall deadline ends it


@pytest.mark.parametrize("address", [
    "http://{foreign}/files-pri/T-F1/download/a.jsonl",  # another host
    "https://{foreign}/files-pri/T-F1/download/a.jsonl",  # another host over https
    "file:///etc/passwd",  # a local file
    "http://169.254.169.254/latest/meta-data/",  # a cloud metadata address
    "ftp://{foreign}/a.jsonl",
])
def test_a_download_address_off_slacks_hosts_is_never_asked(address):
    with _FileHost() as slack_host, _FileHost() as foreign:
        gateway = _gateway(slack_host.url + "/api/")
        url = address.format(foreign=f"127.0.0.2:{foreign.port}")
        with pytest.raises(FileUnavailable, match="not one of its own file hosts"):
            gateway.download(url, max_bytes=10**6)
    assert foreign.received == [] and slack_host.received == []


def test_a_redirect_to_another_host_is_not_followed_and_the_token_goes_nowhere_else():
    with _FileHost() as foreign:
        with _FileHost(redirect_to=f"http://127.0.0.2:{foreign.port}/stolen") as slack_host:
            gateway = _gateway(slack_host.url + "/api/")
            with pytest.raises(FileUnavailable, match="not one of its file hosts"):
                gateway.download(slack_host.url + "/files-pri/T-F1/download/a.jsonl", max_bytes=10**6)
        assert [r.headers.get("authorization") for r in slack_host.received] == [f"Bearer {BOT_TOKEN}"]
    assert foreign.received == []


def test_a_redirect_between_allowed_origins_drops_the_token():
    from bot.slack import _origin, _SameOriginAuth

    with _FileHost() as second:
        with _FileHost(redirect_to=second.url + "/files-pri/T-F1/download/a.jsonl") as first:
            allowed = {_origin(first.url), _origin(second.url)}
            opener = urllib.request.build_opener(_SameOriginAuth(_origin(first.url), allowed.__contains__))
            request = urllib.request.Request(first.url + "/f", headers={"Authorization": f"Bearer {BOT_TOKEN}"})
            with opener.open(request, timeout=5) as response:
                assert response.read() == _examples(12)
        assert first.received[0].headers.get("authorization") == f"Bearer {BOT_TOKEN}"
        assert [r.headers.get("authorization") for r in second.received] == [None]


def test_slacks_own_file_hosts_are_allowed_over_https_only():
    gateway = _gateway("http://127.0.0.1:9/api/")
    assert gateway._may_fetch(("https", "files.slack.com", 443))
    assert gateway._may_fetch(("https", "files.slack-gov.com", 443))
    assert not gateway._may_fetch(("http", "files.slack.com", 80))
    assert not gateway._may_fetch(("https", "files.slack.com.evil.example", 443))
    assert not gateway._may_fetch(("https", "evilslack.com", 443))
    assert gateway._may_fetch(("http", "127.0.0.1", 9)) and not gateway._may_fetch(("http", "127.0.0.1", 10))


def test_the_form_says_plainly_when_a_file_address_is_not_slacks(server, slack, provider):
    file_id = slack.add_file("train.jsonl", _examples(12), url="http://169.254.169.254/latest/meta-data/")
    status, ack = server.command("check", response_url=slack.response_url("form"))
    [opened] = wait_until(lambda: [v for v in slack.view_log if v["kind"] == "open"])
    form = slack.views[opened["view_id"]]
    values = {"training": {"file": {"type": "file_input", "files": [{"id": file_id, "name": "train.jsonl"}]}}}
    body = view_submission_body(form, values)
    answer = json.loads(server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[1])
    slack.answer_to_submission(form["id"], answer)
    settled = wait_until(lambda: "not one of its own file hosts" in json.dumps(slack.views[form["id"]]["blocks"]),
                         timeout=10)
    assert settled


def test_stop_returns_within_its_budget_while_a_download_trickles(make_bot):
    bot = make_bot()
    with _FileHost() as host:
        fault = host.fail("trickle", delay=1.0, times=1)
        gateway = _gateway(host.url + "/api/")
        bot.services.background.submit(lambda: gateway.download(host.url + "/f", max_bytes=10**6,
                                                                deadline_seconds=600))
        wait_until(lambda: host.received)
        started = time.monotonic()
        bot.stop(timeout=2)
        took = time.monotonic() - started
        fault.release()
    assert took < 4, took


# -- 4. a provider answering garbage -------------------------------------------------------------------------------


def test_a_provider_answering_garbage_backs_off_and_the_other_still_announces(make_bot, both, provider, together,
                                                                              slack):
    bot = make_bot(env=both.env,
                   poll_interval_seconds=1)  # (the scheduler is not started: cycles run when the test says)
    server = Server(bot)
    try:
        ours = provider.add_job(status="running")
        theirs = together.add_job(status="running")
        ask(server, slack, f"subscribe {ours['id']}")
        ask(server, slack, f"subscribe {theirs['id']}")
        together.fail("garbage", match="/fine-tunes", times=1000)
        provider.set_status(ours["id"], "succeeded")
        report = bot.services.poller.run_once()
        assert "together" in report.errors and "could not read" in report.errors["together"]
        assert "openai" not in report.errors and report.queued >= 1
        assert wait_until(lambda: slack.outcomes_in("C0GENERAL"))
        asked = len(together.received)
        second = bot.services.poller.run_once()
        assert second.backing_off == ["together"] and len(together.received) == asked  # backing off: not asked
        said = everything_said(ask(server, slack, f"status {theirs['id']}"))
        assert "could not read" in said and "Traceback" not in said
        listed = everything_said(ask(server, slack, "list"))
        assert ours["id"] in listed and "Together AI could not be asked" in listed
        bot.start_background()  # now the scheduler runs cycles, still against a provider answering garbage
        assert wait_until(lambda: bot.heartbeat.runs.get("poll", 0) >= 2, timeout=10)
        status, body = server.get("/healthz")
        assert status == 200, body
    finally:
        server.close()


def test_every_provider_call_turns_an_unreadable_answer_into_a_provider_error(bot, provider):
    provider.fail("garbage", times=1000)
    openai = bot.services.providers.get("openai")
    for call in (lambda: openai.retrieve("ftjob-abc"), lambda: openai.list_jobs(10), lambda: openai.events("ftjob-a"),
                 lambda: openai.cancel("ftjob-abc"), lambda: openai.chat("m", [{"role": "user", "content": "hi"}],
                                                                         max_tokens=5)):
        with pytest.raises(ProviderError, match="could not read"):
            call()
    with pytest.raises(ProviderError, match="cannot tell whether the job started") as started:
        openai.create_job(request_id="r1", training_file="file-sample", model="gpt-4.1-mini-2025-04-14")
    assert started.value.ambiguous


# -- 6. forms judged by what the bot recorded, once -----------------------------------------------------------------


def test_a_replayed_try_it_submission_asks_the_models_once(server, slack, provider):
    job = provider.add_job(status="succeeded")
    form = _open_try_form(server, slack, job["id"])
    answer, body = _submit(server, form)
    assert answer["response_action"] == "update"
    for _ in range(5):  # the same signed body, again, within Slack's five minutes
        status, raw = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
        assert status == 200 and json.loads(raw)["response_action"] == "errors"
    slack.answer_to_submission(form["id"], answer)
    wait_until(lambda: "Fine-tuned" in json.dumps(slack.views[form["id"]]["blocks"]), timeout=10)
    time.sleep(0.3)  # (any replay acted on would have asked by now)
    assert len(_chats(provider)) == 2


def test_a_try_it_form_is_judged_by_where_it_was_opened_not_by_what_it_carries(server, slack, provider):
    job = provider.add_job(status="succeeded")
    form = _open_try_form(server, slack, job["id"], channel="C0TEAM")
    meta = json.loads(form["private_metadata"])
    forged = {**form, "private_metadata": json.dumps({**meta, "provider": "openai", "job": job["id"], "team": "T0",
                                                      "channel": "C0ELSEWHERE"})}
    answer, _ = _submit(server, forged)
    slack.answer_to_submission(form["id"], answer)
    done = wait_until(lambda: (v := slack.views[form["id"]]) and "Share" in json.dumps(v["blocks"]) and v,
                      timeout=10)
    [button] = [e for b in done["blocks"] if b["type"] == "actions" for e in b["elements"]]
    share = block_action_body("try_share", button["value"], channel_id="C0TEAM",
                              response_url=slack.response_url("share"))
    server.post("/slack/events", share, signed_headers(share, SIGNING_SECRET))
    assert wait_until(lambda: slack.messages_in("C0TEAM"))
    assert slack.messages_in("C0ELSEWHERE") == []


def test_someone_else_submitting_a_form_is_refused_before_any_model_is_asked(server, slack, provider):
    job = provider.add_job(status="succeeded")
    form = _open_try_form(server, slack, job["id"])
    answer, _ = _submit(server, form, user="U0MALLORY")
    assert answer == {"response_action": "errors", "errors": {"prompt": "Only the person who opened this form can "
                                                                        "send it."}}
    unknown, _ = _submit(server, {**form, "private_metadata": json.dumps({"form": "never-opened"})})
    assert "expired or was not opened by this bot" in unknown["errors"]["prompt"]
    time.sleep(0.2)
    assert _chats(provider) == []


def test_the_allow_lists_apply_to_a_form_as_to_the_command(make_bot, slack, provider):
    bot = make_bot(allowed_channel_ids=frozenset({"C0TEAM"}))
    server = Server(bot)
    try:
        job = provider.add_job(status="succeeded")
        form = _open_try_form(server, slack, job["id"], channel="C0TEAM")
        # A form recorded as opened in a channel the bot may not spend in (as if the lists changed since).
        elsewhere = bot.services.store.forms.record_form("try", user_id="U0ALICE", team_id="T0", channel_id="C0OTHER",
                                                         provider="openai", job_id=job["id"])
        answer, _ = _submit(server, {**form, "private_metadata": json.dumps({"form": elsewhere})})
        assert answer["response_action"] == "errors" and "channel" in answer["errors"]["prompt"]
        time.sleep(0.2)
        assert _chats(provider) == []
    finally:
        server.close()


# -- 7. secrets are scrubbed before anything is cut ----------------------------------------------------------------


@pytest.mark.parametrize("at", [1500, 1998, 2000, 2990, 3000])
def test_a_configured_key_straddling_any_cut_leaves_no_part_of_itself(make_bot, both, slack, provider, at, caplog):
    # Together's key has no telltale shape: only the configured value can find it, where the provider's text enters.
    bot = make_bot(env=both.env)
    server = Server(bot)
    try:
        job = _failed_with(server, bot, slack, provider, "x" * (at - 10) + f" key {TOGETHER_KEY} " + "y" * 4000)
        shown = everything_said(ask(server, slack, f"status {job['id']}"))
    finally:
        server.close()
    posted = json.dumps([r.params() for r in slack.received])
    pieces = [TOGETHER_KEY[i:i + 8] for i in range(0, len(TOGETHER_KEY) - 8)]
    for where in (shown, posted, "\n".join(r.getMessage() for r in caplog.records)):
        assert not [p for p in pieces if p in where]


def _failed_with(server, bot, slack, provider, error: str) -> dict:
    job = provider.add_job(status="running")
    ask(server, slack, f"subscribe {job['id']}")
    provider.set_status(job["id"], "failed", error={"code": "invalid_file", "message": error, "param": None})
    bot.services.poller.run_once()
    wait_until(lambda: slack.outcomes_in("C0GENERAL"))
    delivered(bot.services.sender)
    return job


@pytest.mark.parametrize("at", [10, 500, 1990, 2000, 2995])
def test_a_token_shaped_secret_is_scrubbed_before_a_message_is_cut(at):
    from bot.messages.blocks import clip

    for limit in (150, 2000, 3000):
        text = "z" * min(at, limit - 12) + " " + OPENAI_KEY + " " + "w" * 5000
        clipped = clip(text, limit)
        assert not [OPENAI_KEY[i:i + 8] for i in range(len(OPENAI_KEY) - 8) if OPENAI_KEY[i:i + 8] in clipped]


@pytest.mark.parametrize("at", [1500, 2000, 3000])
def test_a_key_straddling_any_cut_leaves_no_part_of_itself(server, slack, provider, bot, at, caplog):
    job = _failed_with(server, bot, slack, provider, "x" * (at - 10) + f" key {OPENAI_KEY} " + "y" * 4000)
    shown = everything_said(ask(server, slack, f"status {job['id']}"))
    posted = json.dumps([r.params() for r in slack.received])
    pieces = [OPENAI_KEY[i:i + 8] for i in range(0, len(OPENAI_KEY) - 8)]
    for where in (shown, posted, "\n".join(r.getMessage() for r in caplog.records)):
        assert not [p for p in pieces if p in where]


# -- 8. every view and message within Slack's documented limits ------------------------------------------------------


def test_the_try_it_form_stays_within_slacks_input_limits_whatever_the_setting():
    view = try_modal_view(model="ft:" + "m" * 300, metadata=json.dumps({"job": "j" * 128}), max_prompt_chars=4000)
    assert_within_slack_limits(view, kind="view")
    lengths = [b["element"]["max_length"] for b in view["blocks"] if b["type"] == "input"]
    assert lengths and max(lengths) <= 3000


def test_the_try_it_form_opens_in_slack_with_the_default_prompt_limit(server, slack, provider):
    job = provider.add_job(status="succeeded")
    form = _open_try_form(server, slack, job["id"])
    assert_within_slack_limits(form, kind="view")


# -- 13. compare streams the file, and its score is bounded ---------------------------------------------------------


def test_compare_streams_the_file_and_keeps_only_the_last_examples():
    from bot.trying import _held_out

    produced = []

    def lines():  # a large file, one line at a time: nothing may hold it all
        for n in range(1, 50_001):
            produced.append(n)
            yield json.dumps({"messages": [{"role": "user", "content": f"Q{n}"},
                                           {"role": "assistant", "content": f"A{n}"}]}).encode()

    last = _held_out(lines(), 3, from_end=True)
    assert [(number, expected) for number, _, expected in last] == [(49_998, "A49998"), (49_999, "A49999"),
                                                                   (50_000, "A50000")]
    first = _held_out(lines(), 2, from_end=False)
    assert [number for number, _, _ in first] == [1, 2] and produced.count(3) == 1  # stopped reading at once


def test_file_lines_arrive_whole_across_pieces_and_the_cap_holds():
    from bot.providers.calls import lines_capped

    assert list(lines_capped([b"ab", b"c\nd", b"e\n\nf"], 100)) == [b"abc", b"de", b"", b"f"]
    with pytest.raises(ProviderError, match="larger than"):
        list(lines_capped([b"x" * 60, b"y" * 60], 100))


def test_similarity_is_over_a_bounded_prefix():
    from bot.scoring import SIMILARITY_CHARS, similarity

    head = "the quick brown fox " * (SIMILARITY_CHARS // 20)
    assert similarity(head + "a" * 20_000, head + "b" * 20_000) == 1.0
    assert similarity("abc", "abd") == pytest.approx(2 / 3)


def test_compare_on_a_large_training_file_takes_its_last_examples(server, slack, provider):
    provider.add_file("file-big", "big.jsonl", _examples(5_000))
    job = provider.add_job(status="succeeded", training_file="file-big")
    said = everything_said(ask(server, slack, f"compare {job['id']} n=2"))
    assert "(line 4999)" in said and "(line 5000)" in said and "Answer 4999." in said


# -- 15 and 16. words a person reads ---------------------------------------------------------------------------------


def test_the_bots_own_finding_is_not_presented_as_a_providers(make_bot, both, slack, provider, together):
    bot = make_bot(env=both.env)
    server = Server(bot)
    try:
        said = everything_said(ask(server, slack, "status 12345"))
    finally:
        server.close()
    assert "No provider configured here knows a job called 12345" in said
    assert "said:" not in said and "HTTP 404" not in said


def test_a_value_with_a_space_is_named_as_such():
    from bot.commands import parse

    problem = parse("start file-abc suffix=has spaces")
    assert "`spaces` looks like more of `suffix=has`" in problem.message and "doesn't take" not in problem.message


def test_a_failed_job_is_told_as_failed_not_as_not_yet(server, slack, provider, bot):
    job = provider.add_job(status="failed", error={"code": "invalid_file", "message": "bad", "param": None})
    tried = everything_said(ask(server, slack, f"try {job['id']} hello"))
    assert "failed (failed), so it made no model to try" in tried and "yet" not in tried
    charted = everything_said(ask(server, slack, f"chart {job['id']}"))
    assert "failed before it reported any training metrics" in charted and "yet" not in charted


def test_a_cards_footer_says_what_this_channel_hears():
    from bot.messages.cards import Subscription, format_card
    from bot.providers.types import Job

    done = Job(id="ftjob-1", status="succeeded", model="m", fine_tuned_model="ft:m", provider="openai")
    running = Job(id="ftjob-2", status="running", model="m", provider="openai")

    def footer(job, **settings):
        return json.dumps(format_card(job, Subscription("C1", **settings)).blocks[-1])

    assert "Its outcome is in this thread" in footer(done)
    assert "failures only" in footer(done, outcomes="failures") and "in this thread" not in footer(
        done, outcomes="failures")
    assert "Progress is posted in this thread" in footer(running)
    assert "progress replies are off here" in footer(running, progress=False)


def test_settings_with_progress_off_name_no_interval():
    from bot.messages.answers import format_settings

    shown = format_settings({"outcomes": "all", "mentions": 1, "cards": 1, "progress": 0, "progress_minutes": 5},
                            changed=False)
    assert "every 5" not in everything_said({"text": shown.text, "blocks": shown.blocks})


def test_a_delivery_problem_in_a_direct_message_is_not_labelled_as_a_channel():
    from bot.messages.cards import format_delivery_problem
    from bot.providers.types import Job

    message = format_delivery_problem(Job(id="ftjob-1", status="failed", model="m"), "failed", "D0ABCDEF",
                                      "is_archived")
    said = everything_said({"text": message.text, "blocks": message.blocks})
    assert "<#D0ABCDEF>" not in said and "your direct messages" in said


def test_the_scheduler_does_not_flood_the_log_at_info():
    import io
    import logging

    from bot.logs import configure

    try:  # (its handler on the worker's stderr is taken away again by conftest's logging_as_it_was)
        configure("INFO", [])
        assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
        assert logging.getLogger("bot.poller").isEnabledFor(logging.INFO)
        configure("DEBUG", [])
        assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.DEBUG)
    finally:
        configure("WARNING", [], stream=io.StringIO())  # the chatty loggers back to their quiet level


# -- issue 20: an outcome never waits behind a metric read ----------------------------------------------------------


def test_an_outcome_is_posted_while_the_cycles_metric_reads_are_still_under_way(bot, provider, slack):
    done = provider.add_job(status="running")
    training = provider.add_job(status="running")
    provider.train(training["id"], 3, total=10)
    for job in (done, training):
        bot.services.store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U", origin="start",
                                          card=True)
    bot.services.sender.deliver_due()  # the cards are up
    provider.set_status(done["id"], "succeeded")
    held = provider.fail("delay", match="/events", delay=30, times=10)  # every metric read hangs until released
    cycle = threading.Thread(target=bot.services.poller.run_once)
    cycle.start()
    try:
        assert wait_until(lambda: slack.outcomes_in("C0GENERAL"), timeout=10)
        assert cycle.is_alive()  # the outcome went out while the cycle was still reading metrics
    finally:
        held.release()
        cycle.join(10)


def test_the_scheduler_reads_progress_apart_from_the_poll(bot, provider, slack):
    job = provider.add_job(status="running")
    provider.train(job["id"], 4, total=10)
    bot.services.store.follows.follow("C0GENERAL", job, final=False, team_id="T", user_id="U", origin="start",
                                      card=True)
    delivered(bot.services.sender)
    report = bot.services.poller.run_once(progress=False)
    assert report.progress == 0 and provider.requests_to("/events") == []
    assert bot.services.poller.read_progress() == 1  # the job the cycle saw training: its step, read and queued
    assert {job.id for job in bot.scheduler.get_jobs()} >= {"poll", "progress"}


def test_a_chart_waits_for_the_outcomes_queued_to_go_out_first(bot, provider, slack):
    done = provider.add_job(status="succeeded")
    bot.services.store.follows.follow("C0CHART", done, final=True, team_id="T", user_id="U", origin="start")
    row = {"kind": "announcement", "outcome": "succeeded", "job_id": done["id"], "provider": "openai",
           "channel_id": "C0CHART"}
    bot.services.charts.after_announced(row, "1.0")  # nothing waits: drawn at once (and matplotlib loaded)
    assert wait_until(lambda: len(slack.uploads) == 1, timeout=20)
    waiting = provider.add_job(status="running")
    bot.services.store.follows.follow("C0OTHER", waiting, final=False, team_id="T", user_id="U", origin="start")
    bot.services.store.follows.record_jobs([({**waiting, "provider": "openai", "status": "succeeded"}, "succeeded")])
    assert bot.services.store.outbox.outcomes_waiting()  # an outcome is queued, not yet posted
    bot.services.charts.after_announced(row, "2.0")
    time.sleep(1.0)
    assert len(slack.uploads) == 1  # the second chart holds back while an outcome waits
    delivered(bot.services.sender)
    assert wait_until(lambda: len(slack.uploads) == 2, timeout=10)


@pytest.mark.heavy(7)
def test_a_built_bot_has_done_its_sdks_first_use_work_so_no_early_ack_waits_for_it(tmp_path):
    """The SDKs load their resources lazily (Together's fine-tuning module alone took 170 ms on first touch): done
    inside the first commands' work, it held back the acks of a burst (p99 142 ms; 46 ms once warm). `build` does
    it at start-up, with no request made."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from bot.app import build\n"
        "from bot.config import load\n"
        "build(load(mode='serve'))\n"
        "print(','.join(m for m in ('openai.resources.fine_tuning.jobs.jobs', 'openai.resources.chat.completions',"
        " 'together.resources.fine_tuning') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_", "TOGETHER_", "AZURE_"))}
    env.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL="http://127.0.0.1:9/api/",
               OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL="http://127.0.0.1:9/v1", TOGETHER_API_KEY=TOGETHER_KEY,
               TOGETHER_BASE_URL="http://127.0.0.1:9", DATABASE_PATH=str(tmp_path / "warm.db"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(",") == ["openai.resources.fine_tuning.jobs.jobs",
                                                "openai.resources.chat.completions", "together.resources.fine_tuning"]


def test_a_sqlite_bot_never_loads_the_postgresql_libraries(tmp_path, postgres_url):
    """SQLAlchemy and psycopg cost about 30 MB: a bot on the SQLite file (the default) does not import them; one
    on DATABASE_URL does. Nor does a bot load what only a setting asks for (metrics, JSON logs, Sentry, sealing), nor
    the extras other libraries installed that sqlite-utils and openai would import by themselves (numpy, aiohttp)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from bot.app import build\n"
        "from bot.config import load\n"
        "build(load(mode='serve')).stop(timeout=1)\n"
        "print(sorted(m for m in ('sqlalchemy', 'psycopg', 'prometheus_client', 'pythonjsonlogger', 'sentry_sdk',"
        " 'cryptography', 'numpy', 'pandas', 'aiohttp', 'matplotlib') if m in sys.modules))\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_", "TOGETHER_", "AZURE_",
                                                                      "DATABASE_"))}
    base.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL="http://127.0.0.1:9/api/",
                OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    said = {}
    places = (("sqlite", {"DATABASE_PATH": str(tmp_path / "lean.db")}), ("pg", {"DATABASE_URL": postgres_url}))
    for name, where in places:
        result = subprocess.run([sys.executable, "-c", script], env={**base, **where}, capture_output=True, text=True,
                                timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert result.returncode == 0, result.stderr
        said[name] = result.stdout.strip()
    assert said == {"sqlite": "[]", "pg": "['psycopg', 'sqlalchemy']"}


def test_an_extra_left_out_of_one_library_still_imports_for_another():
    """openai is imported with aiohttp left out (its async client is never made), yet fireworks-ai, which needs
    aiohttp, imports and works after it in the same process; and numpy, left out of sqlite-utils, still imports."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import storage\n"
        "from bot.providers import fireworks_shape, openai_shape\n"
        "openai_shape._sdk()\n"
        "print('aiohttp' in sys.modules, 'numpy' in sys.modules)\n"
        "fireworks_shape._sdk()\n"
        "import numpy\n"
        "print('aiohttp' in sys.modules, numpy.zeros(2).tolist())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["False False", "True [0.0, 0.0]"]


@pytest.mark.heavy(11)
def test_hundreds_of_scheduled_cycles_on_postgresql_keep_files_threads_and_connections_flat(make_bot, provider, slack,
                                                                                            postgres_url):
    """What the scheduler runs on a replica, as it runs it (the turn, the poll cycle, delivery), 300 times on
    PostgreSQL, with an outcome to post every tenth cycle: open files and threads stay flat, the server's sessions
    stay within the pool's size, and nothing stays checked out."""
    import psycopg

    bot = make_bot(database_url=postgres_url)
    store = bot.services.store
    for _ in range(3):
        store.follows.follow("C0GENERAL", provider.add_job(status="running"), final=False, team_id="T", user_id="U",
                             origin="test")
    poll, deliver = bot.scheduler.get_job("poll").func, bot.scheduler.get_job("deliver").func

    def sessions() -> int:
        with psycopg.connect(postgres_url) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'finetune-bot'"
                                ).fetchone()[0]

    def cycle(n: int) -> None:
        if n % 10 == 0:
            job = provider.add_job(status="running")
            store.follows.follow(f"C0SOAK{n % 7}", job, final=False, team_id="T", user_id="U", origin="test")
            provider.set_status(job["id"], "succeeded")
        poll()
        deliver()

    for n in range(70):  # (an outcome in each of the seven channels: the delivery pool has grown to what it needs)
        cycle(n)
    gc.collect()
    files, threads, rss, server = _open_files(), threading.active_count(), _rss_mb(), sessions()
    names = sorted(t.name for t in threading.enumerate())  # (said when they are not flat: which arrived)
    for n in range(300):
        cycle(n)
    gc.collect()
    print(f"\npostgresql soak, 300 scheduled cycles: open files {files} -> {_open_files()}, threads {threads} -> "
          f"{threading.active_count()}, server sessions {server} -> {sessions()}, RSS {rss:.1f} -> {_rss_mb():.1f} MB")
    assert len(slack.outcomes_in("C0SOAK0")) >= 4  # the work was done: outcomes posted along the way
    # (the pool keeps up to its size of idle connections for reuse: bounded by it, not growing with the cycles)
    # (a delivery thread may hold one for the instant it writes: a leaked one would stay checked out)
    assert wait_until(lambda: store.connections() == 0, 5) and sessions() <= max(server, store.engine.pool_size)
    assert wait_until(lambda: threading.active_count() <= threads, 5), (  # (a stand-in's request thread may be ending)
        names, sorted(t.name for t in threading.enumerate()))
    assert _open_files() <= files + 2
    assert _rss_mb() - rss < 25


def test_a_hundred_and_fifty_held_starts_estimated_and_released_leave_files_threads_and_connections_flat(bot, provider):
    """Per start and per click: each file read through the files API for its estimate, held, released, started."""
    from bot.commands import Command
    from bot.jobs import Caller
    from bot.sandbox.openai import sample_training_file

    store, jobs = bot.services.store, bot.services.jobs
    store.channels.set_channel_settings("C0GENERAL", "U0ALICE", confirm_above=0)
    caller = Caller("T", "C0GENERAL", "U0ALICE")

    def held_and_released(n: int) -> None:
        provider.add_file(f"file-soak{n}", f"soak{n}.jsonl", sample_training_file())
        held = jobs.run(Command("start", {"training_file": f"file-soak{n}"}), caller)
        [hold_id] = [e["value"] for b in held.blocks if b["type"] == "actions" for e in b["elements"]]
        started, decided = jobs.release(caller, hold_id, "start")
        assert decided["state"] == "started" and "Started fine-tuning job" in started.text

    _stays_flat(held_and_released, store, warm=20, runs=150,
                label="held-start soak, 150 starts (each file read, held, released)")
    assert len(provider.requests_to("/content", "GET")) == 170  # every file read once, for its estimate


def _stays_flat(step, store, *, warm: int, runs: int, label: str) -> None:
    """`step(n)` run `warm` times, then `runs` more: open files, threads, the store's connections and memory stay
    where they were after the warm-up (what a day in production would show)."""
    for n in range(warm):
        step(n)
    gc.collect()
    files, threads, connections, rss = _open_files(), threading.active_count(), store.connections(), _rss_mb()
    for n in range(warm, warm + runs):
        step(n)
    gc.collect()
    print(f"\n{label}: open files {files} -> {_open_files()}, threads {threads} -> {threading.active_count()}, "
          f"connections {connections} -> {store.connections()}, RSS {rss:.1f} -> {_rss_mb():.1f} MB")
    assert store.connections() <= connections
    assert wait_until(lambda: threading.active_count() <= threads, 5)  # (a stand-in's request thread may be ending)
    assert _open_files() <= files + 2
    assert _rss_mb() - rss < 25


def test_skipped_scheduled_runs_are_said_once_an_interval_not_every_time():
    """Issue 28: at a 0.1 s interval the log filled with APScheduler's "maximum number of running instances reached"
    (263 lines in 35 s). A skipped run is normal; it is said once a minute, with how many were skipped."""
    import io
    import threading

    from apscheduler.schedulers.background import BackgroundScheduler

    from bot import logs

    stream = io.StringIO()
    handler = logs.configure("INFO", [], stream=stream)
    logs.SKIPPED_RUNS._said_at, logs.SKIPPED_RUNS._skipped = None, 0  # (a fresh minute)
    release = threading.Event()
    scheduler = BackgroundScheduler()
    scheduler.add_job(lambda: release.wait(5), "interval", seconds=0.02, max_instances=1, coalesce=True)
    scheduler.start()
    try:
        assert wait_until(lambda: logs.SKIPPED_RUNS._skipped >= 5, 10)
    finally:
        release.set()
        scheduler.shutdown(wait=True)
        __import__("logging").getLogger().removeHandler(handler)
    said = [line for line in stream.getvalue().splitlines() if "skipped" in line]
    assert len(said) == 1 and "said at most once every 60s" in said[0], said


def test_downloads_trickling_from_slacks_own_host_hold_neither_the_commands_nor_the_stop(make_bot, slack, provider):
    """Issue 28: with Slack's file host trickling, 12 downloads filled all 12 command workers (`status` went
    unanswered for 60 s) and SIGTERM waited out the download deadline (120 s). Downloads have their own pool now,
    and a stop ends them."""
    from tests.test_data_flow import _open_form, _submit, _values

    bot = make_bot()
    server = Server(bot)
    try:
        slack.fail("trickle", match="/files-pri/", times=12, delay=1.0)
        forms = []
        for i in range(12):
            form = _open_form(server, slack, "check")
            _submit(server, slack, form, _values(slack.add_file(f"t{i}.jsonl", _examples(12))))
            forms.append(form)
        assert wait_until(lambda: len([r for r in slack.received if "/files-pri/" in r.path]) >= 4, 10)
        job = provider.add_job(status="running")
        answered = ask(server, slack, f"status {job['id']}")  # (within ask's own bounded wait: 5 s)
        assert job["id"] in everything_said(answered)
        started = time.monotonic()
        bot.stop(timeout=3)
        took = time.monotonic() - started
        assert took < 5, took
        assert wait_until(lambda: any("restarting" in json.dumps(slack.views[f["id"]]["blocks"]) for f in forms), 5)
    finally:
        server.close()


@pytest.mark.heavy(9)
def test_a_hundred_moves_leave_files_threads_and_connections_flat(make_bot, both, provider, together):
    """Per move: a file streamed from one provider through a spool, checked, uploaded to another (through a
    temporary file, as Together's SDK reads from disk), a job started and linked."""
    import json as _json

    from bot.commands import Command
    from bot.jobs import Caller

    bot = make_bot(env=both.env)
    store, moves = bot.services.store, bot.services.moves
    caller = Caller("T", "C0GENERAL", "U0ALICE")

    def moved(n: int) -> None:
        content = "".join(_json.dumps({"messages": [{"role": "user", "content": f"q{n}.{i}"},
                                                    {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                          for i in range(12)).encode()
        provider.add_file(f"file-move{n}", f"m{n}.jsonl", content)
        job = provider.add_job(status="succeeded")
        with provider.lock:
            provider.jobs[job["id"]]["training_file"] = f"file-move{n}"
        answer = moves.run(Command("move", {"job_id": job["id"], "to": "together"}), caller)
        assert "Started fine-tuning job" in answer.text, answer.text

    _stays_flat(moved, store, warm=10, runs=100, label="move soak, 100 moves")
    assert len(store.engine.rows("SELECT 1 FROM moves WHERE state = 'started'")) == 110
