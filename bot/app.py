"""The composition root: the one place that builds clients, services, the Bolt app and the scheduler."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from slack_bolt import App
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient

import handlers
from bot import metrics
from bot.charting import ChartService, StartDrawing, start_drawing
from bot.config import Settings
from bot.data_flow import DataService
from bot.delivery import AnnouncementSender
from bot.following import Following
from bot.holds import HoldService
from bot.home import HomeService
from bot.installs import ADMITTED, WORKSPACE, ContextPool, Installs
from bot.jobs import JobService
from bot.keyring import Keyring, WorkspaceProviders, for_job, optional_secrets
from bot.keys import KeyService
from bot.messages.answers import format_unknown_provider
from bot.messages.blocks import Message
from bot.moves import MoveService
from bot.poller import Poller
from bot.providers import registry
from bot.providers.types import FineTuningProvider, Providers, UnknownProvider
from bot.scrub import Scrubber
from bot.slack import SlackGateway
from bot.subscriptions import SubscriptionService
from bot.trying import TryService
from bot.turns import Turns
from bot.turns import worker_id as turns_worker_id
from bot.vault import Vault
from bot.watchdog import Watchdog
from bot.webhooks import WebhookReceiver, WorkspaceWebhooks
from storage import DB_ERRORS, Store
from storage.engines import is_transient

log = logging.getLogger(__name__)

DELIVERY_INTERVAL = 1.0
MAINTENANCE_INTERVAL = 60.0  # at most: reconciling interrupted starts, forgetting old webhook and trigger ids
# Slash-command work after ack(): provider calls, mostly waiting on the network. Each runnable worker also takes the
# interpreter from the threads answering Slack: with 32, a burst's acks under load had a p99 of 98-130 ms; with 12,
# 70-103 ms, while a burst of 300 commands (every provider call 0.5 s) is answered in 17.8 s rather than 14.2 s
# (`python bench/run.py --only ack --only ack-load`).
WORKERS = 12
PROMPT_WORKERS = 4  # opening forms: one Slack call each, bound by a trigger_id's 3 seconds
# Fetching files from Slack and the work on them (the data form's check and upload): a pool of its own, so a slow file
# host fills it and never the commands' workers (12 trickling downloads once kept every `status` waiting for 60 s).
DOWNLOAD_WORKERS = 4
# PostgreSQL connections kept open: the command workers, the sender, the poll cycle, the metric reads and maintenance,
# which a burst of commands has all busy at once. With 8, each command past them opened a connection and closed it
# again (a server process and a SCRAM exchange each: 28-36 of them in one 1.2 s burst on three replicas).
CONNECTIONS = WORKERS + 4
SLACK_TIMEOUT = 10.0
WRITABLE_CHECK_EVERY = 2.0  # /healthz writes to the database at most this often
CYCLE_GRACE = 2.0  # at stop, how long a poll cycle under way may finish first


@dataclass
class Services:
    settings: Settings
    store: Store
    providers: Providers
    slack: SlackGateway
    jobs: JobService
    holds: HoldService
    subscriptions: SubscriptionService
    poller: Poller
    sender: AnnouncementSender
    webhook_routes: dict[str, WebhookReceiver]
    workspace_webhooks: dict[str, WorkspaceWebhooks]  # OAuth mode: route prefix -> each workspace's own webhooks
    data: DataService
    trying: TryService
    charts: ChartService
    moves: MoveService
    background: ThreadPoolExecutor
    # Work that must reach Slack within a trigger_id's 3 seconds (opening a form): never queued behind slow work.
    prompt: ThreadPoolExecutor
    downloads: ThreadPoolExecutor  # the data form's fetches from Slack (and what is done with them)
    decorate: Callable[[Message], Message]
    scrub: Scrubber
    turns: Turns
    home: HomeService | None = None  # each person's App Home
    keys: KeyService | None = None  # `/finetune keys`: each workspace's own provider keys (OAuth mode)
    installs: Installs | None = None  # OAuth mode: installs, each workspace's token (None: one token from settings)

    @property
    def provider(self) -> FineTuningProvider:
        """The default provider (where `start` goes when not told)."""
        return self.providers.default

    def run(self, command, caller) -> Message:
        """The answer to a command, from the service the subcommand table names for it."""
        try:
            return getattr(self, command.spec.service).run(command, caller)
        except UnknownProvider as unknown:
            return format_unknown_provider(unknown, self.providers.names, command.spec.usage)

    def reply(self, message: Message) -> dict:
        """A message as an ack's body: decorated for the sandbox, scrubbed of anything secret."""
        return self.scrub.deep(self.decorate(message).reply_kwargs())


@dataclass
class Heartbeat:
    """When each scheduled task last finished a run, for /healthz."""

    started_at: float = field(default_factory=time.monotonic)
    last_run: dict[str, float] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    database_away: set[str] = field(default_factory=set)  # the tasks whose last run found the database away

    def beat(self, name: str, task: Callable[[], object]) -> Callable[[], object]:
        def run():
            try:
                result = task()
            except DB_ERRORS as error:
                metrics.inc("database_errors", where=name)
                if not is_transient(error):
                    raise
                # The database away (restarting, failing over): one line when it goes, one when it is back, no
                # traceback a run; what this run would have done, the next does (nothing is lost meanwhile).
                if name not in self.database_away:
                    self.database_away.add(name)
                    log.warning("%s: the database cannot be reached (%s); trying again each run", name, error)
                return None
            if name in self.database_away:
                self.database_away.discard(name)
                log.info("%s: the database is back", name)
            self.last_run[name] = time.monotonic()
            self.runs[name] = self.runs.get(name, 0) + 1
            return result

        return run

    def age(self, name: str) -> float:
        return time.monotonic() - self.last_run.get(name, self.started_at)


@dataclass
class Bot:
    settings: Settings
    app: App
    services: Services
    scheduler: BackgroundScheduler
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    exporter: metrics.Exporter | None = None  # METRICS_PORT's listener, once started
    _listener: threading.Thread | None = field(default=None, repr=False)  # woken by other replicas (PostgreSQL)
    _stopped: bool = field(default=False, repr=False)
    _writable: tuple[float, str | None] = field(default=(float("-inf"), None), repr=False)

    def health(self) -> tuple[bool, str]:
        """Whether the bot can do its job: the database takes writes and the scheduler runs its cycles."""
        checked_at, problem = self._writable
        if time.monotonic() - checked_at > WRITABLE_CHECK_EVERY:
            try:
                self.services.store.check_writable()
                problem = None
            except DB_ERRORS as error:
                problem = f"the database cannot be written: {error}"
            self._writable = (time.monotonic(), problem)
        if problem:
            return False, problem
        if not self.scheduler.running:
            return False, "the scheduler is not running"
        allowed = max(3 * self.settings.poll_interval_seconds, self.settings.poll_interval_seconds + 60)
        if self.heartbeat.age("poll") > allowed:
            return False, f"no poll cycle has finished for {self.heartbeat.age('poll'):.0f}s"
        return True, "ok"

    def start_background(self) -> None:
        """Start polling and delivering; the first poll runs at once, catching up on outcomes missed while down. With
        METRICS_PORT, the metrics listener starts first (so the first cycle is counted)."""
        if self.settings.metrics_port is not None and self.exporter is None:
            self.exporter = metrics.serve(self.metrics_snapshot, host=self.settings.metrics_host,
                                          port=self.settings.metrics_port)
            log.info("metrics on %s:%d/metrics", self.settings.metrics_host, self.exporter.port)
        try:  # (PostgreSQL: opened now, while nothing waits, rather than in the first burst of commands)
            self.services.store.open_connections()
        except DB_ERRORS as error:
            log.info("could not open the database's connections ahead (%s); each opens when first needed", error)
        # Woken by the other replicas (PostgreSQL) when they queue posts for a channel whose turn this one holds.
        self._listener = threading.Thread(target=self.services.sender.listen, name="finetune-listen", daemon=True)
        self._listener.start()
        self.scheduler.start()

    def metrics_snapshot(self) -> dict:
        """What the database says at a scrape: the outbox's backlog, followed jobs, holds, and the poll turn."""
        store = self.services.store
        pending, oldest = store.outbox.backlog()
        return {"outbox_pending": pending,
                "outbox_oldest_age_seconds": max(0.0, time.time() - oldest) if oldest else 0.0,
                "jobs_followed": store.follows.followed_by_state(), "holds_waiting": store.spend.holds_waiting(),
                "poll_turn_held": int(store.leases.turn_holder("poll") == self.services.turns.worker)}

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking new work, let in-flight deliveries finish within `timeout`, stop the scheduler."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        self.services.sender.stop()
        # Downloads from Slack end now (their connections shut, the form told why), not at their deadline.
        self.services.slack.stop_downloads()
        self.services.downloads.shutdown(wait=False, cancel_futures=True)
        # A poll cycle under way finishes (its findings recorded), and commands already being worked on finish (a
        # job being started gets followed and its user told): both within the budget, whatever they are doing.
        draining = threading.Thread(target=self.services.background.shutdown, kwargs={"wait": True}, daemon=True)
        draining.start()
        cycle = None
        if self.scheduler.running:
            cycle = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True)
            cycle.start()
            # A poll cycle under way gets a moment to record what it has read (what it has not, the next run reads
            # again); the store refuses it anything new once closed, so a longer one costs nothing but its work.
            cycle.join(min(CYCLE_GRACE, max(0.0, deadline - time.monotonic())))
        draining.join(max(0.0, deadline - time.monotonic()))
        if draining.is_alive() or (cycle is not None and cycle.is_alive()):
            log.warning("work (a command or a poll cycle) was still running after %.0fs; stopping anyway", timeout)
        if not self.services.sender.wait_idle(max(0.0, deadline - time.monotonic())):
            log.warning("a delivery was still running after %.0fs; its lease hands it to the next run", timeout)
        else:
            try:
                self.services.sender.give_back_channels()
            except DB_ERRORS as error:
                log.warning("could not give back this process's channels (%s); they pass on when due", error)
        self.services.turns.give_back()  # another replica polls at its next interval, not two from now
        self.services.charts.stop(max(0.5, deadline - time.monotonic()))
        self.services.poller.close()
        self.services.trying.close()
        self.services.jobs.provider_calls.shutdown(wait=False, cancel_futures=True)
        self.services.prompt.shutdown(wait=False, cancel_futures=True)
        self.services.store.close(for_good=True)  # a worker still running past the budget opens nothing more
        if self.exporter is not None:
            metrics.stop(self.exporter)
        if self._listener is not None:
            self._listener.join(max(0.0, deadline - time.monotonic()))  # (it looks every second)


def _quiet_token_precedence(record: logging.LogRecord) -> bool:
    """Bolt warns that the token it finds (ours, or SLACK_BOT_TOKEN) gives way to the client and `authorize` we
    pass: that is what we want, so it is not worth a warning at every start."""
    message = record.getMessage()
    return "`token` will be unused" not in message and "will be ignored" not in message


def build(settings: Settings, *, providers: Providers | None = None, slack_client: WebClient | None = None,
          clock: Callable[[], float] = time.time, worker_id: str | None = None,
          start_drawing: StartDrawing = start_drawing) -> Bot:
    """Make the whole bot from settings. Nothing runs until `start_background()` and a server are started."""
    store = Store(settings.database, clock=clock, connections=CONNECTIONS)
    scrub = Scrubber(settings.secrets())
    vault = Vault(settings.encryption_keys)
    keyring = None
    if settings.oauth:
        # Each workspace's providers: its own keys, and the environment's only where the operator shares them.
        # Every service holds the one WorkspaceProviders, which answers for the workspace of the work at hand.
        try:
            shared = providers or registry.configured(settings, clock=clock)
        except ValueError:  # the environment configures none: every workspace brings its own
            shared = None
        keyring = Keyring(settings, store, vault, shared=shared, clock=clock)
        providers = WorkspaceProviders(keyring)
    if providers is None:
        providers = registry.configured(settings, clock=clock)
    for provider in providers:
        provider.warm()  # its SDK's first-use work now, not inside the first commands' acks
    # Rows from before jobs were named by provider came from the one provider configured then (its shape says which).
    legacy = registry.legacy(settings)
    if legacy and legacy in providers and store.follows.adopt_unnamed(legacy):
        log.info("jobs recorded before providers were named now belong to %s", legacy)
    slack_client = slack_client or WebClient(
        token=settings.slack_bot_token, base_url=settings.slack_api_url,
        # A post must end (answered or not) well within its claim's lease: then no other process can take the
        # announcement over while this one may still be posting it.
        timeout=int(max(1, min(SLACK_TIMEOUT, settings.delivery_lease_seconds / 2))),
        retry_handlers=[],  # retries are ours (bot.delivery); the SDK's would silently re-send a POST
    )
    worker_id = worker_id or turns_worker_id(f"{id(store):x}")
    installs = None
    if settings.oauth:
        installs = Installs(store, vault, client_id=settings.slack_client_id or "",
                            client_secret=settings.slack_client_secret or "", api_url=settings.slack_api_url,
                            worker_id=worker_id, clock=clock)
    slack = SlackGateway(slack_client, scrub=scrub, tokens=installs.token_for_call if installs else None,
                         bot_users=installs.bot_user_for if installs else None)

    def decorate(message: Message) -> Message:
        return message.as_sandbox() if settings.sandbox else message

    sender = AnnouncementSender(store, slack, worker_id=worker_id, clock=clock,
                                lease_seconds=settings.delivery_lease_seconds,
                                give_up_seconds=settings.delivery_give_up_seconds, decorate=decorate,
                                scope=(lambda provider, job_id: for_job(store, provider, job_id)) if installs else None)
    watchdog = Watchdog(store, every=settings.metrics_interval_seconds, clock=clock, on_queued=sender.kick,
                        stall_seconds=60 * settings.watchdog_stall_minutes, interval=settings.poll_interval_seconds)
    poller = Poller(providers, store, on_queued=sender.kick, interval=settings.poll_interval_seconds,
                    watchdog=watchdog, owners=store.workspaces.owners if keyring else None)
    # Every pool is made here, once, and ended by Bot.stop. Pools whose tasks wait on other tasks (commands, forms)
    # never share with the pools those tasks wait on (provider listings, model calls).
    provider_calls = ThreadPoolExecutor(max_workers=max(2, len(providers)), thread_name_prefix="finetune-list")
    holds = HoldService(store, slack, approvers=settings.approver_user_ids, clock=clock, decorate=decorate)
    following = Following(store, slack, on_queued=sender.kick)
    jobs = JobService(providers, store, slack, default_model=settings.default_model,
                      allowed_users=settings.allowed_user_ids, allowed_channels=settings.allowed_channel_ids,
                      on_queued=sender.kick, clock=clock, sandbox=settings.sandbox, provider_calls=provider_calls,
                      approvers=settings.approver_user_ids, max_file_bytes=settings.max_training_file_bytes,
                      holds=holds, following=following)
    subscriptions = SubscriptionService(jobs, store, slack, following, approvers=settings.approver_user_ids)
    keys = KeyService(keyring, slack, admins=settings.admin_user_ids)
    # (the pools Slack-facing work is handed to carry the workspace of the request that handed it on)
    background = ContextPool(max_workers=WORKERS, thread_name_prefix="finetune-work")
    downloads = ContextPool(max_workers=DOWNLOAD_WORKERS, thread_name_prefix="finetune-download")
    # Each provider that sends webhooks, and has the secret to verify them, gets its route (OpenAI's /openai/webhook).
    webhook_routes = {p.webhook_route: WebhookReceiver(p, store, on_queued=sender.kick, background=background)
                      for p in providers if p.capabilities.webhooks and p.webhook_route and p.webhooks_verifiable}
    # In OAuth mode, each workspace that set its own signing secret has its own route beneath (/openai/webhook/T…).
    workspace_webhooks = {f"/{name}/webhook": WorkspaceWebhooks(name, keyring, store, on_queued=sender.kick,
                                                                background=background)
                          for name in optional_secrets()} if keyring else {}
    services = Services(
        settings=settings, store=store, providers=providers, slack=slack, jobs=jobs, holds=holds,
        subscriptions=subscriptions, poller=poller, sender=sender, webhook_routes=webhook_routes,
        workspace_webhooks=workspace_webhooks,
        data=DataService(slack, jobs, providers, store, background=downloads,
                         max_bytes=settings.max_training_file_bytes, decorate=decorate,
                         download_deadline_seconds=settings.download_deadline_seconds),
        charts=ChartService(providers, jobs, slack, quiet=lambda: not store.outbox.outcomes_waiting(),
                            start=start_drawing),
        trying=TryService(providers, store, jobs, slack, max_tokens=settings.try_max_tokens,
                          max_prompt_chars=settings.try_max_prompt_chars,
                          max_file_bytes=settings.max_training_file_bytes, background=background,
                          limit_per_minute=settings.try_limit_per_minute),
        moves=MoveService(providers, store, jobs, max_file_bytes=settings.max_training_file_bytes, clock=clock,
                          on_queued=sender.kick),
        background=background, decorate=decorate, scrub=scrub, turns=Turns(store, worker_id),
        prompt=ContextPool(max_workers=PROMPT_WORKERS, thread_name_prefix="finetune-prompt"),
        downloads=downloads, installs=installs, keys=keys,
        home=HomeService(store, slack, clock=clock, keys_for=keys.may_change if keyring else lambda user_id: False),
    )
    sender.on_sent = services.charts.after_announced  # a success's chart goes into its announcement's thread
    bolt_log = logging.getLogger("finetune_bot.bolt")
    if _quiet_token_precedence not in bolt_log.filters:
        bolt_log.addFilter(_quiet_token_precedence)

    def authorize(enterprise_id, team_id):  # noqa: ANN001 - Bolt passes these by name
        """One workspace, one bot token: no auth.test round trip. In OAuth mode, the token of the installation that
        serves this workspace (refreshed first if it rotates), from the database: no auth.test either."""
        if installs is None:
            return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=settings.slack_bot_token)
        found = ADMITTED.get() or installs.authorize(enterprise_id, team_id)
        WORKSPACE.set(found.key if found else None)
        if found is None:
            return None  # Bolt answers "please install this app"
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=found.bot_token,
                               bot_user_id=found.bot_user_id, bot_id=found.bot_id)

    app = App(
        # Named, so that Bolt does not name it from `inspect.stack()`, which reads the source of every calling frame:
        # a third of a build's CPU under a deep stack (a test worker's), and most of Bolt's share of a process's start.
        name="finetune-bot",
        client=slack_client,
        authorize=authorize,
        signing_secret=settings.slack_signing_secret or "unused-in-socket-mode",
        token_verification_enabled=False,  # start-up never waits on Slack
        # Listeners ack at once and hand slow work to our own pool, so Bolt need not run them on a thread of its own
        # and poll every 10 ms for their ack (which was most of an ack's time, and more under load).
        process_before_response=True,
        logger=bolt_log,
    )
    if installs is not None:
        @app.use
        def note_channel(context, next):  # noqa: ANN001 - Bolt's middleware signature
            """A channel's (and a person's) workspace, learned from requests: the scheduler's posts there use that
            workspace's token."""
            if WORKSPACE.get():  # (and the person's: a direct message to them is in that workspace too)
                installs.note_channel(context.channel_id, WORKSPACE.get())
                installs.note_channel(context.user_id, WORKSPACE.get())
            next()
    handlers.register(app, services)
    heartbeat = Heartbeat()
    # A start is orphaned once every request its process could make is certainly over: three creates, three
    # look-ups and two waits, each at most one provider timeout.
    orphan_after = 8 * settings.provider_timeout_seconds

    maintenance_interval = min(MAINTENANCE_INTERVAL, max(1.0, orphan_after / 2))
    interval = settings.poll_interval_seconds
    # Provider requests and maintenance happen once per interval whatever the number of replicas: one process at a
    # time holds each turn (for two intervals, kept while it runs them); delivery runs everywhere, a channel's posts
    # one process at a time (bot.delivery).
    turns = services.turns
    # A watchdog finding claimed and never said (its process stopped during the cancel it asked for) is finished
    # once its claim is as old as any living process's could be.
    reconcile_and_prune = turns.one_at_a_time(
        "maintain", lambda: (jobs.reconcile_starts(older_than=orphan_after, worker=worker_id),
                             watchdog.finish_interrupted(providers, older_than=orphan_after), store.prune(),
                             services.moves.notify_retiring()),
        hold=2 * maintenance_interval)

    def maintain() -> None:
        reconcile_and_prune()
        services.charts.release_idle()  # (this process's own drawing process)

    scheduler = BackgroundScheduler(timezone=timezone.utc)
    now = datetime.now(timezone.utc)
    def poll_cycle() -> None:
        began = time.monotonic()
        poller.run_once(progress=False)
        metrics.observe("poll_cycle_seconds", time.monotonic() - began)
        metrics.gauge("poll_last_success_timestamp_seconds", time.time())

    scheduler.add_job(heartbeat.beat("poll", turns.one_at_a_time("poll", poll_cycle, hold=2 * interval)),
                      "interval", seconds=interval, id="poll", max_instances=1, coalesce=True, next_run_time=now)
    # Metric reads for progress replies run on their own: a cycle's outcomes never wait behind them.
    scheduler.add_job(heartbeat.beat("progress", turns.one_at_a_time("progress", poller.read_progress,
                                                                     hold=2 * interval)),
                      "interval", seconds=interval, id="progress", max_instances=1, coalesce=True)
    scheduler.add_job(heartbeat.beat("deliver", sender.deliver_due), "interval", seconds=DELIVERY_INTERVAL,
                      id="deliver", max_instances=1, coalesce=True)
    # Homes owed a redraw (a job their person started changed state): each claimed by one process.
    scheduler.add_job(heartbeat.beat("home", services.home.refresh_due), "interval", seconds=DELIVERY_INTERVAL,
                      id="home", max_instances=1, coalesce=True)
    scheduler.add_job(heartbeat.beat("maintain", maintain), "interval", seconds=maintenance_interval,
                      id="maintain", max_instances=1, coalesce=True, next_run_time=now)
    return Bot(settings=settings, app=app, services=services, scheduler=scheduler, heartbeat=heartbeat)


def set_aside_start_up() -> int:
    """Take what the process has made so far out of the cyclic garbage collector's sight (`gc.freeze`): the SDKs'
    thousands of types and the bot's own objects live as long as the process, and every full collection walked all
    of them (about 135,000: 70 ms holding the interpreter on an idle core, 100-400 ms measured on a busy one, in
    which that process acked nothing). Once, by a process that serves (`serve`, `socket`), when it has started: a
    full collection then walks only what came after. Returns how many were set aside."""
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.debug("%d objects made at start-up set aside from the garbage collector", count)
    return count
