"""Trying a fine-tuned model where the team already is: its answer beside its base model's, on a prompt or on
held-out examples.

Both models are asked at once, so a `try` takes about as long as the slower of the two; one failing shows its error
beside the other's answer. Calling a model costs money: `try` and `compare` obey the allow-lists as `start` does,
every answer is capped at `TRY_MAX_TOKENS`, and `compare` at 20 examples. Nothing the user typed is logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass

from bot.commands import Command, Problem
from bot.comparison import TrySide, format_comparison, format_try, format_two_fine_tunes
from bot.jobs import Caller, JobService
from bot.messages.answers import format_problem, format_provider_error, format_refusal
from bot.messages.blocks import Message
from bot.providers import registry
from bot.providers.types import FineTuningProvider, Job, ProviderError, Providers, ended, provider_label
from bot.slack import SlackFailure, SlackGateway
from bot.views import FORM_REFUSALS, try_modal_view, try_result_view
from storage import Store

log = logging.getLogger(__name__)

MAX_COMPARE = 20
MODEL_CALLS_AT_ONCE = 8
SHARE_REFUSALS = {
    "gone": "That answer is no longer kept (answers can be shared for a day); try the model again.",
    "not_yours": "Only the person who asked can share this answer.",
    "shared": "You already shared this answer in the channel.",
}


TRY_FORM = "try"
def form_id_of(view: Mapping) -> str:
    """The id a form of ours carries in its private_metadata ('' for anything else)."""
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return ""
    return str(meta.get("form") or "") if isinstance(meta, dict) else ""


class Refused(Exception):
    """A clear answer to give instead of asking any model."""


@dataclass(frozen=True)
class Target:
    provider: FineTuningProvider
    tuned: str  # the fine-tuned model (or, with AzureOpenAI, its deployment)
    base: str
    job: Job | None


class TryService:
    def __init__(self, providers: Providers, store: Store, jobs: JobService, slack: SlackGateway, *, max_tokens: int,
                 max_prompt_chars: int, max_file_bytes: int, clock: Callable[[], float] = time.perf_counter,
                 background: Executor | None = None, limit_per_minute: int = 20) -> None:
        self.limit_per_minute = limit_per_minute
        self.slack = slack
        self.providers = providers
        self.store = store
        self.jobs = jobs
        self.max_tokens = max_tokens
        self.max_prompt_chars = max_prompt_chars
        self.max_file_bytes = max_file_bytes
        self.clock = clock
        # The subcommands this service answers (the grammar's service="trying"), each with its method.
        self.answers: dict[str, Callable[..., Message]] = {"try": self.try_prompt, "compare": self.compare}
        # Model calls run on a pool of their own whose tasks never wait on anything: whatever waits for answers (a
        # command, a form, every example of a compare) runs elsewhere, so no task can wait on work queued behind it on
        # its own pool. Its size bounds how many model calls (each billed) are in flight at once.
        self._calls = ThreadPoolExecutor(max_workers=MODEL_CALLS_AT_ONCE, thread_name_prefix="finetune-model")
        # Answers to forms are worked out on the bot's command pool (or one of our own, for a service made alone).
        self._own_background = background is None
        self._background = background or ThreadPoolExecutor(max_workers=4, thread_name_prefix="finetune-try")

    def close(self) -> None:
        """End the model-call threads (and our own form pool): queued calls are dropped, running ones finish."""
        self._calls.shutdown(wait=False, cancel_futures=True)
        if self._own_background:
            self._background.shutdown(wait=False, cancel_futures=True)

    def run(self, command: Command, caller: Caller) -> Message:
        try:
            return self.answers[command.name](caller, **command.args)
        except Refused as why:
            return format_problem(Problem(str(why)))
        except ProviderError as error:
            what = command.args.get("model_or_job") or command.args.get("job_id")
            return format_provider_error(f"{command.spec.doing} {what}", error)

    # -- try -------------------------------------------------------------------------------------------

    def try_prompt(self, caller: Caller, model_or_job: str, prompt: str, provider: str | None = None,
                   deployment: str | None = None, system: str | None = None) -> Message:
        prompt = prompt.strip()
        if not prompt:
            raise Refused("Give a prompt after the model or job id: `/finetune try <model_or_job_id> <prompt…>`.")
        if len(prompt) > self.max_prompt_chars:
            raise Refused(f"That prompt is {len(prompt):,} characters; the most I send is {self.max_prompt_chars:,} "
                          "(TRY_MAX_PROMPT_CHARS).")
        target = self.resolve(model_or_job, provider, deployment)
        self._take(caller, 1)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        tuned, base = self.ask_both(target, messages)
        log.info("tried %s against %s at %s", target.tuned, target.base, target.provider.name)
        shown = format_try(prompt, tuned, base, provider=target.provider.name, system=system)
        share_id = self.store.forms.keep_answer(caller.user_id, caller.channel_id,
                                                {"text": shown.text, "blocks": shown.blocks})
        return format_try(prompt, tuned, base, provider=target.provider.name, system=system, share_id=share_id)

    def ask_both(self, target: Target, messages: list[dict]) -> tuple[TrySide, TrySide]:
        """Both models at once; each side is an answer or its error, with the time it took."""
        tuned, base = self._ask_later(target, messages)
        return tuned.result(), base.result()

    def _ask_later(self, target: Target, messages: list[dict]) -> tuple[Future, Future]:
        return (self._calls.submit(self._ask, target.provider, target.tuned, messages, "Fine-tuned"),
                self._calls.submit(self._ask, target.provider, target.base, messages, "Base"))

    def _ask(self, provider: FineTuningProvider, model: str, messages: list[dict], label: str) -> TrySide:
        started = self.clock()
        try:
            answer = provider.chat(model, messages, max_tokens=self.max_tokens)
        except ProviderError as error:
            return TrySide(label, model, None, error.message, self.clock() - started)
        return TrySide(label, model, answer, None, self.clock() - started)

    # -- from an announcement's Try it button: a form, then the answers in it ---------------------------

    def open_form(self, caller: Caller, job_id: str, provider: str | None, trigger_id: str) -> str | None:
        """Open the prompt form for a job's model; None when it opened, else why not."""
        try:
            target = self.resolve(job_id, provider, None, need_job=True)
        except (Refused, ProviderError) as why:
            return getattr(why, "message", None) or str(why)
        # Who opens it and where is kept here: a submission is judged by this record, not by what it carries.
        form_id = self.store.forms.record_form(TRY_FORM, user_id=caller.user_id, team_id=caller.team_id,
                                               channel_id=caller.channel_id, provider=target.provider.name,
                                               job_id=job_id)
        try:
            self.slack.open_view(trigger_id, try_modal_view(model=target.tuned, metadata=json.dumps({"form": form_id}),
                                                            max_prompt_chars=self.max_prompt_chars))
        except SlackFailure as failure:
            return f"Slack didn't let me open the form ({failure.reason}). Click Try it again."
        return None

    def submitted(self, view: Mapping, user_id: str) -> tuple[dict, Callable[[], object] | None]:
        """Slack's inline error for an empty prompt, or "asking…" now and the answers in the form once both came."""
        values = (view.get("state") or {}).get("values") or {}

        def text(block: str) -> str:
            return str(((values.get(block) or {}).get("value") or {}).get("value") or "").strip()

        prompt, system = text("prompt"), text("system")
        if not prompt:
            return {"response_action": "errors", "errors": {"prompt": "Write a prompt for both models."}}, None
        claim, form = self.store.forms.claim_form(form_id_of(view), TRY_FORM, user_id)
        if form is None:
            return {"response_action": "errors", "errors": {"prompt": FORM_REFUSALS[claim]}}, None
        caller = Caller(form["team_id"] or "", form["channel_id"] or "", user_id)
        refusal = self.jobs.refusal(Command("try", {}), caller)
        if refusal:
            return {"response_action": "errors", "errors": {"prompt": refusal}}, None
        job_id, provider = form["job_id"] or "", form["provider"]
        answered_at = time.monotonic()

        def answer() -> None:
            try:
                message = self.try_prompt(caller, job_id, prompt, provider=provider, system=system or None)
            except Refused as why:
                message = format_problem(Problem(str(why)))
            except ProviderError as error:
                message = format_provider_error(f"try {job_id}", error)
            self.slack.update_view(str(view.get("id")), try_result_view(message), answered_at=answered_at)

        waiting = {"response_action": "update", "view": try_result_view(format_refusal(
            "Asking both models… (this form updates when both have answered)"))}
        return waiting, lambda: self._background.submit(self._guarded, answer)

    def share(self, share_id: str, user_id: str) -> str | None:
        """Post a kept answer in its channel, saying who shared it; None when done, else why not."""
        claim, kept = self.store.forms.claim_share(share_id, user_id)
        if kept is None:
            return SHARE_REFUSALS[claim]
        message = kept["message"]
        blocks = [b for b in message.get("blocks") or [] if b.get("type") != "actions"]
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Shared by <@{user_id}>"}]})
        try:
            self.slack.post(kept["channel_id"], Message(message.get("text", ""), blocks))
        except BaseException:
            self.store.forms.unclaim_share(share_id)  # not shared after all: the button works again
            raise
        return None

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # noqa: BLE001 - work after ack() is outside Bolt's error handler: log, never lose it
            log.exception("unexpected error while trying a model")

    # -- compare ---------------------------------------------------------------------------------------

    def compare(self, caller: Caller, job_id: str, n: int = 5, provider: str | None = None,
                other_job: str | None = None) -> Message:
        """A fine-tuned model beside its base model on held-out examples; with `other_job`, beside that job's
        fine-tuned model (each asked at its own provider): is the moved fine-tune as good as the original?"""
        target = self.resolve(job_id, provider, None, need_job=True)
        other = self.resolve(other_job, None, None, need_job=True) if other_job else None
        job = target.job
        source, from_end = (job.validation_file, False) if job.validation_file else (job.training_file, True)
        if not source:
            raise Refused(f"Job {job_id} names no training or validation file to take examples from.")
        n = min(n, MAX_COMPARE)
        examples = target.provider.read_file(source, lambda lines: _held_out(lines, n, from_end=from_end),
                                             max_bytes=self.max_file_bytes)
        if not examples:
            raise Refused(f"{source} holds no chat example that ends with an assistant answer to compare against.")
        self._take(caller, len(examples))
        where = "validation file" if not from_end else "end of the training file"
        if other is None:
            asked = [(line, expected, self._ask_later(target, messages)) for line, messages, expected in examples]
            rows = [(line, expected, tuned.result(), base.result()) for line, expected, (tuned, base) in asked]
            return format_comparison(job_id, source, where, rows, provider=target.provider.name)
        pairs = [(line, expected, self._calls.submit(self._ask, target.provider, target.tuned, messages, "A"),
                  self._calls.submit(self._ask, other.provider, other.tuned, messages, "B"))
                 for line, messages, expected in examples]
        rows = [(line, expected, a.result(), b.result()) for line, expected, a, b in pairs]
        log.info("compared %s with %s on %d examples", target.tuned, other.tuned, len(rows))
        return format_two_fine_tunes((target.job, target.tuned), (other.job, other.tuned), source, where, rows)

    def _take(self, caller: Caller, prompts: int) -> None:
        """Count these prompts against the person's TRY_LIMIT_PER_MINUTE (each is billed at two models), or refuse
        with when to try again. Other people are unaffected."""
        wait = self.store.forms.take_model_calls(caller.user_id, prompts, limit=self.limit_per_minute)
        if wait is not None:
            asked = f" ({prompts} asked now)" if prompts > 1 else ""
            raise Refused(f"That would take you past {self.limit_per_minute} prompts to models in a minute{asked}, the "
                          "most this bot sends for one person (TRY_LIMIT_PER_MINUTE). Nothing was sent; try again in "
                          f"{wait:.0f} seconds.")

    # -- which models -------------------------------------------------------------------------------------

    def resolve(self, model_or_job: str, provider: str | None, deployment: str | None, *,
                need_job: bool = False) -> Target:
        """The fine-tuned model and its base: from a job (which must have succeeded) or a model name."""
        looks_like_job = bool(self.store.follows.providers_of(model_or_job)) or any(
            p.owns_id(model_or_job) for p in self.providers)
        if need_job or looks_like_job:
            owner, job = self.jobs.locate(model_or_job, provider)
            job = job or owner.retrieve(model_or_job)
            if job.state != "succeeded" or not job.fine_tuned_model:
                if job.final:
                    raise Refused(f"Job {job.id} {ended(job)} ({job.status}), so it made no model to try.")
                raise Refused(f"Job {job.id} has not succeeded (it is {job.status}), so there is no model to try yet."
                              " I'll post here when it finishes if you `/finetune subscribe` to it.")
            return self._target(owner, job.fine_tuned_model, job.model, job, deployment)
        row = self.store.follows.job_with_model(model_or_job)
        if row is not None and (provider is None or row["provider"] == provider) and row["provider"] in self.providers:
            job = Job.from_row(row)
            return self._target(self.providers.get(job.provider), model_or_job, job.model, job, deployment)
        # A fine-tuned model named in its shape's own form (OpenAI's `ft:<base>:<org>:<suffix>:<id>`): asked of the
        # provider named, or the first whose shape writes names so.
        owners = [p for p in self.providers if (shape := registry.shape_of(p.name)) and shape.owns_model(model_or_job)]
        if owners:
            owner = self.providers.get(provider) if provider else owners[0]
            return self._target(owner, model_or_job, model_or_job.split(":")[1], None, deployment)
        raise Refused(f"I don't know a fine-tuned model called `{model_or_job}`. Give its job id instead "
                      "(`/finetune list` shows them).")

    def _target(self, owner: FineTuningProvider, tuned: str, base: str, job: Job | None,
                deployment: str | None) -> Target:
        if not owner.capabilities.chat:
            raise Refused(f"{provider_label(owner.name)} does not serve chat completions here, so its models "
                          "cannot be tried.")
        if owner.needs_deployment:
            if not deployment:
                raise Refused("Azure OpenAI calls a model by its deployment: give the fine-tuned model's deployment "
                              "name with `deployment=<name>` (the base model's answer then comes from a deployment "
                              f"named `{base}`).")
            return Target(owner, deployment, base, job)
        return Target(owner, tuned, base, job)


def _held_out(lines: Iterable[bytes], n: int, *, from_end: bool) -> list[tuple[int, list[dict], str]]:
    """Up to n chat examples as (line, conversation without its last answer, that answer): the first n, or (streamed,
    keeping only n at a time) the last n."""
    found: deque[tuple[int, list[dict], str]] = deque(maxlen=n if from_end else None)
    for number, line in enumerate(lines, start=1):
        try:
            example = json.loads(line)
        except ValueError:
            continue
        messages = example.get("messages") if isinstance(example, dict) else None
        if (isinstance(messages, list) and len(messages) >= 2 and isinstance(messages[-1], dict)
                and messages[-1].get("role") == "assistant" and isinstance(messages[-1].get("content"), str)):
            found.append((number, [m for m in messages[:-1] if isinstance(m, dict)], messages[-1]["content"]))
            if not from_end and len(found) >= n:
                break
    return list(found)
