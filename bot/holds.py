"""Spend and the starts it holds: the month's spend of a channel (`/finetune spend`), a start held because of the
channel's `confirm_above` or `budget` (its figures kept, its requester told why), and its approvers asked in the
channel and told how it was decided."""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from bot import costs
from bot.commands import Command
from bot.costs import Estimate
from bot.messages.blocks import Message
from bot.messages.money import SPEND_PAGE, format_approval_request, format_held, format_hold_decided, format_spend
from bot.slack import SlackFailure, SlackGateway
from bot.training_data import dollars
from storage import Store

if TYPE_CHECKING:
    from bot.jobs import Caller

log = logging.getLogger(__name__)


class HoldService:
    def __init__(self, store: Store, slack: SlackGateway, *, approvers: frozenset[str] = frozenset(),
                 clock: Callable[[], float] = time.time, decorate: Callable[[Message], Message] = lambda m: m) -> None:
        self.store = store
        self.slack = slack
        self.approvers = approvers
        self.clock = clock
        self.decorate = decorate  # (the sandbox's note on every message it posts itself)

    def run(self, command: Command, caller: Caller) -> Message:
        """`/finetune spend`."""
        return self.spend(caller, **command.args)

    def spend(self, caller: Caller, month: str | None = None, provider: str | None = None, page: int = 1) -> Message:
        start, end, name = costs.month_bounds(month, self.clock())
        totals = self.store.spend.month_totals(caller.channel_id, start, end, provider=provider)
        pages = max(1, -(-totals["jobs"] // SPEND_PAGE))
        page = min(page, pages)
        rows = self.store.spend.month_jobs(caller.channel_id, start, end, provider=provider, limit=SPEND_PAGE,
                                           offset=(page - 1) * SPEND_PAGE)
        return format_spend(name, rows, totals, page=page, pages=pages, provider=provider)

    def hold_if_needed(self, caller: Caller, provider: str, estimate: Estimate, command: dict, settings: Mapping,
                       *, move_id: str | None = None) -> Message | None:
        """Hold a start the channel's settings say needs a click (above `confirm_above`, past the month's
        `budget`): kept, not sent, with the figures; None when it may start now."""
        threshold, budget = settings.get("confirm_above"), settings.get("budget")
        if threshold is None and budget is None:
            return None
        reasons = []
        if estimate.amount is None:
            reasons.append(f"its estimate is {estimate.words()}, and this channel "
                           + (f"confirms starts above {dollars(threshold)}" if threshold is not None else
                              "has a budget it cannot be checked against"))
        elif threshold is not None and estimate.amount > threshold:
            reasons.append(f"its estimate, {dollars(estimate.amount)}, is above this channel's "
                           f"{dollars(threshold)} (`confirm_above`)")
        if budget is not None:
            start, end, _ = costs.month_bounds(None, self.clock())
            spent = self.store.spend.committed_now(caller.channel_id, start, end)
            if spent + (estimate.amount or 0) > budget:
                reasons.append(self.past_budget(spent, estimate, budget))
        if not reasons:
            return None
        return self.hold(caller, provider, estimate, command, "; ".join(reasons), move_id=move_id)

    def past_budget(self, spent: float, estimate: Estimate, budget: float) -> str:
        month = costs.month_bounds(None, self.clock())[2]
        return (f"it would take {month}'s spend to {dollars(spent + (estimate.amount or 0))}, past this channel's "
                f"budget of {dollars(budget)} ({dollars(spent)} spent, running or being started)")

    def hold(self, caller: Caller, provider: str, estimate: Estimate, command: dict, reason: str, *,
             move_id: str | None = None) -> Message:
        """Keep a start that needs a click (or an approver): its request asked for, its requester told why."""
        if move_id:
            self.store.moves.set_state(move_id, "held")
        hold_id = self.store.spend.hold(team_id=caller.team_id, channel_id=caller.channel_id, user_id=caller.user_id,
                                        provider=provider, command=command, estimate=estimate.amount, reason=reason)
        log.info("held a start at %s in %s: %s", provider, caller.channel_id, reason)
        unasked = self.ask_approvers(hold_id) if self.approvers else None
        return format_held(hold_id, command, estimate, reason, needs_approval=bool(self.approvers), unasked=unasked)

    def ask_approvers(self, hold_id: str) -> str | None:
        """Post a held start's request for approval in its channel, with Approve and Deny; None when it is there,
        else what Slack said."""
        hold = self.store.spend.held(hold_id)
        try:
            ts = self.slack.post(hold["channel_id"], self.decorate(format_approval_request(hold)))
        except SlackFailure as failure:
            log.warning("could not ask for the approval of a held start in %s: %s", hold["channel_id"],
                        failure.reason)
            return failure.reason
        if ts:
            self.store.spend.set_hold_message(hold_id, ts)
        return None

    def settle_hold(self, hold: Mapping, answer: Message) -> None:
        """A held start decided: its request in the channel says so (buttons gone), and its requester is told."""
        outcome = html.unescape(_first_line(answer.text))  # (a message's text is kept escaped for Slack)
        decided = self.decorate(format_hold_decided(hold, outcome=outcome))
        if hold.get("message_ts"):
            try:
                self.slack.update(hold["channel_id"], hold["message_ts"], decided)
            except SlackFailure as failure:
                log.info("could not mark the approval request in %s as decided: %s", hold["channel_id"],
                         failure.reason)
        if hold.get("decided_by") != hold["user_id"]:
            self.slack.post_quietly(hold["user_id"], decided)


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0]
