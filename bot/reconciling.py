"""Starts a crash interrupted: a process that died while asking a provider to start a job left its written-down
intent open. Maintenance settles each one, as the workspace that started it (its key finds the job, and the job
becomes that workspace's own): the job is followed if it exists, and the person who typed the command is told either
way."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.keyring import acting_for
from bot.messages.jobs import format_start_reconciled
from bot.providers.types import ProviderError

if TYPE_CHECKING:
    from bot.jobs import JobService

log = logging.getLogger(__name__)

RESPONSE_URL_LIFETIME = 30 * 60  # Slack accepts replies through a response_url for 30 minutes


def reconcile_starts(jobs: JobService, *, older_than: float, worker: str) -> int:
    """Settle the starts left open longer than `older_than` seconds, each by one process. How many settled."""
    settled = 0
    for intent in jobs.store.replays.claim_orphaned_intents(older_than=older_than, worker=worker):
        workspace = intent.get("workspace") or jobs.store.workspaces.workspace_of(intent["channel_id"])
        with acting_for(workspace):
            settled += _reconcile(jobs, intent)
    return settled


def _reconcile(jobs: JobService, intent: dict) -> int:
    store = jobs.store
    owner = jobs.providers.get(intent["provider"]) if intent["provider"] in jobs.providers else None
    if owner is None:  # (named since start-up adopted any unnamed rows)
        log.warning("an interrupted start at %s, which is not configured now, waits until it is",
                    intent.get("provider"))
        store.replays.reopen_intent(intent["request_id"])
        return 0
    try:
        job = owner.find_started(intent["request_id"], training_file=intent["training_file"], model=intent["model"],
                                 suffix=intent["suffix"], since=intent["created_at"])
    except ProviderError as error:
        log.warning("could not yet check an interrupted start (%s); trying again later", error.message)
        store.replays.reopen_intent(intent["request_id"])
        return 0
    if job is not None:
        jobs.following.claim(owner.name, job.id)  # (the starting workspace's, as a start that was not interrupted)
        store.follows.follow(intent["channel_id"], job.fields(), final=job.final, team_id=intent["team_id"],
                             user_id=intent["user_id"], origin="start", announce=job.outcome, card=True,
                             recorded={"estimate": intent.get("estimate"), "approved_by": intent.get("approved_by")})
        if intent.get("move_id"):
            jobs.link_move(intent["move_id"], job)
        jobs.on_queued()
    elif intent.get("move_id"):
        store.moves.settle(intent["move_id"], "never started")  # (it may be moved again)
    message = format_start_reconciled(job, intent["training_file"], estimate=intent.get("estimate"))
    fresh = jobs.clock() - intent["created_at"] < RESPONSE_URL_LIFETIME - 60
    if not (fresh and intent["response_url"] and jobs.slack.reply(intent["response_url"], message)):
        jobs.slack.post_quietly(intent["user_id"], message)
    store.replays.finish_intent(intent["request_id"], job_id=job.id if job else None,
                                state="reconciled" if job else "never_started")
    log.info("reconciled an interrupted start: %s", job.id if job else "no job was created")
    return 1
