"""Loss charts in Slack: on demand (`/finetune chart <job_id>`) and in the thread of every success announcement."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from multiprocessing.connection import Connection

from bot import drawing, metrics
from bot.commands import Command, Problem
from bot.jobs import Caller, JobService
from bot.keyring import for_job
from bot.messages.answers import format_note, format_problem, format_provider_error
from bot.messages.blocks import Message
from bot.providers.types import FineTuningProvider, Job, MetricPoint, ProviderError, Providers, ended, provider_label
from bot.slack import SlackFailure, SlackGateway

log = logging.getLogger(__name__)

CHART_PATIENCE = 60.0  # the longest a chart waits for the outbox's outcomes to go out before it is drawn anyway
# Charts after successes waiting to be drawn, at most: a steady stream of successes (thousands of jobs) draws one at
# a time, so past this the newest are skipped (counted, and said in the log) rather than queued without end.
MAX_WAITING_CHARTS = 200
DRAW_DEADLINE = 60.0  # the longest one drawing may take (the first includes starting the drawing process)
DRAWER_IDLE = 600.0  # the drawing process ends after this long without a chart (about 80 MB back), and starts again


class ChartUnavailable(Exception):
    """The drawing process could not draw (it died, or took too long); said in one line."""


def start_drawing(args: list[str], *, pass_fds: Sequence[int], cwd: str) -> subprocess.Popen:
    """The drawing process, as the bot starts it: `args` exec'd with `pass_fds`, its output the bot's."""
    return subprocess.Popen(args, pass_fds=pass_fds, cwd=cwd, stdin=subprocess.DEVNULL)


# How a drawing process is started: `start_drawing`, or, in the tests, one forked from a process that has already
# imported matplotlib (tests/zygote.py): the same process and protocol without a second of imports for every bot.
StartDrawing = Callable[..., subprocess.Popen]


class _Drawer:
    """One drawing process (`python -m bot.drawing`) and our end of its socket. Every wait on it is bounded: a chart
    that takes too long, or a process that died, ends it, and closing it never waits longer than it is given.

    A plain child process rather than multiprocessing's: "spawn" re-runs the bot's main module in the child (the
    `finetune-bot` script, hence the Slack, provider and scheduler libraries) and starts a resource tracker process
    besides (13 MB); this one loads the chart code and matplotlib, nothing else."""

    def __init__(self, start: StartDrawing) -> None:
        ours, theirs = socket.socketpair()
        root = os.path.dirname(os.path.dirname(os.path.abspath(drawing.__file__)))  # (`-m` imports from its cwd)
        try:
            self.process = start([sys.executable, "-m", "bot.drawing", str(theirs.fileno())],
                                 pass_fds=[theirs.fileno()], cwd=root)
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())

    def draw(self, points: Sequence[MetricPoint], title: str, *, timeout: float) -> bytes | None:
        try:
            self._conn.send((list(points), title))
            if not self._conn.poll(timeout):
                raise ChartUnavailable(f"drawing took longer than {timeout:.0f} s")
            kind, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            raise ChartUnavailable("the drawing process ended") from None
        if kind != "ok":
            raise ChartUnavailable(f"the drawing failed ({value})")
        return value

    def close(self, timeout: float) -> None:
        """Close our end (the process then ends by itself), wait at most `timeout`, then end it by force."""
        try:
            self._conn.close()
        except OSError:
            pass
        try:
            self.process.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class ChartService:
    def __init__(self, providers: Providers, jobs: JobService, slack: SlackGateway, *,
                 quiet: Callable[[], bool] = lambda: True, start: StartDrawing = start_drawing) -> None:
        self.providers = providers
        self._start = start
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
        self._skipping = False  # charts are being skipped (said once in the log, until fewer wait)
        self._pending_lock = threading.Lock()
        self._stopping = threading.Event()
        # Drawing itself happens in a process of its own, started with the first chart: matplotlib's rendering holds
        # the interpreter for hundreds of milliseconds a chart, which in the bot's process would stall every ack and
        # post meanwhile (a sweep's fifty charts doubled the acks' p99 under load); and the bot's own memory stays
        # what it was before the first chart. One process, kept for the next chart, ended by `stop`.
        self._drawer: _Drawer | None = None
        self._drawer_lock = threading.Lock()  # guards _drawer and the counts below
        self._draw_lock = threading.Lock()  # one chart at a time through the pipe (charts after outcomes, `chart`)
        self._drawing = 0  # charts being drawn (or waiting to be) now
        self._last_drawn = 0.0  # time.monotonic() of the last chart's end

    def _draw_elsewhere(self, points: Sequence[MetricPoint], title: str) -> bytes | None:
        with self._drawer_lock:
            if self._stopping.is_set():
                raise ChartUnavailable("the bot is stopping")
            self._drawing += 1
        try:
            with self._draw_lock:
                with self._drawer_lock:
                    if self._stopping.is_set():
                        raise ChartUnavailable("the bot is stopping")
                    if self._drawer is None:
                        self._drawer = _Drawer(self._start)
                    drawer = self._drawer
                try:
                    return drawer.draw(points, title, timeout=DRAW_DEADLINE)
                except ChartUnavailable:
                    with self._drawer_lock:
                        if self._drawer is drawer:
                            self._drawer = None  # the next chart starts a new one
                    drawer.close(0)
                    raise
        finally:
            with self._drawer_lock:
                self._drawing -= 1
                self._last_drawn = time.monotonic()

    def release_idle(self, *, idle: float | None = None) -> bool:
        """End the drawing process when no chart has been drawn for `idle` seconds (maintenance calls this): charts
        come with successes, hours apart, and the process holds matplotlib's memory. True when it was ended."""
        idle = DRAWER_IDLE if idle is None else idle
        with self._drawer_lock:
            if self._drawer is None or self._drawing or time.monotonic() - self._last_drawn < idle:
                return False
            drawer, self._drawer = self._drawer, None
        drawer.close(5)
        return True

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
        points = owner.metrics(job.id)
        title = f"{job.id} · {job.fine_tuned_model or job.model}"
        try:
            png = self._draw_elsewhere(points, title)
        except ChartUnavailable as error:
            log.warning("could not draw the loss chart of %s: %s", job.id, error)
            return f"The loss chart of {job.id} could not be drawn this time ({error}); try again in a moment."
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
        with self._pending_lock:
            # Skipping begins at MAX_WAITING_CHARTS and lasts until half of them are drawn: said once a wave.
            if len(self._pending) >= (MAX_WAITING_CHARTS // 2 if self._skipping else MAX_WAITING_CHARTS):
                if not self._skipping:
                    log.warning("%d loss charts are waiting to be drawn: the charts of further successes are skipped "
                                "until half of them are", len(self._pending))
                self._skipping = True
                metrics.inc("charts_skipped")
                return
            self._skipping = False
            try:  # (its patience counts from now: charts queued together wait out one, not one each)
                future = self._pool.submit(self._chart_in_thread, row, ts, time.monotonic() + CHART_PATIENCE)
            except RuntimeError:  # stopped meanwhile
                return
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
        started = time.monotonic()
        self.wait_idle(timeout)
        with self._drawer_lock:
            drawer, self._drawer = self._drawer, None
        if drawer is not None:
            drawer.close(timeout - (time.monotonic() - started))  # its process ends with the bot, never left behind

    def _chart_in_thread(self, row: dict, ts: str, deadline: float) -> None:
        while not self.quiet() and time.monotonic() < deadline and not self._stopping.wait(0.1):
            pass
        if self._stopping.is_set():
            return
        try:
            with for_job(self.jobs.store, row["provider"], row["job_id"]):  # (its workspace's key reads its metrics)
                owner = self.providers.get(row["provider"])  # (named since start-up adopted any unnamed rows)
                stored = self.jobs.store.follows.job(row["job_id"], owner.name)  # as announced: no need to ask again
                job = Job.from_row(stored) if stored else owner.retrieve(row["job_id"])
                self.share(owner, job, row["channel_id"], thread_ts=ts)
        except (ProviderError, SlackFailure, ChartUnavailable) as error:  # (said by the provider or Slack: one line)
            log.warning("could not post the loss chart of %s (%s)", row.get("job_id"),
                        getattr(error, "message", None) or getattr(error, "reason", None) or error)
        except Exception:  # noqa: BLE001 - best effort after the announcement itself went out
            log.warning("could not post the loss chart of %s", row.get("job_id"), exc_info=True)
