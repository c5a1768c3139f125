"""Moving a fine-tune to another provider in one command, and knowing which fine-tunes must move.

`/finetune move <job> to=<provider>` reads the job where it is (its files, base model, the epochs it ran), streams its
training (and validation) file from that provider's files API into a spool that goes to disk past a few MB, rewrites
the examples for the target's rules and checks them against the target's model, uploads the result there once (by
content digest), and then starts exactly as `start` does: the estimate, `confirm_above`, budgets and approvers. The
move is claimed in the database before anything is read, so clicks, retries and replicas make one upload and one
job. `/finetune retiring` and the notices 30 and 7 days ahead say which followed fine-tunes are at risk, and when.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import BinaryIO

from bot import costs, training_data
from bot.commands import BY_NAME, Command, Problem, quote
from bot.conversion import Conversion, NotMovable
from bot.jobs import Caller, JobService
from bot.messages.answers import format_note, format_problem, format_provider_error
from bot.messages.blocks import Message
from bot.move_messages import format_move_needs_file, format_move_refused, format_moving, format_retiring
from bot.providers import registry
from bot.providers.shape import Retirement
from bot.providers.types import FineTuningProvider, Job, ProviderError, Providers, UnknownProvider, provider_label
from bot.slack import SlackFailure, SlackGateway
from bot.trying import form_id_of
from bot.values import MODEL_PATTERN
from bot.views import FORM_REFUSALS, move_done_view, move_form_view
from storage import Store

log = logging.getLogger(__name__)

SPOOL_BYTES = 8 * 1024 * 1024  # a moved file is held in memory up to this, then on disk: memory never grows with it
NOTICE_DAYS = (30, 7)  # the notices before each date: once at 30 days, once more at 7
MAX_LISTED = 20  # fine-tunes named in one retiring list or notice (the rest are counted)
MOVE_FORM = "move"


@dataclass(frozen=True)
class AtRisk:
    """A followed fine-tune that a date puts at risk."""

    job: Job
    retirement: Retirement
    days: int


def is_download_refused(error: ProviderError) -> bool:
    """The provider keeps the file's content to itself (a 400 "Not allowed to download files of purpose: …")."""
    return error.status in {400, 403} and "not allowed to download" in error.message.lower()


def canonical(model: str) -> str:
    """A base model's dated name (an alias resolved; a fine-tuned model's name read as its base)."""
    aliases = registry.aliases()
    if model.startswith("ft:") and model.count(":") >= 2:
        model = model.split(":")[1]
    return aliases.get(model, model)


class MoveService:
    def __init__(self, providers: Providers, store: Store, jobs: JobService, *, max_file_bytes: int,
                 clock: Callable[[], float] = time.time, on_queued: Callable[[], None] = lambda: None) -> None:
        self.providers = providers
        self.store = store
        self.jobs = jobs
        self.max_file_bytes = max_file_bytes
        self.clock = clock
        self.on_queued = on_queued
        # The subcommands this service answers (the grammar's service="moves"), each with its method.
        self.answers: dict[str, Callable[..., Message]] = {"move": self.move, "retiring": self.retiring}

    def run(self, command: Command, caller: Caller) -> Message:
        try:
            return self.answers[command.name](caller, **command.args)
        except ProviderError as error:
            return format_provider_error(f"move {command.args.get('job_id')}", error)

    def retiring(self, caller: Caller) -> Message:
        """`/finetune retiring`: the fine-tunes this channel follows that a coming date puts at risk."""
        entries = [{**_entry(r), "moved": [(m["new_job"], m["target_provider"]) for m in
                                           self.store.moves.moved_to(r.job.provider, r.job.id)]}
                   for r in self.at_risk(caller.channel_id)]
        return format_retiring(entries, today=self._today())

    # -- a move -------------------------------------------------------------------------------------------

    def move(self, caller: Caller, job_id: str, to: str, model: str | None = None, suffix: str | None = None,
             epochs: int | None = None, validation: str | None = None, provider: str | None = None) -> Message:
        """Move a fine-tune: every check that needs no request first, then one claimed move."""
        usage = BY_NAME["move"].usage
        if to not in self.providers:
            return format_problem(Problem(
                f"No provider called `{quote(to)}` is configured here; `to=` takes "
                + ", ".join(f"`{name}`" for name in self.providers.names) + ".", usage))
        target = self.providers.get(to)
        label = provider_label(target.name)
        accepted = {option.name for option in target.start_options}
        given = {"model": model, "suffix": suffix, "epochs": epochs, "validation": validation}
        refused = [name for name, value in given.items() if value is not None and name not in accepted]
        if refused:
            takes = ", ".join(f"`{o.name}`" for o in target.start_options)
            return format_problem(Problem(f"{label} jobs don't take `{refused[0]}`; it takes {takes}.", usage))
        if suffix and len(suffix) > target.max_suffix:
            return format_problem(Problem(f"{label} takes suffixes of at most {target.max_suffix} characters; "
                                          f"`{quote(suffix, 64)}` has {len(suffix)}.", usage))
        try:
            source, job = self.jobs.locate(job_id, provider)
        except UnknownProvider as unknown:
            return format_problem(Problem(f"No provider called `{quote(str(unknown))}` is configured here.", usage))
        if source.name == target.name:
            return format_problem(Problem(
                f"{job_id} is already at {label}. To train it again there, `/finetune start <training_file_id> "
                f"provider={target.name}` with its training file.", usage))
        job = job or source.retrieve(job_id)
        if not job.training_file:
            return format_problem(Problem(f"{provider_label(source.name)} names no training file for {job_id}, so "
                                          "there is nothing to move."))
        chosen = self.nearest(job.model, target.name) if model is None else None
        if model is None and chosen is None:
            models = ", ".join(f"`{m}`" for m in training_data.models_of(target.name)[:10]) or "(none known)"
            return format_problem(Problem(
                f"I know no base model at {label} near {job.model}: choose one with `model=`. {label} tunes "
                f"{models}. Nothing was uploaded.", usage))
        options = {"model": model or chosen[0], "suffix": suffix if suffix is not None else _suffix(job, target),
                   "epochs": epochs if epochs is not None else job.n_epochs, "validation": validation}
        mine, move = self.store.moves.claim(team_id=caller.team_id, channel_id=caller.channel_id,
                                            user_id=caller.user_id, source_provider=source.name, source_job=job.id,
                                            target_provider=target.name, options=options)
        if not mine:
            return format_move_refused(job, target.name, move)
        notes = self._notes(job, target, options, model_given=model is not None, chosen=chosen,
                            epochs_given=epochs is not None)
        try:
            return self._carry_out(caller, move, job, source, target, options, notes)
        except ProviderError:
            raise  # (its move is already marked refused, with the provider's words)
        except BaseException:
            self.store.moves.set_state(move["id"], "refused", note="interrupted")
            raise

    def nearest(self, model: str, target: str) -> tuple[str, str, str] | None:
        """The nearest tunable base at `target` for `model`: (model, why, where the mapping comes from), or None."""
        shape = registry.shape_of(target)
        if shape is None or shape.moves is None:
            return None
        found = shape.moves.nearest.get(canonical(model))
        return (found.model, found.reason, shape.moves.source) if found else None

    def _notes(self, job: Job, target: FineTuningProvider, options: Mapping, *, model_given: bool,
               chosen: tuple[str, str, str] | None, epochs_given: bool) -> list[str]:
        notes = []
        if model_given:
            notes.append(f"Base model: {options['model']} (as you chose).")
        elif chosen:
            notes.append(f"Base model: {chosen[0]}, the nearest to {job.model} at {provider_label(target.name)}: "
                         f"{chosen[1]} ({chosen[2]}). Choose another with `model=`.")
        if epochs_given:
            notes.append(f"Epochs: {options['epochs']} (as you chose).")
        elif options.get("epochs"):
            notes.append(f"Epochs: {options['epochs']}, as {job.id} ran.")
        else:
            notes.append(f"Epochs: {provider_label(target.name)}'s default ({job.id} reported no number).")
        notes.append("The learning rate is not carried over: providers scale it differently (one a multiplier of its "
                     "own default, another an absolute rate), so the target's default applies; set `learning_rate=` "
                     "on a start to choose.")
        return notes

    def _carry_out(self, caller: Caller, move: dict, job: Job, source: FineTuningProvider,
                   target: FineTuningProvider, options: dict, notes: list[str]) -> Message:
        model = options["model"]
        conversion = self._conversion(target.name, model)
        files = {}
        for role, file_id in (("training", job.training_file), ("validation", job.validation_file)):
            if file_id is None or (role == "validation" and options.get("validation")):
                continue
            try:
                moved = self._moved_file(source, target, file_id, model, conversion, validation=role == "validation",
                                         epochs=options.get("epochs"))
            except ProviderError as error:
                if is_download_refused(error):
                    self.store.moves.set_state(move["id"], "needs_file", note=error.message)
                    return format_move_needs_file(move, job, target.name, error.message, role=role)
                self.store.moves.set_state(move["id"], "refused", note=error.message)
                raise
            except NotMovable as why:
                self.store.moves.set_state(move["id"], "refused", note=str(why))
                return format_problem(Problem(f"{job.id} can't be moved: {why}. Nothing was uploaded."))
            if isinstance(moved, list):  # the check's report: the target would refuse this data
                self.store.moves.set_state(move["id"], "refused", note="the data check found errors")
                return format_moving(job, target.name, notes, report=moved, role=role)
            files[role] = moved
        changes = conversion.changes()
        if changes:
            notes.append("Converted for " + provider_label(target.name) + ": " + "; ".join(changes) + ".")
        if any(reused for _, reused in files.values()):
            notes.append("Reused the file a move already uploaded there with the same content.")
        args = {"training_file": files["training"][0], "provider": target.name, "model": model,
                "suffix": options.get("suffix"), "epochs": options.get("epochs"),
                "validation": options.get("validation") or (files["validation"][0] if "validation" in files else None),
                "move": move["id"]}
        try:
            started = self.jobs.start(caller, {k: v for k, v in args.items() if v is not None})
        except ProviderError as error:
            self.store.moves.set_state(move["id"], "refused", note=error.message)
            error.provider = error.provider or target.name
            return format_provider_error(f"start the moved job from {files['training'][0]}", error)
        self.store.moves.settle(move["id"], "not started")  # (a start neither made nor held may be moved again)
        return format_moving(job, target.name, notes, started=started)

    def _conversion(self, target: str, model: str) -> Conversion:
        shape = registry.shape_of(target)
        moves = shape.moves if shape else None
        return Conversion(training_data.facts_for(model).formats,
                          message_keys=moves.message_keys if moves else None,
                          example_keys=moves.example_keys if moves else None)

    def _moved_file(self, source: FineTuningProvider, target: FineTuningProvider, file_id: str, model: str,
                    conversion: Conversion, *, validation: bool, epochs: int | None) -> tuple[str, bool] | list[str]:
        """A source file at the target: (its id there, whether an earlier move's upload was reused); or the data
        check's report when the target's rules refuse it (nothing uploaded)."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            digest = source.read_file(file_id, lambda lines: _write(lines, spool, conversion),
                                      max_bytes=self.max_file_bytes)
            if conversion.refused:
                raise NotMovable(conversion.refused)
            spool.seek(0)
            report = training_data.check(spool, model=model, epochs=epochs, max_bytes=self.max_file_bytes,
                                         validation=validation)
            if not report.ok:
                return report.lines()
            known = self.store.moves.uploaded(target.name, digest)
            if known:
                uploaded, reused = known, True
            else:
                spool.seek(0)
                uploaded, reused = target.upload_file(f"{_stem(file_id)}-moved.jsonl", spool), False
                self.store.moves.remember_upload(target.name, digest, uploaded)
        if not validation:
            costs.remember_checked(self.store, target.name, uploaded, model, per_epoch=report.billable_per_epoch,
                                   examples=report.examples)
        log.info("moved %s from %s to %s as %s (%d examples)", file_id, source.name, target.name, uploaded,
                 report.examples)
        return uploaded, reused

    # -- the Move… button's form ---------------------------------------------------------------------------

    def open_form(self, slack: SlackGateway, caller: Caller, job_id: str, provider: str | None,
                  trigger_id: str) -> tuple[str | None, Callable[[], None] | None]:
        """Open the small form that moves a fine-tune (within the trigger's 3 seconds; nothing is read first): None
        and the work that fills in its estimate, or why it could not open."""
        try:
            source, job = self.jobs.locate(job_id, provider)
        except (ProviderError, UnknownProvider) as why:
            return getattr(why, "message", None) or f"{why} is not configured here.", None
        stored = Job.from_row(self.store.follows.job(job_id, source.name) or {"id": job_id, "status": "unknown",
                                                                       "provider": source.name})
        targets = [p.name for p in self.providers if p.name != source.name]
        if not targets:
            return (f"Only {provider_label(source.name)} is configured here: there is nowhere to move it. "
                    "Configure another provider first (`/finetune providers`)."), None
        chosen = self.nearest(stored.model or "", targets[0])
        form_id = self.store.forms.record_form(MOVE_FORM, user_id=caller.user_id, team_id=caller.team_id,
                                               channel_id=caller.channel_id, provider=source.name, job_id=job_id)
        metadata = json.dumps({"form": form_id})

        def view(estimate: str) -> dict:
            return move_form_view(job_id=job_id, source=source.name, base=stored.model or "?", targets=targets,
                                  model=chosen[0] if chosen else None, metadata=metadata, estimate=estimate)

        try:
            view_id = slack.open_view(trigger_id, view("Estimating the cost…"))
        except SlackFailure as failure:
            return f"Slack didn't let me open the form ({failure.reason}). Click Move… again.", None

        def estimate() -> None:
            words = self._form_estimate(source, job or stored, targets[0], chosen)
            try:
                slack.update_view(view_id, view(words))
            except SlackFailure as failure:
                log.info("could not show a move's estimate in its form: %s", failure.reason)

        return None, estimate

    def _form_estimate(self, source: FineTuningProvider, job: Job, target: str,
                       chosen: tuple[str, str, str] | None) -> str:
        where = provider_label(target)
        if chosen is None:
            return f"No base model at {where} is mapped from {job.model}: name one above to move it."
        try:
            job = job if job.training_file else source.retrieve(job.id)
        except ProviderError as error:
            return f"Estimate unknown: {provider_label(source.name)} said {error.message}"
        if not job.training_file:
            return "Estimate unknown: the job names no training file."
        estimate = costs.estimate_start(source, self.store, training_file=job.training_file, model=chosen[0],
                                        epochs=job.n_epochs, max_bytes=self.max_file_bytes)
        return (f"Estimated cost at {where} with {chosen[0]} ({chosen[1]}): {estimate.words()}. The same checks as "
                "any start apply before anything is spent.")

    def form_submitted(self, view: Mapping, user_id: str) -> tuple[dict, Callable[[], tuple[Message, Caller]] | None]:
        """The form's answer for Slack (an inline error, or 'moving…'), and the move to carry out after it."""
        values = (view.get("state") or {}).get("values") or {}
        target = str((((values.get("target") or {}).get("value") or {}).get("selected_option") or {}).get("value")
                     or "")
        model = str(((values.get("model") or {}).get("value") or {}).get("value") or "").strip() or None
        if model is not None and not MODEL_PATTERN.fullmatch(model):
            return {"response_action": "errors", "errors": {"model": "A model name: letters, digits, -, _, ., : or /."}
                    }, None
        claim, form = self.store.forms.claim_form(form_id_of(view), MOVE_FORM, user_id)
        if form is None:
            return {"response_action": "errors", "errors": {"target": FORM_REFUSALS[claim]}}, None
        caller = Caller(form["team_id"] or "", form["channel_id"] or "", user_id)
        refusal = self.jobs.refusal(Command("move", {}), caller)
        if refusal:
            return {"response_action": "errors", "errors": {"target": refusal}}, None

        def carry_out() -> tuple[Message, Caller]:
            return self.run(Command("move", {"job_id": form["job_id"], "to": target, "provider": form["provider"],
                                             **({"model": model} if model else {})}), caller), caller

        waiting = {"response_action": "update",
                   "view": move_done_view(format_note("Moving… (this form shows the answer when it is done)",
                                                      emoji=":truck:"))}
        return waiting, carry_out

    # -- which fine-tunes are at risk ---------------------------------------------------------------------

    def at_risk(self, channel_id: str) -> list[AtRisk]:
        """The succeeded fine-tunes this channel follows that a coming date puts at risk, soonest first."""
        today = self._today()
        found = []
        for row in self.store.follows.channel_follows(channel_id, final=True):
            found += self._risks(Job.from_row(row), today)
        return sorted(found, key=lambda risk: (risk.retirement.on, risk.job.id))

    def _risks(self, job: Job, today: date, provider: FineTuningProvider | None = None) -> list[AtRisk]:
        if job.state != "succeeded" or (provider is None and job.provider not in self.providers):
            return []
        provider = provider or self.providers.get(job.provider)
        return [AtRisk(job, r, (r.on - today).days) for r in getattr(provider, "retirements", ())
                if r.on >= today and (r.model is None or r.model == canonical(job.model))]

    def notify_retiring(self) -> int:
        """Queue, once per channel and date, the notice 30 days (then 7 days) before a date that puts fine-tunes
        this channel follows at risk. The outbox's key makes each once, across replicas and restarts."""
        today = self._today()
        queued = 0
        for provider in self.providers.everywhere():  # (OAuth mode: workspaces' own keys too)
            dates = {r.on for r in getattr(provider, "retirements", ()) if 0 <= (r.on - today).days <= NOTICE_DAYS[0]}
            for day in sorted(dates):
                days = (day - today).days
                notice = min(n for n in NOTICE_DAYS if days <= n)
                by_channel: dict[str, list[AtRisk]] = {}
                for row in self.store.follows.followed_jobs(provider.name, state="succeeded"):
                    risks = [r for r in self._risks(Job.from_row(row), today, provider) if r.retirement.on == day]
                    if risks:
                        by_channel.setdefault(row["channel_id"], []).extend(risks)
                for channel, risks in by_channel.items():
                    entries = [_entry(r) for r in risks[:MAX_LISTED]]
                    queued += self.store.outbox.queue_notice(
                        "retiring", provider.name, risks[0].job.id, channel,
                        key=f"retiring:{channel}:{day.isoformat()}:{notice}",
                        detail={"date": day.isoformat(), "days": days, "entries": entries,
                                "more": max(0, len(risks) - MAX_LISTED)})
        if queued:
            self.on_queued()
        return queued

    def _today(self) -> date:
        return datetime.fromtimestamp(self.clock(), timezone.utc).date()


def _entry(risk: AtRisk) -> dict:
    job = risk.job
    return {"provider": job.provider, "job": job.id, "model": job.model, "fine_tuned_model": job.fine_tuned_model,
            "date": risk.retirement.on.isoformat(), "what": risk.retirement.what, "source": risk.retirement.source}


def _write(lines: Iterator[bytes], spool: BinaryIO, conversion: Conversion) -> str:
    """The file's lines, converted, into the spool; the SHA-256 of what was written."""
    digest = hashlib.sha256()
    for line in lines:
        try:
            out = conversion.line(line.rstrip(b"\r")) + b"\n"
        except NotMovable as why:  # (raised out of here, the adapter would call it an unreadable answer)
            conversion.refused = str(why)
            return ""
        digest.update(out)
        spool.write(out)
    return digest.hexdigest()


def _stem(file_id: str) -> str:
    return file_id.rsplit("/", 1)[-1][:40] or "training"


def _suffix(job: Job, target: FineTuningProvider) -> str | None:
    """The source's suffix, kept where the target takes it (cut to its length)."""
    return job.suffix[: target.max_suffix] if job.suffix else None


