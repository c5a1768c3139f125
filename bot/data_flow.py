"""Training data from Slack: a form to pick a `.jsonl` file, its report before anything is spent, then, on the
person's say-so, the upload and the job.

The steps live in a modal: `open_form` (a command's trigger_id, within Slack's 3 seconds), `submitted` (the form:
checked fields, then the report), `confirmed` (the report's button: the upload and, for a start, the job). What a
step needs from the one before travels in the view's private_metadata; the file is fetched again at the confirm and
must be the one that was checked (same SHA-256), so what is uploaded is what the report described.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import BinaryIO

from bot import costs, training_data
from bot.commands import Command
from bot.jobs import Caller, JobService
from bot.messages.answers import format_apology
from bot.messages.blocks import Message, code, escape
from bot.messages.money import HOLD_START_ACTION
from bot.providers.types import ProviderError, Providers, provider_label
from bot.slack import FileUnavailable, SlackFailure, SlackGateway
from bot.training_data import dollars
from bot.values import SUFFIX_PATTERN
from bot.views import FORM_REFUSALS, data_done_view, data_form_view, data_progress_view, data_report_view
from storage import Store

log = logging.getLogger(__name__)

MODES = ("start", "check", "upload")


@dataclass(frozen=True)
class Form:
    """What the form's state says, once it is known to be complete."""

    training: str
    validation: str | None
    model: str | None
    suffix: str | None
    epochs: int | None


class DataService:
    def __init__(self, slack: SlackGateway, jobs: JobService, providers: Providers, store: Store, *,
                 background: Executor, max_bytes: int, decorate: Callable[[Message], Message] = lambda m: m,
                 download_deadline_seconds: float = 120.0) -> None:
        """`background`: the pool this service's work runs on, which fetches files from Slack: its own (bounded),
        never the commands' workers, so a slow file host cannot keep `status` from being answered."""
        self.slack = slack
        self.download_deadline_seconds = download_deadline_seconds
        self.jobs = jobs
        self.providers = providers
        self.store = store
        self.background = background
        self.max_bytes = max_bytes
        self.decorate = decorate

    # -- 1. the form -----------------------------------------------------------------------------------

    def open_form(self, mode: str, caller: Caller, trigger_id: str, provider: str | None = None,
                  move: Mapping | None = None) -> str | None:
        """Open the form; None when it opened, else why not (for the person, through the command's reply). With a
        `move` whose file its provider keeps: filled in with what the move kept, and the start it makes is the
        move's."""
        target = self.providers.get(provider)
        # Who opens it, where, and for which provider: what the submission and the report's button are judged by.
        form_id = self.store.forms.record_form(DATA_FORM, user_id=caller.user_id, team_id=caller.team_id,
                                               channel_id=caller.channel_id, provider=target.name,
                                               job_id=move["id"] if move else None)
        metadata = json.dumps({"mode": mode, "provider": target.name, "form": form_id})
        kept = (move or {}).get("options") or {}
        view = data_form_view(mode, provider=target.name, models=training_data.models_of(target.name),
                              default_model=kept.get("model") or target.default_model or self.jobs.default_model,
                              metadata=metadata, suffix=kept.get("suffix"), epochs=kept.get("epochs"),
                              intro=(f"Moving {move['source_job']} to {provider_label(target.name)}: its provider "
                                     "keeps the file, so pick it here." if move else ""))
        try:
            self.slack.open_view(trigger_id, view)
        except SlackFailure as failure:
            log.warning("could not open the training-data form: %s", failure.reason)
            return f"Slack didn't let me open the form ({failure.reason}). Try the command again."
        return None

    # -- 2. the form submitted ----------------------------------------------------------------------------

    def read_form(self, values: Mapping) -> Form | dict[str, str]:
        """The form's fields, or {block_id: what is wrong} for Slack to show under each field."""
        def chosen_file(block: str) -> str | None:
            files = ((values.get(block) or {}).get("file") or {}).get("files") or []
            return str(files[0].get("id")) if files and isinstance(files[0], dict) and files[0].get("id") else None

        def text(block: str) -> str | None:
            element = (values.get(block) or {}).get("value") or {}
            chosen = (element.get("selected_option") or {}).get("value") if "selected_option" in element else None
            raw = chosen if chosen is not None else element.get("value")
            return str(raw).strip() or None if raw is not None else None

        errors = {}
        training = chosen_file("training")
        if training is None:
            errors["training"] = "Pick a .jsonl training file."
        suffix = text("suffix")
        if suffix and not SUFFIX_PATTERN.fullmatch(suffix):
            errors["suffix"] = "Up to 64 letters, digits, -, _ or ."
        epochs_raw = text("epochs")
        epochs = None
        if epochs_raw is not None:
            if not epochs_raw.isdigit() or not 1 <= int(epochs_raw) <= 50:
                errors["epochs"] = "A whole number from 1 to 50."
            else:
                epochs = int(epochs_raw)
        if errors:
            return errors
        return Form(training, chosen_file("validation"), text("model"), suffix, epochs)

    def submitted(self, view: Mapping, user_id: str) -> tuple[dict, Callable[[], object] | None]:
        """The answer to a submission (Slack's inline errors, or the modal swapped for 'checking…'), and the work to
        start once that answer has gone: checking the file, whose report then replaces the modal."""
        meta = _metadata(view)
        form = self.read_form((view.get("state") or {}).get("values") or {})
        if isinstance(form, dict):
            return {"response_action": "errors", "errors": form}, None
        claim, opened = self.store.forms.claim_form(str(meta.get("form") or ""), DATA_FORM, user_id)
        if opened is None:
            return {"response_action": "errors", "errors": {"training": FORM_REFUSALS[claim]}}, None
        meta.update(_origin(opened))
        meta.update(user=user_id, training=form.training, validation=form.validation, suffix=form.suffix,
                    epochs=form.epochs, model=form.model or self._default_model(meta["provider"]))
        answer = {"response_action": "update",
                  "view": data_progress_view(meta["mode"], "Fetching and checking the file…")}
        answered_at = time.monotonic()
        return answer, lambda: self.background.submit(self._guarded, self._check, str(view.get("id")), meta,
                                                      answered_at)

    def _check(self, view_id: str, meta: dict, answered_at: float) -> None:
        mode = meta["mode"]

        def show(view: dict) -> None:
            self.slack.update_view(view_id, view, answered_at=answered_at)

        try:
            report, name, digest = self._fetch_and_check(meta["training"], meta)
            checked_validation = None
            if meta.get("validation") and report.ok:
                checked_validation = self._fetch_and_check(meta["validation"], meta, validation=True)
        except FileUnavailable as why:
            show(data_done_view(mode, f":warning: {escape(str(why))}"))
            return
        lines = report.lines()
        ok = report.ok
        if checked_validation is not None:
            validation_report, validation_name, validation_digest = checked_validation
            lines += [f"Validation file {validation_name}:", *("  " + line for line in validation_report.lines())]
            ok = ok and validation_report.ok
            meta["validation_name"], meta["validation_sha"] = validation_name, validation_digest
        meta["training_name"], meta["training_sha"] = name, digest
        meta["per_epoch"], meta["examples"] = report.billable_per_epoch, report.examples
        confirm = None
        if mode == "start":
            price = f" · est. {dollars(report.price)}" if report.price is not None else ""
            confirm = f"Upload and start the job{price}"
        elif mode == "upload":
            confirm = f"Upload to {provider_label(meta['provider'])}"
        show(data_report_view(mode, lines, filename=name, ok=ok, confirm=confirm, metadata=json.dumps(meta)))

    def _fetch_and_check(self, file_id: str, meta: dict, *,
                         validation: bool = False) -> tuple[training_data.DataReport, str, str]:
        with self._fetch(file_id) as (stream, name, size):
            report = training_data.check(stream, model=meta["model"], epochs=meta.get("epochs"), size=size,
                                         max_bytes=self.max_bytes, validation=validation)
            stream.seek(0)
            digest = _sha256(stream)
        log.info("checked a training file: %d examples, %d kinds of error", report.examples, len(report.errors))
        return report, name, digest

    # -- 3. the report's button --------------------------------------------------------------------------

    def confirmed(self, view: Mapping, user_id: str) -> None:
        """Upload the checked file (and for a start, create the job the channel then follows). Once per modal."""
        meta = _metadata(view)
        view_id = str(view.get("id"))
        opened = self.store.forms.form(str(meta.get("form") or ""), DATA_FORM)
        if opened is None or opened["user_id"] != user_id:
            return  # not a form this bot opened for this person: nothing to carry out
        meta.update(_origin(opened))
        if not self.store.replays.first_sight_of_trigger(f"data-confirm:{view_id}"):
            return  # a second click on the same report: the first is being (or was) carried out
        self.background.submit(self._guarded, self._confirm, view_id, meta, user_id)

    def _confirm(self, view_id: str, meta: dict, user_id: str) -> None:
        mode = meta["mode"]
        caller = Caller(meta.get("team", ""), meta.get("channel", ""), user_id)
        refusal = self.jobs.refusal(Command(mode, {}), caller)
        if refusal:
            self.slack.update_view(view_id, data_done_view(mode, f":lock: {escape(refusal)}"))
            return
        target = self.providers.get(meta["provider"])
        where = provider_label(target.name)
        if meta.get("move") and not self.store.moves.take(meta["move"], "needs_file", team_id=caller.team_id):
            self.slack.update_view(view_id, data_done_view(mode, ":information_source: This move already went on "
                                                                 "(from another form, or a new `/finetune move`)."))
            return
        self.slack.update_view(view_id, data_progress_view(mode, f"Uploading to {where}…"))
        try:
            training = self._upload(meta["training"], meta["training_sha"], target)
            validation = (self._upload(meta["validation"], meta["validation_sha"], target)
                          if meta.get("validation") else None)
        except FileUnavailable as why:
            self.slack.update_view(view_id, data_done_view(mode, f":warning: {escape(str(why))}"))
            return
        except ProviderError as error:
            self.slack.update_view(view_id, data_done_view(
                mode, f":warning: {escape(where)} refused the upload: {escape(error.message)}"))
            return
        if mode == "upload":
            start = code(f"/finetune start {training} provider={target.name}")
            self.slack.update_view(view_id, data_done_view(mode, (
                f":white_check_mark: Uploaded *{escape(meta.get('training_name', ''))}* to {escape(where)}: "
                f"{code(training)}\nStart a job from it with {start}")))
            return
        if isinstance(meta.get("per_epoch"), int) and isinstance(meta.get("examples"), int):
            # Counted when it was checked: the start's estimate need not read the uploaded file again.
            costs.remember_checked(self.store, target.name, training, meta["model"], per_epoch=meta["per_epoch"],
                                   examples=meta["examples"])
        estimate = None
        if target.capabilities.price_estimate:
            try:
                estimate = target.estimate_price(training_file=training, model=meta["model"],
                                                 n_epochs=meta.get("epochs"), validation_file=validation)
            except ProviderError as error:
                log.info("%s gave no price estimate: %s", target.name, error.message)
        args = {"training_file": training, "provider": target.name, "model": meta["model"],
                "suffix": meta.get("suffix"), "epochs": meta.get("epochs"), "validation": validation,
                "move": meta.get("move")}
        command = Command("start", {k: v for k, v in args.items() if v is not None})
        message = self.decorate(self.jobs.run(command, caller))
        if meta.get("move"):
            self.store.moves.settle(meta["move"], "not started")  # (refused: the move may be tried again)
        pass_on_from_form(self.slack, caller, message)
        said = escape(message.text)
        if estimate is not None:
            said += f"\n{escape(where)}'s own estimate for this job: {dollars(estimate)}."
        self.slack.update_view(view_id, data_done_view(mode, said))

    def _upload(self, file_id: str, digest: str, target) -> str:
        with self._fetch(file_id) as (stream, name, _size):
            if _sha256(stream) != digest:
                raise FileUnavailable("The file changed in Slack after it was checked; check it again.")
            stream.seek(0)
            return target.upload_file(name, stream)

    # -- shared steps -------------------------------------------------------------------------------------

    def _fetch(self, file_id: str):
        info = self.slack.file_info(file_id)
        name = str(info.get("name") or file_id)
        if not name.lower().endswith(".jsonl"):
            raise FileUnavailable(f"{name} is not a .jsonl file. Training files are JSON Lines: one example a line.")
        size = info.get("size") if isinstance(info.get("size"), int) else None
        if size is not None and size > self.max_bytes:
            raise FileUnavailable(f"{name} is {size / 1e6:,.1f} MB; the most this bot checks is "
                                  f"{self.max_bytes / 1e6:,.0f} MB (MAX_TRAINING_FILE_MB).")
        url = info.get("url_private_download") or info.get("url_private")
        if not url:
            raise FileUnavailable(f"Slack gave no address to download {name} from.")
        return _Fetched(self.slack.download(str(url), max_bytes=self.max_bytes,
                                           deadline_seconds=self.download_deadline_seconds), name, size)

    def _default_model(self, provider: str) -> str:
        return self.providers.get(provider).default_model or self.jobs.default_model

    def _guarded(self, step: Callable[..., None], view_id: str, meta: dict, *args) -> None:
        """Work after an ack: an unexpected error ends in the modal as an apology with an id, never in silence."""
        try:
            step(view_id, meta, *args)
        except Exception:  # noqa: BLE001 - work after ack() is outside Bolt's error handler
            error_id = "E" + secrets.token_hex(4).upper()
            log.exception("unexpected error %s in the training-data form", error_id)
            try:
                self.slack.update_view(view_id, data_done_view(meta["mode"], escape(format_apology(error_id).text)))
            except SlackFailure:
                log.warning("could not show the apology for %s", error_id)


DATA_FORM = "data"


def pass_on_from_form(slack: SlackGateway, caller: Caller, message: Message) -> None:
    """What a form's start (or move) answered, where it belongs: the channel for what it shows everyone (with a
    card, the card is what the channel sees; the form tells the starter), the starter for a held start (its Start
    anyway button cannot live in a form)."""
    if message.in_channel:
        slack.post_quietly(caller.channel_id, message)
    elif any(e.get("action_id") == HOLD_START_ACTION for b in message.blocks for e in b.get("elements") or ()):
        slack.post_quietly(caller.user_id, message)


class _Fetched:
    """A downloaded file, closed when done with."""

    def __init__(self, stream: BinaryIO, name: str, size: int | None) -> None:
        self.stream, self.name, self.size = stream, name, size

    def __enter__(self) -> tuple[BinaryIO, str, int | None]:
        return self.stream, self.name, self.size

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


def _origin(opened: Mapping) -> dict:
    """Where a form was opened, as recorded then (never as its submission says), and the move it goes on with."""
    return {"team": opened["team_id"] or "", "channel": opened["channel_id"] or "", "provider": opened["provider"],
            "move": opened.get("job_id") or None}


def _metadata(view: Mapping) -> dict:
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        meta = {}
    if not isinstance(meta, dict) or meta.get("mode") not in MODES:
        raise ValueError("not one of our forms")
    return meta


def _sha256(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()

