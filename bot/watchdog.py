"""The watchdog: a running job's metrics read at most every METRICS_INTERVAL_SECONDS, and a warning (or, where the
channel that started it says so, a cancel) when its run goes bad.

The rules see one shape whatever the provider (a reading: a step, its training and validation loss, when it was
read) and are pure functions of a job's readings, oldest first:
- **nan**: a training or validation loss that is NaN or infinite, at once.
- **rising**: the training loss rose at each of the last RISE_READINGS readings and ended more than RISE_MARGIN
  above the lowest of the readings before them. A single noisy step is normal (batches differ); three rises in a row
  and a tenth above the recent low is a run diverging (a learning rate too high), seen within a few minutes at the
  default interval rather than in the morning.
- **stalled**: the provider says the job is training, yet its newest step was first read more than the stall time
  ago (WATCHDOG_STALL_MINUTES, default 30).
- **overfitting**: over the last OVERFIT_READINGS readings with a validation loss, the validation loss rose at each
  while the training loss fell overall, and ended more than OVERFIT_MARGIN above where it started.
Each is said once per job and kind (the store's mark), to every following channel whose `watchdog` is not `off`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from bot import metrics
from bot.keyring import for_job
from bot.providers.types import FineTuningProvider, Job, ProviderError, Providers
from storage import DB_ERRORS, Store
from storage.engines import is_transient

log = logging.getLogger(__name__)

RISE_READINGS = 3
RISE_MARGIN = 0.10
OVERFIT_READINGS = 4
OVERFIT_MARGIN = 0.05
# The watchdog's reads, over every provider's jobs: at most this many a minute, whatever the poll interval (a cycle
# takes its share: 100 at the default minute, 2 at a 1 s interval; the rest wait for a later cycle). Bounded by time,
# not by cycle, so a short interval never multiplies what the providers are asked.
MAX_METRIC_READS_PER_MINUTE = 100


@dataclass(frozen=True)
class Finding:
    kind: str
    numbers: dict  # what the rule saw, for the warning: losses, steps, minutes


def _bad(value: object) -> bool:
    return isinstance(value, float) and (math.isnan(value) or math.isinf(value))


def _each_higher(values: Sequence[float]) -> bool:
    return all(later > earlier for earlier, later in zip(values, values[1:], strict=False))


def findings(readings: Sequence[Mapping], *, training: bool, now: float, stall_seconds: float) -> list[Finding]:
    """What is wrong with a run, judged from its readings (oldest first)."""
    found = []
    if not readings:
        return found
    last = readings[-1]
    if _bad(last.get("train_loss")) or _bad(last.get("valid_loss")):
        which = "training" if _bad(last.get("train_loss")) else "validation"
        found.append(Finding("nan", {"step": last["step"], "which": which,
                                     "value": str(last.get("train_loss" if which == "training" else "valid_loss"))}))
    train = [(r["step"], r["train_loss"]) for r in readings
             if isinstance(r.get("train_loss"), float) and not _bad(r["train_loss"])]
    if len(train) > RISE_READINGS:
        rising = train[-(RISE_READINGS + 1):]
        low = min(loss for _, loss in train[:-RISE_READINGS])
        if _each_higher([loss for _, loss in rising]) and rising[-1][1] > low * (1 + RISE_MARGIN):
            found.append(Finding("rising", {"steps": [s for s, _ in rising], "losses": [v for _, v in rising],
                                            "low": low}))
    if training and now - last["read_at"] > stall_seconds:
        first_seen = min(r["read_at"] for r in readings if r["step"] == last["step"])
        if now - first_seen > stall_seconds:
            found.append(Finding("stalled", {"step": last["step"], "minutes": int((now - first_seen) // 60)}))
    both = [r for r in readings if isinstance(r.get("valid_loss"), float) and isinstance(r.get("train_loss"), float)
            and not _bad(r["valid_loss"]) and not _bad(r["train_loss"])][-OVERFIT_READINGS:]
    if len(both) == OVERFIT_READINGS:
        valid = [r["valid_loss"] for r in both]
        if (_each_higher(valid) and valid[-1] > valid[0] * (1 + OVERFIT_MARGIN)
                and both[-1]["train_loss"] < both[0]["train_loss"]):
            found.append(Finding("overfitting", {"steps": [r["step"] for r in both], "valid": valid,
                                                 "train": [r["train_loss"] for r in both]}))
    return found


_FAULTED: set[tuple[str, str]] = set()  # (job, what) whose fault was logged with its traceback (once each)
_FAULTS_KEPT = 10_000


@contextmanager
def one_job(job_id: str, what: str) -> Iterator[None]:
    """One job's part of a cycle: a fault in it (an absurd number a provider sent, a bug) is logged, with its
    traceback once per job, and the cycle goes on with the other jobs. The database away stops the cycle."""
    try:
        yield
    except DB_ERRORS as error:
        if is_transient(error):
            raise
        _fault(job_id, what)
    except Exception:  # noqa: BLE001 - one job must never stop the others
        _fault(job_id, what)


def _fault(job_id: str, what: str) -> None:
    if (job_id, what) in _FAULTED:
        log.debug("%s of %s failed again", what, job_id, exc_info=True)
        return
    if len(_FAULTED) >= _FAULTS_KEPT:
        _FAULTED.clear()
    _FAULTED.add((job_id, what))
    log.exception("%s of %s failed; the other jobs go on (said once per job)", what, job_id)


class Watchdog:
    def __init__(self, store: Store, *, every: float, stall_seconds: float, clock: Callable[[], float],
                 on_queued: Callable[[], None] = lambda: None, interval: float = 60.0,
                 per_minute: int = MAX_METRIC_READS_PER_MINUTE) -> None:
        self.store = store
        self.every = every
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.on_queued = on_queued
        self.max_reads = max(1, min(per_minute, round(per_minute * interval / 60)))  # a cycle's share

    def watch(self, provider: FineTuningProvider, going: Mapping[str, Job], *, budget: int) -> int:
        """Read the metrics of this provider's running jobs that are due a read (at most `budget` of them, longest
        waiting first), and act on what the rules find. Returns the reads made."""
        if not (provider.capabilities.metrics or provider.capabilities.progress):
            return 0
        training = [job.id for job in going.values() if not job.final and job.status in provider.training_statuses]
        reads = 0
        for job_id in self.store.watch.metrics_due(provider.name, training, every=self.every)[:budget]:
            try:
                point = provider.latest_metric(job_id)
            except ProviderError as error:
                log.info("the watchdog could not read %s this cycle: %s", job_id, error.message)
                reads += 1
                break  # (the provider is struggling: the rest wait for the next cycle)
            reads += 1
            with one_job(job_id, "the watchdog's read"):  # one job's fault never stops the others' reads
                self.store.watch.record_reading(provider.name, job_id, point.step if point else None,
                                                point.train_loss if point else None,
                                                point.valid_loss if point else None)
                self.judge(provider, going[job_id])
        return reads

    def judge(self, provider: FineTuningProvider, job: Job) -> int:
        """Act on what the rules find in a job's readings; returns the warnings queued."""
        readings = self.store.watch.readings(provider.name, job.id)
        queued = 0
        for finding in findings(readings, training=job.status in provider.training_statuses, now=self.clock(),
                                stall_seconds=self.stall_seconds):
            claim = self.store.watch.claim(provider.name, job.id, finding.kind, finding.numbers, _cancel_wanted)
            if claim is None:
                continue  # said before (here or by another process)
            metrics.inc("watchdog_findings", kind=finding.kind)
            if claim.cancelling:
                queued += self._cancel_and_say(provider, job.id, finding.kind, finding.numbers, claim.followers)
            else:
                queued += claim.queued
                log.info("watchdog: %s in %s (warned)", finding.kind, job.id)
        if queued:
            self.on_queued()
        return queued

    def finish_interrupted(self, providers: Providers, *, older_than: float) -> int:
        """Findings whose process stopped between claiming them and saying them (a cancel under way): each is taken
        over once, its cancel sent unless the job is known to have ended, and its warning queued. `older_than`: how
        long a claim may be under way in a living process (every request its cancel could make, over)."""
        queued = 0
        for mark in self.store.watch.unsaid(older_than=older_than):
            provider, job_id, kind = mark["provider"], mark["job_id"], mark["kind"]
            followers = self.store.watch.take_over(provider, job_id, kind, older_than=older_than)
            if followers is None:
                continue  # another process has it, or it was said meanwhile
            numbers = json.loads(mark["detail"] or "{}")
            with for_job(self.store, provider, job_id):  # (its workspace's key cancels it)
                if provider not in providers:
                    queued += self.store.watch.say(provider, job_id, kind, {
                        **numbers, "cancel": f"could not: {provider} is no longer configured"}, followers)
                    continue
                queued += self._cancel_and_say(providers.get(provider), job_id, kind, numbers, followers)
        if queued:
            self.on_queued()
        return queued

    def _cancel_and_say(self, provider: FineTuningProvider, job_id: str, kind: str, numbers: dict,
                        followers: list[dict]) -> int:
        stored = self.store.follows.job(job_id, provider.name)
        if stored and stored.get("final"):  # ended meanwhile (an earlier try's cancel, or anyone's): its outcome says
            outcome = {}
        else:
            outcome = {"cancel": self._cancel(provider, job_id)}
        log.info("watchdog: %s in %s (%s)", kind, job_id, outcome.get("cancel", "ended before its cancel"))
        return self.store.watch.say(provider.name, job_id, kind, {**numbers, **outcome}, followers)

    def _cancel(self, provider: FineTuningProvider, job_id: str) -> str:
        """Cancel a run gone bad, once (its finding's mark is this process's); what happened, in words."""
        try:
            cancelled = provider.cancel(job_id)
        except ProviderError as error:
            return f"could not: {error.message}"
        self.store.follows.record_jobs([(cancelled.fields(), cancelled.outcome)])
        return "cancelled"


def _cancel_wanted(followers: list[dict]) -> bool:
    """A channel that started the job asks for runs gone bad to be cancelled (a channel only following it may not)."""
    return any(f["watchdog"] == "cancel" and f["origin"] == "start" for f in followers)
