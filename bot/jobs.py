"""What each `/finetune` subcommand does, given who asked and where."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from bot import costs
from bot.commands import BY_NAME, Command, Problem, quote
from bot.costs import Estimate
from bot.following import Following
from bot.holds import HoldService
from bot.installs import WORKSPACE
from bot.keyring import acting_for
from bot.messages.answers import (
    ProviderInfo,
    format_help,
    format_note,
    format_problem,
    format_provider_error,
    format_providers,
    format_refusal,
    format_stopped_taking_jobs,
    format_unknown_provider,
)
from bot.messages.blocks import Message
from bot.messages.cards import Subscription, format_card
from bot.messages.jobs import (
    format_action,
    format_events,
    format_followed,
    format_job_list,
    format_job_status,
    format_started,
)
from bot.providers import registry
from bot.providers.types import FineTuningProvider, Job, ProviderError, Providers, UnknownProvider, provider_label
from bot.reconciling import reconcile_starts
from bot.slack import SlackGateway
from storage import DB_ERRORS, Store
from storage.engines import is_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    team_id: str
    channel_id: str
    user_id: str
    response_url: str | None = field(default=None, repr=False)  # a credential: never logged


class JobService:
    def __init__(self, providers: Providers | FineTuningProvider, store: Store, slack: SlackGateway, *,
                 default_model: str, allowed_users: frozenset[str] = frozenset(),
                 allowed_channels: frozenset[str] = frozenset(), on_queued: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time, sandbox: bool = False,
                 provider_calls: Executor | None = None, approvers: frozenset[str] = frozenset(),
                 max_file_bytes: int = 512 * 1024 * 1024, holds: HoldService,
                 following: Following | None = None) -> None:
        self.providers = providers if isinstance(providers, Providers) else Providers([providers])
        # `list` asks every provider at once on this pool, whose tasks wait on nothing (made once, by the root).
        self.provider_calls = provider_calls or ThreadPoolExecutor(max_workers=len(self.providers),
                                                                   thread_name_prefix="finetune-list")
        self.clock = clock
        self.sandbox = sandbox
        # Providers that refused a start because they no longer create jobs: when, and in their words.
        self.stopped: dict[str, tuple[float, str]] = {}
        self.store = store
        self.slack = slack
        self.default_model = default_model
        self.allowed_users = allowed_users
        self.allowed_channels = allowed_channels
        self.on_queued = on_queued
        self.approvers = approvers
        self.max_file_bytes = max_file_bytes
        self.holds = holds  # a start the channel's limits hold, and its approvers asked
        self.following = following or Following(store, slack, on_queued)
        self.decorate: Callable[[Message], Message] = (lambda m: m.as_sandbox()) if sandbox else (lambda m: m)
        # The subcommands this service answers (the grammar's service="jobs"), each with the method that does it.
        self.answers: dict[str, Callable[..., Message]] = {
            "help": self._help, "start": self._start, "status": self._status, "list": self._list,
            "cancel": self._cancel, "pause": self._pause, "resume": self._resume, "providers": self._providers}

    def refusal(self, command: Command, caller: Caller) -> str | None:
        """Why this caller may not run this command here, or None. Read-only commands are open to everyone."""
        if command.name == "settings" and command.args:
            if self.allowed_users and caller.user_id not in self.allowed_users:
                return ("Sorry, you're not on this bot's list of people who may change a channel's settings. "
                        "Ask whoever runs finetune-bot to add you to ALLOWED_USER_IDS.")
            return None
        if not command.spec.costly:
            return None
        if self.allowed_users and caller.user_id not in self.allowed_users:
            return (f"Sorry, you're not on this bot's list of people who may {command.name} jobs. "
                    "Ask whoever runs finetune-bot to add you to ALLOWED_USER_IDS.")
        if self.allowed_channels and caller.channel_id not in self.allowed_channels:
            return (f"Jobs can't be {command.spec.past} from this channel. "
                    "Use one of the channels in ALLOWED_CHANNEL_IDS.")
        return None

    def run(self, command: Command, caller: Caller) -> Message:
        handler = self.answers[command.name]
        return answered(command, lambda: handler(caller, **command.args), self.providers)

    @property
    def provider(self) -> FineTuningProvider:
        """The default provider: where `start` goes when not told."""
        return self.providers.default

    # -- subcommands ---------------------------------------------------------------------------------

    def _help(self, caller: Caller) -> Message:
        return format_help()

    def _start(self, caller: Caller, training_file: str, provider: str | None = None, model: str | None = None,
               suffix: str | None = None, epochs: int | None = None, validation: str | None = None,
               seed: int | None = None, **options: object) -> Message:
        args = {"training_file": training_file, "provider": provider, "model": model, "suffix": suffix,
                "epochs": epochs, "validation": validation, "seed": seed, **options}
        return self.start(caller, {k: v for k, v in args.items() if v is not None})

    def start(self, caller: Caller, args: dict, *, estimate: Estimate | None = None,
              released: Mapping | None = None) -> Message:
        """Start a job from `start`'s arguments: checked, estimated, held when the channel's threshold or budget
        (or its approvers) say so, else started and followed. `released` is a held start let go (by its requester
        or an approver): it starts without being held again."""
        args = dict(args)
        training_file = args.pop("training_file")
        move_id = args.pop("move", None)  # a start that moves a fine-tune here (bot.moves): linked once it exists
        target = self.providers.get(args.pop("provider", None))
        label = provider_label(target.name)
        model, suffix, epochs = args.pop("model", None), args.pop("suffix", None), args.pop("epochs", None)
        validation, seed = args.pop("validation", None), args.pop("seed", None)
        options = args
        given = {"model": model, "suffix": suffix, "epochs": epochs, "validation": validation, "seed": seed,
                 **options}  # (options only some shapes take: Together's lora and learning_rate, …)
        accepted = {option.name for option in target.start_options}
        refused = [name for name, value in given.items() if value is not None and name not in accepted]
        if refused:
            takes = "; ".join(f"`{o.name}` ({o.help})" for o in target.start_options)
            return format_problem(Problem(f"{label} jobs don't take `{refused[0]}`. {label} takes: {takes}.",
                                          BY_NAME["start"].usage))
        if suffix and len(suffix) > target.max_suffix:
            return format_problem(Problem(
                f"{label} takes suffixes of at most {target.max_suffix} characters; "
                f"`{quote(suffix, 64)}` has {len(suffix)}.", BY_NAME["start"].usage))
        model = model or target.default_model or self.default_model
        if estimate is None:
            estimate = costs.estimate_start(target, self.store, training_file=training_file, model=model,
                                            epochs=epochs, max_bytes=self.max_file_bytes)
        held_command = {"training_file": training_file, "provider": target.name, "model": model,
                        **{k: v for k, v in given.items() if k != "model" and v is not None},
                        **({"move": move_id} if move_id else {})}
        settings = self.store.channels.channel_settings(caller.channel_id) if released is None else {}
        if released is None:
            held = self.holds.hold_if_needed(caller, target.name, estimate, held_command, settings, move_id=move_id)
            if held is not None:
                return held
        approved_by = released.get("approved_by") if released else None
        metadata = {"source": "finetune-bot", "slack_team": caller.team_id, "slack_channel": caller.channel_id,
                    "slack_user": caller.user_id}
        extra = {name: value for name, value in options.items() if value is not None}
        request_id = uuid.uuid4().hex
        # The budget is a reservation: admitted, a start's estimate counts against the month at once (before the
        # provider is asked), so starts racing each other cannot all pass a check made before any was recorded.
        budget = settings.get("budget")  # (none for a released start: it was let go past it)
        try:
            # Written down before the provider is asked: a crash from here on is reconciled at the next start-up.
            refused_at = self.store.replays.record_intent(
                request_id, team_id=caller.team_id, channel_id=caller.channel_id, user_id=caller.user_id,
                response_url=caller.response_url, training_file=training_file, model=model, suffix=suffix,
                provider=target.name, estimate=estimate.amount, approved_by=approved_by, move_id=move_id,
                budget=budget, month=costs.month_bounds(None, self.clock())[:2])
        except DB_ERRORS as error:
            log.warning("could not record a start before asking the provider; nothing was started (%s)", error,
                        exc_info=not is_transient(error))
            return format_problem(Problem("I can't save anything right now, so I didn't start a job I couldn't "
                                          "follow. Nothing was started or billed; try again in a minute."))
        if refused_at is not None:  # other starts took the budget meanwhile: held like any start past it
            return self.holds.hold(caller, target.name, estimate, held_command,
                                   self.holds.past_budget(refused_at, estimate, budget), move_id=move_id)
        try:
            job = target.create_job(
                request_id=request_id, training_file=training_file, model=model, suffix=suffix, n_epochs=epochs,
                validation_file=validation, seed=seed, metadata=metadata, extra=extra,
            )
        except ProviderError as error:
            error.provider = error.provider or target.name
            if not error.ambiguous:
                self.store.replays.finish_intent(request_id, job_id=None, state="refused")
            # An unconfirmed start stays open: if the job turns up, reconciling follows it and tells the user.
            if error.stopped_taking_jobs:
                self.stopped[target.name] = (self.clock(), error.message)
                log.warning("%s refused a start: it no longer creates fine-tuning jobs (%s)", target.name,
                            error.message)
                return format_stopped_taking_jobs(error, [p.name for p in self.providers if p.name != target.name],
                                                  advice=registry.advice())
            raise
        job = replace(job, estimate=estimate.amount, approved_by=approved_by)
        try:
            self.following.claim(target.name, job.id)  # (the starting workspace's, before anyone can name it)
            # The estimate and approver go with the job before its card is queued, so the card shows them.
            card = self.following.follow(caller, job, origin="start", card=True,
                                recorded={"estimate": estimate.amount, "approved_by": approved_by},
                                finishes=request_id)[1]
            if move_id:
                self.link_move(move_id, job)
        except DB_ERRORS as error:
            # The job exists and is billed: the user must still learn its id, and how to follow it.
            log.warning("started %s but could not record that %s follows it (%s)", job.id, caller.channel_id, error,
                        exc_info=not is_transient(error))
            return format_started(job, [f"I couldn't save that this channel follows it, so I won't post when it "
                                        f"finishes. Try `/finetune subscribe {job.id}` in a minute."],
                                  estimate=estimate)
        return format_started(job, self.following.visibility_warnings(caller), card=card, estimate=estimate)

    def link_move(self, move_id: str, job: Job) -> None:
        """A moved fine-tune's new job exists: the move points at it (once), the channels that followed the source
        follow it too, and the source's cards are redrawn to say where it went."""
        move = self.store.moves.started(move_id, job.id)
        if move is None:
            return
        for row in self.store.follows.followers(move["source_job"], move["source_provider"]):
            if row["channel_id"] == move["channel_id"]:
                continue  # (the channel that moved it follows it as its starter)
            origin = "dm" if row["origin"] == "dm" else "subscribe"
            self.store.follows.follow(row["channel_id"], job.fields(), final=job.final, team_id=row["team_id"] or "",
                                      user_id=row["user_id"] or "", origin=origin, card=origin != "dm")
        self.store.cards.redraw_cards(move["source_provider"], move["source_job"])
        self.on_queued()

    def release(self, caller: Caller, hold_id: str, decision: str) -> tuple[Message, dict | None]:
        """A held start's button pressed: Start anyway (its requester, when no approvers are set), Approve or Deny
        (an approver who is not its requester). (the answer for whoever pressed it, the hold as decided or None)."""
        hold = self.store.spend.held(hold_id)
        if hold is None:
            return format_note("That start is no longer held here (it was started, refused or has expired)."), None
        if decision != "start" and hold["channel_id"] != caller.channel_id:
            return format_note("That button belongs to a start held in another channel."), None
        if decision == "start":
            # Judged where the start was asked for (its Start anyway may be pressed in a direct message: the form's).
            refusal = self.refusal(Command("start", {}), replace(caller, channel_id=hold["channel_id"]))
            if refusal:
                return format_refusal(refusal), None
            if self.approvers:
                return format_note("This start needs an approver's Approve now; Start anyway no longer applies."), None
            if caller.user_id != hold["user_id"]:
                return format_note("Only the person who asked for this start can start it anyway."), None
        else:
            if caller.user_id not in self.approvers:
                return format_note("Only the people in this bot's APPROVER_USER_IDS can approve or deny a held "
                                   "start."), None
            if caller.user_id == hold["user_id"]:
                return format_note("A held start needs an approver other than the person who asked for it."), None
        state = {"start": "started", "approve": "approved", "deny": "denied"}[decision]
        outcome, decided = self.store.spend.decide(hold_id, caller.user_id, state)
        if outcome == "gone":
            return format_note("That start is no longer held here."), None
        moved = (decided or {}).get("command", {}).get("move")
        if moved and (outcome == "expired" or (outcome == "ok" and state == "denied")):
            self.store.moves.set_state(moved, "refused", note=f"its hold was {decided['state']}")  # (free to retry)
        if outcome == "expired":
            return format_note("That start was held for more than a day, so it has expired: nothing was started. "
                               "Run `/finetune start` again if it is still wanted."), decided
        if outcome == "decided":
            return format_note(f"That held start has already been {decided['state']}."), None
        if state == "denied":
            return format_note("Denied: nothing was started."), decided
        requester = Caller(hold["team_id"] or "", hold["channel_id"], hold["user_id"])
        released = {"approved_by": caller.user_id if state == "approved" else None}
        estimate = Estimate(hold["estimate"]) if hold["estimate"] is not None else None
        with acting_for(hold.get("workspace") or WORKSPACE.get()):  # (the asker's keys and money, whoever approves)
            started = answered(Command("start", hold["command"]),
                               lambda: self.start(requester, hold["command"], estimate=estimate, released=released),
                               self.providers)
        return started, decided

    def _status(self, caller: Caller, job_id: str | None = None, provider: str | None = None) -> Message:
        if job_id is None:
            return format_followed(self.following.follows_page(caller.channel_id, 1), title="Jobs this channel follows")
        target, job = self.locate(job_id, provider)
        job = job or target.retrieve(job_id)
        events = target.events(job_id, limit=5) if target.capabilities.events else []
        self.following.observe(job)
        followed = any(f["channel_id"] == caller.channel_id for f in self.store.follows.followers(job_id, target.name))
        return format_job_status(job, events, followed_here=followed, links=self.following.links(target.name, job.id))

    def _list(self, caller: Caller, n: int = 10, provider: str | None = None) -> Message:
        """The newest jobs at every provider (or the one named), merged newest first; a provider that cannot be
        asked is named beside the others' jobs rather than failing the whole list."""
        targets = [self.providers.get(provider)] if provider else list(self.providers)
        answers = list(self.provider_calls.map(lambda p: _attempt(lambda: p.list_jobs(n)[0]), targets))
        jobs = [job for found, _ in answers for job in (found or [])]
        failures = [(p, error) for p, (_, error) in zip(targets, answers, strict=True) if error is not None]
        if failures and len(failures) == len(targets):
            raise failures[0][1]
        jobs = self.following.visible(jobs)
        jobs.sort(key=lambda j: (j.created_at or 0, j.id), reverse=True)
        unreachable = [f"{provider_label(p.name)} could not be asked: {error.message}" for p, error in failures]
        return format_job_list(jobs[:n], where=provider, unreachable=unreachable)

    def _cancel(self, caller: Caller, job_id: str, provider: str | None = None) -> Message:
        target, _ = self.locate(job_id, provider)
        return self._act("cancel", target.cancel, job_id)

    def _pause(self, caller: Caller, job_id: str, provider: str | None = None) -> Message:
        return self._pause_or_resume("pause", job_id, provider)

    def _resume(self, caller: Caller, job_id: str, provider: str | None = None) -> Message:
        return self._pause_or_resume("resume", job_id, provider)

    def _pause_or_resume(self, action: str, job_id: str, provider: str | None) -> Message:
        target, _ = self.locate(job_id, provider)
        if not target.capabilities.pause_resume:
            what = "paused" if action == "pause" else "paused or resumed"
            return format_problem(Problem(f"{provider_label(target.name)} jobs cannot be {what}. "
                                          f"`/finetune cancel {job_id}` stops it for good."))
        return self._act(action, getattr(target, action), job_id)

    def refresh(self, caller: Caller, job_id: str, provider: str | None) -> Message:
        """The job as it is now, as `status` shows it (for a Refresh click, which replaces the clicked message and so
        is seen by whoever saw that one)."""
        shown = self.run(Command("status", {"job_id": job_id, **({"provider": provider} if provider else {})}), caller)
        return replace(shown, in_channel=True)

    def refresh_card(self, caller: Caller, job_id: str, provider: str | None) -> tuple[Message, bool]:
        """A card's Refresh: the job re-read (and recorded, so a change seen here edits its other cards too) and the
        card redrawn in place; (the message, whether it replaces the card). A provider's refusal goes only to
        whoever clicked, leaving the card as it was."""
        try:
            target, job = self.locate(job_id, provider)
            job = job or target.retrieve(job_id)
        except ProviderError as error:
            return format_provider_error(f"refresh {job_id}", error), False
        except UnknownProvider as unknown:
            return format_unknown_provider(unknown, self.providers.names), False
        self.following.observe(job)
        row = next((f for f in self.store.follows.followers(job.id,
                                                            target.name) if f["channel_id"] == caller.channel_id), {})
        mention = bool(self.store.channels.channel_settings(caller.channel_id)["mentions"])
        subscription = Subscription(caller.channel_id, row.get("user_id"), row.get("origin"), mention)
        links = self.following.links(target.name, job.id)
        return replace(format_card(job, subscription, followed=bool(row), links=links), in_channel=True), True

    def latest_events(self, caller: Caller, job_id: str, provider: str | None) -> Message:
        try:
            target, job = self.locate(job_id, provider)
            job = job or target.retrieve(job_id)
            if not target.capabilities.events:
                return format_events(job, [], kept=False)
            return format_events(job, target.events(job_id, limit=10))
        except ProviderError as error:
            return format_provider_error(f"get the events of {job_id}", error)

    def _providers(self, caller: Caller) -> Message:
        infos = []
        for p in self.providers:
            taking, sentence = self._taking_jobs(p)
            infos.append(ProviderInfo(
                name=p.name, default=p is self.providers.default, capabilities=p.capabilities.described(),
                cannot=p.capabilities.described(present=False), start_options=[o.name for o in p.start_options],
                taking_jobs=sentence, taking=taking))
        return format_providers(infos, sandbox=self.sandbox)

    def _taking_jobs(self, provider: FineTuningProvider) -> tuple[bool, str]:
        """Whether a provider takes new jobs, in words: what it said when it refused one, or its announced end."""
        if provider.name in self.stopped:
            when, said = self.stopped[provider.name]
            day = datetime.fromtimestamp(when, timezone.utc).date().isoformat()
            return False, f"Not taking new jobs: it refused a start on {day}, saying: {said}"
        end = provider.new_jobs_end
        if end is None:
            return True, "Takes new jobs."
        today = datetime.fromtimestamp(self.clock(), timezone.utc).date()
        if today >= end:
            return False, (f"Stopped taking new jobs on {end.isoformat()}; jobs already started and fine-tuned "
                           "models keep working.")
        days = (end - today).days
        return True, (f"Takes new jobs until {end.isoformat()} ({days} day{'s' if days != 1 else ''} from now); "
                      "jobs already started and fine-tuned models keep working after that.")

    def locate(self, job_id: str, provider: str | None) -> tuple[FineTuningProvider, Job | None]:
        """Where a job lives: the named provider, the one the bot last saw it at, or, for an id it has never seen,
        the one of the providers whose ids look like it that knows it (then with the job, already read).

        Installed in many workspaces (OAuth mode), a job is its workspace's: the one that started it, or first named
        it. Another workspace is told no provider knows it, as for an id that does not exist."""
        target, job = self._locate(job_id, provider)
        if not self.following.claim(target.name, job_id):
            raise ProviderError(f"No provider configured here knows a job called {job_id}.", status=404,
                                code="job_not_found", own=True)
        return target, job

    def _locate(self, job_id: str, provider: str | None) -> tuple[FineTuningProvider, Job | None]:
        if provider:
            return self.providers.get(provider), None
        known = [name for name in self.store.follows.providers_of(job_id) if name in self.providers]
        if known:
            return self.providers.get(known[0]), None
        candidates = self.providers.fitting(job_id)
        if len(candidates) == 1:
            return candidates[0], None
        for candidate in candidates:
            job, error = _attempt(lambda c=candidate: c.retrieve(job_id))
            if job is not None:
                return candidate, job
            if not error.not_found:
                raise error
        asked = " and ".join(provider_label(c.name) for c in candidates)
        raise ProviderError(f"No provider configured here knows a job called {job_id} (I asked {asked}).",
                            status=404, code="job_not_found", own=True)

    # -- shared steps ----------------------------------------------------------------------------------

    def _act(self, action: str, call: Callable[[str], Job], job_id: str) -> Message:
        job = call(job_id)
        self.following.observe(job)
        return format_action(action, job)

    # -- starts a crash interrupted ---------------------------------------------------------------------

    def reconcile_starts(self, *, older_than: float, worker: str) -> int:
        """Settle starts left open by a process that died while asking the provider (bot/reconciling.py)."""
        return reconcile_starts(self, older_than=older_than, worker=worker)


def answered(command: Command, call: Callable[[], Message], providers: Providers) -> Message:
    """A command's answer, with a provider's refusal (or a provider not configured) said in words."""
    try:
        return call()
    except ProviderError as error:
        log.info("%s refused %s: %s (HTTP %s)", error.provider or "provider", command.name, error.message,
                 error.status)
        return format_provider_error(_doing(command), error)
    except UnknownProvider as unknown:
        return format_unknown_provider(unknown, providers.names, command.spec.usage)


def _doing(command: Command) -> str:
    """What the bot was doing, from the subcommand table, with the job or file it was about."""
    target = command.args.get("job_id") or command.args.get("training_file")
    what = command.spec.doing or command.name
    return f"{what} {target}" if target else what


def _attempt(call: Callable[[], object]) -> tuple[object | None, ProviderError | None]:
    """A provider call's answer, or its refusal, as a value: for asking several providers at once."""
    try:
        return call(), None
    except ProviderError as error:
        return None, error
