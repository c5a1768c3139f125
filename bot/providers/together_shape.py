"""The Together-shaped provider adapter: the one module that imports `together`, returning our own dataclasses.

Together's fine-tuning API differs from OpenAI's in ways the bot must not notice elsewhere: its own status words
(`completed`, `error`, `cancel_requested`…), ISO timestamps, the model to call in `model_output_name`, a failure's
reason only in the job's `job_error` event, one unpaged list of every job, and no pause, resume, metadata or
webhooks. Retries are ours, as for OpenAI: the SDK's are off, and a start is made once (`start_once`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, BinaryIO

from bot.providers.calls import (
    T,
    answers_in_provider_errors,
    chat_answer,
    lines_capped,
    loss_value,
    made_by_this_start,
    read_with_retries,
    refusal,
    start_once,
    tls_context,
    unix_seconds,
)
from bot.providers.shape import (
    CHAT,
    CHAT_TOOLS,
    CLOSED_LARGE,
    CLOSED_SMALL,
    COMPLETION,
    PREFERENCE,
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
    import together

    from bot.config import Settings  # (only its type: the settings module reads the registry, not the reverse)

log = logging.getLogger(__name__)


def _sdk():
    """The `together` SDK, imported the first time a Together provider is configured or called: a bot that does not
    use Together never loads it (about 25 MB)."""
    with leaving_out():  # (never while another library's extras are left out)
        import together

    return together

DEFAULT_BASE_URL = "https://api.together.ai"  # the SDK's and the published spec's host root
# Together's words for a job's outcome; `user_error` is what older jobs say for a failure. Every other word
# (pending, queued, running, compressing, uploading, cancel_requested, one added later) is still going.
STATES = {"completed": "succeeded", "error": "failed", "user_error": "failed", "cancelled": "cancelled"}
JOB_ID = re.compile(r"ft-[A-Za-z0-9-]+")
LAST_STEPS_KEPT = 10_000  # jobs whose newest step a process remembers
# The keys of a metrics row (GET /v1/fine-tunes/{id}/metrics) in Together's OpenAPI spec.
METRIC_STEP, METRIC_TRAIN_LOSS, METRIC_EVAL_LOSS = "train/global_step", "train/loss", "eval/loss"
START_OPTIONS = (
    StartOption("model", "the base model, such as meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"),
    StartOption("epochs", "passes over the training file (Together's n_epochs)"),
    StartOption("suffix", "added to the fine-tuned model's name, at most 40 characters"),
    StartOption("validation", "a validation file id"),
    StartOption("seed", "for a reproducible run"),
    StartOption("lora", "true for LoRA adapters, false for full fine-tuning"),
    StartOption("learning_rate", "such as 0.00001"),
)
# The extra words a Together start takes, and the SDK's names for them.
EXTRA_ARGUMENTS = {"lora": "lora", "learning_rate": "learning_rate"}


_OPEN_MODEL = frozenset({CHAT, CHAT_TOOLS, PREFERENCE, COMPLETION})
# Prices in US dollars per million training tokens: together.ai/pricing, "Fine-tuning", supervised LoRA, by model
# size, as last read in 2025-06. Together's own estimate (its estimate-price endpoint) is shown beside it once a file
# is uploaded. Its tokenizers are not OpenAI's: counts are made with o200k_base and marked approximate.
PRICING = Pricing(
    source="Together AI's pricing page, supervised LoRA fine-tuning by model size, as read in 2025-06",
    models=tuple(ModelFacts(name, "together", "o200k_base", 8_192, price, _OPEN_MODEL, own_tokenizer=False)
                 for name, price in (("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", 0.48),
                                     ("meta-llama/Meta-Llama-3.1-70B-Instruct-Reference", 2.90),
                                     ("meta-llama/Llama-3.2-3B-Instruct", 0.48),
                                     ("Qwen/Qwen2.5-7B-Instruct", 0.48),
                                     ("mistralai/Mistral-7B-Instruct-v0.2", 0.48))),
    default_epochs=lambda examples: 1,
)


DEFAULT_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"  # what `start` uses here when not told
_L8, _L70, _L3 = ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference",
                  "meta-llama/Llama-3.2-3B-Instruct")
_FIREWORKS = "accounts/fireworks/models/"
# The nearest tunable base at Together for a base model elsewhere: by size, and by family where Together tunes it.
MOVES = Moves(
    nearest={
        "gpt-4o-mini-2024-07-18": Nearest(_L8, CLOSED_SMALL), "gpt-4.1-mini-2025-04-14": Nearest(_L8, CLOSED_SMALL),
        "gpt-3.5-turbo-0125": Nearest(_L8, CLOSED_SMALL),
        "gpt-4.1-nano-2025-04-14": Nearest(_L3, "OpenAI's smallest tunable model maps to the 3B instruct model"),
        "gpt-4o-2024-08-06": Nearest(_L70, CLOSED_LARGE), "gpt-4.1-2025-04-14": Nearest(_L70, CLOSED_LARGE),
        _FIREWORKS + "llama-v3p1-8b-instruct": Nearest(_L8, "the same model: Llama 3.1 8B Instruct"),
        _FIREWORKS + "llama-v3p1-70b-instruct": Nearest(_L70, "the same model: Llama 3.1 70B Instruct"),
        _FIREWORKS + "llama-v3p2-3b-instruct": Nearest(_L3, "the same model: Llama 3.2 3B Instruct"),
        _FIREWORKS + "qwen2p5-7b-instruct": Nearest("Qwen/Qwen2.5-7B-Instruct", "the same model: Qwen2.5 7B Instruct"),
        _FIREWORKS + "qwen2p5-72b-instruct": Nearest(_L70, "no Qwen2.5 72B is tunable here: the nearest size, 70B"),
    },
    source="the providers' model pages (sizes and families), as read 2026-11",
    # Together's conversational format: OpenAI's chat messages, without OpenAI's per-message `weight` and refusals.
    message_keys=frozenset({"role", "content", "name", "tool_calls", "tool_call_id"}),
    example_keys=frozenset({"messages", "tools"}),
)


def _sandbox(pace: float | None):
    from bot.sandbox.together import TogetherSandbox

    return TogetherSandbox(pace=pace).start()


SHAPE = ProviderShape(
    name="together",
    configured=lambda settings, **kw: configured(settings, **kw),
    present=lambda settings: ["together"] if settings.value("TOGETHER_API_KEY") else [],
    labels={"together": "Together AI"},
    settings=(
        EnvSetting("TOGETHER_API_KEY", "your Together AI API key (api.together.ai, Settings, API keys)", secret=True,
                   required=True),
        EnvSetting("TOGETHER_BASE_URL", "the host root of Together's API, for a proxy"),
        EnvSetting("TOGETHER_DEFAULT_MODEL", "the base model `start` uses at Together when none is given"),
    ),
    status_emoji={"pending": ":hourglass_flowing_sand:", "queued": ":hourglass_flowing_sand:", "running": ":gear:",
                  "compressing": ":package:", "uploading": ":outbox_tray:", "cancel_requested": ":no_entry_sign:",
                  "completed": ":white_check_mark:", "error": ":x:", "user_error": ":x:",
                  "cancelled": ":no_entry_sign:"},
    pricing=PRICING,
    start_options=(Value("lora", "bool", placeholder="true|false"),
                   Value("learning_rate", "number", 0, 1, placeholder="rate")),
    sandbox=SandboxSpec(start=_sandbox, label="Together AI's",
                        settings=lambda stand_in: {"TOGETHER_BASE_URL": stand_in.url,
                                                   "TOGETHER_API_KEY": "sandbox-together-key"}),
    advice="TOGETHER_API_KEY for Together AI",
    moves=MOVES,
    sdk_loggers=("together._base_client",),
    own_keys={"together": ("TOGETHER_API_KEY",)},
)


def configured(settings: Settings, *, clock: Callable[[], float] = time.time) -> list[TogetherProvider]:
    """Together AI, when its key is set."""
    if not settings.value("TOGETHER_API_KEY"):
        return []
    client = _sdk().Together(api_key=settings.value("TOGETHER_API_KEY"),
                             base_url=settings.value("TOGETHER_BASE_URL") or DEFAULT_BASE_URL,
                             timeout=settings.provider_timeout_seconds, max_retries=0,
                             http_client=_sdk().DefaultHttpxClient(verify=tls_context("httpx")))
    return [TogetherProvider(client, secrets=settings.secrets(), clock=clock,
                             default_model=settings.value("TOGETHER_DEFAULT_MODEL") or DEFAULT_MODEL)]


@answers_in_provider_errors
class TogetherProvider:
    """Fine-tuning jobs at Together AI, through the official SDK."""

    name = "together"
    max_suffix = 40
    capabilities = Capabilities(pause_resume=False, metadata=False, events=True, metrics=True, webhooks=False,
                                price_estimate=True)
    start_options = START_OPTIONS
    page_size = None  # one request lists every job
    new_jobs_end = None
    needs_deployment = False
    training_statuses = frozenset({"running"})  # the status words during which metrics come
    retirements = ()  # no announced end of jobs or models
    webhook_route = None  # Together sends no webhooks
    webhooks_verifiable = False

    def __init__(self, client: together.Together, *, secrets: Iterable[str] = (), read_attempts: int = 2,
                 create_attempts: int = 3, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, default_model: str | None = None) -> None:
        self._client = client
        self._redact = Scrubber(secrets)
        self._read_attempts = read_attempts
        self._create_attempts = create_attempts
        self._sleep = sleep
        self._clock = clock
        self.default_model = default_model
        self._timeout = float(client.timeout) if isinstance(client.timeout, (int, float)) else 5.0
        self._last_step: dict[str, int] = {}  # job -> the newest step read, so the next read asks only from there

    def close(self) -> None:
        self._client.close()

    def warm(self) -> None:
        # Measured: the first touch of `fine_tuning` imports about 170 ms of the SDK's modules.
        try:
            client = self._client
            _ = (client.fine_tuning, client.files, client.chat.completions)
            from together.types.finetune_response import FinetuneResponse

            FinetuneResponse.model_rebuild()
        except Exception:  # noqa: BLE001 - warming is an optimisation; first use does the same work
            log.debug("could not warm the Together SDK", exc_info=True)

    def owns_id(self, job_id: str) -> bool:
        return bool(JOB_ID.fullmatch(job_id))

    # -- reads ---------------------------------------------------------------------------------------

    def retrieve(self, job_id: str) -> Job:
        raw = self._read(lambda: self._client.fine_tuning.retrieve(job_id))
        job = self._job(raw)
        if job.state == "failed" and not job.error_message:
            # Together keeps a failure's reason in the job's events, not on the job.
            reason = _failure_reason(getattr(raw, "events", None) or []) or _failure_reason(self._raw_events(job_id))
            job = _with_error(job, reason)
        return job

    def list_jobs(self, limit: int | None = 10, *, after: str | None = None) -> tuple[list[Job], bool]:
        """Every job (Together lists them all in one answer, in no set order), newest first, cut to `limit`."""
        # Read from the answer's JSON as it is: building the SDK's models for every job the account has is most of a
        # cycle's CPU (as it was for OpenAI's pages), and the interpreter is shared with the acks.
        raw = self._read(lambda: self._client.fine_tuning.with_raw_response.list())
        items = json.loads(raw.http_response.text)["data"]
        jobs = sorted((self._job(SimpleNamespace(**item)) for item in items), key=lambda j: (j.created_at or 0, j.id),
                      reverse=True)
        if after:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        if limit is None:
            return jobs, False
        return jobs[:limit], len(jobs) > limit

    def events(self, job_id: str, limit: int = 5) -> list[JobEvent]:
        """The latest events, newest first, as OpenAI's are."""
        events = [_event(e) for e in self._raw_events(job_id)]
        events.sort(key=lambda e: e.created_at, reverse=True)
        return events[:limit]

    def metrics(self, job_id: str, *, since: int | None = None) -> list[MetricPoint]:
        """The training curve from Together's metrics endpoint, oldest first (from step `since`, when given)."""
        kwargs = {"global_step_from": since} if since is not None else {}
        rows = self._read(lambda: self._client.fine_tuning.list_metrics(job_id, **kwargs)).metrics or []
        points: dict[int, MetricPoint] = {}
        for row in rows:
            # Rows keyed as Together's published spec keys them (wandb-style names).
            step = whole(row.get(METRIC_STEP))  # (10**30, NaN or infinity: no step the bot can keep, skipped)
            if step is not None:
                points[step] = MetricPoint(step, _loss(row, METRIC_TRAIN_LOSS), _loss(row, METRIC_EVAL_LOSS))
        return [points[step] for step in sorted(points)]

    def latest_metric(self, job_id: str) -> MetricPoint | None:
        """The newest row of Together's metrics endpoint: only the rows from the last step this process saw (its
        `global_step_from`), not the whole curve again (100,000 points, read every second, were 218 MB a minute)."""
        points = self.metrics(job_id, since=self._last_step.get(job_id))
        if not points:
            return None
        if len(self._last_step) >= LAST_STEPS_KEPT:
            self._last_step.clear()  # (bounded: a process following more jobs reads each curve whole once more)
        self._last_step[job_id] = points[-1].step
        return points[-1]

    def upload_file(self, filename: str, content: bytes | BinaryIO) -> str:
        """Upload a training file through the SDK's own flow (a form, a redirect, a PUT, then preprocessing);
        returns its id. The SDK reads from disk, so the bytes pass through a private temporary file."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).stem)[:80] or "training"
        with tempfile.TemporaryDirectory(prefix="finetune-bot-upload-") as folder:
            path = Path(folder) / f"{safe}.jsonl"
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                with path.open("wb") as out:
                    shutil.copyfileobj(content, out)
            try:
                # check=False: the SDK would read the whole file again to check it; callers check before uploading.
                return self._client.files.upload(file=path, purpose="fine-tune", check=False).id
            except _sdk().TogetherError as exc:
                raise self._translate(exc) from None

    def estimate_price(self, *, training_file: str, model: str, n_epochs: int | None,
                       validation_file: str | None = None) -> float | None:
        """Together's own estimate for a job on an uploaded file, in dollars; None when it offers none for it."""
        kwargs: dict[str, Any] = {"training_file": training_file, "model": model, "n_epochs": n_epochs or 1}
        if validation_file:
            kwargs["validation_file"] = validation_file
        answer = self._read(lambda: self._client.fine_tuning.estimate_price(**kwargs))
        if not getattr(answer, "estimation_available", False):
            return None
        price = getattr(answer, "estimated_total_price", None)
        return float(price) if isinstance(price, (int, float)) else None

    def _raw_events(self, job_id: str) -> list[Any]:
        return list(self._read(lambda: self._client.fine_tuning.list_events(job_id)).data or [])

    def chat(self, model: str, messages: list[dict], *, max_tokens: int) -> ChatAnswer:
        """One chat completion through Together's OpenAI-compatible endpoint (the SDK's own client); not retried."""
        try:
            return chat_answer(self._client.chat.completions.create(model=model, messages=messages,
                                                                    max_tokens=max_tokens))
        except _sdk().TogetherError as exc:
            raise self._translate(exc) from None

    def read_file(self, file_id: str, consume: Callable[[Iterator[bytes]], T], *, max_bytes: int) -> T:
        try:
            with self._client.files.with_streaming_response.content(file_id) as response:
                return consume(lines_capped(response.iter_bytes(), max_bytes))
        except _sdk().TogetherError as exc:
            raise self._translate(exc) from None

    def _read(self, call: Callable[[], Any]) -> Any:
        return read_with_retries(call, sdk_error=_sdk().TogetherError, translate=self._translate,
                                 provider=self.name, attempts=self._read_attempts, sleep=self._sleep)

    # -- actions -------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        try:
            return self._job(self._client.fine_tuning.cancel(job_id))
        except _sdk().TogetherError as exc:
            raise self._translate(exc) from None

    def pause(self, job_id: str) -> Job:
        raise ProviderError("Together AI jobs cannot be paused.", code="unsupported")

    def resume(self, job_id: str) -> Job:
        raise ProviderError("Together AI jobs cannot be paused, so there is nothing to resume.", code="unsupported")

    def create_job(self, *, request_id: str, training_file: str, model: str, suffix: str | None = None,
                   n_epochs: int | None = None, validation_file: str | None = None, seed: int | None = None,
                   metadata: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> Job:
        """Start a job once. Together keeps no metadata, so a lost attempt's job is found by its training file,
        model and suffix among the jobs created since the start began."""
        # train_on_inputs="auto" is the SDK's own default for supervised jobs; saying so keeps it from warning.
        kwargs: dict[str, Any] = {"training_file": training_file, "model": model, "train_on_inputs": "auto"}
        for name, value in (("n_epochs", n_epochs), ("suffix", suffix), ("validation_file", validation_file),
                            ("random_seed", seed)):
            if value is not None:
                kwargs[name] = value
        for name, value in (extra or {}).items():
            kwargs[EXTRA_ARGUMENTS[name]] = value

        def create() -> Job:
            try:
                return self._job(self._client.fine_tuning.create(**kwargs))
            except ValueError as exc:  # the SDK checks the options against the model's limits before sending
                raise ProviderError(self._redact(str(exc).split("\n")[0])) from None
            except _sdk().TogetherError as exc:
                raise self._translate(exc, creating=True) from None

        def find(since: float) -> Job | None:
            return self.find_started(request_id, training_file=training_file, model=model, suffix=suffix,
                                     since=since)

        return start_once(create, find, attempts=self._create_attempts, timeout=self._timeout, sleep=self._sleep,
                          clock=self._clock, provider=self.name)

    def find_started(self, request_id: str, *, training_file: str, model: str, suffix: str | None,
                     since: float) -> Job | None:
        try:
            page = self._client.fine_tuning.list()
        except _sdk().TogetherError as exc:
            raise self._translate(exc) from None
        for raw in page.data:
            job = self._job(raw)
            if made_by_this_start(job, training_file=training_file, model=model, suffix=suffix, since=since):
                return job
        return None

    # -- webhooks ------------------------------------------------------------------------------------

    def unwrap_webhook(self, payload: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        raise WebhookRejected("Together AI sends no fine-tuning webhooks")

    # -- errors --------------------------------------------------------------------------------------

    def _translate(self, exc: Exception, *, creating: bool = False) -> ProviderError:
        if isinstance(exc, _sdk().APITimeoutError):
            return ProviderError("Together AI did not answer in time.", retryable=True,
                                 ambiguous=creating and _was_create(exc))
        if isinstance(exc, _sdk().APIConnectionError):
            return ProviderError("Could not reach Together AI.", retryable=True,
                                 ambiguous=creating and _was_create(exc))
        if isinstance(exc, _sdk().APIStatusError):
            # Together's client hands over the whole body, {"error": {...}}; OpenAI's only the inner object.
            return refusal(self.name, exc.status_code, exc.body, exc.response.headers, redact=self._redact,
                           creating=creating, new_jobs_end=self.new_jobs_end, now=self._clock())
        return ProviderError(self._redact(str(exc)) or type(exc).__name__)

    def _job(self, raw: Any) -> Job:
        status = str(getattr(raw, "status", None) or "unknown")
        state = state_of(status, STATES)
        extra = getattr(raw, "model_extra", None) or {}
        return Job(
            id=raw.id,
            provider=self.name,
            status=status,
            state=state,
            model=getattr(raw, "model", None) or "",
            # Together names the model from the start; it can be called only once the job has succeeded.
            fine_tuned_model=_output_name(raw) if state == "succeeded" else None,
            trained_tokens=getattr(raw, "token_count", None) or None,  # 0 until training has counted them
            training_file=getattr(raw, "training_file", None),
            validation_file=getattr(raw, "validation_file", None) or None,
            suffix=getattr(raw, "suffix", None) or extra.get("suffix"),
            created_at=unix_seconds(getattr(raw, "created_at", None)),
            finished_at=unix_seconds(getattr(raw, "updated_at", None)) if state != "going" else None,
            cost=_billed(getattr(raw, "total_price", None)),
            n_epochs=whole_epochs(getattr(raw, "n_epochs", None)),
        )


def _billed(total_price: Any) -> float | None:
    """Together's `total_price` in US dollars. The SDK's types declare it an integer; its own CLI divides it by
    10**9 (`finetune_price_to_dollars`, NANODOLLAR): nano-dollars. 0 until the run is billed: unknown, not free."""
    return total_price / 1e9 if isinstance(total_price, (int, float)) and total_price > 0 else None


def _loss(row: Mapping[str, Any], *names: str) -> float | None:
    values = [loss_value(row.get(name)) for name in names]
    return next((value for value in values if value is not None), None)


def _output_name(raw: Any) -> str | None:
    """The model to call: `model_output_name` on the wire, which the SDK's types name two ways."""
    return (getattr(raw, "x_model_output_name", None) or getattr(raw, "model_output_name", None)
            or getattr(raw, "output_name", None))


def _was_create(exc: Exception) -> bool:
    """Whether the request that failed was the create itself (the SDK first reads the model's limits and a price)."""
    request = getattr(exc, "request", None)
    return request is None or (request.method == "POST" and request.url.path.rstrip("/").endswith("/fine-tunes"))


def _event(raw: Any) -> JobEvent:
    data = {name: getattr(raw, name, None) for name in ("step", "total_steps", "token_count", "wandb_url")}
    return JobEvent(created_at=unix_seconds(getattr(raw, "created_at", None)) or 0,
                    level=str(getattr(raw, "level", None) or "info"), message=str(getattr(raw, "message", "") or ""),
                    type=getattr(raw, "type", None), data={k: v for k, v in data.items() if v is not None})


def _failure_reason(events: Iterable[Any]) -> str | None:
    reasons = [e for e in events if getattr(e, "type", None) == "job_error" and getattr(e, "message", None)]
    return str(reasons[-1].message) if reasons else None


def _with_error(job: Job, reason: str | None) -> Job:
    return replace(job, error_message=reason) if reason else job
