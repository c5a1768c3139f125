"""The outbox sender: claims queued announcements, posts them, and decides every retry."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.messages import Message, format_announcement, format_delivery_problem
from bot.slack import NoHistoryAccess, SlackFailure, SlackGateway
from storage import Store

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0
GIVE_UP_AFTER_ATTEMPTS = 60  # about four hours of Slack refusing for now
CHANNEL_SPACING = 1.0  # Slack allows about one message a second in a channel


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    found_already_posted: int = 0


class AnnouncementSender:
    def __init__(self, store: Store, slack: SlackGateway, *, worker_id: str, clock: Callable[[], float] = time.time,
                 lease_seconds: float = 60.0, batch: int = 50,
                 decorate: Callable[[Message], Message] = lambda m: m) -> None:
        self.store = store
        self.slack = slack
        self.worker_id = worker_id
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.decorate = decorate
        self._not_before: dict[str, float] = {}  # per channel: spacing between posts, or Slack's Retry-After
        self._lock = threading.Lock()
        self._again = threading.Event()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._kick_lock = threading.Lock()
        self._kicker: threading.Thread | None = None

    def deliver_due(self) -> DeliveryReport:
        """Deliver what is due now, batch after batch; one caller at a time in this process."""
        report = DeliveryReport()
        if not self._lock.acquire(blocking=False):
            self._again.set()  # the running delivery picks this up before it returns
            return report
        try:
            while not self._stopping.is_set():
                self._again.clear()
                rows = self.store.claim_announcements(self.worker_id, limit=self.batch,
                                                      lease_seconds=self.lease_seconds)
                for row in rows:
                    self._deliver(row, report)
                if not rows and not self._again.is_set():
                    break
        finally:
            self._lock.release()
        return report

    def kick(self) -> None:
        """Deliver now (an outcome was just queued), on one long-lived thread: no thread or connection per kick."""
        with self._kick_lock:
            if self._kicker is None:
                self._kicker = threading.Thread(target=self._deliver_when_kicked, name="deliver-now", daemon=True)
                self._kicker.start()
        self._wake.set()

    def _deliver_when_kicked(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                self.deliver_due()
            except Exception:  # noqa: BLE001 - this thread's last stop; the scheduled delivery retries what is left
                log.exception("delivering just-queued announcements failed; the next scheduled run retries")

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait for an in-flight delivery to finish; False if it did not within `timeout`."""
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
            return True
        return False

    def _deliver(self, row: dict, report: DeliveryReport) -> None:
        key, channel = row["key"], row["channel_id"]
        now = self.clock()
        not_before = self._not_before.get(channel, 0)
        if not_before > now:
            self.store.release(key, self.worker_id, at=not_before)
            report.retried += 1
            return
        if row["uncertain"]:
            try:
                ts = self.slack.find_posted(channel, key, oldest=row["created_at"] - 60)
            except NoHistoryAccess as exc:
                log.warning("re-posting %s after an unconfirmed attempt; cannot read %s's history (%s), "
                            "so this may be a duplicate", key, channel, exc)
                ts = None
            except SlackFailure as failure:
                self._retry(row, failure, report)
                return
            if ts is not None:
                self.store.mark_sent(key, self.worker_id, ts)
                report.found_already_posted += 1
                return
        try:
            ts = self.slack.post(channel, self.decorate(format_announcement(row)), key=key)
        except SlackFailure as failure:
            self._not_before[channel] = self.clock() + CHANNEL_SPACING
            if failure.permanent:
                self._fail(row, failure.reason, report)
            else:
                self._retry(row, failure, report)
            return
        self._not_before[channel] = self.clock() + CHANNEL_SPACING
        self.store.mark_sent(key, self.worker_id, ts)
        report.sent += 1
        log.info("announced %s in %s", key, channel)

    def _retry(self, row: dict, failure: SlackFailure, report: DeliveryReport) -> None:
        attempts = row["attempts"]
        if attempts >= GIVE_UP_AFTER_ATTEMPTS:
            self._fail(row, f"gave up after {attempts} attempts: {failure.reason}", report)
            return
        if failure.retry_after is not None:
            at = self.clock() + failure.retry_after
            self._not_before[row["channel_id"]] = at
            self.store.defer_channel(row["channel_id"], at)
        else:
            delay = min(MAX_BACKOFF, 2.0 ** min(attempts, 10))
            at = self.clock() + delay * random.uniform(0.5, 1.0)
        self.store.mark_retry(row["key"], self.worker_id, at=at, error=failure.reason, uncertain=failure.ambiguous)
        report.retried += 1
        log.warning("could not post %s (%s); trying again in %.1fs", row["key"], failure.reason, at - self.clock())

    def _fail(self, row: dict, reason: str, report: DeliveryReport) -> None:
        self.store.mark_failed(row["key"], self.worker_id, reason)
        report.failed += 1
        log.error("giving up on %s in %s: %s", row["key"], row["channel_id"], reason)
        user = row.get("user_id")
        if not user:
            return
        try:
            self.slack.post(user, self.decorate(format_delivery_problem(row, reason)))
        except SlackFailure as failure:
            log.warning("could not tell %s that %s failed either: %s", user, row["key"], failure.reason)
