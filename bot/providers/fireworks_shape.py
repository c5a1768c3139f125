"""The Fireworks-shaped provider adapter: the one module that imports `fireworks` (the `fireworks-ai` SDK).

Fireworks differs from the other shapes in ways the bot must not notice elsewhere: training data is a *dataset*
(created, then uploaded to, ready when its state is READY), not a file; every resource lives under
`accounts/{account_id}` and is named by its full resource name, whose last segment is its id; job states are
`JOB_STATE_*` words; a failure's reason is the job's `status.message`; the model to call is the job's
`outputModel`; listings are cursor pages (up to 200, ordered by name unless asked otherwise); and there are no events,
loss metrics, pause or webhooks. A start is made once by naming the job ourselves: its id comes from the start's
request id, so an attempt whose answer was lost is found by that id (or refused as already there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from bot.providers import calls
from bot.providers.calls import T, answers_in_provider_errors, chat_answer, lines_capped, read_with_retries, refusal
from bot.providers.fireworks_wire import Wire, field, job_id_for, last_segment, seconds, slug, usd
from bot.providers.shape import (
    CHAT,
    CHAT_TOOLS,
    CLOSED_LARGE,
    CLOSED_SMALL,
    EnvSetting,
    ModelFacts,
    Moves,
    Nearest,
    Pricing,
    ProviderShape,
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
    state_of,
    whole,
    whole_epochs,
)
from bot.scrub import Scrubber
from bot.values import Value
from storage.optional_imports import leaving_out

if TYPE_CHECKING:
    import fireworks

    from bot.config import Settings  # (only its type: the settings module reads the registry, not the reverse)

log = logging.getLogger(__name__)


def _sdk():
    """The `fireworks` SDK, imported the first time a Fireworks provider is configured or called."""
    with leaving_out():  # (never while another library's extras are left out)
        import fireworks

    return fireworks


# The API's state words, shortened for people: JOB_STATE_WRITING_RESULTS -> "writing results".
PREFIX = "JOB_STATE_"
# The outcomes. EARLY_STOPPED is a success: early stopping ends training when the evaluation loss stops improving,
# and the job still writes its output model (the best checkpoint), which is what the user calls. EXPIRED (the job
# waited too long for capacity, or its results were never written) produced nothing: a failure. Every other word
# (creating, validating, pending, running, writing results, re queueing, creating input dataset, idle, paused,
# cancelling, deleting, unspecified, one added later) is still going.
STATES = {"completed": "succeeded", "early stopped": "succeeded", "failed": "failed", "expired": "failed",
          "cancelled": "cancelled"}
# A resource id: lowercase letters, digits and hyphens, at most 63 characters (the last segment of its name).
RESOURCE_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
JOB_NAME = re.compile(r"accounts/[^/]+/supervisedFineTuningJobs/([a-z0-9-]{1,63})")
DATASET_NAME = re.compile(r"accounts/([^/]+)/datasets/([a-z0-9-]{1,63})")
PAGE_SIZE = 200  # the most a listing page holds
READY_WAIT_SECONDS = 20.0  # how long an upload waits for its dataset to be READY before saying it is still processing
MAX_SUFFIX = 40  # with the job's id, the output model's id stays within 63 characters
LORA_RANKS = (4, 8, 16, 32, 64)
START_OPTIONS = (
    StartOption("model", "the base model, such as accounts/fireworks/models/llama-v3p1-8b-instruct"),
    StartOption("epochs", "passes over the dataset, 1 to 20"),
    StartOption("suffix", "the output model's name and the job's display name, at most 40 characters"),
    StartOption("validation", "an evaluation dataset id"),
    StartOption("learning_rate", "such as 0.0001 (above 0, below 1)"),
    StartOption("lora_rank", "the LoRA rank: " + ", ".join(map(str, LORA_RANKS))),
)
# The extra words a Fireworks start takes, and the SDK's names for them.
EXTRA_ARGUMENTS = {"learning_rate": "learning_rate", "lora_rank": "lora_rank"}
MAX_EPOCHS = 20

_TUNABLE = frozenset({CHAT, CHAT_TOOLS})
# US dollars per million training tokens: fireworks.ai/pricing, "Fine-tuning" (supervised, LoRA), by base model size
# (up to 16B parameters $0.50, 16.1B to 80B $3.00), as last read in 2025-06. Fireworks' tokenizers are not OpenAI's:
# counts are made with o200k_base and marked approximate.
FIREWORKS_MODELS = "accounts/fireworks/models/"
PRICING = Pricing(
    source="Fireworks AI's pricing page, supervised fine-tuning by base model size, as read in 2025-06",
    models=tuple(ModelFacts(FIREWORKS_MODELS + name, "fireworks", "o200k_base", context, price, _TUNABLE,
                            own_tokenizer=False)
                 for name, context, price in (("llama-v3p1-8b-instruct", 131_072, 0.50),
                                              ("llama-v3p1-70b-instruct", 131_072, 3.00),
                                              ("llama-v3p2-3b-instruct", 131_072, 0.50),
                                              ("qwen2p5-7b-instruct", 32_768, 0.50),
                                              ("qwen2p5-72b-instruct", 32_768, 3.00))),
    default_epochs=lambda examples: 1,
    aliases={name: FIREWORKS_MODELS + name for name in ("llama-v3p1-8b-instruct", "llama-v3p1-70b-instruct",
                                                        "llama-v3p2-3b-instruct", "qwen2p5-7b-instruct",
                                                        "qwen2p5-72b-instruct")},
)
DEFAULT_MODEL = FIREWORKS_MODELS + "llama-v3p1-8b-instruct"


_F8, _F70, _F3 = (FIREWORKS_MODELS + "llama-v3p1-8b-instruct", FIREWORKS_MODELS + "llama-v3p1-70b-instruct",
                  FIREWORKS_MODELS + "llama-v3p2-3b-instruct")
# The nearest tunable base at Fireworks for a base model elsewhere: by size, and by family where Fireworks tunes it.
MOVES = Moves(
    nearest={
        "gpt-4o-mini-2024-07-18": Nearest(_F8, CLOSED_SMALL), "gpt-4.1-mini-2025-04-14": Nearest(_F8, CLOSED_SMALL),
        "gpt-3.5-turbo-0125": Nearest(_F8, CLOSED_SMALL),
        "gpt-4.1-nano-2025-04-14": Nearest(_F3, "OpenAI's smallest tunable model maps to the 3B instruct model"),
        "gpt-4o-2024-08-06": Nearest(_F70, CLOSED_LARGE), "gpt-4.1-2025-04-14": Nearest(_F70, CLOSED_LARGE),
        "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference": Nearest(_F8, "the same model: Llama 3.1 8B Instruct"),
        "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference": Nearest(_F70, "the same model: Llama 3.1 70B Instruct"),
        "meta-llama/Llama-3.2-3B-Instruct": Nearest(_F3, "the same model: Llama 3.2 3B Instruct"),
        "Qwen/Qwen2.5-7B-Instruct": Nearest(FIREWORKS_MODELS + "qwen2p5-7b-instruct",
                                            "the same model: Qwen2.5 7B Instruct"),
        "mistralai/Mistral-7B-Instruct-v0.2": Nearest(_F8, "no Mistral 7B is tunable here: the nearest size, 8B"),
    },
    source="the providers' model pages (sizes and families), as read 2026-11",
    # A CHAT dataset: OpenAI's chat messages, without OpenAI's per-message `weight` and refusals.
    message_keys=frozenset({"role", "content", "name", "tool_calls", "tool_call_id"}),
    example_keys=frozenset({"messages", "tools"}),
)


def _sandbox(pace: float | None):
    from bot.sandbox.fireworks import FireworksSandbox

    return FireworksSandbox(pace=pace).start()


SHAPE = ProviderShape(
    name="fireworks",
    configured=lambda settings, **kw: configured(settings, **kw),
    present=lambda settings: ["fireworks"] if settings.value("FIREWORKS_API_KEY") else [],
    labels={"fireworks": "Fireworks AI"},
    settings=(
        EnvSetting("FIREWORKS_API_KEY", "your Fireworks AI API key (fireworks.ai, Settings, API Keys)", secret=True,
                   required=True),
        EnvSetting("FIREWORKS_ACCOUNT_ID", "your Fireworks account id (the `accounts/<id>` in its dashboard's URLs)",
                   required=True),
        EnvSetting("FIREWORKS_BASE_URL", "the host root of Fireworks' API, for a proxy"),
        EnvSetting("FIREWORKS_DEFAULT_MODEL", "the base model `start` uses at Fireworks when none is given"),
    ),
    status_emoji={"creating": ":hourglass_flowing_sand:", "validating": ":mag:", "pending": ":hourglass_flowing_sand:",
                  "running": ":gear:", "writing results": ":outbox_tray:", "re queueing": ":repeat:",
                  "creating input dataset": ":hourglass_flowing_sand:", "idle": ":double_vertical_bar:",
                  "paused": ":double_vertical_bar:", "cancelling": ":no_entry_sign:", "cancelled": ":no_entry_sign:",
                  "completed": ":white_check_mark:", "early stopped": ":white_check_mark:", "failed": ":x:",
                  "expired": ":x:"},
    pricing=PRICING,
    start_options=(Value("lora_rank", "int", min(LORA_RANKS), max(LORA_RANKS), placeholder="rank"),
                   Value("learning_rate", "number", 0, 1, placeholder="rate")),
    sandbox=SandboxSpec(start=_sandbox, label="Fireworks AI's",
                        settings=lambda stand_in: {"FIREWORKS_BASE_URL": stand_in.url,
                                                   "FIREWORKS_API_KEY": "sandbox-fireworks-key",
                                                   "FIREWORKS_ACCOUNT_ID": stand_in.account}),
    owns_model=lambda model: bool(re.fullmatch(r"accounts/[^/]+/models/[a-z0-9-]+", model))
    and not model.startswith(FIREWORKS_MODELS),
    advice="FIREWORKS_API_KEY and FIREWORKS_ACCOUNT_ID for Fireworks AI",
    moves=MOVES,
    own_keys={"fireworks": ("FIREWORKS_API_KEY", "FIREWORKS_ACCOUNT_ID")},
)


def configured(settings: Settings, *, clock: Callable[[], float] = time.time) -> list[FireworksProvider]:
    """Fireworks AI, when its key and account are set."""
    key, account = settings.value("FIREWORKS_API_KEY"), settings.value("FIREWORKS_ACCOUNT_ID")
    if not key or not account:
        return []
    client = _sdk().Fireworks(api_key=key, account_id=account, base_url=settings.value("FIREWORKS_BASE_URL") or None,
                              timeout=settings.provider_timeout_seconds, max_retries=0,
                              http_client=_sdk().DefaultHttpxClient(verify=calls.tls_context("httpx")))
    return [FireworksProvider(client, account=account, secrets=settings.secrets(), clock=clock,
                              default_model=settings.value("FIREWORKS_DEFAULT_MODEL") or DEFAULT_MODEL)]


@answers_in_provider_errors
class FireworksProvider:
    """Supervised fine-tuning jobs at Fireworks AI, through the official SDK."""

    name = "fireworks"
    max_suffix = MAX_SUFFIX
    # No loss metrics through the API (so no charts); how far a run has come is its jobProgress (percent, epoch).
    capabilities = Capabilities(pause_resume=False, metadata=False, events=False, metrics=False, progress=True,
                                webhooks=False)
    start_options = START_OPTIONS
    page_size = PAGE_SIZE
    new_jobs_end = None
    needs_deployment = False
    training_statuses = frozenset({"running"})
    retirements = ()  # no announced end of jobs or models
    webhook_route = None  # Fireworks sends no fine-tuning webhooks
    webhooks_verifiable = False

    def __init__(self, client: fireworks.Fireworks, *, account: str, secrets: Iterable[str] = (),
                 read_attempts: int = 2, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, default_model: str | None = DEFAULT_MODEL) -> None:
        self._client = client
        self.account = account
        self._redact = Scrubber(secrets)
        self._read_attempts = read_attempts
        self._sleep = sleep
        self._clock = clock
        self.default_model = default_model
        self._timeout = float(client.timeout) if isinstance(client.timeout, (int, float)) else 5.0
        # The next page's token after a page that ended with a job: listings are cursor pages, the poller asks for
        # the page "after" the last job it saw.
        self._after: dict[str, str] = {}

    def close(self) -> None:
        self._client.close()

    def warm(self) -> None:
        try:
            client = self._client
            _ = (client.supervised_fine_tuning_jobs, client.datasets, client.chat.completions)
            from fireworks.types.supervised_fine_tuning_job import SupervisedFineTuningJob

            SupervisedFineTuningJob.model_rebuild()
        except Exception:  # noqa: BLE001 - warming is an optimisation; first use does the same work
            log.debug("could not warm the Fireworks SDK", exc_info=True)

    def owns_id(self, job_id: str) -> bool:
        return bool(RESOURCE_ID.fullmatch(job_id) or JOB_NAME.fullmatch(job_id))

    # -- reads ---------------------------------------------------------------------------------------

    def retrieve(self, job_id: str) -> Job:
        short = last_segment(job_id)
        return self._job(self._read(lambda: self._client.supervised_fine_tuning_jobs.get(short)))

    def list_jobs(self, limit: int | None = 10, *, after: str | None = None) -> tuple[list[Job], bool]:
        """The newest jobs first (Fireworks orders by name unless asked), a cursor page at a time."""
        size = min(PAGE_SIZE, limit or PAGE_SIZE)
        token = self._after.get(after) if after else None
        if after and token is None:
            return [], False  # a page this process did not list: the caller starts again from the newest
        kwargs: dict[str, Any] = {"page_size": size, "order_by": "createTime desc"}
        if token:
            kwargs["page_token"] = token
        # Read from the answer's JSON as it is: building the SDK's models for every job of a page is most of a
        # cycle's CPU, and the interpreter is shared with the acks.
        raw = self._read(lambda: self._client.supervised_fine_tuning_jobs.with_raw_response.list(**kwargs))
        body = json.loads(raw.http_response.text)
        jobs = [self._job(Wire(item)) for item in body.get("supervisedFineTuningJobs") or []]
        following = body.get("nextPageToken") or None
        if jobs and following:
            self._after[jobs[-1].id] = following
            if len(self._after) > 1000:
                self._after.pop(next(iter(self._after)))
        return jobs, bool(following)

    def events(self, job_id: str, limit: int = 5) -> list[JobEvent]:
        return []  # Fireworks keeps no event log for a job; its state and status say what there is

    def metrics(self, job_id: str) -> list[MetricPoint]:
        return []  # no loss metrics through the API

    def latest_metric(self, job_id: str) -> MetricPoint | None:
        """How far the run has come, from its jobProgress (the percent stands for the step: it only grows)."""
        raw = self._read(lambda: self._client.supervised_fine_tuning_jobs.get(last_segment(job_id)))
        progress = getattr(raw, "job_progress", None)
        percent = whole(getattr(progress, "percent", None), high=100)
        if not percent:
            return None
        return MetricPoint(percent, total_steps=100, percent=percent, epoch=whole(getattr(progress, "epoch", None)))

    def upload_file(self, filename: str, content: bytes | BinaryIO) -> str:
        """Create a dataset named after the file, upload the bytes, wait (briefly) until READY; returns its id."""
        stem = re.sub(r"[^a-z0-9-]+", "-", Path(filename).stem.lower()).strip("-")[:40] or "training"
        dataset_id = f"{stem}-{hashlib.sha256(str(self._clock()).encode() + stem.encode()).hexdigest()[:8]}"
        fw = _sdk()
        try:
            self._client.datasets.create(dataset_id=dataset_id, dataset={"display_name": Path(filename).name[:100],
                                                                         "format": "CHAT"})
            self._client.datasets.upload(dataset_id, file=(f"{stem}.jsonl", content))
        except fw.FireworksError as exc:
            raise self._translate(exc) from None
        deadline = self._clock() + READY_WAIT_SECONDS
        while True:
            state = getattr(self._read(lambda: self._client.datasets.get(dataset_id)), "state", None)
            if state == "READY" or self._clock() >= deadline:
                break
            self._sleep(0.5)
        if state != "READY":
            raise ProviderError(f"Fireworks AI is still processing dataset {dataset_id} (state {state}); start with "
                                "it in a moment.", code="dataset_not_ready", provider=self.name)
        return dataset_id

    def estimate_price(self, *, training_file: str, model: str, n_epochs: int | None,
                       validation_file: str | None = None) -> float | None:
        return None  # Fireworks has no estimate endpoint; a job carries its own estimatedCost once created

    def chat(self, model: str, messages: list[dict], *, max_tokens: int) -> ChatAnswer:
        """One chat completion (OpenAI-shaped, through the SDK); not retried."""
        try:
            return chat_answer(self._client.chat.completions.create(model=model, messages=messages,
                                                                    max_tokens=max_tokens))
        except _sdk().FireworksError as exc:
            raise self._translate(exc) from None

    def read_file(self, file_id: str, consume: Callable[[Iterator[bytes]], T], *, max_bytes: int) -> T:
        """A dataset's bytes, streamed from the signed address Fireworks gives for it."""
        import httpx  # the SDK's own HTTP library

        dataset_id = last_segment(file_id)
        answer = self._read(lambda: self._client.datasets.get_download_endpoint(dataset_id))
        urls = list((getattr(answer, "filename_to_signed_urls", None) or {}).values())
        if not urls:
            raise ProviderError(f"Fireworks AI has no file for dataset {dataset_id}.", status=404, provider=self.name)
        try:
            with httpx.stream("GET", urls[0], timeout=self._timeout, follow_redirects=False) as response:
                if response.status_code != 200:
                    raise ProviderError(f"Fireworks AI's download of dataset {dataset_id} answered HTTP "
                                        f"{response.status_code}.", status=response.status_code,
                                        retryable=response.status_code >= 500, provider=self.name)
                return consume(lines_capped(response.iter_bytes(), max_bytes))
        except httpx.HTTPError as exc:
            raise ProviderError(f"Could not download dataset {dataset_id} from Fireworks AI ({type(exc).__name__}).",
                                retryable=True, provider=self.name) from None

    def _read(self, call: Callable[[], Any]) -> Any:
        return read_with_retries(call, sdk_error=_sdk().FireworksError, translate=self._translate,
                                 provider=self.name, attempts=self._read_attempts, sleep=self._sleep)

    # -- actions -------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        short = last_segment(job_id)
        try:
            self._client.supervised_fine_tuning_jobs.cancel(short, body={})
        except _sdk().FireworksError as exc:
            raise self._translate(exc) from None
        return self.retrieve(short)  # the cancel's answer is empty: the job as it now is

    def pause(self, job_id: str) -> Job:
        raise ProviderError("Fireworks AI jobs cannot be paused from here.", code="unsupported")

    def resume(self, job_id: str) -> Job:
        raise ProviderError("Fireworks AI jobs cannot be paused from here, so there is nothing to resume.",
                            code="unsupported")

    def create_job(self, *, request_id: str, training_file: str, model: str, suffix: str | None = None,
                   n_epochs: int | None = None, validation_file: str | None = None, seed: int | None = None,
                   metadata: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> Job:
        """Start a job once: named from the start's request id, a lost create is found by name (or refused)."""
        problem = check_start(n_epochs=n_epochs, suffix=suffix, seed=seed, extra=extra or {})
        if problem:
            raise ProviderError(problem, code="invalid_option", provider=self.name, own=True)
        job_id = job_id_for(request_id)
        kwargs: dict[str, Any] = {"supervised_fine_tuning_job_id": job_id, "dataset": self._dataset(training_file),
                                  "base_model": self._model(model)}
        if n_epochs is not None:
            kwargs["epochs"] = n_epochs
        if suffix:
            kwargs["display_name"] = suffix
            kwargs["output_model"] = f"accounts/{self.account}/models/{slug(suffix)}-{job_id}"[:200]
        if validation_file:
            kwargs["evaluation_dataset"] = self._dataset(validation_file)
        for name, value in (extra or {}).items():
            kwargs[EXTRA_ARGUMENTS[name]] = value
        fw = _sdk()
        deadline = self._clock() + 3 * self._timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._job(self._client.supervised_fine_tuning_jobs.create(**kwargs))
            except fw.ConflictError:
                found = self.find_started(request_id, training_file=training_file, model=model, suffix=suffix,
                                          since=0)
                if found is not None:
                    return found  # an earlier attempt's job: the answer to it was lost
                raise
            except fw.FireworksError as exc:
                error = self._translate(exc, creating=True)
                if not error.retryable or attempt >= 3 or self._clock() >= deadline:
                    if error.ambiguous:
                        found = self._find_quietly(request_id)
                        if found is not None:
                            return found
                    raise error from None
                self._sleep(min(error.retry_after or 0.5 * attempt, 2.0))

    def find_started(self, request_id: str, *, training_file: str, model: str, suffix: str | None,
                     since: float) -> Job | None:
        try:
            return self.retrieve(job_id_for(request_id))
        except ProviderError as error:
            if error.not_found:
                return None
            raise

    def _find_quietly(self, request_id: str) -> Job | None:
        try:
            return self.find_started(request_id, training_file="", model="", suffix=None, since=0)
        except ProviderError:
            return None

    def _dataset(self, dataset: str) -> str:
        """A dataset's full name from its id (or the full name given)."""
        return dataset if DATASET_NAME.fullmatch(dataset) else f"accounts/{self.account}/datasets/{dataset}"

    @staticmethod
    def _model(model: str) -> str:
        return PRICING.aliases.get(model, model)

    # -- webhooks ------------------------------------------------------------------------------------

    def unwrap_webhook(self, payload: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        raise WebhookRejected("Fireworks AI sends no fine-tuning webhooks")

    # -- errors --------------------------------------------------------------------------------------

    def _translate(self, exc: Exception, *, creating: bool = False) -> ProviderError:
        fw = _sdk()
        if isinstance(exc, fw.APITimeoutError):
            return ProviderError("Fireworks AI did not answer in time.", retryable=True, ambiguous=creating)
        if isinstance(exc, fw.APIConnectionError):
            return ProviderError("Could not reach Fireworks AI.", retryable=True, ambiguous=creating)
        if isinstance(exc, fw.APIStatusError):
            # Fireworks' errors are Google-style: {"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}.
            body = exc.body if isinstance(exc.body, dict) else {}
            inner = body.get("error") if isinstance(body.get("error"), dict) else body
            words = {"message": inner.get("message"), "code": inner.get("status") or inner.get("code")}
            error = refusal(self.name, exc.status_code, {"error": words}, exc.response.headers, redact=self._redact,
                            creating=creating, new_jobs_end=None, now=self._clock())
            error.ambiguous = creating and exc.status_code >= 500
            return error
        return ProviderError(self._redact(str(exc)) or type(exc).__name__)

    def _job(self, raw: Any) -> Job:
        word = str(getattr(raw, "state", None) or "JOB_STATE_UNSPECIFIED")
        status = word.removeprefix(PREFIX).lower().replace("_", " ")
        state = state_of(status, STATES)
        reason = getattr(raw, "status", None)
        dataset = getattr(raw, "dataset", None)
        evaluation = getattr(raw, "evaluation_dataset", None)
        return Job(
            id=last_segment(getattr(raw, "name", None) or ""),
            provider=self.name, status=status, state=state,
            model=getattr(raw, "base_model", None) or "",
            fine_tuned_model=(getattr(raw, "output_model", None) or None) if state == "succeeded" else None,
            training_file=last_segment(dataset) if dataset else None,
            validation_file=last_segment(evaluation) if evaluation else None,
            suffix=getattr(raw, "display_name", None) or None,
            created_at=seconds(getattr(raw, "create_time", None)),
            finished_at=(seconds(getattr(raw, "completed_time", None)) or seconds(getattr(raw, "update_time", None))
                         if state != "going" else None),
            error_code=field(reason, "code") if state == "failed" else None,
            error_message=(field(reason, "message") or ("The job expired." if status == "expired" else None))
            if state == "failed" else None,
            provider_estimate=usd(getattr(raw, "estimated_cost", None)),
            n_epochs=whole_epochs(getattr(raw, "epochs", None)),
        )


def check_start(*, n_epochs: int | None, suffix: str | None, seed: int | None, extra: Mapping[str, Any]) -> str | None:
    """What is wrong with a start's options for Fireworks, in one sentence naming what it accepts; None if nothing."""
    if n_epochs is not None and not 1 <= n_epochs <= MAX_EPOCHS:
        return f"Fireworks AI takes epochs from 1 to {MAX_EPOCHS}."
    if suffix is not None and (len(suffix) > MAX_SUFFIX or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._-]*", suffix)):
        return (f"Fireworks AI names the output model after the suffix: at most {MAX_SUFFIX} characters, letters, "
                "digits, spaces, dots, hyphens and underscores, starting with a letter or digit.")
    if seed is not None:
        return "Fireworks AI takes no seed for a fine-tuning job."
    rank = extra.get("lora_rank")
    if rank is not None and rank not in LORA_RANKS:
        return "Fireworks AI takes a lora_rank of " + ", ".join(map(str, LORA_RANKS)) + "."
    rate = extra.get("learning_rate")
    if rate is not None and not 0 < rate < 1:
        return "Fireworks AI takes a learning_rate above 0 and below 1."
    return None
