"""Reading a running job: the watchdog's metric reads per cycle (`watchdog`), and the Slack calls a long job's card
costs its channel (`cards`)."""

from __future__ import annotations

import os
import time

from bench.harness import TOKEN, say
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn
from storage import Store


def bench_watchdog(workdir: str, running: int = 300, cycles: int = 8) -> None:
    """The watchdog's metric reads per poll cycle with `running` jobs training, at the default intervals (a poll
    cycle a minute, each job's metrics at most once a minute), over `cycles` cycles of a clock that is moved on a
    minute a cycle: the real poller, watchdog, store and OpenAI SDK against the stand-in."""
    from bot.config import Settings
    from bot.poller import Poller
    from bot.providers import registry
    from bot.watchdog import Watchdog

    now = [time.time()]
    with FineTuningSandbox() as provider:
        jobs = [provider.add_job(status="running") for _ in range(running)]
        for job in jobs:
            provider.report(job["id"], 1, 2.0)
        settings = Settings(env={"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": provider.url + "/v1"},
                            database_path=os.path.join(workdir, "watchdog.db"))
        store = Store(settings.database_path, clock=lambda: now[0])
        for job in jobs:
            store.follows.follow("C0BENCH", job, final=False, team_id="T", user_id="U0BENCH", origin="start")
        watchdog = Watchdog(store, every=settings.metrics_interval_seconds, clock=lambda: now[0],
                            stall_seconds=60 * settings.watchdog_stall_minutes,
                            interval=settings.poll_interval_seconds)
        poller = Poller(registry.configured(settings), store, interval=settings.poll_interval_seconds,
                        watchdog=watchdog)
        per_cycle, took = [], []
        for _ in range(cycles):
            before = len(provider.requests_to("/events", "GET"))
            poller.run_once(progress=False)
            started = time.perf_counter()
            poller.read_progress()
            took.append(time.perf_counter() - started)
            per_cycle.append(len(provider.requests_to("/events", "GET")) - before)
            now[0] += settings.poll_interval_seconds
        read_at = [r["metrics_read_at"] for r in store.engine.rows("SELECT metrics_read_at FROM jobs")]
        poller.close()
        store.close()
    say("watchdog_running_jobs", running)
    say("watchdog_metric_reads_per_cycle", ",".join(map(str, per_cycle)))
    say("watchdog_metric_reads_cap", watchdog.max_reads)
    say("watchdog_cycle_reads_seconds_max", f"{max(took):.2f}")
    say("watchdog_jobs_read", sum(1 for at in read_at if at))
    say("watchdog_minutes_between_reads_of_a_job", f"{running / watchdog.max_reads:.0f}")


def bench_cards(workdir: str, hours: float = 2.0, step_seconds: int = 10, poll_seconds: int = 30) -> None:
    """A long job's Slack cost per channel, on an injected clock: real store, poller, adapter and sender."""
    from slack_sdk import WebClient

    from bot.config import Settings
    from bot.delivery import AnnouncementSender
    from bot.poller import Poller
    from bot.providers.openai_shape import OpenAIProvider, build_client
    from bot.slack import SlackGateway

    class Clock:
        def __init__(self) -> None:
            self.now = 1_000_000.0

        def __call__(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            self.now += seconds

    total_steps = int(hours * 3600 / step_seconds)
    for minutes in (0, 1, 5, 15):
        with FineTuningSandbox() as provider, SlackStandIn(token=TOKEN) as slack:
            clock = Clock()
            settings = Settings(env={"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": provider.url + "/v1"})
            store = Store(os.path.join(workdir, f"cards-{minutes}.db"), clock=clock)
            client = WebClient(token=TOKEN, base_url=slack.api_url, timeout=5, retry_handlers=[])
            sender = AnnouncementSender(store, SlackGateway(client), worker_id="bench", clock=clock,
                                        sleep=clock.sleep)
            poller = Poller(OpenAIProvider(build_client(settings), sleep=lambda s: None), store,
                            interval=poll_seconds)
            store.channels.set_channel_settings("C0BENCH", "U0BENCH", progress_minutes=minutes)
            job = provider.add_job(status="queued")
            store.follows.follow("C0BENCH", job, final=False, team_id="T", user_id="U0BENCH", origin="start", card=True)
            sender.deliver_due()
            provider.set_status(job["id"], "running")
            started, per_minute = clock.now, {}
            while clock.now - started < hours * 3600:
                provider.train(job["id"], min(total_steps, int((clock.now - started) / step_seconds) + 1),
                               total=total_steps)
                before = len(slack.received)
                poller.run_once()
                sender.deliver_due()
                minute = int((clock.now - started) // 60)
                per_minute[minute] = per_minute.get(minute, 0) + len(slack.received) - before
                clock.now = max(clock.now, started + (int((clock.now - started) // poll_seconds) + 1) * poll_seconds)
            provider.set_status(job["id"], "succeeded")
            poller.run_once()
            sender.deliver_due()
            posts = [p for p in slack.posted if not p["thread_ts"]]  # the card itself
            replies = [p for p in slack.posted if p["thread_ts"]]  # status changes, progress, the outcome
            metric_reads = len(provider.requests_to(f"/fine_tuning/jobs/{job['id']}/events", "GET"))
            label = f"every_{minutes}min" if minutes else "unthrottled"  # (0: the naive design, a reply a poll)
            say(f"cards_{label}_card_posts", len(posts))
            say(f"cards_{label}_card_edits", len(slack.updates))
            say(f"cards_{label}_thread_replies", len(replies))
            say(f"cards_{label}_shown_in_channel", len(slack.shown_in("C0BENCH")))
            say(f"cards_{label}_slack_calls_total", len(posts) + len(slack.updates) + len(replies))
            say(f"cards_{label}_busiest_minute_calls", max(per_minute.values()))
            say(f"cards_{label}_provider_metric_reads", metric_reads)
            sender.stop()
            store.close()
    say("cards_job", f"{hours:g} h, {total_steps} metric steps (one every {step_seconds} s), polled every "
                     f"{poll_seconds} s")
