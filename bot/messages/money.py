"""Spend: a start held for confirmation or approval, the approval request and its decision, the month's spend."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from bot.providers.types import Job, provider_label, status_emoji

if TYPE_CHECKING:
    from bot.costs import Estimate
from bot.messages.blocks import (
    MAX_BUTTON_VALUE,
    SLACK_USER_ID,
    Message,
    build_message,
    code,
    context_block,
    dollars,
    escape,
    section_block,
    sections_of_lines,
)

HOLD_START_ACTION = "hold_start"


HOLD_APPROVE_ACTION = "hold_approve"


HOLD_DENY_ACTION = "hold_deny"


SPEND_PAGE = 20


def _start_words(command: Mapping) -> str:
    """A held start's command, as it would be typed."""
    words = [f"/finetune start {command.get('training_file')}"]
    words += [f"{k}={v}" for k, v in command.items() if k not in {"training_file", "move"} and v is not None]
    return " ".join(words)


def _hold_button(action: str, label: str, hold_id: str, *, style: str | None = None) -> dict:
    button = {"type": "button", "action_id": action, "text": {"type": "plain_text", "text": label},
              "value": hold_id[:MAX_BUTTON_VALUE]}
    return {**button, "style": style} if style else button


def format_held(hold_id: str, command: Mapping, estimate: Estimate, reason: str, *, needs_approval: bool,
                unasked: str | None = None) -> Message:
    """The requester's answer to a start that was held, not sent: the figures and what happens next."""
    what = _start_words(command)
    head = f":raised_hand: I held this start: nothing was sent to {provider_label(str(command.get('provider')))}."
    lines = [f"Why: {reason}.", f"Estimated cost: {estimate.words()}."]
    if estimate.source:
        lines.append(f"Prices: {estimate.source}; an estimate, not a quote.")
    if needs_approval and unasked:
        lines.append(f"It needs an approver, but I could not ask in this channel (Slack said {unasked}): invite me to "
                     "it (/invite @finetune-bot) and start again. Nothing was started.")
    elif needs_approval:
        lines.append("An approver has been asked in this channel; I'll tell you what they decide. It expires in a day.")
    else:
        lines.append("Press Start anyway to start it as it is (only you can). It expires in a day.")
    text = f"{head} {' '.join(lines)}"
    blocks = [section_block(f"{escape(head)}\n{code(what)}\n" + "\n".join(escape(line) for line in lines))]
    if not needs_approval:
        blocks.append({"type": "actions", "elements": [
            _hold_button(HOLD_START_ACTION, "Start anyway", hold_id, style="primary")]})
    return build_message(text, blocks)


def format_approval_request(hold: Mapping) -> Message:
    """In the channel: a start waiting for an approver, with Approve and Deny."""
    user = str(hold.get("user_id") or "")
    who = f"<@{user}>" if SLACK_USER_ID.fullmatch(user) else code(user)
    amount = hold.get("estimate")
    estimate = dollars(amount) if isinstance(amount, (int, float)) else "unknown"
    text = (f"A fine-tuning start needs approval: {_start_words(hold['command'])}. Estimated cost: {estimate}. "
            f"Why: {hold.get('reason')}.")
    blocks = [section_block(f":raised_hand: {who} asks to start a fine-tuning job that needs approval:\n"
                            f"{code(_start_words(hold['command']))}\nEstimated cost: *{escape(estimate)}*\n"
                            f"Why: {escape(hold.get('reason') or '')}."),
              {"type": "actions", "elements": [
                  _hold_button(HOLD_APPROVE_ACTION, "Approve", str(hold["id"]), style="primary"),
                  _hold_button(HOLD_DENY_ACTION, "Deny", str(hold["id"]), style="danger")]},
              context_block("Approvers (APPROVER_USER_IDS) other than the requester may press these. It expires in a "
                            "day.")]
    return build_message(text, blocks, in_channel=True)


def format_hold_decided(hold: Mapping, *, outcome: str) -> Message:
    """What became of a held start (its request's buttons replaced by this, and the requester told)."""
    by = str(hold.get("decided_by") or "")
    who = f"<@{by}>" if SLACK_USER_ID.fullmatch(by) else "someone"
    what = code(_start_words(hold["command"]))
    said = {"approved": f":white_check_mark: Approved by {who}: {what}. {escape(outcome)}",
            "denied": f":no_entry_sign: Denied by {who}: {what}. Nothing was started.",
            "expired": f":hourglass: Expired after a day without a decision: {what}. Nothing was started.",
            "started": f":rocket: Started anyway: {what}. {escape(outcome)}"}[str(hold.get("state"))]
    plain = re.sub(r"<@([A-Z0-9]+)>", r"@\1", said.replace("`", ""))
    return build_message(plain, [section_block(said)], in_channel=True, text_escaped=True)


def format_spend(month: str, rows: Sequence[Mapping], totals: Mapping, *, page: int, pages: int,
                 provider: str | None = None) -> Message:
    """A channel's jobs of a month, what each was expected to cost and cost, and the totals (a page at a time)."""
    where = f" at {provider_label(provider)}" if provider else ""
    head = f":moneybag: Spend in this channel, {month}{where}: {totals['jobs']} job{'s' if totals['jobs'] != 1 else ''}"
    sums = (f"Estimated {dollars(totals['estimated'])} · actual {dollars(totals['actual'])} (ended jobs) · "
            f"{dollars(totals['running'])} still running (estimated)")
    if totals.get("unknown"):
        sums += f" · {totals['unknown']} without an estimate"
    lines = []
    for row in rows:
        job = Job.from_row(row)
        user = str(row.get("user_id") or "")
        who = f"<@{user}>" if SLACK_USER_ID.fullmatch(user) else "—"
        verb = "started by" if row.get("origin") == "start" else "followed by"
        estimate = dollars(job.estimate) if job.estimate is not None else "unknown"
        actual = (f"actual {dollars(job.cost)}" if job.cost is not None else "actual not reported") if job.final \
            else "still running"
        lines.append(f"{status_emoji(job.status, job.state)} {code(job.id)} · {escape(provider_label(job.provider))} "
                     f"· {code(job.model)} · {verb} {who} · est. {escape(estimate)} · {escape(actual)}")
    if not lines:
        lines = ["No jobs were started or followed here that month."]
    blocks = [section_block(escape(head) + "\n" + escape(sums)), *sections_of_lines(lines)]
    if pages > 1:
        blocks.append(context_block(f"Page {page} of {pages}. `/finetune spend {month_code(month)} page={page + 1}` "
                                    "shows the next." if page < pages else f"Page {page} of {pages}."))
    return build_message(f"{head}. {sums}.", blocks)


def month_code(month: str) -> str:
    """"November 2026" as it is typed: 2026-11."""
    return time.strftime("%Y-%m", time.strptime(month, "%B %Y"))
