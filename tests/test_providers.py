"""Several providers at once, through the real HTTP endpoint: OpenAI's shape and Together AI's in one channel."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import pytest

from bot.app import build
from bot.config import Settings
from bot.poller import Poller
from bot.providers import registry
from bot.providers.openai_shape import OPENAI_NEW_JOBS_END
from bot.sandbox.openai import SAMPLE_FILE_ID
from tests.conftest import Server, ask, delivered, everything_said, start_intents, wait_until
from tests.test_storage import database_from_before_providers

TOGETHER_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


@pytest.fixture
def two(make_bot, both):
    """A bot with OpenAI and Together AI configured, served over HTTP."""
    bot = make_bot(env=both.env)
    server = Server(bot)
    yield bot, server
    server.close()


def _openai_posts(provider):
    return [r for r in provider.received if r.method == "POST"]


def test_one_openai_job_and_one_together_job_in_one_channel_are_each_announced_once(two, slack, provider,
                                                                                       together):
    bot, server = two
    first = ask(server, slack, f"start {SAMPLE_FILE_ID} suffix=old-way")
    second = ask(server, slack, f"start {SAMPLE_FILE_ID} provider=together suffix=new-way epochs=2 lora=true "
                                "learning_rate=0.0002")
    [openai_id], [together_id] = list(provider.jobs), list(together.jobs)
    assert openai_id in first["text"] and "OpenAI" in first["text"]
    assert together_id in second["text"] and "Together AI" in second["text"] and TOGETHER_MODEL in second["text"]
    body = [r for r in together.received if r.method == "POST" and r.path == "/v1/fine-tunes"][0].json()
    assert (body["n_epochs"], body["learning_rate"], body["training_type"]["type"]) == (2, 0.0002, "Lora")

    # (each job's card up while it runs: a card still owed when its job ends gives way to the outcome)
    assert wait_until(lambda: len(slack.cards_in("C0GENERAL")) == 2, timeout=10)
    provider.set_status(openai_id, "succeeded", fine_tuned_model="ft:gpt-4.1-mini-2025-04-14:acme:old-way:AbC")
    together.set_status(together_id, "completed")
    report = bot.services.poller.run_once()
    assert sorted(report.finished) == sorted([openai_id, together_id])
    posted = wait_until(lambda: len(slack.outcomes_in("C0GENERAL")) == 2 and slack.outcomes_in("C0GENERAL"))
    said = {p["text"].split()[2]: p for p in posted}  # "Fine-tuning job <id> on …"
    assert "ft:gpt-4.1-mini-2025-04-14:acme:old-way:AbC" in said[openai_id]["text"]
    assert "on OpenAI succeeded" in said[openai_id]["text"]
    output_name = together.jobs[together_id]["model_output_name"]
    assert output_name in said[together_id]["text"] and "on Together AI succeeded" in said[together_id]["text"]
    assert f"```{output_name}```" in json.dumps(said[together_id]["blocks"])

    for _ in range(3):
        assert bot.services.poller.run_once().requests == 0  # both final: nobody is asked again
        delivered(bot.services.sender)
    assert len(slack.outcomes_in("C0GENERAL")) == 2 and len(slack.cards_in("C0GENERAL")) == 2


def test_commands_on_a_job_go_to_the_provider_it_lives_at(two, slack, provider, together):
    bot, server = two
    job = together.add_job(status="running")
    assert "now follows" in ask(server, slack, f"subscribe {job['id']}")["text"]
    assert provider.received == []  # an ft- id is Together's shape: OpenAI is not asked
    status = ask(server, slack, f"status {job['id']}")
    assert "running" in status["text"] and "Together AI" in everything_said(status)
    paused = ask(server, slack, f"pause {job['id']}")
    assert "Together AI jobs cannot be paused" in paused["text"]
    assert not [r for r in together.received if r.method == "POST"]  # nothing was asked of Together either
    cancelled = ask(server, slack, f"cancel {job['id']}")
    assert "cancel_requested" in cancelled["text"]
    assert "no longer follows" in ask(server, slack, f"unsubscribe {job['id']}")["text"]
    assert provider.received == []


def test_an_id_the_bot_has_never_seen_is_asked_of_the_providers_it_fits(two, slack, provider, together):
    bot, server = two
    unknown_together = ask(server, slack, "status ft-00000000-0000-0000-0000-000000000000")
    assert "Together AI said" in unknown_together["text"] and "not found" in unknown_together["text"]
    assert provider.received == []
    unknown_openai = ask(server, slack, "status ftjob-nope")
    assert "OpenAI said" in unknown_openai["text"] and together.requests_to("ftjob-nope") == []
    nobody = ask(server, slack, "status job-of-another-shape")
    assert "No provider configured here knows a job called job-of-another-shape" in nobody["text"]
    assert "OpenAI and Together AI" in nobody["text"]
    assert provider.requests_to("job-of-another-shape") and together.requests_to("job-of-another-shape")


def test_each_provider_takes_only_its_own_options_checked_before_any_request(two, slack, provider, together):
    bot, server = two
    refused = ask(server, slack, f"start {SAMPLE_FILE_ID} lora=true")
    assert "OpenAI jobs don't take `lora`" in refused["text"] and "`epochs`" in refused["text"]
    long_suffix = ask(server, slack, f"start {SAMPLE_FILE_ID} provider=together suffix={'s' * 41}")
    assert "Together AI takes suffixes of at most 40 characters" in long_suffix["text"]
    nonesuch = ask(server, slack, f"start {SAMPLE_FILE_ID} provider=nonesuch")
    assert "No provider called `nonesuch` is configured here" in nonesuch["text"]
    assert "`openai`, `together`" in nonesuch["text"]
    assert provider.received == [] and together.received == [] and start_intents(bot.services.store) == []


def test_list_merges_every_provider_newest_first_and_names_each(two, slack, provider, together):
    bot, server = two
    made = []
    for stand_in, at in [(provider, 100), (together, 200), (provider, 300), (together, 400)]:
        stand_in.clock = lambda at=at: 1_790_000_000 + at
        made.append(stand_in.add_job(status="running")["id"])
    merged = ask(server, slack, "list 3")["text"]
    assert [merged.index(job_id) for job_id in made[::-1][:3]] == sorted(merged.index(j) for j in made[::-1][:3])
    assert made[0] not in merged  # the oldest is cut: 3 were asked for
    assert merged.count("(Together AI)") == 2 and merged.count("(OpenAI)") == 1
    only = ask(server, slack, "list provider=together")["text"]
    assert "(OpenAI)" not in only and only.count("(Together AI)") == 2
    together.fail("status", match="/v1/fine-tunes", status=503, times=4,
                  body={"error": {"message": "Service unavailable", "type": "server_error"}})
    partial = ask(server, slack, "list")["text"]
    assert partial.count("(OpenAI)") == 2 and "Together AI could not be asked: Service unavailable" in partial


def _with_openais_end(settings, clock):
    """The providers, with the stand-in taken for OpenAI itself (whose end of new jobs is announced)."""
    providers = registry.configured(settings, clock=clock)
    providers.get("openai").new_jobs_end = OPENAI_NEW_JOBS_END
    return providers


def test_openais_end_of_new_jobs_applies_to_openai_itself_not_to_compatible_urls():
    def openai_end(base_url: str | None = None, **settings):
        env = {"OPENAI_API_KEY": "k", **({"OPENAI_BASE_URL": base_url} if base_url else {})}
        return registry.configured(Settings(env=env, **settings)).get("openai").new_jobs_end

    assert openai_end() == openai_end("https://api.openai.com/v1") == OPENAI_NEW_JOBS_END
    assert openai_end(sandbox=True) == OPENAI_NEW_JOBS_END  # the sandbox plays OpenAI
    assert openai_end("https://my-vllm.internal/v1") is None
    azure = registry.configured(Settings(env={"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
                                              "AZURE_OPENAI_API_KEY": "k", "OPENAI_API_VERSION": "2025-04-01-preview"}))
    assert azure.names == ["azure"] and azure.get("azure").new_jobs_end is None


def test_providers_says_what_each_can_do_and_until_when_it_takes_jobs(make_bot, both, slack, provider, together):
    before = datetime(2026, 11, 27, tzinfo=timezone.utc).timestamp()
    bot = build(both, clock=lambda: before, providers=_with_openais_end(both, lambda: before))
    server = Server(bot)
    try:
        said = everything_said(ask(server, slack, "providers"))
        assert "OpenAI" in said and "provider=openai" in said and "default for start" in said
        assert "Takes new jobs until 2027-01-06 (40 days from now)" in said
        assert "Together AI" in said and "Cannot: pause and resume" in said and "`lora`" in said
    finally:
        server.close()
        bot.stop(timeout=2)
    after = datetime(2027, 1, 7, tzinfo=timezone.utc).timestamp()
    bot = build(both, clock=lambda: after, providers=_with_openais_end(both, lambda: after))
    try:
        said = bot.services.jobs.run(_command("providers"), _caller()).text
        assert "Stopped taking new jobs on 2027-01-06" in said
    finally:
        bot.stop(timeout=2)


def test_a_provider_that_stopped_taking_jobs_is_named_and_the_others_offered(two, slack, provider, together):
    bot, server = two
    provider.refuse_new_jobs = (403, "Fine-tuning job creation is no longer available for this organization.")
    reply = ask(server, slack, f"start {SAMPLE_FILE_ID}")
    said = everything_said(reply)
    assert "OpenAI no longer starts fine-tuning jobs" in reply["text"]
    assert "Fine-tuning job creation is no longer available for this organization." in said
    assert "Together AI (provider=together)" in said and "provider=together" in reply["text"]
    assert [i["state"] for i in start_intents(bot.services.store)] == ["refused"]
    providers = everything_said(ask(server, slack, "providers"))
    assert "Not taking new jobs: it refused a start on" in providers and "no longer available" in providers
    assert together_id_started(ask(server, slack, f"start {SAMPLE_FILE_ID} provider=together"), together)


def together_id_started(reply, together) -> bool:
    return any(job_id in reply["text"] for job_id in together.jobs)


def test_an_outage_at_one_provider_never_delays_the_others_announcements(two, slack, provider, together):
    bot, server = two
    ask(server, slack, f"start {SAMPLE_FILE_ID} provider=together")  # the older job: asked about first
    ask(server, slack, f"start {SAMPLE_FILE_ID}")
    [openai_id], [together_id] = list(provider.jobs), list(together.jobs)
    provider.set_status(openai_id, "succeeded")
    hang = together.fail("delay", match="/v1/fine-tunes", delay=30.0)  # Together hangs until released...
    cycle = threading.Thread(target=bot.services.poller.run_once)
    cycle.start()
    # ...while OpenAI's outcome is recorded and posted.
    assert wait_until(lambda: slack.outcomes_in("C0GENERAL"), timeout=15)  # (inside the 20 s provider timeout)
    assert cycle.is_alive()
    hang.release()
    cycle.join(10)

    together.fail("status", match="/v1/fine-tunes", status=503, times=10,
                  body={"error": {"message": "Service unavailable", "type": "server_error"}})
    provider.add_job()  # (not followed: the OpenAI side has nothing left to ask)
    poller = Poller(bot.services.providers, bot.services.store, on_queued=bot.services.sender.kick, interval=1)
    failing = poller.run_once()
    assert failing.errors == {"together": "Service unavailable"}
    skipped = poller.run_once()
    assert skipped.backing_off == ["together"] and skipped.requests == 0
    together.faults.clear()
    together.set_status(together_id, "error", error="CUDA out of memory <!here>")
    report = poller.run_once()
    while report.skipped:
        report = poller.run_once()
    assert report.finished == [together_id]
    posted = wait_until(lambda: len(slack.outcomes_in("C0GENERAL")) == 2 and slack.outcomes_in("C0GENERAL"))
    assert "failed: CUDA out of memory &lt;!here&gt;" in posted[-1]["text"]


def _command(name, **args):
    from bot.commands import Command

    return Command(name, args)


def _caller():
    from bot.jobs import Caller

    return Caller("T", "C0GENERAL", "U0ALICE")


def test_a_database_from_before_providers_goes_on_announcing(make_bot, settings, provider, slack):
    job = provider.add_job(status="running")
    database_from_before_providers(settings.database_path, running=job["id"])
    bot = make_bot()  # OpenAI's shape configured: the rows are OpenAI's
    assert [(r["provider"], r["id"]) for r in bot.services.store.follows.active_jobs()] == [("openai", job["id"])]
    provider.set_status(job["id"], "succeeded", fine_tuned_model="ft:gpt-4.1-mini:acme::kept")
    assert bot.services.poller.run_once().finished == [job["id"]]
    posted = wait_until(lambda: len(slack.messages_in("C1")) == 2 and slack.messages_in("C1"))
    assert sorted(p["text"].split()[2] for p in posted) == sorted([job["id"], "ftjob-done"])  # the old one too
    delivered(bot.services.sender)
    assert len(slack.messages_in("C1")) == 2


@pytest.mark.parametrize("text", ["try ftjob-abc provider=nonesuch hello", "compare ftjob-abc provider=nonesuch",
                                  "chart ftjob-abc provider=nonesuch", "status ftjob-abc provider=nonesuch"])
def test_an_unknown_provider_is_a_plain_answer_for_every_command(server, slack, provider, text):
    said = ask(server, slack, text)["text"]
    assert "No provider called `nonesuch` is configured here. Configured: `openai`." in said
    assert provider.received == []
