"""The outbox sender: claims queued announcements one at a time, posts them, and decides every retry.

Slack asking us to wait (429 with Retry-After) is never a failure: the channel waits as long as Slack says, for as
long as it takes. Real failures (5xx, timeouts, dropped connections) are retried with backoff until the
announcement has been waiting `give_up_seconds`; Slack refusing for good (archived channel, bad blocks, …) is
recorded at once and whoever started or subscribed the job gets a direct message, queued in this same outbox.

Rows come in kinds, each worth what it is: an outcome (`announcement`) exactly once, in its job card's thread and the
channel when there is a card; the `card` itself once; a card edit (`card_update`) redone rather than lost, since it
draws the job as stored; a thread reply (`progress`) at most once. A card goes before everything about its job.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

from bot import metrics
from bot.messages.blocks import Message, duration
from bot.messages.cards import (
    Subscription,
    format_announcement,
    format_card,
    format_delivery_problem,
    format_progress,
    format_watchdog,
)
from bot.move_messages import format_retiring_notice, move_links
from bot.providers.types import Job
from bot.slack import CARD_GONE_ERRORS, CONTENT_ERRORS, NoHistoryAccess, SlackFailure, SlackGateway
from bot.turns import ChannelTurns
from storage import DB_ERRORS, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF = 300.0
CHANNEL_SPACING = 1.0  # Slack allows about one message a second in a channel
# "Short bursts >1 allowed" (Slack's rate-limit guide): a channel has posts in hand, one back a second up to this many,
# so its average stays one a second. An outcome goes whenever one is in hand, a thread reply only when all are: a
# sweep's replies always leave two for a wave's outcomes, so a channel's first two outcomes never wait for them.
POST_BURST = 3
IN_HAND_SLACK = 1e-6  # a post back "a second later" to the float's precision is back
WAIT_FOR_NEXT = 1.5  # a row due this soon is waited for in the same run, so one busy channel drains at Slack's pace
RUN_LIMIT = 30.0  # one run hands back after this long; the scheduler starts the next a second later
# Card edits and thread replies yield: after this long working through them, the due rows are read again, so an
# outcome that fell due meanwhile (its channel's pace allowing) goes next rather than after the whole wave.
LOW_PRIORITY = frozenset({"card_update", "progress"})
# Which of a channel's rows wait along with one that must wait its turn: a card edit holds back only edits; a thread
# reply only replies (an outcome with a post in hand may follow a reply at once); anything else every post.
POSTS = ("announcement", "card", "progress", "delivery_problem", "watchdog", "retiring")
DEFERRED_WITH = {"card_update": ("card_update",), "progress": ("progress",)}
REFETCH_AFTER = 0.2


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    waited: int = 0  # Slack asked us to wait (not counted as an attempt)
    failed: int = 0
    found_already_posted: int = 0


class AnnouncementSender:
    def __init__(self, store: Store, slack: SlackGateway, *, worker_id: str, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] | None = None, lease_seconds: float = 60.0,
                 give_up_seconds: float = 86400.0, batch: int = 50,
                 decorate: Callable[[Message], Message] = lambda m: m,
                 on_sent: Callable[[dict, str], None] = lambda row, ts: None,
                 scope: Callable[[str, str], AbstractContextManager] | None = None) -> None:
        self.store = store
        self.slack = slack
        self.worker_id = worker_id
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.give_up_seconds = give_up_seconds
        self.batch = batch
        self.decorate = decorate
        self.on_sent = on_sent  # what follows a posted announcement (its chart): best effort, never a repeat of it
        # OAuth mode: each row is sent as its job's workspace (provider, job id -> a context), so every post and edit
        # carries that workspace's token, whoever last spoke in the channel (a Slack Connect channel has several).
        self.scope = scope
        # How each kind of queued row is sent: (its ts, its thread's root), or None when settled without a post.
        self._senders: dict[str, Callable[[dict, Job, int], tuple[str, str] | None]] = {
            "announcement": self._send_announcement, "delivery_problem": self._send_delivery_problem,
            "card": self._send_card, "card_update": self._send_card_update, "progress": self._send_progress,
            "retiring": self._send_retiring, "watchdog": self._send_watchdog}
        self._not_before: dict[str, float] = {}  # per channel: spacing between posts, or Slack's Retry-After
        self._edits_not_before: dict[str, float] = {}  # per channel: spacing between card edits (chat.update)
        self._in_hand: dict[str, tuple[float, float]] = {}  # per channel: posts in hand after its last post, and when
        # The channels this process posts in, and Slack's Retry-After in each, which nothing goes before.
        self.channels = ChannelTurns(store, worker_id, clock=clock, on_takeover=self._empty_handed)
        self._lock = threading.Lock()
        self._again = threading.Event()
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._wake = threading.Event()
        self._kick_lock = threading.Lock()
        self._kicker: threading.Thread | None = None

    def deliver_due(self) -> DeliveryReport:
        """Deliver what is due now, and what falls due within a moment; one caller at a time in this process."""
        report = DeliveryReport()
        if not self._lock.acquire(blocking=False):
            self._again.set()  # the running delivery picks this up before it returns
            return report
        started = self.clock()
        try:
            while not self._stopping.is_set() and self.clock() - started < RUN_LIMIT:
                self._again.clear()
                rows = self.store.outbox.due_announcements(limit=self.batch)
                fetched = self.clock()
                others = 0
                for row in rows:
                    if self._stopping.is_set():
                        break  # what is not claimed stays queued for the next run; nothing is cut off mid-post
                    if row["kind"] in LOW_PRIORITY and self.clock() - fetched > REFETCH_AFTER:
                        break  # a wave of edits and replies: look again, for outcomes that fell due meanwhile
                    if not self.channels.mine(row["channel_id"]):
                        others += 1  # another process posts in that channel now: its rows are that one's
                        continue
                    with self.scope(row["provider"], row["job_id"]) if self.scope else nullcontext():
                        self._deliver(row, report)
                if others and others == len(rows) and not self._again.is_set():
                    break  # everything due is other processes' to post
                if rows or self._again.is_set():
                    continue
                due = self.store.outbox.next_due()
                wait = None if due is None else due - self.clock()
                if wait is None or wait > WAIT_FOR_NEXT:
                    break
                self._sleep(max(0.0, wait))
        finally:
            self._lock.release()
        return report

    def kick(self, *, others: bool = True) -> None:
        """Deliver now (an outcome was just queued), on one long-lived thread: no thread or connection per kick; and
        wake the other replicas (PostgreSQL), so the one that holds the channel's turn posts it now too (not when
        another replica woke this one: `others=False`)."""
        with self._kick_lock:
            if self._kicker is None:
                self._kicker = threading.Thread(target=self._deliver_when_kicked, name="deliver-now", daemon=True)
                self._kicker.start()
        self._wake.set()
        if others:
            try:
                self.store.outbox.wake_others()
            except DB_ERRORS as error:
                log.info("could not wake the other replicas (%s); they deliver at their next run", error)

    def _deliver_when_kicked(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                self.deliver_due()
            except DB_ERRORS as error:
                log.warning("delivering just-queued announcements found the database away (%s); the next scheduled "
                            "run retries", error)
            except Exception:  # noqa: BLE001 - this thread's last stop; the scheduled delivery retries what is left
                log.exception("delivering just-queued announcements failed; the next scheduled run retries")

    def listen(self) -> None:
        """Until stopped: wake whenever another replica queues posts (PostgreSQL's LISTEN; returns at once on
        SQLite). Run on a thread of its own."""
        self.store.outbox.listen(lambda: self.kick(others=False), self._stopping, presence=self.worker_id)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def give_back_channels(self) -> None:
        """At stop, once idle: the channels this process posts in pass to the next process that has something for
        them, except those Slack asked to wait (their turn runs till then, so nobody posts early)."""
        self.channels.give_back()

    def _empty_handed(self, channel: str) -> None:
        """A channel taken over from a holder that died: it may have spent the channel's burst just before, so the
        first posts here go at a post a second."""
        self._in_hand[channel] = (0.0, self.clock())

    def wait_idle(self, timeout: float) -> bool:
        """Wait for an in-flight delivery to finish; False if it did not within `timeout`."""
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
            return True
        return False

    # -- one announcement ------------------------------------------------------------------------------

    def _deliver(self, due: dict, report: DeliveryReport) -> None:
        channel = due["channel_id"]
        if due["kind"] not in self._senders:
            # A row a newer bot queued, of a kind this one cannot send: failed, saying why, before any pacing (no
            # pacing would ever hold it back, and a delivery run would take it up again and again).
            if self.store.outbox.claim(due["key"], self.worker_id, lease_seconds=self.lease_seconds) is not None:
                self.store.outbox.mark_failed(due["key"], self.worker_id, f"no way to send a {due['kind']!r} here")
                report.failed += 1
            return
        edit = due["kind"] == "card_update"
        not_before = (self._edits_not_before if edit else self._not_before).get(channel, 0)
        if due["kind"] == "progress":
            # A thread reply waits until every post is back in hand: it never takes one kept for an outcome. (A card
            # keeps only the plain spacing: an outcome may be waiting for it.)
            short = POST_BURST - self._posts_in_hand(channel)
            if short > IN_HAND_SLACK:
                not_before = max(not_before, self.clock() + short * CHANNEL_SPACING)
        # An outcome does not wait out the spacing when the channel has a post in hand (Slack allows short bursts):
        # a sweep's cards and progress replies never cost an outcome a second, nor does a quiet channel's second
        # outcome of a wave. Slack asking us to wait holds everything.
        yields = (due["kind"] == "announcement" and self.clock() >= self.channels.slack_wait(channel)
                  and self._posts_in_hand(channel) >= 1 - IN_HAND_SLACK)
        if not_before > self.clock() and not yields:
            # Its turn comes at Slack's pace (no claim, no attempt): posts at a post a second, card edits (chat.update,
            # a rate tier of its own) at an edit a second, neither waiting for the other.
            self.store.outbox.defer_channel(channel, not_before, kinds=DEFERRED_WITH.get(due["kind"], POSTS))
            return
        row = self.store.outbox.claim(due["key"], self.worker_id, lease_seconds=self.lease_seconds)
        if row is None:
            return  # another process took it, or it was sent meanwhile
        key = row["key"]
        if row["kind"] != "card":
            card = self.store.cards.card(channel, row["job_id"], row["provider"])
            if card is not None and card["state"] in {"pending", "sending"}:
                # The card goes first: an outcome or edit before it would have no thread or nothing to edit.
                held = card["lease_until"] if card["state"] == "sending" else card["next_attempt_at"]
                at = max(held or 0, self.clock()) + CHANNEL_SPACING
                self.store.outbox.release(key, self.worker_id, at=at)
                return
        if row["kind"] == "card_update" and self.store.cards.card_edit_in_flight(row, self.clock()):
            # One edit of a card at a time, across processes: each draws the job as it is when made, so the last
            # one made is the job's latest state only if no older drawing can land after it.
            self.store.outbox.release(key, self.worker_id, at=self.clock() + CHANNEL_SPACING)
            return
        if row["kind"] == "progress":
            older = self.store.outbox.older_reply_held(row)
            if older is not None:  # an earlier state's reply is still to go: this one goes after it
                self.store.outbox.release(key, self.worker_id, at=max(older, self.clock()) + IN_HAND_SLACK)
                return
        if row["uncertain"] and row["kind"] == "progress":
            # At most once: a progress reply that may have landed is not worth a second one.
            self.store.outbox.mark_skipped(key, self.worker_id, "an earlier attempt may have posted it")
            return
        if row["uncertain"] and row["kind"] != "card_update":  # (an edit is safe to make twice)
            try:
                ts = self.slack.find_posted(channel, key, oldest=row["created_at"] - 60)
            except NoHistoryAccess as exc:
                log.warning("re-posting %s after an unconfirmed attempt; cannot read %s's history (%s), "
                            "so this may be a duplicate", key, channel, exc)
                ts = None
            except SlackFailure as failure:
                self._handle_failure(row, failure, report)
                return
            if ts is not None:
                if row["kind"] == "card":
                    self.store.cards.set_card(channel, row["job_id"], row["provider"], ts=ts)
                self.store.outbox.mark_sent(key, self.worker_id, ts)
                report.found_already_posted += 1
                return
        stored = self.store.follows.job(row["job_id"], row["provider"])
        if stored is None:
            self.store.outbox.mark_failed(key, self.worker_id, "the job is no longer known to this bot")
            report.failed += 1
            return
        try:
            sent = self._senders[row["kind"]](row, Job.from_row(stored), stored.get("revision") or 0)
        except SlackFailure as failure:
            self._handle_failure(row, failure, report)
            return
        if sent is None:
            return  # settled without a post (nothing to edit, or nowhere to show it)
        ts, thread_root = sent
        if self.store.outbox.mark_sent(key, self.worker_id, ts):
            self.on_sent(row, thread_root)
        report.sent += 1
        metrics.inc("announcements_delivered", kind=row["kind"])
        log.info("delivered %s (%s) in %s", key, row["kind"], channel,
                 extra={"job": row["job_id"], "provider": row["provider"], "channel": channel})

    # -- each kind of row: the Slack call it makes, returning (its ts, the thread it belongs to) ---------------

    def _subscription(self, row: dict) -> Subscription:
        settings = self.store.channels.channel_settings(row["channel_id"])
        return Subscription(row["channel_id"], row.get("user_id"), row.get("origin"), bool(settings["mentions"]),
                            outcomes=settings["outcomes"], progress=bool(settings["progress"]))

    def _send_announcement(self, row: dict, job: Job, revision: int) -> tuple[str, str]:
        """The outcome: in the card's thread and in the channel when there is a card, else a plain message."""
        channel, key = row["channel_id"], row["key"]
        message = self.decorate(format_announcement(job, row["outcome"], self._subscription(row),
                                                    moved_from=self.store.moves.moved_from(job.provider, job.id)))
        card = self.store.cards.card(channel, row["job_id"], row["provider"])
        if card is not None and card["card_ts"]:
            try:
                with self._on_card(row):
                    return self._post(channel, message, key, thread_ts=card["card_ts"]), card["card_ts"]
            except SlackFailure as failure:
                if failure.reason not in CARD_GONE_ERRORS:
                    raise
                log.warning("the card of %s in %s is gone (%s); its outcome goes to the channel", row["job_id"],
                            channel, failure.reason)
        ts = self._post(channel, message, key)
        return ts, ts

    def _send_delivery_problem(self, row: dict, job: Job, revision: int) -> tuple[str, str]:
        original = self.store.outbox.announcement(
            f"{row['provider']}:{row['job_id']}:{row['about_channel']}:{row['outcome']}") or {}
        reason = original.get("last_error") or "an error"
        message = self.decorate(format_delivery_problem(job, row["outcome"], row["about_channel"], reason,
                                                        bot_user_id=self.slack.bot_user_id(row["about_channel"])))
        ts = self._post(row["channel_id"], message, row["key"])
        return ts, ts

    def _card(self, row: dict, job: Job) -> Message:
        """A job's card as the channel sees it, with where it moved from or to."""
        links = move_links(self.store.moves.moved_from(job.provider, job.id),
                           self.store.moves.moved_to(job.provider, job.id))
        return self.decorate(format_card(job, self._subscription(row), links=links))

    def _send_card(self, row: dict, job: Job, revision: int) -> tuple[str, str] | None:
        if job.final:
            # The job ended before its card went up (a takeover, an outage): the outcome's announcement, owed here
            # or made already, is the one message the channel sees for it, not a card and then the announcement.
            owed = self.store.outbox.announcement(f"{row['provider']}:{row['job_id']}:{row['channel_id']}:"
                                                  f"{job.outcome}")
            if owed is not None and owed["state"] in {"pending", "sending", "sent"}:
                self.store.outbox.mark_skipped(row["key"], self.worker_id, "the job had ended: its outcome says it")
                return None
        ts = self._post(row["channel_id"], self._card(row, job), row["key"])
        self.store.cards.set_card(row["channel_id"], row["job_id"], row["provider"], ts=ts, revision=revision)
        return ts, ts

    def _send_card_update(self, row: dict, job: Job, revision: int) -> tuple[str, str] | None:
        channel = row["channel_id"]
        card = self.store.cards.card(channel, row["job_id"], row["provider"])
        wanted = json.loads(row.get("detail") or "{}").get("revision", revision)
        if card is None or not card["card_ts"]:
            self.store.outbox.mark_skipped(row["key"], self.worker_id, "no card to edit")
            return None
        if card["card_revision"] >= wanted:
            self.store.outbox.mark_skipped(row["key"], self.worker_id, "the card already shows it")
            return None
        message = self._card(row, job)
        with self._on_card(row):
            self._send(channel, message, lambda m: self.slack.update(channel, card["card_ts"], m), row["key"],
                       pace=self._edits_not_before)
        self.store.cards.set_card(channel, row["job_id"], row["provider"], revision=revision)
        return card["card_ts"], card["card_ts"]

    def _send_progress(self, row: dict, job: Job, revision: int) -> tuple[str, str] | None:
        channel = row["channel_id"]
        card = self.store.cards.card(channel, row["job_id"], row["provider"])
        if card is None or not card["card_ts"]:
            self.store.outbox.mark_skipped(row["key"], self.worker_id, "no card thread to reply in")
            return None
        if job.final:
            self.store.outbox.mark_skipped(row["key"], self.worker_id, "the job has ended: its outcome says the rest")
            return None
        message = self.decorate(format_progress(job, json.loads(row.get("detail") or "{}")))
        with self._on_card(row):
            return (self._post(channel, message, None, thread_ts=card["card_ts"], broadcast=False),
                    card["card_ts"])

    def _send_retiring(self, row: dict, job: Job, revision: int) -> tuple[str, str]:
        """The notice before a date that puts fine-tunes this channel follows at risk (once per channel and date)."""
        message = self.decorate(format_retiring_notice(json.loads(row.get("detail") or "{}")))
        ts = self._post(row["channel_id"], message, row["key"])
        return ts, ts

    def _send_watchdog(self, row: dict, job: Job, revision: int) -> tuple[str, str]:
        """A warning in the card's thread (and in the channel when the run was cancelled), else in the channel."""
        channel = row["channel_id"]
        detail = json.loads(row.get("detail") or "{}")
        message = self.decorate(format_watchdog(job, detail, self._subscription(row)))
        card = self.store.cards.card(channel, row["job_id"], row["provider"])
        if card is not None and card["card_ts"]:
            with self._on_card(row):
                return (self._post(channel, message, row["key"], thread_ts=card["card_ts"],
                                   broadcast=detail.get("cancel") == "cancelled"), card["card_ts"])
        ts = self._post(channel, message, row["key"])
        return ts, ts

    @contextmanager
    def _on_card(self, row: dict) -> Iterator[None]:
        """A Slack call on the row's card or its thread: Slack saying the card is gone is remembered, so that nothing
        more waits on it and the outcome goes to the channel."""
        try:
            yield
        except SlackFailure as failure:
            if failure.reason in CARD_GONE_ERRORS:
                self.store.cards.set_card(row["channel_id"], row["job_id"], row["provider"], ts="")
            raise

    def _post(self, channel: str, message: Message, key: str | None, *, thread_ts: str | None = None,
              broadcast: bool = True) -> str:
        """Post (in a thread with `thread_ts`, also shown in the channel unless `broadcast` is False); its ts. Every
        attempt, refused or not, spends one of the channel's posts in hand."""
        where = {"thread_ts": thread_ts, "broadcast": broadcast} if thread_ts else {}
        try:
            return self._send(channel, message, lambda m: self.slack.post(channel, m, key=key, **where), key)
        finally:
            self._in_hand[channel] = (self._posts_in_hand(channel) - 1, self.clock())

    def _posts_in_hand(self, channel: str) -> float:
        """How many posts the channel could make at once now: one back per second since its last, at most a burst."""
        held, at = self._in_hand.get(channel, (POST_BURST, 0.0))
        return min(POST_BURST, held + (self.clock() - at) / CHANNEL_SPACING)

    def _send(self, channel: str, message: Message, send: Callable[[Message], T], key: str | None, *,
              pace: dict[str, float] | None = None) -> T:
        """Post or edit through `send`; when Slack refuses the blocks themselves, the plain text instead (the outcome
        must arrive). Either way the channel's next post (or, with the edits' `pace`, its next edit) waits its
        spacing."""
        try:
            try:
                return send(message)
            except SlackFailure as failure:
                if failure.reason not in CONTENT_ERRORS or not message.blocks:
                    raise
                log.warning("Slack refused the blocks of %s (%s); sending it as plain text", key, failure.reason)
                return send(message.plain())
        finally:
            (self._not_before if pace is None else pace)[channel] = self.clock() + CHANNEL_SPACING

    # -- when Slack says no ------------------------------------------------------------------------------

    def _handle_failure(self, row: dict, failure: SlackFailure, report: DeliveryReport) -> None:
        key, channel = row["key"], row["channel_id"]
        if failure.permanent:
            self._fail(row, failure.reason, report)
            return
        if failure.retry_after is not None:
            # Slack asked us to wait: the whole channel waits that long; no attempt is spent, nothing gives up.
            at = self.clock() + failure.retry_after
            self._not_before[channel] = max(self._not_before.get(channel, 0), at)
            self.channels.keep_until(channel, at)  # no other process posts before Slack said it may
            self.store.outbox.release(key, self.worker_id, at=at, note=failure.reason)
            self.store.outbox.defer_channel(channel, at)
            report.waited += 1
            log.info("Slack asked to wait %.0fs before posting in %s again", failure.retry_after, channel)
            return
        waiting = self.clock() - row["created_at"]
        if waiting >= self.give_up_seconds:
            self._fail(row, f"gave up after {duration(waiting)} of failures; the last: {failure.reason}", report)
            return
        # 2 s, 4 s, 8 s … up to five minutes, with jitter: always longer than a run waits, so each is its own try.
        delay = min(MAX_BACKOFF, 2.0 ** min(row["attempts"] + 2, 10))
        at = self.clock() + delay * random.uniform(0.5, 1.0)
        self.store.outbox.mark_retry(key, self.worker_id, at=at, error=failure.reason, uncertain=failure.ambiguous)
        report.retried += 1
        log.warning("could not post %s (%s); trying again in %.1fs", key, failure.reason, at - self.clock())

    def _fail(self, row: dict, reason: str, report: DeliveryReport) -> None:
        user = row.get("user_id")
        tell = user if row["kind"] == "announcement" and user and user != row["channel_id"] else None
        self.store.outbox.mark_failed(row["key"], self.worker_id, reason, tell=tell)
        report.failed += 1
        log.error("giving up on %s in %s: %s", row["key"], row["channel_id"], reason,
                  extra={"job": row["job_id"], "provider": row["provider"], "channel": row["channel_id"]})
