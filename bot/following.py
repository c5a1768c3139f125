"""What following a job is, shared by the services that make or show follows: a follow recorded (and its card
sent at once), what a command learnt of a job recorded like a poll, a channel's follows a page at a time, whether
the bot can post in a channel, and where a job was moved from and to."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from bot.installs import WORKSPACE
from bot.messages.answers import invite_warning
from bot.messages.jobs import FOLLOWS_PAGE, RECENT_FINISHED, FollowsPage
from bot.move_messages import move_links
from bot.providers.types import Job
from bot.slack import SlackGateway
from storage import Store

if TYPE_CHECKING:
    from bot.jobs import Caller


class Following:
    def __init__(self, store: Store, slack: SlackGateway, on_queued: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.slack = slack
        self.on_queued = on_queued  # a post queued: the sender looks now, not at its next scheduled run

    def follow(self, caller: Caller, job: Job, *, origin: str, card: bool = False,
               recorded: Mapping | None = None, finishes: str | None = None) -> tuple[bool, bool]:
        """Follow a job here (closing the start that made it); (whether the follow is new, whether the channel has
        a card of it coming)."""
        new = self.store.follows.follow(caller.channel_id, job.fields(), final=job.final, team_id=caller.team_id,
                                        user_id=caller.user_id, origin=origin, card=card, recorded=recorded,
                                        finishes=finishes)
        carded = card and not job.final and self.store.cards.card(caller.channel_id, job.id, job.provider) is not None
        if carded and new:
            self.on_queued()  # the card goes out now, not at the next scheduled delivery
        return new, carded

    def observe(self, job: Job) -> None:
        """What a command learnt of a followed job counts like a poll: an outcome seen here is announced."""
        if self.store.follows.record_jobs([(job.fields(), job.outcome)]):
            self.on_queued()

    def claim(self, provider: str, job_id: str) -> bool:
        """Whether a job is the current workspace's, claimed for it if no workspace has yet (OAuth mode: a job
        belongs to the workspace that started it, or first named it). Always True for a bot of one workspace."""
        workspace = WORKSPACE.get()
        return not workspace or self.store.workspaces.claim_job(provider, job_id, workspace) == workspace

    def not_anothers(self, provider: str, job_id: str) -> bool:
        """Whether no other workspace owns the job (OAuth mode); nothing is claimed. Always True for a bot of one."""
        workspace = WORKSPACE.get()
        owner = self.store.workspaces.owner(provider, job_id) if workspace else None
        return owner is None or owner == workspace

    def visible(self, jobs: list[Job]) -> list[Job]:
        """Of jobs a provider listed, those the current workspace may see (all of them for a bot of one)."""
        workspace = WORKSPACE.get()
        if not workspace:
            return jobs
        owners = self.store.workspaces.owners([(job.provider, job.id) for job in jobs])
        return [job for job in jobs if owners.get((job.provider, job.id)) == workspace]

    def visibility_warnings(self, caller: Caller) -> list[str]:
        if self.slack.can_post(caller.channel_id) is False:
            return [invite_warning(self.slack.bot_user_id(caller.channel_id))]
        return []

    def follows_page(self, channel_id: str, page: int) -> FollowsPage:
        """Page 1: running jobs, then the finished ones counted and the latest few. Later pages: the rest."""
        active, finished = self.store.follows.follow_counts(channel_id)
        first = min(active, FOLLOWS_PAGE)
        rest = active + finished - first
        pages = 1 + -(-rest // FOLLOWS_PAGE) if rest > RECENT_FINISHED or active > FOLLOWS_PAGE else 1
        page = min(page, max(pages, 1))
        if page == 1:
            return FollowsPage(1, pages, active, finished, self.store.follows.channel_follows(channel_id, limit=first),
                               self.store.follows.channel_follows(channel_id, final=True, limit=RECENT_FINISHED))
        rows = self.store.follows.channel_follows(channel_id, limit=FOLLOWS_PAGE,
                                                  offset=first + (page - 2) * FOLLOWS_PAGE)
        return FollowsPage(page, pages, active, finished, rows)

    def links(self, provider: str, job_id: str) -> list[str]:
        """Where a job was moved from and to, as its card and status say it."""
        return move_links(self.store.moves.moved_from(provider, job_id), self.store.moves.moved_to(provider, job_id))
