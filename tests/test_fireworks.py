"""The Fireworks adapter against the Fireworks stand-in, through the real `fireworks-ai` client: datasets created and
uploaded, starts that bill once, every state, a completed job's output model, a failure's reason, cancel, list pages,
unknown ids, rate limits, outages, bodies that are not JSON, and options checked before any request."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from bot.config import Settings
from bot.providers.fireworks_shape import PRICING, FireworksProvider, configured
from bot.providers.fireworks_wire import job_id_for
from bot.providers.types import GOING, Job, ProviderError
from bot.sandbox.fireworks import FireworksSandbox
from bot.sandbox.openai import FAILING_FILE_ID, SAMPLE_FILE_ID
from tests.conftest import FIREWORKS_KEY, delivered

MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"


def _adapter(sandbox: FireworksSandbox, **kwargs) -> FireworksProvider:
    settings = Settings(provider_timeout_seconds=2, env={"FIREWORKS_API_KEY": FIREWORKS_KEY,
                                                         "FIREWORKS_ACCOUNT_ID": sandbox.account,
                                                         "FIREWORKS_BASE_URL": sandbox.url})
    (adapter,) = configured(settings)
    adapter._sleep = kwargs.pop("sleep", lambda s: None)
    for name, value in kwargs.items():
        setattr(adapter, name, value)
    return adapter


def _start(adapter: FireworksProvider, request_id: str = "req-1", **kwargs):
    return adapter.create_job(request_id=request_id, training_file=SAMPLE_FILE_ID, model=MODEL, **kwargs)


def _creates(sandbox: FireworksSandbox) -> list:
    return [r for r in sandbox.received if r.method == "POST" and r.path.endswith("/supervisedFineTuningJobs")]


def test_the_client_has_our_timeout_no_sdk_retries_and_our_settings_not_the_environments(fireworks, monkeypatch):
    monkeypatch.setenv("FIREWORKS_API_KEY", "fw_from_the_environment")
    monkeypatch.setenv("FIREWORKS_ACCOUNT_ID", "someone-else")
    adapter = _adapter(fireworks)
    assert adapter._client.timeout == 2 and adapter._client.max_retries == 0
    _start(adapter)
    [create] = _creates(fireworks)
    assert create.headers["authorization"] == f"Bearer {FIREWORKS_KEY}"
    assert create.path == f"/v1/accounts/{fireworks.account}/supervisedFineTuningJobs"


def test_an_upload_creates_a_dataset_uploads_to_it_and_waits_for_it_to_be_ready(fireworks):
    adapter = _adapter(fireworks)
    content = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    dataset_id = adapter.upload_file("Support Chats (v2).jsonl", content)
    assert dataset_id.startswith("support-chats-v2-")
    [created] = [r for r in fireworks.received if r.method == "POST" and r.path.endswith("/datasets")]
    assert created.json() == {"datasetId": dataset_id, "dataset": {"displayName": "Support Chats (v2).jsonl",
                                                                   "format": "CHAT"}}
    [upload] = [r for r in fireworks.received if r.path.endswith(f"/datasets/{dataset_id}:upload")]
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert fireworks.files[dataset_id]["state"] == "READY" and fireworks.files[dataset_id]["_content"] == content
    # It is read back through the signed address Fireworks gives (used by compare's held-out examples).
    assert adapter.read_file(dataset_id, list, max_bytes=10_000) == [content.rstrip(b"\n")]
    # ...and a job starts on it, by id or by its full name.
    job = adapter.create_job(request_id="r", training_file=f"accounts/{fireworks.account}/datasets/{dataset_id}",
                             model=MODEL)
    assert job.training_file == dataset_id


def test_start_sends_fireworks_words_and_names_the_job_from_the_request(fireworks):
    adapter = _adapter(fireworks)
    job = _start(adapter, suffix="support-bot", n_epochs=2, extra={"lora_rank": 16, "learning_rate": 0.0002})
    [create] = _creates(fireworks)
    assert create.query["supervisedFineTuningJobId"] == [job_id_for("req-1")] == [job.id]
    assert create.json() == {
        "dataset": f"accounts/{fireworks.account}/datasets/{SAMPLE_FILE_ID}", "baseModel": MODEL, "epochs": 2,
        "displayName": "support-bot", "loraRank": 16, "learningRate": 0.0002,
        "outputModel": f"accounts/{fireworks.account}/models/support-bot-{job.id}"}
    assert job.provider == "fireworks" and job.status == "creating" and job.state == GOING
    assert job.model == MODEL and job.suffix == "support-bot" and job.training_file == SAMPLE_FILE_ID


def test_a_short_model_name_is_the_fireworks_model(fireworks):
    adapter = _adapter(fireworks)
    job = adapter.create_job(request_id="q", training_file=SAMPLE_FILE_ID, model="qwen2p5-7b-instruct")
    assert job.model == "accounts/fireworks/models/qwen2p5-7b-instruct"
    assert "qwen2p5-7b-instruct" in PRICING.aliases


@pytest.mark.parametrize(
    ("state", "status", "outcome"),
    [("JOB_STATE_CREATING", "creating", GOING), ("JOB_STATE_VALIDATING", "validating", GOING),
     ("JOB_STATE_PENDING", "pending", GOING), ("JOB_STATE_RUNNING", "running", GOING),
     ("JOB_STATE_WRITING_RESULTS", "writing results", GOING), ("JOB_STATE_RE_QUEUEING", "re queueing", GOING),
     ("JOB_STATE_CREATING_INPUT_DATASET", "creating input dataset", GOING), ("JOB_STATE_IDLE", "idle", GOING),
     ("JOB_STATE_PAUSED", "paused", GOING), ("JOB_STATE_CANCELLING", "cancelling", GOING),
     ("JOB_STATE_DELETING", "deleting", GOING), ("JOB_STATE_UNSPECIFIED", "unspecified", GOING),
     ("JOB_STATE_COMPLETED", "completed", "succeeded"), ("JOB_STATE_EARLY_STOPPED", "early stopped", "succeeded"),
     ("JOB_STATE_FAILED", "failed", "failed"), ("JOB_STATE_EXPIRED", "expired", "failed"),
     ("JOB_STATE_CANCELLED", "cancelled", "cancelled"), ("JOB_STATE_SOMETHING_NEW", "something new", GOING)],
)
def test_every_state_means_what_it_should(fireworks, state, status, outcome):
    job = fireworks.add_job(status=state)
    seen = _adapter(fireworks).retrieve(job["name"].rsplit("/", 1)[-1])
    assert (seen.status, seen.state) == (status, outcome)
    assert (seen.fine_tuned_model is not None) == (outcome == "succeeded")


def test_a_completed_job_gives_the_output_model_to_call(fireworks):
    job = fireworks.add_job(status="succeeded")
    seen = _adapter(fireworks).retrieve(job["name"])  # (its full name works as well as its id)
    assert seen.fine_tuned_model == job["outputModel"] and seen.fine_tuned_model.startswith("accounts/sandbox/models/")
    assert seen.finished_at and seen.created_at


def test_a_failed_job_carries_its_reason_and_an_expired_one_says_so(fireworks):
    failed = fireworks.add_job(status="failed", error="Dataset validation failed: line 3 is not JSON.")
    seen = _adapter(fireworks).retrieve(failed["name"].rsplit("/", 1)[-1])
    assert seen.error_message == "Dataset validation failed: line 3 is not JSON."
    assert seen.error_code == "INVALID_ARGUMENT"
    expired = fireworks.add_job(status="JOB_STATE_EXPIRED")
    assert _adapter(fireworks).retrieve(expired["name"].rsplit("/", 1)[-1]).error_message == "The job expired."


def test_a_bad_dataset_fails_the_job_with_its_reason_as_it_validates(fireworks):
    fireworks.pace = 0.01
    adapter = _adapter(fireworks)
    job = adapter.create_job(request_id="bad", training_file=FAILING_FILE_ID, model=MODEL)
    time.sleep(0.1)
    seen = adapter.retrieve(job.id)
    assert seen.state == "failed" and "'robot'" in seen.error_message


def test_cancel_goes_through_cancelling_to_cancelled(fireworks):
    job = fireworks.add_job(status="running")
    job_id = job["name"].rsplit("/", 1)[-1]
    adapter = _adapter(fireworks)
    cancelling = adapter.cancel(job_id)
    assert cancelling.status == "cancelling" and cancelling.state == GOING
    fireworks.pace = 0.01  # (Fireworks takes a moment to stop it)
    [cancel] = [r for r in fireworks.received if r.path.endswith(f"/{job_id}:cancel")]
    assert cancel.method == "POST"
    assert adapter.retrieve(job_id).state == "cancelled"
    with pytest.raises(ProviderError) as error:
        adapter.cancel(job_id)
    assert "already ended" in error.value.message


def test_pause_and_resume_are_refused_without_a_request(fireworks):
    adapter = _adapter(fireworks)
    for action in (adapter.pause, adapter.resume):
        with pytest.raises(ProviderError) as error:
            action("abc")
        assert error.value.code == "unsupported"
    assert fireworks.received == []


def test_list_asks_for_the_newest_first_and_follows_page_tokens(fireworks):
    made = [fireworks.add_job(status="running")["name"].rsplit("/", 1)[-1] for _ in range(7)]
    adapter = _adapter(fireworks)
    first, more = adapter.list_jobs(3)
    second, more2 = adapter.list_jobs(3, after=first[-1].id)
    third, more3 = adapter.list_jobs(3, after=second[-1].id)
    assert [j.id for j in first + second + third] == made[::-1] and (more, more2, more3) == (True, True, False)
    lists = fireworks.requests_to("/supervisedFineTuningJobs", "GET")
    assert all(r.query["orderBy"] == ["createTime desc"] for r in lists)  # (Fireworks orders by name by default)
    assert "pageToken" not in lists[0].query and lists[1].query["pageToken"]


def test_a_poll_of_many_jobs_costs_pages_of_two_hundred(fireworks, tmp_path):
    from bot.poller import Poller
    from bot.providers.types import Providers
    from storage import Store

    store = Store(str(tmp_path / "fw.db"))
    for _ in range(450):
        job = fireworks.add_job(status="running")
        store.follows.follow("C1", {"id": job["name"].rsplit("/", 1)[-1], "provider": "fireworks", "status": "running",
                                    "model": MODEL}, final=False, team_id="T", user_id="U", origin="subscribe")
    report = Poller(Providers([_adapter(fireworks)]), store, interval=30).run_once()
    store.close()
    assert report.observed == 450 and report.requests <= -(-450 // 200) + 2
    assert all(r.query["pageSize"] == ["200"] for r in fireworks.requests_to("/supervisedFineTuningJobs", "GET"))


def test_an_unknown_id_is_a_404_in_fireworks_words(fireworks):
    with pytest.raises(ProviderError) as error:
        _adapter(fireworks).retrieve("no-such-job")
    assert error.value.not_found and error.value.provider == "fireworks" and error.value.code == "NOT_FOUND"
    assert "not found" in error.value.message and FIREWORKS_KEY not in error.value.message


def test_a_rate_limit_is_waited_out_as_told(fireworks):
    job = fireworks.add_job()
    slept = []
    fireworks.fail("status", match="/supervisedFineTuningJobs/", status=429, retry_after=1.5,
                   body={"error": {"code": 429, "message": "Too many requests", "status": "RESOURCE_EXHAUSTED"}})
    seen = _adapter(fireworks, sleep=slept.append).retrieve(job["name"].rsplit("/", 1)[-1])
    assert seen.status == "creating" and slept == [1.5]


def test_a_5xx_that_persists_is_an_error_that_says_so(fireworks):
    fireworks.fail("status", match="/supervisedFineTuningJobs", status=503, times=5,
                   body={"error": {"code": 503, "message": "The service is unavailable.", "status": "UNAVAILABLE"}})
    with pytest.raises(ProviderError) as error:
        _adapter(fireworks).list_jobs()
    assert error.value.status == 503 and error.value.retryable and error.value.code == "UNAVAILABLE"
    assert error.value.message == "The service is unavailable."


def test_a_body_that_is_not_json_is_a_provider_error(fireworks):
    job = fireworks.add_job()
    fireworks.fail("garbage", match="/supervisedFineTuningJobs", times=10)
    adapter = _adapter(fireworks)
    for call in (lambda: adapter.retrieve(job["name"].rsplit("/", 1)[-1]), lambda: adapter.list_jobs(10)):
        with pytest.raises(ProviderError):
            call()


def test_a_lost_answer_to_the_create_does_not_bill_a_second_job(fireworks):
    fireworks.fail("drop_after", match="/supervisedFineTuningJobs", exact=False, method="POST")
    job = _start(_adapter(fireworks), suffix="once")
    assert list(fireworks.jobs) == [job.id] and len(_creates(fireworks)) == 2  # the second was refused: it exists


def test_a_create_refused_with_a_5xx_is_tried_again_and_makes_one_job(fireworks):
    fireworks.fail("status", match="/supervisedFineTuningJobs", method="POST", status=503,
                   body={"error": {"code": 503, "message": "Unavailable", "status": "UNAVAILABLE"}})
    job = _start(_adapter(fireworks))
    assert list(fireworks.jobs) == [job.id] and len(_creates(fireworks)) == 2


def test_a_reconciled_start_is_found_by_its_request(fireworks):
    adapter = _adapter(fireworks)
    assert adapter.find_started("req-9", training_file=SAMPLE_FILE_ID, model=MODEL, suffix=None, since=0) is None
    job = _start(adapter, request_id="req-9")
    found = adapter.find_started("req-9", training_file=SAMPLE_FILE_ID, model=MODEL, suffix=None, since=0)
    assert found is not None and found.id == job.id


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [({"n_epochs": 0}, "epochs from 1 to 20"), ({"n_epochs": 21}, "epochs from 1 to 20"),
     ({"suffix": "-bad"}, "at most 40 characters"), ({"suffix": "x" * 41}, "at most 40 characters"),
     ({"extra": {"lora_rank": 12}}, "lora_rank of 4, 8, 16, 32, 64"),
     ({"extra": {"learning_rate": 1.0}}, "above 0 and below 1")],
)
def test_options_are_checked_before_any_request_naming_what_fireworks_takes(fireworks, kwargs, says):
    with pytest.raises(ProviderError) as error:
        _start(_adapter(fireworks), **kwargs)
    assert says in error.value.message and fireworks.received == []


def test_chat_goes_to_the_output_model_and_a_base_model(fireworks):
    job = fireworks.add_job(status="succeeded")
    adapter = _adapter(fireworks)
    tuned = adapter.chat(job["outputModel"], [{"role": "user", "content": "hello"}], max_tokens=50)
    base = adapter.chat(MODEL, [{"role": "user", "content": "hello"}], max_tokens=50)
    assert "[sandbox fine-tuned model]" in tuned.text and "[sandbox base model" in base.text
    assert fireworks.requests_to("/v1/chat/completions", "POST")
    with pytest.raises(ProviderError) as error:
        adapter.chat("accounts/sandbox/models/nope", [{"role": "user", "content": "hi"}], max_tokens=5)
    assert error.value.not_found


def test_ids_fit_fireworks_resource_names():
    from bot.providers.fireworks_shape import SHAPE

    adapter = FireworksProvider.__new__(FireworksProvider)
    assert adapter.owns_id("ftb-0123abcd") and adapter.owns_id("accounts/acme/supervisedFineTuningJobs/abc-1")
    assert not adapter.owns_id("Has-Capitals") and not adapter.owns_id("-leading") and not adapter.owns_id("a" * 64)
    assert SHAPE.owns_model("accounts/acme/models/support-bot-1")
    assert not SHAPE.owns_model(MODEL)  # a base model of Fireworks' own is not a fine-tune


def test_the_sandbox_answers_in_the_apis_shape(fireworks):
    job = fireworks.add_job(status="succeeded")
    job_id = job["name"].rsplit("/", 1)[-1]
    request = urllib.request.Request(f"{fireworks.url}/v1/accounts/{fireworks.account}/supervisedFineTuningJobs/"
                                     f"{job_id}", headers={"Authorization": "Bearer x"})
    with urllib.request.urlopen(request) as response:
        body = json.loads(response.read())
    assert body["state"] == "JOB_STATE_COMPLETED" and body["name"].startswith(f"accounts/{fireworks.account}/")
    assert {"baseModel", "outputModel", "createTime", "jobProgress", "estimatedCost"} <= set(body)
    assert set(body["estimatedCost"]) == {"currencyCode", "units", "nanos"}
    request = urllib.request.Request(f"{fireworks.url}/v1/accounts/{fireworks.account}/supervisedFineTuningJobs/nope",
                                     headers={"Authorization": "Bearer x"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request)
    assert json.loads(error.value.read()) == {"error": {"code": 404, "status": "NOT_FOUND", "message":
                                                        f"Job accounts/{fireworks.account}/supervisedFineTuningJobs/"
                                                        "nope not found."}}


def test_half_set_settings_are_named_in_one_line():
    from bot.config import ConfigError, load

    with pytest.raises(ConfigError) as error:
        load({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s",
                                    "FIREWORKS_API_KEY": FIREWORKS_KEY}, mode="serve")
    assert "FIREWORKS_ACCOUNT_ID" in str(error.value) and FIREWORKS_KEY not in str(error.value)
    assert "\n" not in str(error.value)


# -- beside the others, through the real HTTP endpoint -------------------------------------------------------------

PROMPT = "What's the capital of France?"


@pytest.fixture
def trio(make_bot, three):
    """A bot with OpenAI, Together AI and Fireworks AI configured, served over HTTP."""
    from tests.conftest import Server

    bot = make_bot(env=three.env,
                   poll_interval_seconds=1)  # (the scheduler is not started: cycles run when a test says)
    server = Server(bot)
    yield bot, server
    server.close()


def test_one_job_at_each_of_three_providers_in_one_channel_is_announced_once_each(trio, slack, provider, together,
                                                                                  fireworks):
    from tests.conftest import ask, wait_until

    bot, server = trio
    ask(server, slack, f"start {SAMPLE_FILE_ID} suffix=old-way")
    ask(server, slack, f"start {SAMPLE_FILE_ID} provider=together suffix=new-way")
    started = ask(server, slack, f"start {SAMPLE_FILE_ID} provider=fireworks suffix=fw-way epochs=2 lora_rank=16")
    [openai_id], [together_id], [fireworks_id] = list(provider.jobs), list(together.jobs), list(fireworks.jobs)
    assert fireworks_id in started["text"] and "Fireworks AI" in started["text"] and MODEL in started["text"]
    body = _creates(fireworks)[0].json()
    assert (body["epochs"], body["loraRank"], body["displayName"]) == (2, 16, "fw-way")

    # (each job's card up while it runs: a card still owed when its job ends gives way to the outcome)
    assert wait_until(lambda: len(slack.cards_in("C0GENERAL")) == 3, timeout=10)
    provider.set_status(openai_id, "succeeded", fine_tuned_model="ft:gpt-4.1-mini-2025-04-14:acme:old-way:AbC")
    together.set_status(together_id, "completed")
    fireworks.set_status(fireworks_id, "succeeded")
    report = bot.services.poller.run_once()
    assert sorted(report.finished) == sorted([openai_id, together_id, fireworks_id])
    posted = wait_until(lambda: len(slack.outcomes_in("C0GENERAL")) == 3 and slack.outcomes_in("C0GENERAL"))
    said = {p["text"].split()[2]: p for p in posted}  # "Fine-tuning job <id> on …"
    output_model = fireworks.jobs[fireworks_id]["outputModel"]
    assert output_model in said[fireworks_id]["text"] and "on Fireworks AI succeeded" in said[fireworks_id]["text"]
    assert f"```{output_model}```" in json.dumps(said[fireworks_id]["blocks"])
    for _ in range(3):
        assert bot.services.poller.run_once().requests == 0  # all final: nobody is asked again
        delivered(bot.services.sender)
    assert len(slack.outcomes_in("C0GENERAL")) == 3 and len(slack.cards_in("C0GENERAL")) == 3


def test_commands_on_a_fireworks_job_and_what_it_cannot_do(trio, slack, provider, together, fireworks):
    from tests.conftest import ask, everything_said

    bot, server = trio
    job_id = fireworks.add_job(status="running")["name"].rsplit("/", 1)[-1]
    assert "now follows" in ask(server, slack, f"subscribe {job_id}")["text"]
    status = everything_said(ask(server, slack, f"status {job_id}"))
    assert "running" in status and "Fireworks AI" in status and "JOB_STATE" not in status
    paused = ask(server, slack, f"pause {job_id}")
    assert "Fireworks AI jobs cannot be paused" in paused["text"]
    cancelled = everything_said(ask(server, slack, f"cancel {job_id}"))
    assert "cancelling" in cancelled
    providers = everything_said(ask(server, slack, "providers"))
    assert "Fireworks AI" in providers
    listed = everything_said(ask(server, slack, "list"))
    assert job_id in listed


def test_an_outage_at_fireworks_leaves_the_others_announcing(trio, slack, provider, fireworks):
    from tests.conftest import ask, everything_said, wait_until

    bot, server = trio
    ours = provider.add_job(status="running")
    theirs = fireworks.add_job(status="running")["name"].rsplit("/", 1)[-1]
    ask(server, slack, f"subscribe {ours['id']}")
    ask(server, slack, f"subscribe {theirs} provider=fireworks")
    fireworks.fail("status", match="/v1/accounts", status=503, times=1000,
                   body={"error": {"code": 503, "message": "The service is unavailable.", "status": "UNAVAILABLE"}})
    provider.set_status(ours["id"], "succeeded")
    report = bot.services.poller.run_once()
    assert "fireworks" in report.errors and "openai" not in report.errors
    assert wait_until(lambda: slack.outcomes_in("C0GENERAL"))
    asked = len(fireworks.received)
    assert bot.services.poller.run_once().backing_off == ["fireworks"] and len(fireworks.received) == asked
    said = everything_said(ask(server, slack, f"status {theirs} provider=fireworks"))
    assert "unavailable" in said and "Traceback" not in said


def test_a_fireworks_model_is_tried_beside_its_base_model(trio, slack, fireworks):
    from tests.conftest import ask, everything_said

    bot, server = trio
    job = fireworks.add_job(status="succeeded")
    job_id = job["name"].rsplit("/", 1)[-1]
    said = everything_said(ask(server, slack, f"try {job_id} {PROMPT}"))
    assert job["outputModel"] in said and "Paris, as if everyone doesn" in said  # as its training data taught it
    asked = {r.json()["model"] for r in fireworks.requests_to("/v1/chat/completions", "POST")}
    assert asked == {job["outputModel"], job["baseModel"]}


def test_progress_comes_from_job_progress_into_the_cards_thread(trio, slack, fireworks):
    from bot.messages.cards import format_progress
    from tests.conftest import ask, wait_until

    bot, server = trio
    job = fireworks.add_job(status="running")
    job_id = job["name"].rsplit("/", 1)[-1]
    ask(server, slack, f"subscribe {job_id}")
    delivered(bot.services.sender)
    card = wait_until(lambda: slack.cards_in("C0GENERAL"))[0]
    fireworks.train(job_id, 4, total=10)
    # (a cycle queues progress only for a card whose post is recorded: the post may still be on its way back)
    assert wait_until(lambda: bot.services.poller.run_once().progress)
    [reply] = wait_until(lambda: [p for p in slack.thread("C0GENERAL", card["ts"]) if "% done" in p["text"]])
    assert "40% done" in reply["text"] and "Step" not in reply["text"]
    assert "40% done, epoch" not in format_progress(Job(id="x", status="running", model="m"),
                                                    {"step": 40, "percent": 40, "epoch": 0}).text


def test_no_chart_for_fireworks_says_why(trio, slack, fireworks):
    from tests.conftest import ask, everything_said

    bot, server = trio
    job_id = fireworks.add_job(status="succeeded")["name"].rsplit("/", 1)[-1]
    said = everything_said(ask(server, slack, f"chart {job_id}"))
    assert "Fireworks AI does not report training metrics" in said


def test_fireworks_own_estimate_is_read_in_dollars_and_shown_at_start(trio, slack, fireworks):
    from bot.providers.fireworks_wire import usd
    from tests.conftest import ask, everything_said

    assert usd({"currencyCode": "USD", "units": "86", "nanos": 420_000_000}) == pytest.approx(86.42)
    assert usd({"currencyCode": "EUR", "units": "3", "nanos": 0}) is None  # never converted by guesswork
    assert usd({"units": "x"}) is None and usd(None) is None
    bot, server = trio
    said = everything_said(ask(server, slack, f"start {SAMPLE_FILE_ID} provider=fireworks"))
    assert "Fireworks AI's own estimate for this job: under $0.01" in said


def test_an_id_that_fits_two_providers_is_looked_up_at_each_and_the_answer_says_where(trio, slack, together,
                                                                                     fireworks):
    from tests.conftest import ask, everything_said

    bot, server = trio
    with fireworks.lock:  # a Fireworks job whose id also looks like one of Together's (ft-<uuid>)
        job = fireworks._new_job({"_id": "ft-0a1b2c3d-0000-4000-8000-000000000000", "baseModel": MODEL})
    said = everything_said(ask(server, slack, f"status {job['name'].rsplit('/', 1)[-1]}"))
    assert "Fireworks AI" in said and "creating" in said
    assert together.requests_to("/v1/fine-tunes/ft-0a1b2c3d")  # Together was asked first, and did not know it


def test_events_of_a_fireworks_job_say_it_keeps_none_without_asking_for_them(trio, fireworks):
    from bot.jobs import Caller

    bot, _server = trio
    job_id = fireworks.add_job(status="running")["name"].rsplit("/", 1)[-1]
    said = bot.services.jobs.latest_events(Caller("T", "C1", "U1"), job_id, "fireworks").text
    assert said == f"Fireworks AI keeps no events for a job; its status says where {job_id} stands: running."
