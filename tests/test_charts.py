"""Loss charts: a real PNG drawn with matplotlib, shared through Slack's two-step upload, on demand and in the
thread of a success announcement (the job card's thread, when it has one)."""

from __future__ import annotations

import io
import os
import signal
import struct
import time

import pytest
from PIL import Image

from bot.providers.types import MetricPoint
from tests.conftest import Server, ask, delivered, followed_until_it_ends, wait_until


def _size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_the_chart_is_a_readable_png():
    from bot.charts import loss_chart  # (here, not at the top: the other test processes never import matplotlib)

    points = [MetricPoint(step, 2.0 / step, 2.1 / step if step % 5 == 0 else None) for step in range(1, 101)]
    png = loss_chart(points, title="ftjob-abc · ft:gpt-4.1-mini:acme::x")
    width, height = _size(png)
    assert width >= 800 and height >= 450
    image = Image.open(io.BytesIO(png))
    image.verify()  # a whole, valid PNG
    assert loss_chart([], title="empty") is None
    assert loss_chart([MetricPoint(1)], title="no losses") is None


def test_chart_on_demand_is_uploaded_into_the_channel(server, slack, provider):
    job = provider.add_job(status="succeeded")  # ten steps of metrics, as the sandbox's jobs have
    reply = ask(server, slack, f"chart {job['id']}")
    assert f"The loss chart of {job['id']} (10 steps) is in the channel." in reply["text"]
    [upload] = slack.uploads
    assert upload["channel"] == "C0GENERAL" and upload["thread_ts"] is None
    assert upload["title"] == f"Training loss of {job['id']}" and upload["filename"] == f"{job['id']}-loss.png"
    width, height = _size(upload["_content"])
    assert (width, height) == (1000, 560)
    Image.open(io.BytesIO(upload["_content"])).verify()


def test_a_job_without_metrics_gets_a_sentence_not_an_empty_chart(server, slack, provider):
    job = provider.add_job(status="running")
    reply = ask(server, slack, f"chart {job['id']}")
    assert "has no training metrics yet, so there is nothing to draw" in reply["text"] and slack.uploads == []


def test_a_success_announcement_gets_its_chart_in_its_thread(server, slack, provider, bot):
    followed_until_it_ends(server, bot, slack, provider)
    [card] = wait_until(lambda: slack.cards_in("C0GENERAL"))
    [announcement] = wait_until(lambda: slack.outcomes_in("C0GENERAL"))
    [upload] = wait_until(lambda: slack.uploads)
    assert upload["thread_ts"] == announcement["thread_ts"] == card["ts"] and upload["channel"] == "C0GENERAL"
    delivered(bot.services.sender)
    assert len(slack.uploads) == 1  # one chart per announcement


def test_failures_get_no_chart(server, slack, provider, bot):
    job = provider.add_job(status="running")
    with provider.lock:  # it trained a little before failing: there would be something to draw
        for step in range(1, 4):
            provider._event(provider.jobs[job["id"]], f"Step {step}", type_="metrics",
                            data={"step": step, "train_loss": 1.0 / step})
    ask(server, slack, f"subscribe {job['id']}")
    provider.set_status(job["id"], "failed")
    bot.services.poller.run_once()
    wait_until(lambda: slack.outcomes_in("C0GENERAL"))  # (the outcome, not the card before it)
    assert bot.services.sender.wait_idle(10)  # the announcement's run is over: any chart it asked for is queued
    bot.services.charts.wait_idle(10)
    assert slack.uploads == []
    ask(server, slack, f"chart {job['id']}")  # on demand it draws (so the announcement's silence is deliberate)
    assert len(slack.uploads) == 1 and slack.uploads[0]["thread_ts"] is None


def test_together_charts_come_from_its_metrics_endpoint(make_bot, both, slack, together):
    bot = make_bot(env=both.env)
    server = Server(bot)
    try:
        together.pace = 1.0
        job = together.add_job()
        together.set_status(job["id"], "running")
        together.set_status(job["id"], "completed")
        reply = ask(server, slack, f"chart {job['id']}")
        assert "(10 steps) is in the channel" in reply["text"]
        assert together.requests_to(f"/v1/fine-tunes/{job['id']}/metrics")
        assert _size(slack.uploads[0]["_content"]) == (1000, 560)
    finally:
        server.close()


def test_stopping_waits_for_the_chart_being_drawn_and_drops_the_rest(bot, provider, slack):
    job = provider.add_job(status="succeeded")
    bot.services.store.follows.follow("C1", {"id": job["id"], "provider": "openai", "status": "succeeded",
                                             "model": job["model"], "fine_tuned_model": job["fine_tuned_model"]},
                              final=True, team_id="T", user_id="U", origin="subscribe")
    row = {"kind": "announcement", "outcome": "succeeded", "provider": "openai", "job_id": job["id"],
           "channel_id": "C1"}
    slack.latency = 0.3  # each chart takes about a second to share
    charts = bot.services.charts
    for n in range(5):
        charts.after_announced(row, f"1.00000{n}")
    charts.stop(10)
    assert not charts._pending  # the chart being drawn was finished, not abandoned mid-way
    assert len(slack.uploads) <= 1  # the queued ones were dropped
    charts.after_announced(row, "2.000000")
    assert not charts._pending and len(slack.uploads) <= 1  # nothing starts after stopping


def test_a_stream_of_successes_queues_a_bounded_number_of_charts_each_waiting_out_one_patience(bot, provider,
                                                                                                 monkeypatch, caplog):
    """Outcomes that never stop (thousands of jobs): the charts waiting to be drawn stay at MAX_WAITING_CHARTS, the
    rest are skipped (said once in the log); and charts queued together wait out one CHART_PATIENCE from when each
    was announced, not one each in turn (thirty charts, a 1.5 s patience: not 45 seconds)."""
    from bot import charting

    monkeypatch.setattr(charting, "MAX_WAITING_CHARTS", 30)
    monkeypatch.setattr(charting, "CHART_PATIENCE", 1.5)
    charts = bot.services.charts
    charts.quiet = lambda: False  # the outbox is never empty
    row = {"kind": "announcement", "outcome": "succeeded", "provider": "openai", "job_id": "ftjob-gone",
           "channel_id": "C1"}  # (a job no longer known: each chart ends as soon as its patience does)
    with caplog.at_level("WARNING", logger="bot.charting"):
        for n in range(100):
            charts.after_announced(row, f"1.{n:06d}")
        assert len(charts._pending) == 30
        with charts._pending_lock:  # five of them drawn: skipping goes on until half are
            for future in list(charts._pending)[:5]:
                charts._pending.discard(future)
        for n in range(10):
            charts.after_announced(row, f"3.{n:06d}")
        assert len(charts._pending) == 25
    assert len([r for r in caplog.records if "are skipped" in r.getMessage()]) == 1
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="bot.charting"):
        charts.wait_idle(20)
    assert not charts._pending and time.monotonic() - began < 15  # (one patience each in turn: 45 s)
    failed = [r for r in caplog.records if "could not post the loss chart" in r.getMessage()]
    assert failed and all(r.exc_info is None and "ftjob-gone (" in r.getMessage() for r in failed)  # (one line each)
    for n in range(20):  # none wait now: charts are queued again
        charts.after_announced(row, f"2.{n:06d}")
    assert len(charts._pending) > 0


@pytest.fixture
def own_drawing_bot(make_bot):
    """A bot that starts its drawing process itself, as `serve` does (these tests are of that process's life; the
    others' bots fork theirs from the tests' zygote)."""
    from bot.charting import start_drawing

    return make_bot(start_drawing=start_drawing)


def _children() -> set[int]:
    """This process's children, whichever thread started them."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as children:
                found |= {int(c) for c in children.read().split()}
        except OSError:
            continue
    return found


def _drawers(before: set[int]) -> set[int]:
    """New children: the drawing process, and nothing else (multiprocessing's spawn would add a resource tracker, and
    re-run the bot's main module in the drawer)."""
    return _children() - before


@pytest.mark.heavy(15)
def test_charts_are_drawn_in_one_process_of_their_own_ended_when_idle_and_with_the_bot(own_drawing_bot, provider,
                                                                                        slack):
    """Drawing holds the interpreter for hundreds of milliseconds: in the bot's process it stalled acks and posts (a
    sweep's charts doubled the acks' p99 under load). It happens in one drawing process, started with the first
    chart, kept for the next, ended after a while without charts, started again when needed, ended by stop; one
    killed meanwhile costs a chart, not the next one."""
    bot = own_drawing_bot
    before = _children()
    job = provider.add_job(status="succeeded")
    provider.train(job["id"], 3, total=3)
    stored = {"id": job["id"], "provider": "openai", "status": "succeeded", "model": job["model"],
              "fine_tuned_model": job["fine_tuned_model"]}
    bot.services.store.follows.follow("C1", stored, final=True, team_id="T", user_id="U", origin="subscribe")
    owner, charts = bot.services.providers.get("openai"), bot.services.charts
    from bot.providers.types import Job

    done = Job(**{**stored, "provider": "openai"})
    assert "is in the channel" in charts.share(owner, done, "C1")
    [drawer] = _drawers(before)
    assert "is in the channel" in charts.share(owner, done, "C1")
    assert _drawers(before) == {drawer}  # the same process drew the second
    assert len(slack.uploads) == 2

    assert not charts.release_idle(idle=600)  # drew a moment ago: kept
    assert charts.release_idle(idle=0)
    assert wait_until(lambda: not _drawers(before), timeout=10)
    assert "is in the channel" in charts.share(owner, done, "C1")  # started again for the next chart
    [again] = _drawers(before)

    os.kill(again, signal.SIGKILL)  # killed (out of memory, say) between charts
    wait_until(lambda: not _drawers(before), timeout=10)
    said = charts.share(owner, done, "C1")
    if "is in the channel" not in said:  # the pool saw its process die: this chart is lost, said plainly
        assert "could not be drawn this time" in said
        assert "is in the channel" in charts.share(owner, done, "C1")  # and the next starts a new process
    charts.stop(10)
    assert not _drawers(before)  # ended (and reaped) before stop returned: nothing outlives the bot


def test_maintenance_ends_a_drawing_process_left_idle(own_drawing_bot, provider, slack, monkeypatch):
    bot = own_drawing_bot
    import bot.charting as charting

    monkeypatch.setattr(charting, "DRAWER_IDLE", 0.0)  # (ten minutes in the bot)
    before = _children()
    job = provider.add_job(status="succeeded")
    provider.train(job["id"], 3, total=3)
    from bot.providers.types import Job

    done = Job(id=job["id"], status="succeeded", model=job["model"], fine_tuned_model=job["fine_tuned_model"],
               provider="openai")
    assert "is in the channel" in bot.services.charts.share(bot.services.providers.get("openai"), done, "C1")
    assert _drawers(before)
    bot.scheduler.get_job("maintain").func()  # what the scheduler runs every minute
    assert not _drawers(before)


def test_stop_ends_a_drawing_process_that_hangs_within_its_budget(own_drawing_bot, provider, slack):
    """A drawing process that stops answering (stopped, swapped out, stuck in native code) holds a chart at most
    DRAW_DEADLINE, and never holds up the bot's stop: it is ended by force when the budget runs out."""
    bot = own_drawing_bot
    from bot.providers.types import Job

    before = _children()
    job = provider.add_job(status="succeeded")
    provider.train(job["id"], 3, total=3)
    done = Job(id=job["id"], status="succeeded", model=job["model"], fine_tuned_model=job["fine_tuned_model"],
               provider="openai")
    owner, charts = bot.services.providers.get("openai"), bot.services.charts
    assert "is in the channel" in charts.share(owner, done, "C1")
    [drawer] = _drawers(before)
    os.kill(drawer, signal.SIGSTOP)
    try:
        _stop_within_budget(charts, owner, done, before)
    finally:
        for pid in _drawers(before):  # (only if the guard failed: nothing is left stopped behind the test)
            os.kill(pid, signal.SIGKILL)


def _stop_within_budget(charts, owner, done, before):
    import threading
    import time

    said = []
    waiting = threading.Thread(target=lambda: said.append(charts.share(owner, done, "C1")), daemon=True)
    waiting.start()
    time.sleep(0.3)
    started = time.monotonic()
    charts.stop(2)
    assert time.monotonic() - started < 5
    assert not _drawers(before)  # killed (a stopped process cannot end by itself)
    waiting.join(5)
    assert said and "could not be drawn this time" in said[0]
