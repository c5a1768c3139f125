"""The OpenAI-shaped provider adapter: the one module that imports `openai`, returning our own small dataclasses.

Retries are decided here and nowhere else: the SDK's own are switched off (`max_retries=0`), reads are retried a
little, and creating a job is made idempotent so that a retry never starts (and bills) a second job.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from bot.providers.calls import (
    T,
    answers_in_provider_errors,
    chat_answer,
    lines_capped,
    made_by_this_start,
    read_with_retries,
    refusal,
    start_once,
    tls_context,
)
from bot.providers.openai_jobs import job_from_json, job_of, number
from bot.providers.shape import (
    CHAT,
    CHAT_TOOLS,
    COMPLETION,
    PREFERENCE,
    EnvSetting,
    ModelFacts,
    Moves,
    Nearest,
    Pricing,
    ProviderShape,
    Retirement,
    SandboxSpec,
)
from bot.providers.types import (
    Capabilities,
    ChatAnswer,
    Job,
    JobEvent,
    MetricPoint,
    ProviderError,
    StartOption,
    WebhookEvent,
    WebhookRejected,
    whole,
)
from bot.scrub import Scrubber
from storage.optional_imports import leaving_out

if TYPE_CHECKING:
    import openai

    from bot.config import Settings  # (only its type: the settings module reads the registry, not the reverse)

log = logging.getLogger(__name__)


def _sdk():
    """The `openai` SDK, imported the first time an OpenAI-shaped provider is configured or called: a bot that uses
    only other providers never loads it (about 25 MB)."""
    with leaving_out("aiohttp"):  # openai's async aiohttp client: never made here
        import openai

    return openai

REQUEST_KEY = "finetune_bot_request"
# OpenAI's deprecations page: no new fine-tuning jobs for anyone from this day; existing models keep serving.
OPENAI_NEW_JOBS_END = date(2027, 1, 6)
# The status words the bot reads as an outcome; every other word (queued, paused, Azure's pending, a word added
# next year) means the job is still going.
JOB_ID = re.compile(r"ftjob-[A-Za-z0-9]+")
MAX_EVENT_PAGES = 50  # 5,000 events: a curve of thousands of steps, and a bound on what one chart may cost
LATEST_EVENTS = 20  # a progress reply needs only the newest metrics event, among the last few events
START_OPTIONS = (
    StartOption("model", "the base model"),
    StartOption("epochs", "passes over the training file"),
    StartOption("suffix", "added to the fine-tuned model's name"),
    StartOption("validation", "a validation file id"),
    StartOption("seed", "for a reproducible run"),
)


def default_epochs(examples: int) -> int:
    """The epochs OpenAI applies when none are given, as its cookbook (Chat_finetuning_data_prep) has it: 3, raised
    for small files towards 100 examples seen (100 // examples, rounded down, at most 25 epochs) and lowered for very
    large ones (25,000 // examples, at least 1 epoch)."""
    if examples == 0:
        return 3
    if examples * 3 < 100:
        return min(25, 100 // examples)
    if examples * 3 > 25_000:
        return max(1, 25_000 // examples)
    return 3


_CHAT_ALL = frozenset({CHAT, CHAT_TOOLS, PREFERENCE})
# Prices in US dollars per million training tokens: OpenAI's pricing page (openai.com/api/pricing, "Fine-tuning"),
# as last read in 2025-06. They change: the report says the figure is an estimate.
PRICING = Pricing(
    source="OpenAI's pricing page, fine-tuning, as read in 2025-06",
    models=(
        ModelFacts("gpt-4.1-2025-04-14", "openai", "o200k_base", 65_536, 25.00, _CHAT_ALL),
        ModelFacts("gpt-4.1-mini-2025-04-14", "openai", "o200k_base", 65_536, 5.00, _CHAT_ALL),
        ModelFacts("gpt-4.1-nano-2025-04-14", "openai", "o200k_base", 65_536, 1.50, _CHAT_ALL),
        ModelFacts("gpt-4o-2024-08-06", "openai", "o200k_base", 65_536, 25.00, _CHAT_ALL),
        ModelFacts("gpt-4o-mini-2024-07-18", "openai", "o200k_base", 65_536, 3.00, _CHAT_ALL),
        ModelFacts("gpt-3.5-turbo-0125", "openai", "cl100k_base", 16_385, 8.00, frozenset({CHAT, CHAT_TOOLS})),
        ModelFacts("davinci-002", "openai", "cl100k_base", 16_384, 6.00, frozenset({COMPLETION})),
        ModelFacts("babbage-002", "openai", "cl100k_base", 16_384, 0.40, frozenset({COMPLETION}),
                   retired="retired by OpenAI on 2026-09-28"),
    ),
    default_epochs=default_epochs,
    min_examples=10,  # OpenAI refuses a file with fewer
    # The names OpenAI also accepts for a fine-tunable model, and the dated model each stands for (as its models
    # page and fine-tuning guide resolve them): counted, limited and priced as that model.
    aliases={"gpt-4.1": "gpt-4.1-2025-04-14", "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
             "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14", "gpt-4o": "gpt-4o-2024-08-06",
             "gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-3.5-turbo": "gpt-3.5-turbo-0125"},
)


# What stops at OpenAI, and when. Only OpenAI's own API (api.openai.com, or the sandbox that stands in for it) has
# these dates: Azure OpenAI and compatible base URLs keep their own counsel.
_SECONDARY = ("secondary reports (not OpenAI's deprecations page), as gathered 2026-11: unconfirmed, check "
              "platform.openai.com/docs/deprecations")
RETIREMENTS = (
    Retirement(OPENAI_NEW_JOBS_END, "OpenAI takes no new fine-tuning jobs (fine-tuned models keep answering until "
               "their base model retires)", "OpenAI's deprecations page"),
    *(Retirement(date(2027, 1, 14), f"fine-tuned models of {model} stop answering (its shutdown)", _SECONDARY,
                 model=model)
      for model in ("gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14",
                    "gpt-4.1-mini-2025-04-14")),
)
# A move to Azure OpenAI (the OpenAI shape's other provider): the same base models are tunable there, by the same
# names. From the other shapes' open models there is no nearest closed model: `model=` chooses one.
MOVES = Moves(
    nearest={name: Nearest(name, "the same base model: Azure OpenAI tunes OpenAI's models through the same API")
             for name in ("gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14",
                          "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125")},
    source="Azure OpenAI's fine-tuning models page, as read 2026-11",
)


def present(settings: Settings) -> list[str]:
    """Which of this shape's providers the settings configure."""
    return [name for name, on in (("openai", bool(settings.value("OPENAI_API_KEY"))),
                                  ("azure", bool(settings.value("AZURE_OPENAI_ENDPOINT") and not settings.sandbox)))
            if on]


AZURE = ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "OPENAI_API_VERSION")


def _required(set_names: frozenset[str]) -> list[str]:
    """Azure OpenAI's endpoint, key and API version go together; OpenAI's key alone is OpenAI."""
    return list(AZURE) if set_names & {"AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY"} else []


def _legacy(settings: Settings) -> str | None:
    """Rows from before jobs were named by provider were the one OpenAI-shaped provider's: Azure OpenAI when its
    endpoint is set, OpenAI otherwise."""
    return "azure" if settings.value("AZURE_OPENAI_ENDPOINT") and not settings.sandbox else "openai"


def _sandbox(pace: float | None):
    from bot.sandbox.openai import FineTuningSandbox

    return FineTuningSandbox(pace=pace).start()


SHAPE = ProviderShape(
    name="openai",
    configured=lambda settings, **kw: configured(settings, **kw),
    present=present,
    labels={"openai": "OpenAI", "azure": "Azure OpenAI"},
    settings=(
        EnvSetting("OPENAI_API_KEY", "your OpenAI API key", secret=True),
        EnvSetting("OPENAI_BASE_URL", "the API's base URL, for Azure's v1 API or a compatible service"),
        EnvSetting("AZURE_OPENAI_ENDPOINT", "your Azure OpenAI resource's endpoint, such as https://NAME.openai.azure.com"),
        EnvSetting("AZURE_OPENAI_API_KEY", "the key of your Azure OpenAI resource ('Keys and Endpoint')", secret=True),
        EnvSetting("OPENAI_API_VERSION", "the Azure OpenAI API version to use, such as 2025-04-01-preview"),
        EnvSetting("OPENAI_WEBHOOK_SECRET", "the signing secret of your OpenAI webhook", secret=True),
    ),
    status_emoji={"validating_files": ":mag:", "queued": ":hourglass_flowing_sand:", "running": ":gear:",
                  "pausing": ":double_vertical_bar:", "paused": ":double_vertical_bar:",
                  "succeeded": ":white_check_mark:", "failed": ":x:", "cancelled": ":no_entry_sign:",
                  "pending": ":hourglass_flowing_sand:", "created": ":hourglass_flowing_sand:"},
    pricing=PRICING,
    sandbox=SandboxSpec(start=_sandbox, label="OpenAI's shape",
                        settings=lambda stand_in: {"OPENAI_BASE_URL": stand_in.url + "/v1",
                                                   "OPENAI_API_KEY": "sandbox-key"}),
    owns_model=lambda model: model.startswith("ft:") and model.count(":") >= 2,
    advice="OPENAI_API_KEY for OpenAI, or AZURE_OPENAI_ENDPOINT for Azure OpenAI",
    moves=MOVES,
    requires=_required,
    legacy=_legacy,
    sdk_loggers=("openai._base_client",),
    own_keys={"openai": ("OPENAI_API_KEY",)},  # (Azure OpenAI stays the operator's: a resource, not a key)
    own_secrets={"openai": {"OPENAI_WEBHOOK_SECRET": "Webhook signing secret"}},
)


def build_client(settings: Settings, *, azure: bool = False) -> openai.OpenAI:
    """The SDK client for OpenAI (or a compatible base URL) or Azure OpenAI: our timeout, no SDK retries."""
    common = {"timeout": settings.provider_timeout_seconds, "max_retries": 0,
              "webhook_secret": settings.value("OPENAI_WEBHOOK_SECRET"),
              "http_client": _sdk().DefaultHttpx2Client(verify=tls_context("httpx2"))}
    if azure:
        return _sdk().AzureOpenAI(
            azure_endpoint=settings.value("AZURE_OPENAI_ENDPOINT"),
            api_key=settings.value("AZURE_OPENAI_API_KEY"),
            api_version=settings.value("OPENAI_API_VERSION"),
            **common,
        )
    return _sdk().OpenAI(api_key=settings.value("OPENAI_API_KEY"), base_url=settings.value("OPENAI_BASE_URL"),
                         **common)


def configured(settings: Settings, *, clock: Callable[[], float] = time.time) -> list[OpenAIProvider]:
    """The OpenAI-shaped providers whose settings are present: OpenAI (or a compatible URL), and Azure OpenAI."""
    found = []
    if settings.value("OPENAI_API_KEY"):
        # OpenAI's end of new jobs is OpenAI's: a compatible service at another URL keeps its own counsel.
        host = urlsplit(settings.value("OPENAI_BASE_URL") or "https://api.openai.com").hostname or ""
        own = host == "api.openai.com" or settings.sandbox
        found.append(OpenAIProvider(build_client(settings), name="openai", secrets=settings.secrets(), clock=clock,
                                    new_jobs_end=OPENAI_NEW_JOBS_END if own else None,
                                    retirements=RETIREMENTS if own else (), default_model=settings.default_model))
    if settings.value("AZURE_OPENAI_ENDPOINT") and not settings.sandbox:
        found.append(OpenAIProvider(build_client(settings, azure=True), name="azure", secrets=settings.secrets(),
                                    clock=clock, default_model=settings.default_model))
    return found


@answers_in_provider_errors
class OpenAIProvider:
    """Fine-tuning jobs at an OpenAI-shaped provider (OpenAI, both Azure styles, compatible base URLs, the sandbox)."""

    start_options = START_OPTIONS
    page_size = 100
    webhook_route = "/openai/webhook"  # where OpenAI's signed webhooks come (bot/web.py)
    training_statuses = frozenset({"running"})  # the status words during which metrics come

    def __init__(self, client: openai.OpenAI, *, name: str = "openai", secrets: Iterable[str] = (),
                 read_attempts: int = 2, create_attempts: int = 3, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, new_jobs_end: date | None = None,
                 default_model: str | None = None, retirements: tuple[Retirement, ...] = ()) -> None:
        self._client = client
        self.name = name
        self.new_jobs_end = new_jobs_end
        self.retirements = retirements
        self.default_model = default_model
        self._redact = Scrubber(secrets)
        self._read_attempts = read_attempts
        self._create_attempts = create_attempts
        self._sleep = sleep
        self._clock = clock
        self.is_azure = isinstance(client, _sdk().AzureOpenAI)
        self.max_suffix = 40 if self.is_azure else 64
        self._timeout = float(client.timeout) if isinstance(client.timeout, (int, float)) else 5.0
        self.metadata_supported = True  # until the provider says otherwise (older Azure API versions)
        # Webhooks are received only with their signing secret set (OPENAI_WEBHOOK_SECRET): unverifiable, never.
        self.webhooks_verifiable = bool(getattr(client, "webhook_secret", None))

    @property
    def needs_deployment(self) -> bool:
        """AzureOpenAI calls models by deployment name, not model name."""
        return self.is_azure

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(pause_resume=True, metadata=self.metadata_supported, events=True, metrics=True,
                            webhooks=True)

    def close(self) -> None:
        self._client.close()

    def warm(self) -> None:
        # Measured: the first touch of fine_tuning and chat imports about 45 ms of modules, and the job type builds
        # its validator on first use; in a burst of commands that was the slowest acks' wait (p99 142 ms -> 46 ms).
        try:
            client = self._client
            _ = (client.fine_tuning.jobs.checkpoints, client.files, client.chat.completions, client.default_headers)
            from openai.types.fine_tuning import FineTuningJob

            FineTuningJob.model_rebuild()
        except Exception:  # noqa: BLE001 - warming is an optimisation; first use does the same work
            log.debug("could not warm the OpenAI SDK", exc_info=True)

    def owns_id(self, job_id: str) -> bool:
        return bool(JOB_ID.fullmatch(job_id))

    # -- reads ---------------------------------------------------------------------------------------

    def retrieve(self, job_id: str) -> Job:
        return self._job(self._read(lambda: self._client.fine_tuning.jobs.retrieve(job_id)))

    def list_jobs(self, limit: int | None = 10, *, after: str | None = None) -> tuple[list[Job], bool]:
        """One page of the organization's jobs, newest first, and whether there are more."""
        kwargs: dict[str, Any] = {"limit": min(limit or self.page_size, self.page_size)}
        if after:
            kwargs["after"] = after
        # The page's JSON read as it is: building the SDK's models for a hundred jobs cost 70 ms a page, the most
        # of a poll cycle's time (and of the interpreter that answers Slack meanwhile).
        raw = self._read(lambda: self._client.fine_tuning.jobs.with_raw_response.list(**kwargs))
        page = json.loads(raw.http_response.text)
        return [job_from_json(item, self.name, PRICING) for item in page["data"]], bool(page.get("has_more"))

    def events(self, job_id: str, limit: int = 5) -> list[JobEvent]:
        page = self._read(lambda: self._client.fine_tuning.jobs.list_events(job_id, limit=limit))
        return [
            JobEvent(e.created_at, e.level, e.message, getattr(e, "type", None), dict(getattr(e, "data", None) or {}))
            for e in page.data
        ]

    def metrics(self, job_id: str) -> list[MetricPoint]:
        """The training curve, from the job's `metrics` events (OpenAI keeps them with the others), oldest first."""
        points: dict[int, MetricPoint] = {}
        after = None
        for _ in range(MAX_EVENT_PAGES):
            kwargs: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
            page = self._read(lambda kw=kwargs: self._client.fine_tuning.jobs.list_events(job_id, **kw))
            for event in page.data:
                data = dict(getattr(event, "data", None) or {})
                if getattr(event, "type", None) == "metrics" and whole(data.get("step")) is not None:
                    points[data["step"]] = MetricPoint(data["step"], number(data.get("train_loss")),
                                                       number(data.get("valid_loss", data.get("full_valid_loss"))))
            if not page.has_more or not page.data:
                break
            after = page.data[-1].id
        return [points[step] for step in sorted(points)]

    def latest_metric(self, job_id: str) -> MetricPoint | None:
        """The newest `metrics` event among the job's latest events (OpenAI lists them newest first)."""
        page = self._read(lambda: self._client.fine_tuning.jobs.list_events(job_id, limit=LATEST_EVENTS))
        for event in page.data:
            data = dict(getattr(event, "data", None) or {})
            if getattr(event, "type", None) == "metrics" and whole(data.get("step")) is not None:
                total = data.get("total_steps")
                return MetricPoint(data["step"], number(data.get("train_loss")),
                                   number(data.get("valid_loss", data.get("full_valid_loss"))),
                                   total if isinstance(total, int) else None)
        return None

    def upload_file(self, filename: str, content: bytes | BinaryIO) -> str:
        """Upload a training file; returns its id. Not retried: a lost answer leaves at worst an unused file."""
        try:
            return self._client.files.create(file=(filename, content), purpose="fine-tune").id
        except _sdk().OpenAIError as exc:
            raise self._translate(exc) from None

    def estimate_price(self, *, training_file: str, model: str, n_epochs: int | None,
                       validation_file: str | None = None) -> float | None:
        """OpenAI offers no estimate of its own: the bot's price table is the estimate."""
        return None

    def chat(self, model: str, messages: list[dict], *, max_tokens: int) -> ChatAnswer:
        """One chat completion; never retried (it is billed). With AzureOpenAI, `model` is a deployment's name."""
        try:
            return chat_answer(self._client.chat.completions.create(model=model, messages=messages,
                                                                    max_completion_tokens=max_tokens))
        except _sdk().OpenAIError as exc:
            raise self._translate(exc) from None

    def read_file(self, file_id: str, consume: Callable[[Iterator[bytes]], T], *, max_bytes: int) -> T:
        try:
            with self._client.files.with_streaming_response.content(file_id) as response:
                return consume(lines_capped(response.iter_bytes(), max_bytes))
        except _sdk().OpenAIError as exc:
            raise self._translate(exc) from None

    def _read(self, call: Callable[[], Any]) -> Any:
        return read_with_retries(call, sdk_error=_sdk().OpenAIError, translate=self._translate,
                                 provider=self.name, attempts=self._read_attempts, sleep=self._sleep)

    # -- actions -------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        return self._act(lambda: self._client.fine_tuning.jobs.cancel(job_id))

    def pause(self, job_id: str) -> Job:
        return self._act(lambda: self._client.fine_tuning.jobs.pause(job_id))

    def resume(self, job_id: str) -> Job:
        return self._act(lambda: self._client.fine_tuning.jobs.resume(job_id))

    def _act(self, call: Callable[[], Any]) -> Job:
        try:
            return self._job(call())
        except _sdk().OpenAIError as exc:
            raise self._translate(exc) from None

    def create_job(self, *, request_id: str, training_file: str, model: str, suffix: str | None = None,
                   n_epochs: int | None = None, validation_file: str | None = None, seed: int | None = None,
                   metadata: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> Job:
        """Start a job once, whatever the network does: before any retry, the job a lost attempt may have created
        is looked for by our request id in its metadata (or, where the provider keeps none, by what it was made of).
        """
        hyper = {"n_epochs": n_epochs} if n_epochs is not None else {}
        kwargs: dict[str, Any] = {
            "training_file": training_file,
            "model": model,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        }
        for name, value in (("suffix", suffix), ("validation_file", validation_file), ("seed", seed)):
            if value is not None:
                kwargs[name] = value
        # The provider's limits: 16 keys of at most 64 characters, values of at most 512.
        tagged = {str(k)[:64]: str(v)[:512] for k, v in list((metadata or {}).items())[:15]}
        tagged[REQUEST_KEY] = request_id

        def create() -> Job:
            while True:
                if self.metadata_supported:
                    kwargs["metadata"] = tagged
                else:
                    kwargs.pop("metadata", None)
                try:
                    return self._job(self._client.fine_tuning.jobs.create(**kwargs))
                except _sdk().OpenAIError as exc:
                    error = self._translate(exc, creating=True)
                if error.status == 400 and "metadata" in kwargs and "metadata" in error.message.lower():
                    log.info("provider does not accept job metadata; starting jobs without it from now on")
                    self.metadata_supported = False
                    continue
                raise error

        def find(since: float) -> Job | None:
            return self.find_started(request_id, training_file=training_file, model=model, suffix=suffix,
                                     since=since)

        return start_once(create, find, attempts=self._create_attempts, timeout=self._timeout, sleep=self._sleep,
                          clock=self._clock, provider=self.name)

    def find_started(self, request_id: str, *, training_file: str, model: str, suffix: str | None,
                     since: float) -> Job | None:
        """The job a start with `request_id` created, if any: by our tag in its metadata or, where the provider
        keeps no metadata, by training file, model and suffix created since the start began."""
        try:
            if self.metadata_supported:
                page = self._client.fine_tuning.jobs.list(limit=5, metadata={REQUEST_KEY: request_id})
                # Check the tag ourselves: a provider that ignores the filter returns everyone's jobs.
                return next((self._job(j) for j in page.data
                             if (j.metadata or {}).get(REQUEST_KEY) == request_id), None)
            page = self._client.fine_tuning.jobs.list(limit=20)
        except _sdk().OpenAIError as exc:
            raise self._translate(exc) from None
        for raw in page.data:
            job = self._job(raw)
            if made_by_this_start(job, training_file=training_file, model=model, suffix=suffix, since=since):
                return job
        return None

    # -- webhooks ------------------------------------------------------------------------------------

    def unwrap_webhook(self, payload: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify a webhook's signature (Standard Webhooks, 5-minute tolerance) and read what it says."""
        try:
            event = self._client.webhooks.unwrap(payload, dict(headers))
        except (_sdk().InvalidWebhookSignatureError, ValueError, KeyError) as exc:
            raise WebhookRejected(str(exc).split("\n")[0]) from None
        data = getattr(event, "data", None)
        return WebhookEvent(id=headers.get("webhook-id", getattr(event, "id", "")), type=getattr(event, "type", ""),
                            job_id=getattr(data, "id", None))

    # -- errors --------------------------------------------------------------------------------------

    def _translate(self, exc: Exception, *, creating: bool = False) -> ProviderError:
        if isinstance(exc, _sdk().APITimeoutError):
            return ProviderError("The provider did not answer in time.", retryable=True, ambiguous=True)
        if isinstance(exc, _sdk().APIConnectionError):
            return ProviderError("Could not reach the provider.", retryable=True, ambiguous=True)
        if isinstance(exc, _sdk().APIStatusError):
            return refusal(self.name, exc.status_code, exc.body, exc.response.headers, redact=self._redact,
                           creating=creating, new_jobs_end=self.new_jobs_end, now=self._clock())
        return ProviderError(self._redact(str(exc)) or type(exc).__name__)

    def _job(self, raw: Any) -> Job:
        return job_of(raw, self.name, PRICING)
