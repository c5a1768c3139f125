"""One poll cycle: ask the provider about followed jobs still running, and queue announcements for outcomes.

The cost stays nearly flat as jobs grow: a page of `jobs.list` answers for up to 100 jobs at once, and only the
followed jobs it does not cover are fetched one by one. With nothing active, a cycle asks the provider nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.providers.types import FineTuningProvider, Job, ProviderError
from storage import Store

log = logging.getLogger(__name__)

PAGE_SIZE = 100
MAX_RETRIEVES_PER_CYCLE = 100
MAX_SKIPPED_CYCLES = 16
MAX_PAUSE_SECONDS = 120.0  # however long the interval, an outage never silences polling for longer than this


@dataclass
class PollReport:
    active: int = 0
    requests: int = 0
    observed: int = 0
    queued: int = 0
    skipped: bool = False
    error: str | None = None
    finished: list[str] = field(default_factory=list)


class Poller:
    def __init__(self, provider: FineTuningProvider, store: Store, *, on_queued: Callable[[], None] = lambda: None,
                 max_retrieves: int = MAX_RETRIEVES_PER_CYCLE, interval: float = 60.0) -> None:
        self.provider = provider
        self.store = store
        self.on_queued = on_queued
        self.max_retrieves = max_retrieves
        self.max_skip = max(0, min(MAX_SKIPPED_CYCLES, int(MAX_PAUSE_SECONDS // interval) - 1))
        self._failures = 0
        self._skip = 0

    def run_once(self) -> PollReport:
        report = PollReport()
        active = self.store.active_jobs()
        report.active = len(active)
        if not active:
            return report
        if self._skip > 0:
            # Backing off after provider errors: this cycle asks nothing.
            self._skip -= 1
            report.skipped = True
            return report
        seen: dict[str, Job] = {}
        try:
            self._collect(active, seen, report)
        except ProviderError as error:
            self._failures += 1
            self._skip = min(2 ** (self._failures - 1), self.max_skip)
            report.error = error.message
            log.warning("polling the provider failed (%s); skipping the next %d cycle(s)", error.message, self._skip)
        else:
            if self._failures:
                log.info("the provider answers again; polling resumes")
            self._failures = 0
        # Whatever was seen before an error is still news; nothing is marked final on an error.
        if seen:
            report.observed = len(seen)
            report.queued = self.store.record_jobs((job.fields(), job.outcome) for job in seen.values())
            report.finished = [j.id for j in seen.values() if j.final]
        if report.queued:
            self.on_queued()
        return report

    def _collect(self, active: list[dict], seen: dict[str, Job], report: PollReport) -> None:
        wanted = {row["id"]: row for row in active}
        if len(wanted) > 1:
            # Pages of the organization's recent jobs, newest first, until every followed job is covered,
            # the pages are older than the oldest followed job, or the budget is spent.
            oldest = min((row["created_at"] or 0) for row in active)
            after = None
            for _ in range(math.ceil(len(wanted) / PAGE_SIZE) + 1):
                jobs, has_more = self.provider.list_jobs(PAGE_SIZE, after=after)
                report.requests += 1
                for job in jobs:
                    if job.id in wanted:
                        seen[job.id] = job
                if len(seen) == len(wanted) or not has_more or not jobs:
                    break
                if (jobs[-1].created_at or 0) < oldest:
                    break
                after = jobs[-1].id
        missing = [job_id for job_id in wanted if job_id not in seen][: self.max_retrieves]
        for job_id in missing:
            try:
                seen[job_id] = self.provider.retrieve(job_id)
            except ProviderError as error:
                if not error.not_found:
                    raise
                log.warning("the provider no longer knows followed job %s; leaving it as it was", job_id)
            report.requests += 1
        self.store.mark_polled(missing)
