"""What a channel hears as a followed job goes: the outcome announcement, the job's card and its progress replies,
the watchdog's findings, and a post that could not be made."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.providers.types import Job, provider_label, status_emoji

if TYPE_CHECKING:
    pass
from bot.messages.answers import invite_hint
from bot.messages.blocks import (
    SCRUB,
    SLACK_CHANNEL_ID,
    SLACK_USER_ID,
    Message,
    build_message,
    clip,
    code,
    context_block,
    dollars,
    duration,
    escape,
    field_blocks,
    header_block,
    plain_lines,
    section_block,
    when,
)
from bot.messages.jobs import (
    COMPARE_ORIGINAL_ACTION,
    _button_value,
    cancel_button,
    job_buttons,
    job_fields,
    status_label,
    try_button,
)


@dataclass(frozen=True)
class Subscription:
    """A channel (or a person) following a job, and who made it follow."""

    channel_id: str
    user_id: str | None = None
    origin: str | None = None
    mention: bool = True  # the channel's setting: name who started or subscribed
    outcomes: str = "all"  # the channel's setting: every outcome, or failures only
    progress: bool = True  # the channel's setting: status changes and progress in a card's thread

    def hears(self, outcome: str) -> bool:
        """Whether this channel is told of `outcome`."""
        return self.outcomes != "failures" or outcome == "failed"


def format_announcement(job: Job, outcome: str, subscription: Subscription, *,
                        moved_from: Mapping | None = None) -> Message:
    """The message a following channel gets when a job reaches its outcome."""
    took = duration(job.finished_at - job.created_at) if job.created_at and job.finished_at else "—"
    where = provider_label(job.provider)
    about = [("Job", code(job.id)), ("Provider", escape(where)), ("Base model", code(job.model))]
    if outcome == "succeeded":
        model = job.fine_tuned_model or "(the provider gave no model name)"
        text = f"Fine-tuning job {job.id} on {where} succeeded. Fine-tuned model: {model}"
        blocks = [
            header_block(":white_check_mark: Fine-tuning job succeeded"),
            section_block(f"*Fine-tuned model* (call it by this name at {escape(where)})\n"
                          f"```{escape(str(model).replace('`', chr(39)))}```"),
            *field_blocks([*about, ("Cost", escape(cost_words(job))), ("Took", took)]),
        ]
        text += f" ({cost_words(job)})"
        if moved_from:
            text += f". Moved from {moved_from['source_job']} at {provider_label(moved_from['source_provider'])}."
            blocks.append(context_block(f":truck: Moved from {code(moved_from['source_job'])} at "
                                        f"{escape(provider_label(moved_from['source_provider']))}."))
        if job.fine_tuned_model:
            buttons = [try_button(job)]
            if moved_from:
                buttons.append({"type": "button", "action_id": COMPARE_ORIGINAL_ACTION,
                                "text": {"type": "plain_text", "text": "Compare with the original"},
                                "value": _button_value({"provider": job.provider, "job": job.id,
                                                        "from_provider": moved_from["source_provider"],
                                                        "from_job": moved_from["source_job"]})})
            blocks.append({"type": "actions", "elements": buttons})
    elif outcome == "failed":
        reason = job.error_message or "The provider gave no reason."
        text = f"Fine-tuning job {job.id} on {where} failed: {reason}"
        blocks = [
            header_block(":x: Fine-tuning job failed"),
            section_block(f"*Why* ({escape(job.error_code or 'unknown')})\n>{escape(reason)}"),
            *field_blocks([*about, ("Cost so far", escape(cost_words(job))), ("Took", took)]),
        ]
        text += f" (cost so far: {cost_words(job)})"
    else:
        text = f"Fine-tuning job {job.id} on {where} was cancelled (cost so far: {cost_words(job)})."
        blocks = [
            header_block(":no_entry_sign: Fine-tuning job cancelled"),
            *field_blocks([*about, ("Cost so far", escape(cost_words(job))), ("Took", took)]),
        ]
    user = subscription.user_id or ""
    if subscription.mention and SLACK_USER_ID.fullmatch(user):
        verb = "Started" if subscription.origin == "start" else "Followed here"
        blocks.append(context_block(f"{verb} by <@{user}>"))
    return build_message(text, blocks)


def cost_words(job: Job) -> str:
    """What a run cost, as its outcome and card say it: "trained 3,456,789 tokens · $86.42"; the estimate while
    nothing more is known; never a made-up figure."""
    parts = [f"trained {job.trained_tokens:,} tokens"] if job.trained_tokens else []
    if job.cost is not None:
        parts.append(dollars(job.cost))
    elif job.final:
        parts.append("cost not reported" + (f" (estimated {dollars(job.estimate)})" if job.estimate is not None
                                            else ""))
    elif job.estimate is not None:
        parts.append(f"estimated {dollars(job.estimate)}")
    else:
        parts.append("estimate unknown")
    return " · ".join(parts)


CARD_ERROR_LIMIT = 1500  # a longer error is cut, with a note saying where the whole of it is


def format_card(job: Job, subscription: Subscription, *, followed: bool = True, links: Sequence[str] = ()) -> Message:
    """A job's card: one message per following channel, edited in place as the job moves, its progress in its
    thread, with buttons to refresh, see events, cancel and (once it succeeded) try the model."""
    where = provider_label(job.provider)
    emoji = status_emoji(job.status, job.state)
    text = f"Fine-tuning job {job.id} on {where}: {job.status}"
    pairs = [("Status", status_label(job.status, job.state)), ("Provider", escape(where)),
             ("Base model", code(job.model)), ("Training file", code(job.training_file or "—"))]
    if job.fine_tuned_model:
        pairs.append(("Fine-tuned model", code(job.fine_tuned_model)))
        text += f". Fine-tuned model: {job.fine_tuned_model}"
    if job.suffix:
        pairs.append(("Suffix", code(job.suffix)))
    pairs.append(("Created", when(job.created_at)))
    if job.finished_at and job.created_at:
        pairs.append(("Took", duration(job.finished_at - job.created_at)))
    pairs.append(("Cost", escape(cost_words(job))))
    user = subscription.user_id or ""
    if SLACK_USER_ID.fullmatch(user):
        who = f"<@{user}>" if subscription.mention else code(user)
        pairs.append(("Started by" if subscription.origin == "start" else "Followed by", who))
    if job.approved_by and SLACK_USER_ID.fullmatch(job.approved_by):
        pairs.append(("Approved by", f"<@{job.approved_by}>" if subscription.mention else code(job.approved_by)))
    meaning = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}.get(job.state, "in progress")
    blocks = [header_block(f"{emoji} Fine-tuning job: {meaning}"),  # our words: the provider's are in the fields
              section_block(f"{code(job.id)} on {escape(where)}"), *field_blocks(pairs)]
    if job.error_message or job.state == "failed":
        reason = job.error_message or "The provider gave no reason."
        shown = clip(escape(reason), CARD_ERROR_LIMIT)
        cut = "" if shown == escape(reason) else (f"\n_(cut: the whole error is {len(reason):,} characters; "
                                                  f"`/finetune status {escape(job.id)}` shows it)_")
        blocks.append(section_block(f"*Why* ({clip(escape(job.error_code or 'unknown'), 100)})\n>{shown}{cut}"))
        text += f". Error: {SCRUB(reason)[:CARD_ERROR_LIMIT]}"
    if links:
        blocks.append(section_block("\n".join(links)))
        text += ". " + plain_lines(links)
    blocks.append(job_buttons(job, card=True))
    if not followed:
        note = (f"This channel no longer follows this job: this card is not updated. "
                f"`/finetune subscribe {escape(job.id)}` follows it again.")
    elif not job.final:
        note = ("Progress is posted in this thread." if subscription.progress else
                "This card is edited as the job moves (progress replies are off here: `/finetune settings "
                "progress=on`).")
    elif subscription.hears(job.state):
        note = "Its outcome is in this thread and in the channel."
    else:
        note = (f"This channel hears failures only (`/finetune settings outcomes=all` for every outcome), so its "
                f"{escape(job.state)} outcome was not announced here.")
    blocks.append(context_block(note))
    return build_message(text, blocks)


def format_progress(job: Job, detail: Mapping) -> Message:
    """A reply in a card's thread: the job's status changed, or how far training has come."""
    if "to" in detail:
        before, after = str(detail.get("from") or "—"), str(detail["to"])
        text = f"Status of {job.id}: {before} → {after}"
        return build_message(text,
                             [context_block(f"{status_label(after)}  Status: {escape(before)} → *{escape(after)}*")])
    step, total, percent, epoch = (detail.get(k) for k in ("step", "total_steps", "percent", "epoch"))
    if isinstance(percent, int):  # a provider that says how far, not which step (Fireworks)
        parts = [f"{percent}% done" + (f", epoch {epoch}" if isinstance(epoch, int) and epoch > 0 else "")]
    else:
        parts = [f"Step {step:,}" + (f" of {total:,}" if isinstance(total, int) and total >= step else "")]
    if isinstance(detail.get("train_loss"), (int, float)):
        parts.append(f"training loss {detail['train_loss']:.4g}")
    if isinstance(detail.get("valid_loss"), (int, float)):
        parts.append(f"validation loss {detail['valid_loss']:.4g}")
    plain = list(parts)
    finish = detail.get("finish_at")
    if isinstance(finish, (int, float)) and finish > 0:
        parts.append(f"expected to finish {when(finish)}")
        plain.append("expected to finish " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(int(finish))))
    text = f"{job.id}: " + " · ".join(plain)
    return build_message(text, [context_block(":chart_with_downwards_trend: " + " · ".join(parts))])


WATCHDOG_WORDS = {"nan": "its loss is not a number", "rising": "its training loss keeps rising",
                  "stalled": "it has stopped making progress", "overfitting": "it looks like it is overfitting"}


def _losses(values: Sequence[object]) -> str:
    return " → ".join(f"{v:.4g}" if isinstance(v, (int, float)) else str(v) for v in values)


def format_watchdog(job: Job, detail: Mapping, subscription: Subscription) -> Message:
    """The watchdog's warning in a job's thread (or the channel): what it saw, with the numbers, and a Cancel
    button, or what it did when the channel asked it to cancel."""
    kind = str(detail.get("kind") or "")
    what = WATCHDOG_WORDS.get(kind, "something looks wrong")
    if kind == "nan":
        numbers = f"The {detail.get('which') or 'training'} loss was {detail.get('value')} at step {detail.get('step')}"
    elif kind == "rising":
        numbers = (f"Training loss {_losses(detail.get('losses') or [])} over steps "
                   f"{', '.join(str(s) for s in detail.get('steps') or [])} (its recent low: "
                   f"{_losses([detail.get('low')])})")
    elif kind == "stalled":
        numbers = (f"Still at step {detail.get('step')} after {detail.get('minutes')} minutes, while "
                   f"{provider_label(job.provider)} says it is {job.status}")
    else:
        numbers = (f"Validation loss {_losses(detail.get('valid') or [])} while training loss went "
                   f"{_losses(detail.get('train') or [])}")
    cancel = detail.get("cancel")
    user = subscription.user_id or ""
    head = f":rotating_light: Fine-tuning job {code(job.id)}: {escape(what)}."
    if SLACK_USER_ID.fullmatch(user) and subscription.origin == "start":  # (a channel with mentions off is not pinged)
        head = (f":rotating_light: <@{user}>, your fine-tuning job {code(job.id)}: {escape(what)}." if
                subscription.mention else f"{head[:-1]} (started by {code(user)}).")
    text = f"Fine-tuning job {job.id}: {what}."
    if cancel == "cancelled":
        done = "I cancelled it, as this channel's watchdog setting says (`watchdog=cancel`)."
    elif cancel:
        done = f"This channel asks me to cancel such a run, but I {cancel}"
    else:
        done = "" if job.final else "Cancel it if it should not go on (`/finetune settings watchdog=cancel` does so " \
                                    "on its own next time)."
    blocks = [section_block(f"{head}\n{escape(numbers)}."), *([context_block(escape(done))] if done else [])]
    if not job.final and cancel != "cancelled":
        blocks.append(cancel_button(job.id))
    return build_message(f"{text} {numbers}. {done}", blocks)


def format_delivery_problem(job: Job, outcome: str, channel_id: str, reason: str,
                            bot_user_id: str | None = None) -> Message:
    """A direct message to whoever started or subscribed, when their channel refuses our announcement."""
    if channel_id.startswith(("D", "U", "W")):
        where = "your direct messages"  # (a conversation with a person, not a channel: no #name to show)
    else:
        where = f"<#{channel_id}>" if SLACK_CHANNEL_ID.fullmatch(channel_id) else code(channel_id)
    text = (f"I couldn't post the outcome of fine-tuning job {escape(job.id)} ({escape(outcome)}) in {where}: "
            f"Slack said {escape(reason)}.")
    body = (f":warning: I couldn't post the outcome of {code(job.id)} ({escape(outcome)}) in {where}: "
            f"Slack said {code(reason)}.")
    if reason in {"not_in_channel", "channel_not_found"}:
        body += f"\nIf it's a private channel, {invite_hint(bot_user_id)} and subscribe again."
    return build_message(text, [section_block(body), *field_blocks(job_fields(job))], text_escaped=True)
