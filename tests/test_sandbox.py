"""The sandbox provider in its own right: the OpenAI wire format the real client relies on."""

from __future__ import annotations

import time

import openai
import pytest

from bot.sandbox.openai import FAILING_FILE_ID, SAMPLE_FILE_ID, FineTuningSandbox, sign_webhook
from tests.conftest import WEBHOOK_SECRET, wait_until


@pytest.fixture
def client(provider):
    return openai.OpenAI(api_key="k", base_url=provider.url + "/v1", max_retries=0, timeout=5)


def test_upload_and_create(client, provider):
    uploaded = client.files.create(file=("mine.jsonl", b'{"messages": []}\n'), purpose="fine-tune")
    assert uploaded.filename == "mine.jsonl" and uploaded.purpose == "fine-tune"
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}"), purpose="assistants")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4.1-mini-2025-04-14")
    assert job.status == "validating_files" and job.fine_tuned_model is None


def test_bad_training_file_and_model_are_400(client):
    with pytest.raises(openai.BadRequestError, match="invalid training_file: file-nope"):
        client.fine_tuning.jobs.create(training_file="file-nope", model="babbage-002")
    with pytest.raises(openai.BadRequestError, match="not available for fine-tuning"):
        client.fine_tuning.jobs.create(training_file=SAMPLE_FILE_ID, model="gpt-9")


def test_unknown_job_is_404_in_the_providers_shape(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    assert caught.value.body["code"] == "fine_tune_not_found"


def test_pagination_and_metadata_filter(client, provider):
    ids = [provider.add_job(metadata={"team": "a" if i % 2 else "b"})["id"] for i in range(7)]
    first = client.fine_tuning.jobs.list(limit=3)
    assert [j.id for j in first.data] == ids[::-1][:3] and first.has_more
    rest = client.fine_tuning.jobs.list(limit=10, after=first.data[-1].id)
    assert [j.id for j in rest.data] == ids[::-1][3:] and not rest.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2)] == ids[::-1]  # the SDK pages on its own
    team_a = client.fine_tuning.jobs.list(limit=100, metadata={"team": "a"})
    assert [j.id for j in team_a.data] == [i for n, i in enumerate(ids) if n % 2][::-1]


def test_events_with_after(client, provider):
    job = provider.add_job()
    provider.set_status(job["id"], "running")
    provider.set_status(job["id"], "succeeded")
    events = client.fine_tuning.jobs.list_events(job["id"], limit=3)
    assert events.data[0].message == "The job has successfully completed" and events.has_more
    older = client.fine_tuning.jobs.list_events(job["id"], limit=100, after=events.data[-1].id)
    assert older.data[-1].message.startswith("Created fine-tuning job")
    metrics = [e for e in older.data + events.data if e.type == "metrics"]
    assert metrics and {"step", "train_loss"} <= set(metrics[0].data)


def test_cancel_pause_resume_rules(client, provider):
    job = provider.add_job(status="running")
    assert client.fine_tuning.jobs.pause(job["id"]).status == "pausing"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job["id"])
    provider.set_status(job["id"], "paused")
    assert client.fine_tuning.jobs.resume(job["id"]).status == "running"
    assert client.fine_tuning.jobs.cancel(job["id"]).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="cannot be cancelled"):
        client.fine_tuning.jobs.cancel(job["id"])


def test_paced_jobs_run_to_the_end_on_their_own():
    with FineTuningSandbox(pace=0.05) as sandbox:
        client = openai.OpenAI(api_key="k", base_url=sandbox.url + "/v1", max_retries=0)
        good = client.fine_tuning.jobs.create(training_file=SAMPLE_FILE_ID, model="babbage-002", suffix="x")
        bad = client.fine_tuning.jobs.create(training_file=FAILING_FILE_ID, model="babbage-002")
        done = wait_until(lambda: client.fine_tuning.jobs.retrieve(good.id).status == "succeeded", timeout=5)
        assert done
        finished = client.fine_tuning.jobs.retrieve(good.id)
        assert finished.fine_tuned_model.startswith("ft:babbage-002:sandbox:x:") and finished.trained_tokens > 0
        failed = client.fine_tuning.jobs.retrieve(bad.id)
        assert failed.status == "failed" and failed.error.code == "invalid_training_file"


def test_faults_on_demand(client, provider):
    provider.fail("status", status=503)
    with pytest.raises(openai.InternalServerError):
        client.fine_tuning.jobs.list()
    provider.fail("drop")
    with pytest.raises(openai.APIConnectionError):
        client.fine_tuning.jobs.list()
    provider.fail("delay", delay=0.3)
    started = time.monotonic()
    client.fine_tuning.jobs.list()
    assert time.monotonic() - started >= 0.3
    assert provider.faults_injected == 3


def test_webhooks_are_signed_as_openai_signs_them():
    body = '{"id": "evt_1", "type": "fine_tuning.job.succeeded", "object": "event", "created_at": 1, ' \
           '"data": {"id": "ftjob-1"}}'
    client = openai.OpenAI(api_key="k", webhook_secret=WEBHOOK_SECRET)
    event = client.webhooks.unwrap(body, sign_webhook(body, WEBHOOK_SECRET))
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == "ftjob-1"
