"""Loss charts in Slack: on demand (`/finetune chart <job_id>`) and in the thread of every success announcement."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from bot.commands import Command, Problem
from bot.jobs import Caller, JobService
from bot.messages import Message, format_note, format_problem, format_provider_error
from bot.providers.types import FineTuningProvider, Job, ProviderError, Providers, ended, provider_label
from bot.slack import SlackFailure, SlackGateway

log = logging.getLogger(__name__)

CHART_PATIENCE = 60.0  # the longest a chart waits for the outbox's outcomes to go out before it is drawn anyway


class ChartService:
    def __init__(self, providers: Providers, jobs: JobService, slack: SlackGateway, *,
                 quiet: Callable[[], bool] = lambda: True) -> None:
        self.providers = providers
        # Whether no outcome waits to be posted: drawing is CPU-bound and holds the interpreter, so a chart waits for
        # the outcomes (a sweep's thirty at once) to go out first, for up to CHART_PATIENCE seconds.
        self.quiet = quiet
        self.jobs = jobs
        self.slack = slack
        # Charts after announcements are drawn one at a time on one thread made once (its database connection with
        # it): rare, CPU-bound, never worth more threads, and never a thread per chart. Stopping drops the queued ones
        # (a chart lost then is not worth an announcement) and waits for the one being drawn: native drawing code
        # must not be running while the interpreter shuts down.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finetune-chart")
        self._pending: set[Future] = set()
        self._pending_lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self, command: Command, caller: Caller) -> Message:
        """`/finetune chart <job_id>`: the job's loss chart, shared in this channel."""
        job_id = str(command.args["job_id"])
        try:
            owner, job = self.jobs.locate(job_id, command.args.get("provider"))
            job = job or owner.retrieve(job_id)
            return format_note(self.share(owner, job, caller.channel_id), emoji=":chart_with_downwards_trend:")
        except ProviderError as error:
            return format_provider_error(f"{command.spec.doing} {job_id}", error)
        except SlackFailure as failure:
            return format_problem(Problem(f"Slack refused the chart ({failure.reason})."))

    def share(self, owner: FineTuningProvider, job: Job, channel: str, *, thread_ts: str | None = None) -> str:
        """Draw the job's training loss and share it; a sentence saying what happened."""
        if not owner.capabilities.metrics:
            return f"No chart: {provider_label(owner.name)} does not report training metrics."
        from bot.charts import loss_chart  # matplotlib is loaded when the first chart is drawn, not at start-up

        points = owner.metrics(job.id)
        title = f"{job.id} · {job.fine_tuned_model or job.model}"
        png = loss_chart(points, title=title)
        if png is None:
            if job.final:
                return (f"Job {job.id} {ended(job)} before it reported any training metrics, so there is nothing to "
                        "draw.")
            return f"Job {job.id} has no training metrics yet, so there is nothing to draw."
        name = re.sub(r"[^A-Za-z0-9._-]", "_", job.id) + "-loss.png"
        self.slack.upload_png(channel, name, png, title=f"Training loss of {job.id}", thread_ts=thread_ts,
                              comment=None if thread_ts else f"Training loss of {job.id} ({len(points)} steps)")
        return f"The loss chart of {job.id} ({len(points)} steps) is in the channel."

    def after_announced(self, row: dict, ts: str) -> None:
        """A success was just announced: its chart goes into that message's thread, in the background. A chart
        lost to a crash here is not worth a repeated announcement, so it is never retried."""
        if row.get("kind") != "announcement" or row.get("outcome") != "succeeded" or self._stopping.is_set():
            return
        try:
            future = self._pool.submit(self._chart_in_thread, row, ts)
        except RuntimeError:  # stopped meanwhile
            return
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def wait_idle(self, timeout: float) -> None:
        """Wait (at most `timeout`) until every chart asked for so far has been shared or given up."""
        with self._pending_lock:
            pending = set(self._pending)
        wait(pending, timeout=timeout)

    def stop(self, timeout: float) -> None:
        """Draw nothing more; wait (at most `timeout`) for the chart being drawn, if any."""
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.wait_idle(timeout)

    def _chart_in_thread(self, row: dict, ts: str) -> None:
        deadline = time.monotonic() + CHART_PATIENCE
        while not self.quiet() and time.monotonic() < deadline and not self._stopping.wait(0.1):
            pass
        if self._stopping.is_set():
            return
        try:
            owner = self.providers.get(row.get("provider") or "openai")
            stored = self.jobs.store.job(row["job_id"], owner.name)  # as announced: no need to ask again
            job = Job.from_row(stored) if stored else owner.retrieve(row["job_id"])
            self.share(owner, job, row["channel_id"], thread_ts=ts)
        except Exception:  # noqa: BLE001 - best effort after the announcement itself went out
            log.warning("could not post the loss chart of %s", row.get("job_id"), exc_info=True)
