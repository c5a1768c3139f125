"""The provider adapter against the stand-in, through the real openai client: errors, retries, idempotent starts."""

from __future__ import annotations

import openai
import pytest

from bot.config import Settings
from bot.providers.openai_shape import REQUEST_KEY, OpenAIProvider, build_client
from bot.providers.types import ProviderError
from bot.sandbox.openai import SAMPLE_FILE_ID, FineTuningSandbox
from tests.conftest import OPENAI_KEY


def _provider(sandbox: FineTuningSandbox, **kwargs) -> OpenAIProvider:
    client = build_client(Settings(env={"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": sandbox.url + "/v1"},
                                   provider_timeout_seconds=2))
    return OpenAIProvider(client, secrets=[OPENAI_KEY], sleep=lambda s: None, **kwargs)


def _start(provider: OpenAIProvider, request_id: str = "req-1", **kwargs):
    return provider.create_job(request_id=request_id, training_file=SAMPLE_FILE_ID, model="babbage-002", **kwargs)


def test_client_has_explicit_timeout_and_no_sdk_retries():
    client = build_client(Settings(env={"OPENAI_API_KEY": "k"}, provider_timeout_seconds=7))
    assert client.max_retries == 0
    assert client.timeout == 7


def test_create_sends_method_metadata_and_options(provider):
    job = _start(_provider(provider), suffix="s1", n_epochs=4, validation_file=SAMPLE_FILE_ID, seed=7,
                 metadata={"slack_channel": "C1"})
    body = provider.requests_to("/fine_tuning/jobs", "POST")[0].json()
    assert body["method"]["supervised"]["hyperparameters"] == {"n_epochs": 4}
    assert body["metadata"] == {"slack_channel": "C1", REQUEST_KEY: "req-1"}
    assert (body["suffix"], body["seed"], body["validation_file"]) == ("s1", 7, SAMPLE_FILE_ID)
    assert job.status == "validating_files" and not job.final and job.suffix == "s1"


def test_a_lost_answer_does_not_start_a_second_job(provider):
    provider.fail("drop_after", match="/fine_tuning/jobs")  # the job is created, then the connection drops
    job = _start(_provider(provider))
    assert list(provider.jobs) == [job.id]
    assert len(provider.requests_to("/fine_tuning/jobs", "POST")) == 1
    lookup = provider.requests_to("/fine_tuning/jobs", "GET")[0]
    assert lookup.query[f"metadata[{REQUEST_KEY}]"] == ["req-1"]


def test_a_refused_attempt_is_retried_once_nothing_was_created(provider):
    provider.fail("status", match="/fine_tuning/jobs", status=503)
    job = _start(_provider(provider))
    assert list(provider.jobs) == [job.id]
    assert len(provider.requests_to("/fine_tuning/jobs", "POST")) == 2


def test_without_metadata_the_lost_job_is_found_by_file_model_and_suffix(provider):
    provider.metadata_supported = False
    provider.add_job(model="babbage-002", suffix="other")  # someone else's job: must not be taken for ours
    adapter = _provider(provider)
    provider.fail("drop_after", match="/fine_tuning/jobs")
    job = _start(adapter, suffix="mine")
    assert adapter.metadata_supported is False
    assert len(provider.jobs) == 2 and provider.jobs[job.id]["suffix"] == "mine"
    assert "metadata" not in provider.requests_to("/fine_tuning/jobs", "POST")[-1].json()


def test_when_the_lookup_fails_too_the_user_is_told_to_check(provider):
    provider.fail("drop_after", match="/fine_tuning/jobs")
    provider.fail("status", match="/fine_tuning/jobs", status=500, times=1)
    with pytest.raises(ProviderError, match="did not confirm whether the job started"):
        _start(_provider(provider))
    assert len(provider.jobs) == 1


def test_errors_carry_the_providers_words_and_never_the_key(provider):
    adapter = _provider(provider)
    with pytest.raises(ProviderError) as caught:
        adapter.retrieve("ftjob-missing")
    assert caught.value.not_found and "Could not find fine-tune job: ftjob-missing" == caught.value.message
    provider.fail("status", status=401, body={"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}.",
                                                        "code": "invalid_api_key"}})
    with pytest.raises(ProviderError) as caught:
        adapter.list_jobs()
    assert OPENAI_KEY not in caught.value.message and "[redacted]" in caught.value.message


def test_reads_retry_a_little_and_honour_retry_after(provider):
    slept = []
    client = build_client(Settings(env={"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": provider.url + "/v1"}))
    adapter = OpenAIProvider(client, sleep=slept.append)
    provider.fail("status", status=429, retry_after=1.5)
    assert adapter.list_jobs() == ([], False)
    assert slept == [1.5]
    provider.fail("status", status=500, times=5)
    with pytest.raises(ProviderError) as caught:
        adapter.list_jobs()
    assert caught.value.retryable and caught.value.status == 500


def test_unknown_statuses_are_not_final(provider):
    job = provider.add_job()
    for status in ("pausing", "paused", "pending", "created", "brand_new_status"):
        provider.jobs[job["id"]]["status"] = status
        seen = _provider(provider).retrieve(job["id"])
        assert seen.status == status and not seen.final and seen.outcome is None


def test_azure_client_path(provider):
    provider.azure = True
    settings = Settings(env={"AZURE_OPENAI_ENDPOINT": provider.url, "AZURE_OPENAI_API_KEY": "azure-key",
                             "OPENAI_API_VERSION": "2024-10-21"}, provider_timeout_seconds=2)
    client = build_client(settings, azure=True)
    assert isinstance(client, openai.AzureOpenAI)
    adapter = OpenAIProvider(client, sleep=lambda s: None)
    assert adapter.max_suffix == 40
    job = _start(adapter)
    assert job.status == "pending" and not job.final
    request = provider.requests_to("/openai/fine_tuning/jobs", "POST")[0]
    assert request.query["api-version"] == ["2024-10-21"] and request.headers["api-key"] == "azure-key"
    provider.set_status(job.id, "succeeded")
    assert adapter.retrieve(job.id).fine_tuned_model.startswith("ft:babbage-002")


def test_azure_v1_api_is_a_plain_base_url(provider):
    adapter = OpenAIProvider(build_client(Settings(env={"OPENAI_API_KEY": "k",
                                                        "OPENAI_BASE_URL": provider.url + "/openai/v1/"})))
    job = _start(adapter)
    assert provider.requests_to("/openai/v1/fine_tuning/jobs", "POST")
    assert adapter.retrieve(job.id).id == job.id


def test_azure_suffix_limit_is_a_friendly_answer(make_bot, provider, slack):
    from bot.commands import Command
    from bot.jobs import Caller

    provider.azure = True
    bot = make_bot(providers={"AZURE_OPENAI_ENDPOINT": provider.url, "AZURE_OPENAI_API_KEY": "azure-key",
                              "OPENAI_API_VERSION": "2024-10-21", "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None})
    message = bot.services.jobs.run(Command("start", {"training_file": SAMPLE_FILE_ID, "suffix": "s" * 41}),
                                    Caller("T", "C1", "U1"))
    assert "at most 40 characters" in message.text and "has 41" in message.text
    assert provider.requests_to("/fine_tuning/jobs", "POST") == []


def test_metrics_come_from_the_metrics_events_across_pages(provider):
    job = provider.add_job(status="succeeded")  # ten steps of metrics among its other events
    with provider.lock:
        for n in range(11, 151):
            provider._event(provider.jobs[job["id"]], f"Step {n}", type_="metrics",
                            data={"step": n, "train_loss": 1 / n, "valid_loss": 2 / n})
    points = _provider(provider).metrics(job["id"])
    assert [p.step for p in points] == list(range(1, 151))
    assert points[-1].valid_loss == 2 / 150 and points[0].valid_loss is None
    assert len(provider.requests_to("/events")) == 2  # pages of 100


def test_upload_sends_the_bytes_for_fine_tuning(provider):
    file_id = _provider(provider).upload_file("train.jsonl", b'{"messages": []}\n')
    assert provider.files[file_id]["_content"] == b'{"messages": []}\n'
    assert provider.files[file_id]["purpose"] == "fine-tune"
