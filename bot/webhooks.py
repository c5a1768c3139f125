"""Webhooks (OpenAI's): a job's end, pushed to us, announced through the same outbox as the poller's findings.

The operator's webhooks come to the provider's route (`/openai/webhook`), verified with the environment's secret. In
OAuth mode each workspace that set its own signing secret with `/finetune keys` has a route of its own
(`/openai/webhook/T0123`, or `E0123` for an org-wide install), verified with that secret only, for the jobs that
workspace owns only: one workspace's deliveries can neither announce nor hide another's.

The web server's thread only verifies and records a delivery; fetching the job happens on the background pool, so a
slow provider can never hold up the threads that ack Slack's requests.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.providers.types import FineTuningProvider, ProviderError, WebhookRejected
from storage import Store

if TYPE_CHECKING:
    from bot.keyring import Keyring

log = logging.getLogger(__name__)

JOB_EVENTS = frozenset({"fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"})
SEGMENT = re.compile(r"[TE][A-Z0-9]{2,31}")  # a Slack team id (T…) or, for an org-wide install, enterprise id (E…)
NOT_HERE = "not found"  # (an unknown workspace and one with no secret answer alike: the route says nothing more)


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    text: str


def webhook_path(provider: str, workspace: str) -> str:
    """The route of `workspace`'s own webhooks from `provider` (`T:T0123` -> `/openai/webhook/T0123`)."""
    return f"/{provider}/webhook/{workspace.partition(':')[2]}"


class WebhookReceiver:
    """One provider's webhooks, verified by `provider`'s secret; `workspace`: they are that workspace's own, and
    concern only the jobs it owns."""

    def __init__(self, provider: FineTuningProvider, store: Store, *, background: Executor,
                 on_queued: Callable[[], None] = lambda: None, workspace: str | None = None) -> None:
        self.provider = provider
        self.store = store
        self.background = background
        self.on_queued = on_queued
        self.workspace = workspace

    def handle(self, body: bytes, headers: Mapping[str, str]) -> WebhookAnswer:
        headers = {k.lower(): v for k, v in headers.items()}
        try:
            event = self.provider.unwrap_webhook(body, headers)
        except WebhookRejected as exc:
            log.warning("refused a webhook: %s", exc)
            return WebhookAnswer(400, "invalid webhook signature")
        # (a workspace's delivery ids are its own: another's, even signed, cannot mark one as seen)
        if not self.store.replays.remember_webhook(f"{self.workspace}/{event.id}" if self.workspace else event.id):
            return WebhookAnswer(200, "already handled")
        if event.type in JOB_EVENTS and event.job_id and self._concerns(event.job_id):
            self.background.submit(self.fetch, event.job_id)
        return WebhookAnswer(200, "ok")

    def _concerns(self, job_id: str) -> bool:
        """A followed job, and (for a workspace's own webhooks) one that workspace owns."""
        name = self.provider.name
        if self.store.follows.job(job_id, name) is None:
            return False
        return self.workspace is None or self.store.workspaces.owner(name, job_id) == self.workspace

    def fetch(self, job_id: str) -> None:
        """Read the job the webhook named and queue its outcome; on failure, polling (always on) catches it."""
        try:
            job = self.provider.retrieve(job_id)
        except ProviderError as error:
            log.warning("webhook for %s: could not fetch the job (%s); polling will", job_id, error.message)
            return
        if self.store.follows.record_jobs([(job.fields(), job.outcome)]):
            self.on_queued()


class WorkspaceWebhooks:
    """The routes under `/<provider>/webhook/` (OAuth mode): each workspace's own, answered by a receiver built on
    that workspace's own provider (its key and its signing secret), never the environment's."""

    def __init__(self, name: str, keyring: Keyring, store: Store, *, background: Executor,
                 on_queued: Callable[[], None] = lambda: None) -> None:
        self.name, self.keyring, self.store = name, keyring, store
        self.background, self.on_queued = background, on_queued

    def handle(self, segment: str, body: bytes, headers: Mapping[str, str]) -> WebhookAnswer:
        if not SEGMENT.fullmatch(segment):
            return WebhookAnswer(404, NOT_HERE)
        workspace = f"{segment[0]}:{segment}"
        if not self.store.workspaces.sealed_key(workspace, self.name):
            return WebhookAnswer(404, NOT_HERE)  # (no key of its own; and an address made up builds no providers)
        providers = self.keyring.providers_for(workspace)
        if providers is None or self.name not in providers:
            return WebhookAnswer(404, NOT_HERE)
        provider = providers.get(self.name)
        shared = {id(p) for p in self.keyring.shared or []}
        if id(provider) in shared or not provider.webhooks_verifiable:
            return WebhookAnswer(404, NOT_HERE)  # its key but no secret of its own: only polling hears of its jobs
        return WebhookReceiver(provider, self.store, background=self.background, on_queued=self.on_queued,
                               workspace=workspace).handle(body, headers)
