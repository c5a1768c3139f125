"""One poll cycle: ask each provider about its own followed jobs still running, and queue announcements for outcomes.

The cost stays nearly flat as jobs grow: each provider is asked with its cheapest call. OpenAI's shape lists 100 jobs
a page, so a page answers for up to 100 followed jobs and only those it does not cover are fetched one by one;
Together's lists every job in one request, so one followed job costs one retrieve and any more cost one list. With
nothing active, a cycle asks nothing. Providers are asked side by side and each one's news is recorded as soon as it
arrives, so a provider that is slow or down delays nobody else's announcements; it backs off on its own. A running
job with a card costs one more request (its latest metrics) only when a progress reply is due in some channel: at
most once per the channel's interval, and at most MAX_PROGRESS_READS_PER_CYCLE such jobs a cycle, longest waiting
first.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from bot.keyring import acting_for
from bot.providers.types import FineTuningProvider, Job, MetricPoint, ProviderError, Providers
from bot.watchdog import Watchdog, one_job
from storage import DB_ERRORS, Store
from storage.engines import is_transient

log = logging.getLogger(__name__)

MAX_RETRIEVES_PER_CYCLE = 100
LANES_AT_ONCE = 4  # OAuth mode: workspaces asked side by side (each with its own key, so its own account's limits)
MAX_SKIPPED_CYCLES = 16
MAX_PAUSE_SECONDS = 120.0  # however long the interval, an outage never silences polling for longer than this
MAX_PROGRESS_READS_PER_CYCLE = 20  # the latest metrics of at most this many jobs a cycle (the rest wait a cycle)


@dataclass
class PollReport:
    active: int = 0
    requests: int = 0
    observed: int = 0
    queued: int = 0
    skipped: bool = False  # some provider was not asked this cycle (backing off)
    error: str | None = None  # the first provider error of the cycle
    finished: list[str] = field(default_factory=list)
    requests_by_provider: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    backing_off: list[str] = field(default_factory=list)
    unconfigured: int = 0  # followed jobs at a provider no longer configured: left as they are
    progress: int = 0  # progress replies queued (each card's thread hears at most one per its channel's interval)


@dataclass
class _Backoff:
    failures: int = 0
    skip: int = 0


class Poller:
    def __init__(self, providers: Providers | FineTuningProvider, store: Store, *,
                 on_queued: Callable[[], None] = lambda: None, max_retrieves: int = MAX_RETRIEVES_PER_CYCLE,
                 interval: float = 60.0, max_progress_reads: int = MAX_PROGRESS_READS_PER_CYCLE,
                 watchdog: Watchdog | None = None,
                 owners: Callable[[list[tuple[str, str]]], dict[tuple[str, str], str]] | None = None) -> None:
        self.providers = providers if isinstance(providers, Providers) else Providers([providers])
        # OAuth mode: which workspace each followed job belongs to. Its jobs are asked about with its own providers
        # (its own keys), each workspace's apart: a "lane" is (workspace, provider), "" the environment's own.
        self.owners = owners
        self.store = store
        self.on_queued = on_queued
        self.max_retrieves = max_retrieves
        self.max_progress_reads = max_progress_reads
        self.watchdog = watchdog
        self.max_skip = max(0, min(MAX_SKIPPED_CYCLES, int(MAX_PAUSE_SECONDS // interval) - 1))
        self._backoff: dict[tuple[str, str], _Backoff] = defaultdict(_Backoff)  # by lane
        self._warned_unconfigured: set[tuple[str, str]] = set()
        # By lane: the provider asked, and the jobs its last answer said are going.
        self._training: dict[tuple[str, str], tuple[FineTuningProvider, dict[str, Job]]] = {}
        # Providers are asked side by side on threads made once, one per provider, and ended by close(): a pool a
        # cycle would leave a thread (and its database connection) behind every cycle.
        # (OAuth mode: a few workspaces' lanes at once, each against its own account)
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.providers.names), LANES_AT_ONCE if owners else 0),
                                        thread_name_prefix="finetune-poll")

    def close(self) -> None:
        """End the polling threads (a cycle under way finishes first, on the scheduler's side)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run_once(self, *, progress: bool = True) -> PollReport:
        """One cycle: every provider asked about its own followed jobs, outcomes queued (and the sender woken) as
        each provider's answer is recorded. With `progress`, the metric reads due follow in the same cycle; the
        scheduler runs them on their own (`read_progress`), so that no outcome ever waits behind a metric read."""
        report = PollReport()
        active = self.store.follows.active_jobs()
        report.active = len(active)
        owners = self.owners([(row["provider"], row["id"]) for row in active]) if self.owners and active else {}
        by_lane: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for row in active:
            by_lane[(owners.get((row["provider"], row["id"]), ""), row["provider"])].append(row)
        asked = []
        for lane, rows in by_lane.items():
            provider = self._provider_of(lane)
            if provider is None:
                report.unconfigured += len(rows)
                if lane not in self._warned_unconfigured:
                    self._warned_unconfigured.add(lane)
                    log.warning("%d followed job(s) belong to provider %r, which is not configured%s; they are left "
                                "as they are until it is", len(rows), lane[1] or "(unnamed)",
                                " for their workspace" if lane[0] else "")
                continue
            backoff = self._backoff[lane]
            if backoff.skip > 0:
                backoff.skip -= 1  # backing off after this provider's errors: it is not asked this cycle
                report.skipped = True
                report.backing_off.append(lane[1])
                continue
            asked.append((lane, provider, rows))
        if len(asked) == 1:
            self._record(report, *self._guarded_poll(*asked[0], progress))
        elif asked:
            for done in as_completed([self._pool.submit(self._guarded_poll, lane, provider, rows, progress)
                                      for lane, provider, rows in asked]):
                self._record(report, *done.result())
        return report

    def _provider_of(self, lane: tuple[str, str]) -> FineTuningProvider | None:
        """The provider a lane's jobs are asked with: the workspace's own (or the shared one it may use)."""
        with acting_for(lane[0]):
            return self.providers.get(lane[1]) if lane[1] in self.providers else None

    def _guarded_poll(self, lane: tuple[str, str], provider: FineTuningProvider, rows: list[dict], progress: bool):
        """One lane's part of the cycle; anything unexpected counts as that provider failing (it backs off, the
        others go on) rather than ending the cycle."""
        try:
            return (lane, *self._poll(lane, provider, rows, progress=progress))
        except DB_ERRORS as error:
            if is_transient(error):
                raise  # the database is away, not the provider: the cycle ends, and the next one does its work
            log.exception("polling %s failed unexpectedly", provider.name)
            return lane, {}, 0, ProviderError(f"unexpected error ({type(error).__name__})"), 0, 0
        except Exception as unexpected:  # noqa: BLE001 - one provider's fault must not stop the others' outcomes
            log.exception("polling %s failed unexpectedly", provider.name)
            return lane, {}, 0, ProviderError(f"unexpected error ({type(unexpected).__name__})"), 0, 0

    def _poll(self, lane: tuple[str, str], provider: FineTuningProvider, rows: list[dict], *,
              progress: bool) -> tuple[dict[str, Job], int, ProviderError | None, int, int]:
        """Ask one provider about its jobs and record what it said (even before an error: still news; nothing is
        marked final on an error); then, with no error, queue the progress replies due. Returns the jobs seen, the
        requests made, the error, and the announcements and progress replies queued."""
        seen: dict[str, Job] = {}
        counter = [0]
        error = None
        recorded: set[str] = set()
        queued = 0

        def record(jobs: Iterable[Job], *, last: bool = False) -> None:
            """Record what a page said as soon as it arrives (outcomes queued, the sender woken), not after the whole
            listing: at 10,000 followed jobs an outcome on the first page does not wait for the hundredth. A failure
            a listing gives without its reason waits for the job's own read (`last`: whatever is left)."""
            nonlocal queued
            fresh = [job for job in jobs if job.id not in recorded
                     and (last or not (job.state == "failed" and not job.error_message))]
            if not fresh:
                return
            recorded.update(job.id for job in fresh)
            new = self.store.follows.record_jobs((job.fields(), job.outcome) for job in fresh)
            if new:
                queued += new
                self.on_queued()  # the sender goes now, not once every provider and every metric read is done

        try:
            self._collect(provider, rows, seen, counter, record)
        except ProviderError as caught:
            error = caught
        record(seen.values(), last=True)  # what is left: jobs read one by one, or seen before an error (still news)
        if error is None:
            self._training[lane] = (provider, {job_id: job for job_id, job in seen.items() if not job.final})
        # After the statuses are recorded, so a card's thread tells of a change before the steps that follow it.
        replies = self._progress(provider, seen, counter) if progress and error is None else 0
        return seen, counter[0], error, queued, replies

    def read_progress(self) -> int:
        """The metric reads due for the jobs the last cycle saw still going (at most the cap a provider), and the
        progress replies they make; scheduled apart from `run_once`. Returns the replies queued."""
        queued = 0
        watch_budget = self.watchdog.max_reads if self.watchdog else 0
        for lane, (asked, seen) in list(self._training.items()):
            provider = self._provider_of(lane)
            if provider is not asked or self._backoff[lane].skip:
                continue  # (a provider backing off is not asked for its metrics either; nor one no longer there)
            name = lane[1]
            try:
                queued += self._progress(provider, seen, [0])
                if self.watchdog and watch_budget > 0:
                    watch_budget -= self.watchdog.watch(provider, seen, budget=watch_budget)
            except DB_ERRORS as error:
                if is_transient(error):
                    raise  # the database is away: these reads wait for the next run
                log.exception("reading progress at %s failed unexpectedly", name)
            except Exception:  # noqa: BLE001 - one provider's fault must not stop the others' progress
                log.exception("reading progress at %s failed unexpectedly", name)
        if queued:
            self.on_queued()
        return queued

    def _progress(self, provider: FineTuningProvider, seen: dict[str, Job], counter: list[int]) -> int:
        """Queue a progress reply for running jobs whose cards are due one: the provider is asked for a job's latest
        metrics only then, so the throttle saves provider requests as well as Slack posts."""
        if not (provider.capabilities.metrics or provider.capabilities.progress):
            return 0
        # Only a job that is training has metrics to read: one validating or queued is not asked, so it is due the
        # moment training starts rather than a whole interval after a read that found nothing.
        running = [job for job in seen.values() if not job.final and job.status in provider.training_statuses]
        due = self.store.cards.progress_due(provider.name, [job.id for job in running])[:self.max_progress_reads]
        queued = 0
        for job_id in due:
            try:
                point = provider.latest_metric(job_id)
            except ProviderError as error:
                log.info("no progress for %s this cycle: %s", job_id, error.message)
                break
            finally:
                counter[0] += 1
            with one_job(job_id, "progress"):  # one job's fault never stops the others' progress
                queued += self._progress_of(provider, seen[job_id], point)
        return queued

    def _progress_of(self, provider: FineTuningProvider, job: Job, point: MetricPoint | None) -> int:
        if self.watchdog:  # a read made for a progress reply is the watchdog's reading too (one request)
            self.store.watch.record_reading(provider.name, job.id, point.step if point else None,
                                            point.train_loss if point else None,
                                            point.valid_loss if point else None)
            self.watchdog.judge(provider, job)
        if point is None:  # training, no step yet: asked again next cycle (within the cap), not an interval later
            self.store.cards.queue_progress(provider.name, job.id, None, None, soon=True)
            return 0
        detail = {"step": point.step, "total_steps": point.total_steps, "train_loss": point.train_loss,
                  "valid_loss": point.valid_loss, "finish_at": job.estimated_finish,
                  "percent": point.percent, "epoch": point.epoch}
        return self.store.cards.queue_progress(provider.name, job.id, point.step, detail)

    def _record(self, report: PollReport, lane: tuple[str, str], seen: dict[str, Job], requests: int,
                error: ProviderError | None, queued: int, progress: int) -> None:
        backoff, name = self._backoff[lane], lane[1]
        report.requests += requests
        report.requests_by_provider[name] = report.requests_by_provider.get(name, 0) + requests
        report.progress += progress
        if error is not None:
            backoff.failures += 1
            backoff.skip = min(2 ** (backoff.failures - 1), self.max_skip)
            report.errors[name] = error.message
            report.error = report.error or error.message
            log.warning("polling %s failed (%s); skipping its next %d cycle(s)", name, error.message, backoff.skip)
        elif backoff.failures:
            log.info("%s answers again; polling it resumes", name)
            backoff.failures = 0
        report.observed += len(seen)
        report.queued += queued
        report.finished += [j.id for j in seen.values() if j.final]
        if progress:
            self.on_queued()

    def _collect(self, provider: FineTuningProvider, active: list[dict], seen: dict[str, Job],
                 counter: list[int], record: Callable[[Iterable[Job]], None]) -> None:
        wanted = {row["id"]: row for row in active}
        if len(wanted) > 1 and provider.page_size is None:
            jobs, _ = provider.list_jobs(None)  # every job in one request
            counter[0] += 1
            seen.update((job.id, job) for job in jobs if job.id in wanted)
            record(job for job in jobs if job.id in wanted)
        elif len(wanted) > 1:
            # Pages of the organization's recent jobs, newest first, until every followed job is covered,
            # the pages are older than the oldest followed job, or the budget is spent.
            page_size = provider.page_size  # (OpenAI's pages hold 100, Fireworks' 200)
            oldest = min((row["created_at"] or 0) for row in active)
            after = None
            for _ in range(math.ceil(len(wanted) / page_size) + 1):
                jobs, has_more = provider.list_jobs(page_size, after=after)
                counter[0] += 1
                seen.update((job.id, job) for job in jobs if job.id in wanted)
                record(job for job in jobs if job.id in wanted)
                if len(seen) == len(wanted) or not has_more or not jobs:
                    break
                if (jobs[-1].created_at or 0) < oldest:
                    break
                after = jobs[-1].id
        # A failure seen in a listing may lack its reason (Together keeps it in the job's events): read it whole.
        unexplained = [job.id for job in seen.values() if job.state == "failed" and not job.error_message]
        missing = [job_id for job_id in wanted if job_id not in seen] + unexplained
        missing = missing[: self.max_retrieves]
        for job_id in missing:
            try:
                seen[job_id] = provider.retrieve(job_id)
            except ProviderError as error:
                if not error.not_found:
                    raise
                log.warning("%s no longer knows followed job %s; leaving it as it was", provider.name, job_id)
            counter[0] += 1
        self.store.follows.mark_polled((provider.name, job_id) for job_id in missing)
