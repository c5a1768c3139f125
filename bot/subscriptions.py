"""What a channel follows and hears: `/finetune subscribe`, `unsubscribe`, `subscriptions` and `settings`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from bot.commands import Command
from bot.following import Following
from bot.jobs import Caller, JobService, answered
from bot.messages.answers import format_refusal, format_settings
from bot.messages.blocks import Message
from bot.messages.cards import Subscription, format_card
from bot.messages.jobs import format_followed, format_subscribed, format_unsubscribed
from bot.providers.types import Job
from bot.slack import SlackFailure, SlackGateway
from bot.training_data import dollars
from storage import Store
from storage.channels import NotLowered

log = logging.getLogger(__name__)

MONEY_LIMITS = ("confirm_above", "budget")  # a channel's limits that hold a start for a click or an approver


class SubscriptionService:
    def __init__(self, jobs: JobService, store: Store, slack: SlackGateway, following: Following, *,
                 approvers: frozenset[str] = frozenset()) -> None:
        self.jobs = jobs  # where a job is (`locate`), and what answers a provider's refusal
        self.store = store
        self.slack = slack
        self.following = following
        self.approvers = approvers
        self.decorate: Callable[[Message], Message] = jobs.decorate
        # The subcommands this service answers (the grammar's service="subscriptions"), each with its method.
        self.answers: dict[str, Callable[..., Message]] = {
            "subscribe": self._subscribe, "unsubscribe": self._unsubscribe, "subscriptions": self._subscriptions,
            "settings": self._settings}

    def run(self, command: Command, caller: Caller) -> Message:
        handler = self.answers[command.name]
        return answered(command, lambda: handler(caller, **command.args), self.jobs.providers)

    def _subscribe(self, caller: Caller, job_id: str, provider: str | None = None, where: str | None = None) -> Message:
        target, job = self.jobs.locate(job_id, provider)
        job = job or target.retrieve(job_id)
        # First, so that a channel subscribing to a job that just ended gets the reply, not a repeat.
        self.following.observe(job)
        if where == "dm":
            dm = replace(caller, channel_id=self.slack.open_dm(caller.user_id))
            new, _ = self.following.follow(dm, job, origin="dm")
            return format_subscribed(job, new=new, by_dm=True)
        new, card = self.following.follow(caller, job, origin="subscribe", card=True)
        warnings = [] if job.final else self.following.visibility_warnings(caller)
        return format_subscribed(job, new=new, warnings=warnings, card=card and new)

    def _unsubscribe(self, caller: Caller, job_id: str, provider: str | None = None,
                     where: str | None = None) -> Message:
        channel = self.slack.open_dm(caller.user_id) if where == "dm" else caller.channel_id
        names = [provider] if provider else self.store.follows.providers_of(job_id)
        # (in a Slack Connect channel, another workspace's follow of its own job is not this one's to end)
        names = [name for name in names if self.following.not_anothers(name, job_id)]
        existed = False
        for name in names:
            card = self.store.cards.card(channel, job_id, name)  # (read first: it goes with the follow)
            if self.store.follows.unfollow(channel, job_id, name):
                existed = True
                if card is not None and card["card_ts"]:
                    self.retire_card(channel, card["card_ts"], job_id, name)
        return format_unsubscribed(job_id, existed=existed, by_dm=where == "dm")

    def retire_card(self, channel: str, ts: str, job_id: str, provider: str) -> None:
        """A card whose channel stopped following its job says so, rather than showing a status it will no longer
        follow. Best effort: a card left as it was is only out of date."""
        stored = self.store.follows.job(job_id, provider)
        if stored is None:
            return
        message = format_card(Job.from_row(stored), Subscription(channel), followed=False,
                              links=self.following.links(provider, job_id))
        try:
            self.slack.update(channel, ts, self.decorate(message))
        except SlackFailure as failure:
            log.info("could not mark the card of %s in %s as no longer followed: %s", job_id, channel,
                     failure.reason)

    def _subscriptions(self, caller: Caller, page: int = 1) -> Message:
        return format_followed(self.following.follows_page(caller.channel_id, page),
                               title="This channel's subscriptions",
                               by_dm=self.store.follows.dm_follows(caller.user_id) if page == 1 else ())

    def _settings(self, caller: Caller, outcomes: str | None = None, mentions: bool | None = None,
                  cards: bool | None = None, progress: bool | None = None, every: int | None = None,
                  confirm_above: float | str | None = None, budget: float | str | None = None,
                  watchdog: str | None = None) -> Message:
        changes = {"outcomes": outcomes, "mentions": mentions, "cards": cards, "progress": progress,
                   "progress_minutes": every, "confirm_above": confirm_above, "budget": budget,
                   "watchdog": watchdog}
        if all(value is None for value in changes.values()):
            return format_settings(self.store.channels.channel_settings(caller.channel_id), changed=False)
        # With approvers, the limits that hold a start for them are theirs to raise or switch off: anyone may lower
        # them (a requester must not be able to switch off the approval their start needs).
        only_lower = () if not self.approvers or caller.user_id in self.approvers else MONEY_LIMITS
        try:
            now_set = self.store.channels.set_channel_settings(caller.channel_id, caller.user_id,
                                                               only_lower=only_lower, **changes)
            return format_settings(now_set, changed=True)
        except NotLowered as refused:
            return format_refusal(
                f"Only an approver (APPROVER_USER_IDS) may raise `{refused.name}` or switch it off; it is "
                f"{dollars(refused.current)} here. You may lower it. Nothing was changed.")
