"""The seam: a third API shape, defined here and registered for the test alone, works through start, status, an
announcement, `providers`, `list`, the data check, the settings and the sandbox, with no production change. What it
took is the proof that a new shape is one module, its stand-in and one line in the registry."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import replace

import pytest

from bot.config import ConfigError, load
from bot.providers import registry
from bot.providers.calls import answers_in_provider_errors
from bot.providers.shape import CHAT, EnvSetting, ModelFacts, Pricing, ProviderShape, SandboxSpec
from bot.providers.types import Capabilities, Job, ProviderError, StartOption, state_of
from bot.scrub import Scrubber
from bot.values import Value
from tests.conftest import Server, ask, everything_said, start_provider_of, wait_until

ACME_KEY = "acme-live-SECRETACMEKEY0123456789"
STATES = {"DONE": "succeeded", "BROKEN": "failed", "STOPPED": "cancelled"}


class AcmeCloud:
    """Acme's API, as its stand-in: jobs in memory, moved on when a test says. (A real shape's stand-in is a
    loopback HTTP server its SDK talks to; this one is as small as the proof allows.)"""

    url = "memory://acme"

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.created: list[dict] = []
        self._ids = itertools.count(1)

    def create(self, **body) -> dict:
        job = {"id": f"acme-{next(self._ids):04d}", "state": "QUEUED", "base": body["model"],
               "file": body["training_file"], "made": None, "created": 1_800_000_000 + len(self.jobs)}
        self.created.append(body)
        self.jobs[job["id"]] = job
        return job

    def stop(self) -> None:
        pass


@answers_in_provider_errors
class AcmeProvider:
    """A minimal adapter: the protocol's reads and a start, over Acme's API."""

    name = "acme"
    max_suffix = 20
    capabilities = Capabilities(pause_resume=False, chat=False, events=False, metrics=False)
    start_options = (StartOption("model", "the base model"), StartOption("rank", "the adapter's rank, 1 to 64"))
    page_size = None
    new_jobs_end = None
    default_model = "acme-7b"
    needs_deployment = False
    training_statuses = frozenset({"TRAINING"})
    webhook_route = None
    webhooks_verifiable = False

    def __init__(self, cloud: AcmeCloud, key: str) -> None:
        self.cloud, self._redact = cloud, Scrubber([key])

    def warm(self) -> None:
        pass  # a plain HTTP client: nothing loads on first use

    def owns_id(self, job_id: str) -> bool:
        return job_id.startswith("acme-")

    def _job(self, raw: dict) -> Job:
        return Job(id=raw["id"], status=raw["state"], state=state_of(raw["state"], STATES), model=raw["base"],
                   fine_tuned_model=raw["made"], training_file=raw["file"], created_at=raw["created"],
                   error_message=raw.get("why"), provider=self.name)

    def retrieve(self, job_id: str) -> Job:
        if job_id not in self.cloud.jobs:
            raise ProviderError(f"no job {job_id}", status=404, provider=self.name)
        return self._job(self.cloud.jobs[job_id])

    def list_jobs(self, limit: int | None = 10, *, after: str | None = None) -> tuple[list[Job], bool]:
        jobs = [self._job(raw) for raw in self.cloud.jobs.values()]
        return jobs[:limit] if limit else jobs, bool(limit and len(jobs) > limit)

    def create_job(self, *, request_id, training_file, model, suffix=None, n_epochs=None, validation_file=None,
                   seed=None, metadata=None, extra=None) -> Job:  # noqa: ANN001
        return self._job(self.cloud.create(model=model, training_file=training_file, **(extra or {})))

    def find_started(self, request_id, *, training_file, model, suffix, since) -> Job | None:  # noqa: ANN001
        return None

    def events(self, job_id, limit=5):  # noqa: ANN001, ANN201
        return []

    def metrics(self, job_id):  # noqa: ANN001, ANN201
        return []

    def latest_metric(self, job_id):  # noqa: ANN001, ANN201
        return None

    def cancel(self, job_id: str) -> Job:
        self.cloud.jobs[job_id]["state"] = "STOPPED"
        return self.retrieve(job_id)

    def pause(self, job_id: str) -> Job:
        raise ProviderError("Acme cannot pause jobs.", provider=self.name)

    resume = pause

    def upload_file(self, filename, content):  # noqa: ANN001, ANN201
        raise ProviderError("Acme takes no uploads here.", provider=self.name)

    def estimate_price(self, **kwargs):  # noqa: ANN003, ANN201
        return None

    def chat(self, model, messages, *, max_tokens):  # noqa: ANN001, ANN201
        raise ProviderError("Acme serves no chat here.", provider=self.name)

    def read_file(self, file_id, consume, *, max_bytes):  # noqa: ANN001, ANN201
        raise ProviderError("Acme reads no files here.", provider=self.name)

    def unwrap_webhook(self, payload, headers):  # noqa: ANN001, ANN201
        raise ProviderError("Acme sends no webhooks.", provider=self.name)


def _shape(cloud: AcmeCloud) -> ProviderShape:
    return ProviderShape(
        name="acme",
        configured=lambda settings, **kw: ([AcmeProvider(cloud, settings.value("ACME_API_KEY"))]
                                           if settings.value("ACME_API_KEY") else []),
        present=lambda settings: ["acme"] if settings.value("ACME_API_KEY") else [],
        labels={"acme": "Acme AI"},
        settings=(EnvSetting("ACME_API_KEY", "your Acme API key", secret=True, required=True),
                  EnvSetting("ACME_REGION", "Acme's region")),
        status_emoji={"QUEUED": ":hourglass_flowing_sand:", "TRAINING": ":gear:", "DONE": ":white_check_mark:"},
        pricing=Pricing(source="Acme's price list, as read in 2026-11",
                        models=(ModelFacts("acme-7b", "acme", "o200k_base", 4_096, 2.00, frozenset({CHAT}),
                                           own_tokenizer=False),),
                        default_epochs=lambda examples: 4, min_examples=5),
        start_options=(Value("rank", "int", 1, 64, placeholder="n"),),
        sandbox=SandboxSpec(start=lambda pace: cloud, label="Acme's",
                            settings=lambda stand_in: {"ACME_API_KEY": "sandbox-acme-key"}),
        advice="ACME_API_KEY for Acme AI",
    )


@pytest.fixture
def acme():
    cloud = AcmeCloud()
    with registry.registered(_shape(cloud)):
        yield cloud


def test_a_third_shape_starts_reports_announces_and_lists_with_no_production_change(make_bot, settings, slack,
                                                                                   provider, acme):
    bot = make_bot(providers={"ACME_API_KEY": ACME_KEY})
    assert bot.services.providers.names == ["openai", "acme"]
    server = Server(bot)
    try:
        started = everything_said(ask(server, slack, "start file-abc provider=acme rank=8"))
        [job_id] = list(acme.jobs)
        assert job_id in started and "Acme AI" in started
        assert acme.created == [{"model": "acme-7b", "training_file": "file-abc", "rank": 8}]
        refused = everything_said(ask(server, slack, "start file-abc rank=8"))  # OpenAI takes no rank
        assert "OpenAI jobs don't take `rank`" in refused and len(acme.created) == 1
        status = everything_said(ask(server, slack, f"status {job_id}"))  # an id only Acme's shape owns
        assert "QUEUED" in status and ":hourglass_flowing_sand:" in status
        acme.jobs[job_id].update(state="DONE", made="acme/acme-7b-ft-1")
        bot.services.poller.run_once()
        [outcome] = wait_until(lambda: slack.outcomes_in("C0GENERAL"), timeout=10)
        assert "acme/acme-7b-ft-1" in everything_said(outcome) and "Acme AI" in everything_said(outcome)
        providers = everything_said(ask(server, slack, "providers"))
        assert "Acme AI (provider=acme)" in providers and "rank" in providers
        provider.add_job(status="running")
        listed = everything_said(ask(server, slack, "list"))
        assert job_id in listed and "Acme AI" in listed
    finally:
        server.close()


def test_a_third_shapes_settings_are_read_named_and_scrubbed(acme):
    base = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}
    settings = load({**base, "ACME_API_KEY": ACME_KEY, "ACME_REGION": "eu"})
    assert settings.provider_names == ["acme"] and start_provider_of(settings) == "acme"
    assert settings.value("ACME_REGION") == "eu" and ACME_KEY in settings.secrets()
    assert ACME_KEY not in repr(settings)
    with pytest.raises(ConfigError, match="ACME_API_KEY is not set: it is your Acme API key"):
        load({**base, "OPENAI_API_KEY": "sk-x", "ACME_REGION": "eu"})  # half an Acme: named, not ignored
    assert start_provider_of(load({**base, "ACME_API_KEY": ACME_KEY, "DEFAULT_PROVIDER": "acme"})) == "acme"


def test_a_third_shapes_prices_and_epoch_rule_reach_the_data_check(acme):
    from bot.training_data import check

    rows = "".join(json.dumps({"messages": [{"role": "user", "content": f"Q{n}?"},
                                            {"role": "assistant", "content": f"A{n}."}]}) + "\n" for n in range(3))
    report = check(io.BytesIO(rows.encode()), model="acme-7b")
    text = "\n".join(report.lines())
    assert report.epochs == 4 and "Acme's price list" in text and "$2.00 per million" in text
    assert not report.ok and "only 3 examples: Acme AI needs at least 5" in text


def test_a_third_shapes_sandbox_runs_beside_the_others(acme):
    from bot.sandbox.stand_ins import SandboxProviders

    sandbox = SandboxProviders.start(None)
    try:
        assert sandbox.labels == ["OpenAI's shape", "Together AI's", "Fireworks AI's", "Acme's"]
        settings = sandbox.configure(load({}, mode="shell"))
        assert settings.value("ACME_API_KEY") == "sandbox-acme-key" and "acme" in settings.provider_names
    finally:
        sandbox.stop()


def test_without_it_registered_nothing_knows_it(settings):
    assert "acme" not in [n for shape in registry.SHAPES for n in shape.labels]
    assert replace(settings, env={**settings.env, "ACME_API_KEY": ACME_KEY}).provider_names == ["openai"]
