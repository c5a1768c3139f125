"""OpenAI webhooks: a job's end, pushed to us, announced through the same outbox as the poller's findings.

The web server's thread only verifies and records a delivery; fetching the job happens on the background pool, so a
slow provider can never hold up the threads that ack Slack's requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

from bot.providers.types import FineTuningProvider, ProviderError, WebhookRejected
from storage import Store

log = logging.getLogger(__name__)

JOB_EVENTS = frozenset({"fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"})


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    text: str


class WebhookReceiver:
    def __init__(self, provider: FineTuningProvider, store: Store, *, background: Executor,
                 on_queued: Callable[[], None] = lambda: None) -> None:
        self.provider = provider
        self.store = store
        self.background = background
        self.on_queued = on_queued

    def handle(self, body: bytes, headers: Mapping[str, str]) -> WebhookAnswer:
        headers = {k.lower(): v for k, v in headers.items()}
        try:
            event = self.provider.unwrap_webhook(body, headers)
        except WebhookRejected as exc:
            log.warning("refused a webhook: %s", exc)
            return WebhookAnswer(400, "invalid webhook signature")
        if not self.store.replays.remember_webhook(event.id):
            return WebhookAnswer(200, "already handled")
        if event.type in JOB_EVENTS and event.job_id and self.store.follows.job(event.job_id,
                                                                                self.provider.name) is not None:
            self.background.submit(self.fetch, event.job_id)
        return WebhookAnswer(200, "ok")

    def fetch(self, job_id: str) -> None:
        """Read the job the webhook named and queue its outcome; on failure, polling (always on) catches it."""
        try:
            job = self.provider.retrieve(job_id)
        except ProviderError as error:
            log.warning("webhook for %s: could not fetch the job (%s); polling will", job_id, error.message)
            return
        if self.store.follows.record_jobs([(job.fields(), job.outcome)]):
            self.on_queued()
