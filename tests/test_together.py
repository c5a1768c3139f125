"""The Together adapter against the Together stand-in, through the real `together` client: every status, cancel,
events, failures with their reasons, unknown ids, rate limits, outages, and starts that bill once."""

from __future__ import annotations

import json
import urllib.request

import pytest

from bot.config import Settings
from bot.providers.together_shape import TogetherProvider, configured
from bot.providers.types import GOING, ProviderError
from bot.sandbox.openai import FAILING_FILE_ID, SAMPLE_FILE_ID
from bot.sandbox.together import TogetherSandbox
from tests.conftest import TOGETHER_KEY

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


def _adapter(sandbox: TogetherSandbox, **kwargs) -> TogetherProvider:
    settings = Settings(env={"TOGETHER_API_KEY": TOGETHER_KEY, "TOGETHER_BASE_URL": sandbox.url},
                        provider_timeout_seconds=2)
    (adapter,) = configured(settings)
    adapter._sleep = kwargs.pop("sleep", lambda s: None)
    for name, value in kwargs.items():
        setattr(adapter, name, value)
    return adapter


def _start(adapter: TogetherProvider, **kwargs):
    return adapter.create_job(request_id="req-1", training_file=SAMPLE_FILE_ID, model=MODEL, **kwargs)


def test_the_client_has_our_timeout_and_no_sdk_retries(together):
    adapter = _adapter(together)
    assert adapter._client.max_retries == 0 and adapter._client.timeout == 2
    assert str(adapter._client.base_url).rstrip("/") == together.url


def test_start_sends_togethers_words_after_the_sdks_own_checks(together):
    job = _start(_adapter(together), suffix="support", n_epochs=3, seed=7, validation_file=SAMPLE_FILE_ID,
                 extra={"lora": False, "learning_rate": 0.0002})
    # The SDK reads the model's limits and a price estimate before it creates the job.
    assert [(r.method, r.path) for r in together.received] == [
        ("GET", "/v1/fine-tunes/models/limits"), ("POST", "/v1/fine-tunes/estimate-price"),
        ("POST", "/v1/fine-tunes")]
    body = together.requests_to("/v1/fine-tunes", "POST")[-1].json()
    assert (body["n_epochs"], body["suffix"], body["random_seed"], body["learning_rate"]) == (3, "support", 7, 0.0002)
    assert body["training_type"]["type"] == "Full" and body["validation_file"] == SAMPLE_FILE_ID
    assert together.received[-1].headers["authorization"] == f"Bearer {TOGETHER_KEY}"
    assert job.provider == "together" and job.id.startswith("ft-") and job.status == "pending"
    assert job.state == GOING and not job.final and job.fine_tuned_model is None  # named only once it succeeds
    assert isinstance(job.created_at, int) and job.model == MODEL and job.training_file == SAMPLE_FILE_ID


@pytest.mark.parametrize(
    ("status", "state"),
    [("pending", GOING), ("queued", GOING), ("running", GOING), ("compressing", GOING), ("uploading", GOING),
     ("cancel_requested", GOING), ("completed", "succeeded"), ("error", "failed"), ("cancelled", "cancelled"),
     ("user_error", "failed"), ("a_word_from_next_year", GOING)],
)
def test_every_status_word_means_what_it_should(together, status, state):
    job = together.add_job(status=status)
    seen = _adapter(together).retrieve(job["id"])
    assert seen.status == status and seen.state == state and seen.final == (state != GOING)
    assert seen.outcome == (None if state == GOING else state)


def test_a_completed_job_gives_the_model_to_call_and_its_finish(together):
    job = together.add_job(status="completed")
    seen = _adapter(together).retrieve(job["id"])
    assert seen.fine_tuned_model == job["model_output_name"] and seen.fine_tuned_model.startswith("sandbox-user/")
    assert seen.finished_at and seen.finished_at >= seen.created_at and seen.trained_tokens > 0


def test_a_failed_job_carries_its_reason_from_the_job_error_event(together):
    job = together.add_job(status="error", error="Out of memory at step 3: reduce the batch size <!channel>")
    seen = _adapter(together).retrieve(job["id"])
    assert seen.state == "failed" and seen.error_message.startswith("Out of memory at step 3")


def test_a_failed_job_whose_answer_lacks_events_reads_them(together):
    job = together.add_job(status="error")
    adapter = _adapter(together)
    listed = {j.id: j for j in adapter.list_jobs(None)[0]}
    assert listed[job["id"]].error_message is None  # the listing has no events
    assert "'role' must be one of" in adapter.retrieve(job["id"]).error_message


def test_cancel_asks_first_and_the_job_ends_cancelled(together):
    adapter = _adapter(together)
    job = _start(adapter)
    asked = adapter.cancel(job.id)
    assert asked.status == "cancel_requested" and not asked.final
    together.set_status(job.id, "cancelled")
    assert adapter.retrieve(job.id).outcome == "cancelled"
    with pytest.raises(ProviderError) as refused:
        adapter.cancel(job.id)
    assert refused.value.status == 400 and "already finished" in refused.value.message


def test_events_are_newest_first_with_their_steps(together):
    together.pace = 1.0
    job = together.add_job()
    together.set_status(job["id"], "running")
    together.set_status(job["id"], "compressing")  # training done: every step's events are in
    events = _adapter(together).events(job["id"], limit=20)
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    epochs = [e for e in events if e.type == "epoch_complete"]
    assert epochs and epochs[0].data["total_steps"] == 10 and "step" in epochs[0].data


def test_an_unknown_id_is_a_404_in_togethers_words(together):
    with pytest.raises(ProviderError) as error:
        _adapter(together).retrieve("ft-00000000-0000-0000-0000-000000000000")
    assert error.value.not_found and error.value.provider == "together"
    assert "not found" in error.value.message and TOGETHER_KEY not in error.value.message


def test_a_rate_limit_is_waited_out_as_told(together):
    job = together.add_job()
    slept = []
    together.fail("status", match="/v1/fine-tunes/", status=429, retry_after=1.5,
                  body={"error": {"message": "Rate limit exceeded", "type": "rate_limit", "code": "rate_limited"}})
    seen = _adapter(together, sleep=slept.append).retrieve(job["id"])
    assert seen.id == job["id"] and slept == [1.5]


def test_a_5xx_that_persists_is_an_error_that_says_so(together):
    together.fail("status", match="/v1/fine-tunes", status=503, times=5,
                  body={"error": {"message": "Service unavailable", "type": "server_error"}})
    with pytest.raises(ProviderError) as error:
        _adapter(together).list_jobs()
    assert error.value.status == 503 and error.value.retryable and error.value.message == "Service unavailable"


def _creates(sandbox: TogetherSandbox) -> list:
    return [r for r in sandbox.received if r.method == "POST" and r.path == "/v1/fine-tunes"]


def test_a_lost_answer_to_the_create_does_not_bill_a_second_job(together):
    # The SDK's reads go through; the create is carried out, then its answer is lost.
    together.fail("drop_after", match="/v1/fine-tunes", exact=True, method="POST")
    job = _start(_adapter(together), suffix="once")
    assert list(together.jobs) == [job.id] and len(_creates(together)) == 1
    assert together.requests_to("/v1/fine-tunes", "GET")  # it looked before it would try again


def test_a_create_refused_with_a_5xx_is_tried_again_once_nothing_was_made(together):
    together.fail("status", match="/v1/fine-tunes", exact=True, method="POST", status=503,
                  body={"error": {"message": "Service unavailable", "type": "server_error"}})
    job = _start(_adapter(together))
    assert list(together.jobs) == [job.id] and len(_creates(together)) == 2


def test_a_lost_read_before_the_create_is_not_taken_for_a_lost_job(together):
    together.fail("drop", match="/v1/fine-tunes/models/limits", times=3)
    with pytest.raises(ProviderError) as error:
        _start(_adapter(together))
    assert together.jobs == {} and _creates(together) == []
    assert not error.value.ambiguous  # nothing can have been started: the user may simply try again


def test_options_the_provider_refuses_become_a_plain_answer(together):
    adapter = _adapter(together)
    with pytest.raises(ProviderError) as error:
        adapter.create_job(request_id="r", training_file=SAMPLE_FILE_ID, model="unknown/model")
    assert error.value.status == 404 and "not available for fine-tuning" in error.value.message
    assert _creates(together) == []  # nothing created, nothing billed


def test_options_the_sdk_itself_refuses_become_a_plain_answer(together):
    adapter = _adapter(together)
    together.lora_only.add(MODEL)
    with pytest.raises(ProviderError) as error:
        _start(adapter, extra={"lora": False})
    assert "Full training is not supported" in error.value.message and _creates(together) == []


def test_pause_and_resume_are_refused_without_a_request(together):
    adapter = _adapter(together)
    for action in (adapter.pause, adapter.resume):
        with pytest.raises(ProviderError) as error:
            action("ft-1")
        assert "cannot be paused" in error.value.message
    assert together.received == [] and not adapter.capabilities.pause_resume


def test_list_is_every_job_newest_first_whatever_order_the_api_gives(together):
    adapter = _adapter(together)
    made = []
    for n in range(5):
        together.clock = lambda n=n: 1_700_000_000 + n * 10
        made.append(together.add_job()["id"])
    jobs, more = adapter.list_jobs(3)
    assert [j.id for j in jobs] == made[::-1][:3] and more
    assert [j.id for j in adapter.list_jobs(None)[0]] == made[::-1]
    assert len(together.requests_to("/v1/fine-tunes", "GET")) == 2


def test_a_refused_training_file_fails_the_job_with_its_reason(together):
    clock = [1_700_000_000.0]
    together.clock = lambda: clock[0]
    together.pace = 1.0
    adapter = _adapter(together)
    job = adapter.create_job(request_id="r", training_file=FAILING_FILE_ID, model=MODEL)
    clock[0] += 1.5
    assert adapter.retrieve(job.id).status == "queued"
    clock[0] += 1.5
    seen = adapter.retrieve(job.id)
    assert seen.outcome == "failed" and "got 'robot'" in seen.error_message


def test_the_sdk_takes_our_settings_not_the_environments(together, monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", "tgp_from_the_environment")
    monkeypatch.setenv("TOGETHER_BASE_URL", "http://127.0.0.1:9")
    adapter = _adapter(together)
    adapter.retrieve(together.add_job()["id"])
    assert together.received[-1].headers["authorization"] == f"Bearer {TOGETHER_KEY}"


def test_upload_goes_through_the_sdks_redirect_and_preprocessing(together):
    file_id = _adapter(together).upload_file("../team data?.jsonl", b'{"messages": []}\n')
    assert [(r.method, r.path) for r in together.received] == [
        ("POST", "/v1/files"), ("PUT", f"/upload/{file_id}"), ("POST", f"/v1/files/{file_id}/preprocess")]
    assert together.files[file_id]["_content"] == b'{"messages": []}\n'
    assert together.files[file_id]["filename"] == "team_data_.jsonl"  # no path, nothing odd reaches the provider
    assert "authorization" not in together.received[1].headers  # the bytes go to a presigned address, keyless


def test_metrics_are_the_training_curve_oldest_first(together):
    together.pace = 1.0
    job = together.add_job()
    together.set_status(job["id"], "running")
    together.set_status(job["id"], "compressing")
    points = _adapter(together).metrics(job["id"])
    assert [p.step for p in points] == list(range(1, 11))
    assert points[0].train_loss > points[-1].train_loss and points[0].valid_loss is None


def test_a_refusal_that_echoes_the_key_never_shows_it(together):
    together.fail("status", match="/v1/fine-tunes", status=401,
                  body={"error": {"message": f"Invalid API key: {TOGETHER_KEY}", "type": "authentication_error"}})
    with pytest.raises(ProviderError) as error:
        _adapter(together).list_jobs()
    assert TOGETHER_KEY not in error.value.message and "Invalid API key" in error.value.message


def test_metrics_rows_are_read_with_the_specs_keys(together):
    """Rows as Together's OpenAPI spec gives them: `train/loss`, `train/global_step`, `eval/loss`."""
    job = together.add_job(status="running")
    together.jobs[job["id"]]["_metrics"] = [
        {"train/global_step": 2, "train/loss": 1.25, "train/epoch": 0.2, "train/learning_rate": 1e-5},
        {"train/global_step": 1, "train/loss": 1.5, "eval/loss": 1.75, "train/epoch": 0.1},
    ]
    points = _adapter(together).metrics(job["id"])
    assert [(p.step, p.train_loss, p.valid_loss) for p in points] == [(1, 1.5, 1.75), (2, 1.25, None)]
    assert _adapter(together).latest_metric(job["id"]).step == 2


def test_the_sandbox_answers_in_the_specs_shape(together):
    """What the published spec requires of a job, each event and each metrics row, as the stand-in sends them: the
    adapter is tried on the shapes the real API answers with."""
    together.pace = 1.0
    job = _start(_adapter(together), suffix="bot")
    together.set_status(job.id, "running")
    together.set_status(job.id, "compressing")

    def get(path: str) -> dict:
        request = urllib.request.Request(together.url + path, headers={"authorization": f"Bearer {TOGETHER_KEY}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    listed = get(f"/v1/fine-tunes/{job.id}")
    assert isinstance(listed["started_at"], str) and listed["started_at"]
    assert listed["suffix"] == "bot" and isinstance(listed["random_seed"], int)
    plain = get(f"/v1/fine-tunes/{_start(_adapter(together)).id}")
    assert plain["suffix"] == "" and isinstance(plain["random_seed"], int)
    required = {"param_count", "token_count", "total_steps", "wandb_url", "step", "checkpoint_path", "model_path",
                "training_offset", "hash"}
    events = get(f"/v1/fine-tunes/{job.id}/events")["data"]
    assert events and all(required <= set(event) for event in events)
    rows = get(f"/v1/fine-tunes/{job.id}/metrics")["metrics"]
    assert rows and all({"train/global_step", "train/loss", "train/epoch", "train/learning_rate"} <= set(row)
                        for row in rows)


def test_the_default_host_is_togethers_own():
    settings = Settings(env={"TOGETHER_API_KEY": TOGETHER_KEY})
    (adapter,) = configured(settings)
    assert str(adapter._client.base_url).rstrip("/") == "https://api.together.ai"


def test_a_long_curve_is_read_once_then_only_from_its_newest_step(together):
    """Issue 28: a Together curve of 100,000 points was downloaded whole at every read (218 MB a minute at a 1 s
    metrics interval). The progress and watchdog reads ask only from the newest step they saw (global_step_from)."""
    job = together.add_job(status="running")
    with together.lock:
        together.jobs[job["id"]]["_metrics"].extend({"train/global_step": step, "train/loss": 1 / step}
                                                    for step in range(1, 5001))
    adapter = _adapter(together)
    assert adapter.latest_metric(job["id"]).step == 5000
    together.report(job["id"], 5001, 0.5)
    assert adapter.latest_metric(job["id"]).step == 5001
    assert adapter.latest_metric(job["id"]).step == 5001  # nothing new: the newest again, from one row
    reads = together.requests_to(f"/v1/fine-tunes/{job['id']}/metrics", "GET")
    assert [r.query.get("global_step_from") for r in reads] == [None, ["5000"], ["5001"]]
    assert len(adapter.metrics(job["id"])) == 5001  # the chart still draws the whole curve
