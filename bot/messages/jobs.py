"""A job as a command shows it: its status and events, lists of jobs and follows, starts and subscriptions, and the
buttons under them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.commands import BY_NAME
from bot.providers.types import Job, JobEvent, provider_label, status_emoji

if TYPE_CHECKING:
    from bot.costs import Estimate
from bot.messages.blocks import (
    MAX_BLOCKS,
    MAX_BUTTON_VALUE,
    Message,
    build_message,
    code,
    context_block,
    dollars,
    duration,
    escape,
    field_blocks,
    plain_lines,
    section_block,
    sections_of_lines,
    tokens,
    when,
)


def status_label(status: str, state: str | None = None) -> str:
    """The provider's own status word, with an emoji for what it means (its outcome, when the word is new to us)."""
    return f"{status_emoji(status, state)} {escape(status)}"


def job_line(job_id: str, status: str, fine_tuned_model: str | None = None) -> str:
    """One job on one line, as lists show it."""
    line = f"{status_emoji(status)} {code(job_id)}  {escape(status)}"
    if fine_tuned_model:
        line += f" → {code(fine_tuned_model)}"
    return line


def job_fields(job: Job | Mapping) -> list[tuple[str, str]]:
    get = job.get if isinstance(job, Mapping) else (lambda k: getattr(job, k, None))
    pairs = [("Status", status_label(get("status"), get("state"))),
             ("Provider", escape(provider_label(get("provider") or ""))), ("Base model", code(get("model")))]
    if get("fine_tuned_model"):
        pairs.append(("Fine-tuned model", code(get("fine_tuned_model"))))
    pairs.append(("Trained tokens", tokens(get("trained_tokens"))))
    pairs.append(("Created", when(get("created_at"))))
    if get("finished_at"):
        pairs.append(("Finished", when(get("finished_at"))))
        pairs.append(("Took", duration((get("finished_at") or 0) - (get("created_at") or 0))))
    return pairs


def format_started(job: Job, warnings: Sequence[str] = (), *, card: bool = False,
                   estimate: Estimate | None = None) -> Message:
    """The answer to a start. With a card (the channel's lasting record of the job), only the starter sees it."""
    where = provider_label(job.provider)
    text = f"Started fine-tuning job {job.id} on {where} ({job.model}). " + (
        "Its card is in the channel; progress goes in the card's thread." if card else
        "I'll post here when it finishes.")
    blocks = [
        section_block(f":rocket: Started fine-tuning job {code(job.id)} on {escape(where)} ({code(job.model)}).\n" + (
            "Its card is in this channel: it shows the job as it moves, with progress in its thread." if card else
            "I'll post in this channel when it finishes.")),
    ]
    if not card:
        blocks += field_blocks(job_fields(job))
    if estimate is not None:
        said = f"Estimated cost: {estimate.words()}."
        text += " " + said
        blocks.append(context_block(":moneybag: " + escape(said)))
    if job.provider_estimate is not None:
        said = f"{where}'s own estimate for this job: {dollars(job.provider_estimate)}."
        text += " " + said
        blocks.append(context_block(":moneybag: " + escape(said)))
    blocks += [section_block(":warning: " + w) for w in warnings]
    if not card:
        blocks.append(job_buttons(job))
    return build_message(text, blocks, in_channel=not card)


CANCEL_ACTION = "cancel_job"


COMPARE_ORIGINAL_ACTION = "compare_original"  # a moved job's success: it beside the job it was moved from


REFRESH_ACTION = "refresh_job"


EVENTS_ACTION = "job_events"


def job_buttons(job: Job, *, card: bool = False) -> dict:
    """Refresh (the message shows the job as it is now), Events (its latest, to whoever clicked), and, while it
    runs, Cancel; on a job's card, Refresh redraws the card, and a succeeded job's card can be tried."""
    value = _button_value({"provider": job.provider, "job": job.id, **({"card": 1} if card else {})})
    elements = [{"type": "button", "action_id": REFRESH_ACTION, "value": value,
                 "text": {"type": "plain_text", "text": "Refresh"}},
                {"type": "button", "action_id": EVENTS_ACTION, "value": value,
                 "text": {"type": "plain_text", "text": "Events"}}]
    if not job.final:
        elements.append(cancel_button(job.id)["elements"][0])
    if card and job.state == "succeeded" and job.fine_tuned_model:
        elements.insert(0, try_button(job))
    return {"type": "actions", "elements": elements}


def _button_value(target: dict) -> str:
    """What a button carries: escaped (text from a provider, though never shown) and within Slack's 2,000
    characters. An id too long to fit is no id a provider gave (theirs are at most 128): its button does nothing."""
    value = escape(json.dumps(target))
    return value if len(value) <= MAX_BUTTON_VALUE else "{}"


def try_button(job: Job) -> dict:
    return {"type": "button", "action_id": "try_open", "style": "primary",
            "text": {"type": "plain_text", "text": "Try it"},
            # Values are not shown, but they are still text from the provider: escaped like the rest.
            "value": _button_value({"provider": job.provider, "job": job.id})}


def cancel_button(job_id: str) -> dict:
    """A Cancel button, with Slack's own confirmation dialog before anything happens."""
    return {
        "type": "actions",
        "elements": [{
            "type": "button",
            "action_id": CANCEL_ACTION,
            "text": {"type": "plain_text", "text": "Cancel job"},
            "style": "danger",
            "value": job_id[:MAX_BUTTON_VALUE],
            "confirm": {
                "title": {"type": "plain_text", "text": "Cancel this job?"},
                "text": {"type": "mrkdwn", "text": f"Fine-tuning job {code(job_id)} stops and cannot be resumed."},
                "confirm": {"type": "plain_text", "text": "Cancel job"},
                "deny": {"type": "plain_text", "text": "Keep it running"},
            },
        }],
    }


def format_job_status(job: Job, events: Sequence[JobEvent], *, followed_here: bool,
                      links: Sequence[str] = ()) -> Message:
    text = f"Job {job.id}: {job.status}"
    if job.fine_tuned_model:
        text += f", model {job.fine_tuned_model}"
    blocks = [section_block(f"*Fine-tuning job* {code(job.id)}"), *field_blocks(job_fields(job))]
    if job.error_message:
        blocks.append(section_block(f"*Error* ({escape(job.error_code or 'unknown')})\n>{escape(job.error_message)}"))
        text += f". Error: {job.error_message}"
    if events:
        lines = "\n".join(f"{when(e.created_at)}  {escape(e.message)}" for e in events)
        blocks.append(section_block(f"*Latest events*\n{lines}"))
    if links:
        blocks.append(section_block("\n".join(links)))
        text += ". " + plain_lines(links)
    blocks.append(job_buttons(job))
    note = "This channel follows this job." if followed_here else (
        f"This channel doesn't follow it; `/finetune subscribe {escape(job.id)}` to be told when it finishes.")
    blocks.append(context_block(note))
    return build_message(text, blocks)


def format_events(job: Job, events: Sequence[JobEvent], *, kept: bool = True) -> Message:
    """A job's latest events, for whoever asked; with `kept` False, that its provider keeps none (Fireworks)."""
    if not kept:
        text = (f"{provider_label(job.provider)} keeps no events for a job; its status says where {job.id} stands: "
                f"{job.status}.")
        return build_message(text, [section_block(escape(text))])
    if not events:
        text = f"Job {job.id} has no events yet."
        return build_message(text, [section_block(escape(text))])
    lines = [f"{when(e.created_at)}  {escape(e.message)}" for e in events]
    blocks = [section_block(f"*Latest events of* {code(job.id)} ({escape(provider_label(job.provider))})"),
              *sections_of_lines(lines)]
    return build_message(f"Latest events of {job.id}: " + " / ".join(e.message for e in events[:5]), blocks)


def format_job_list(jobs: Sequence[Job], *, where: str | None = None, unreachable: Sequence[str] = ()) -> Message:
    """The most recent jobs across providers (or at `where`), each marked with its provider; `unreachable` are
    notes on providers that could not be asked this time."""
    notes = [context_block(":warning: " + escape(note)) for note in unreachable]
    at = f" at {provider_label(where)}" if where else ""
    if not jobs:
        text = f"No fine-tuning jobs yet{at}."
        return build_message(text + "".join(" " + n for n in unreachable), [section_block(escape(text)), *notes])
    lines = [job_line(job.id, job.status, job.fine_tuned_model)
             + f"  {escape(provider_label(job.provider))} · {code(job.model)}" for job in jobs]
    blocks = [section_block(f"*The {len(jobs)} most recent fine-tuning jobs{escape(at)}*"), *sections_of_lines(lines),
              *notes]
    text = "Recent jobs: " + ", ".join(f"{j.id} {j.status} ({provider_label(j.provider)})" for j in jobs)
    return build_message(text + "".join(" " + n for n in unreachable), blocks)


FOLLOWS_PAGE = 20


RECENT_FINISHED = 5


@dataclass(frozen=True)
class FollowsPage:
    """What a channel follows, as much as fits one reply: `rows` on this page, the rest counted."""

    page: int
    pages: int
    active: int
    finished: int
    rows: Sequence[Mapping]
    recent_finished: Sequence[Mapping] = ()


def _follow_line(row: Mapping) -> str:
    line = job_line(row["job_id"], row["status"], row.get("fine_tuned_model"))
    line += f"  {escape(provider_label(row.get('provider') or ''))}"
    if row.get("observed_at"):
        line += f"  _(as of {when(row['observed_at'])})_"
    if row.get("delivery_error"):
        line += f"\n      :warning: I could not post here: {code(row['delivery_error'])}"
    return line


def format_followed(view: FollowsPage, *, title: str, by_dm: Sequence[Mapping] = ()) -> Message:
    """The jobs a channel follows: running ones first, finished ones summarised, in pages that always fit; then
    the jobs the person asking follows by direct message."""
    dm = [section_block(f"*You follow {len(by_dm)} job(s) by direct message*"),
          *sections_of_lines([_follow_line(r) for r in by_dm])] if by_dm else []
    if not view.active and not view.finished:
        text = "This channel doesn't follow any fine-tuning jobs. `/finetune start` or `/finetune subscribe` one."
        return build_message(text + (f" You follow {len(by_dm)} by direct message." if by_dm else ""),
                             [section_block(escape(text)), *dm])
    blocks = [section_block(f"*{escape(title)}*: {view.active} running, {view.finished} finished")]
    if view.page == 1:
        if view.rows:
            blocks += sections_of_lines([_follow_line(r) for r in view.rows])
        elif view.active == 0:
            blocks.append(section_block("Nothing running."))
        if view.recent_finished:
            blocks.append(section_block(f"*Finished* ({view.finished}); the most recent:"))
            blocks += sections_of_lines([_follow_line(r) for r in view.recent_finished])
    else:
        blocks += sections_of_lines([_follow_line(r) for r in view.rows]) or [section_block("Nothing on this page.")]
    if view.pages > 1:
        more = f"Page {view.page} of {view.pages}."
        if view.page < view.pages:
            more += f" More: `/finetune subscriptions {view.page + 1}`"
        blocks.append(context_block(more))
    shown = list(view.rows) + list(view.recent_finished)
    text = f"{title}: {view.active} running, {view.finished} finished. " + ", ".join(
        f"{r['job_id']} {r['status']}" for r in shown[:10])
    return build_message(text, (blocks + dm)[:MAX_BLOCKS])


def format_start_reconciled(job: Job | None, training_file: str, *, estimate: float | None = None) -> Message:
    """What the person who started a job hears when the bot restarts after dying mid-start."""
    if job is None:
        text = (f"Your start of a fine-tuning job from {training_file} was interrupted before the provider created "
                "a job: nothing was started or billed. Try `/finetune start` again.")
        return build_message(text, [section_block(":information_source: " + escape(text))])
    text = (f"Your start from {training_file} did go through while I was restarting: job {job.id} ({job.status}). "
            "This channel follows it, so there is no need to start it again.")
    blocks = [section_block(f":information_source: Your start from {code(training_file)} did go through while I was "
                            f"restarting: job {code(job.id)}. This channel follows it, so there is no need to start it "
                            "again."), *field_blocks(job_fields(job))]
    if estimate is not None:
        text += f" Estimated cost: {dollars(estimate)}."
        blocks.append(context_block(f":moneybag: Estimated cost: {dollars(estimate)}."))
    return build_message(text, blocks, in_channel=True)


def format_action(action: str, job: Job) -> Message:
    past = BY_NAME[action].past.capitalize()
    if action == "pause" and job.status != "paused":
        past = "Pausing"
    text = f"{past} job {job.id} (now {job.status})."
    return build_message(text, [section_block(f"{status_label(job.status)}  {past} job {code(job.id)}.")],
                         in_channel=True)


def format_subscribed(job: Job, *, new: bool, warnings: Sequence[str] = (), by_dm: bool = False,
                      card: bool = False) -> Message:
    if by_dm and not job.final:
        text = (f"You now follow job {job.id} ({job.status}); I'll tell you in a direct message when it finishes."
                if new else f"You already follow job {job.id} in a direct message.")
        return build_message(text, [section_block(":bell: " + escape(text)), *field_blocks(job_fields(job))])
    if job.final:
        text = f"Job {job.id} has already finished: {job.status}."
        head = f"{status_label(job.status)}  Job {code(job.id)} has already finished, so there is nothing to wait for."
    elif new and card:
        text = f"This channel now follows job {job.id} ({job.status}); its card is in the channel."
        head = (f":bell: This channel now follows {code(job.id)} ({escape(job.status)}). Its card is in the "
                "channel: it shows the job as it moves, with progress in its thread.")
    elif new:
        text = f"This channel now follows job {job.id} ({job.status}); I'll post here when it finishes."
        head = (f":bell: This channel now follows {code(job.id)} ({escape(job.status)}). "
                "I'll post here when it finishes.")
    else:
        text = f"This channel already follows job {job.id} ({job.status})."
        head = f":bell: This channel already follows {code(job.id)} ({escape(job.status)})."
    blocks = [section_block(head), *field_blocks(job_fields(job))]
    if job.error_message:
        blocks.append(section_block(f"*Error*\n>{escape(job.error_message)}"))
    blocks += [section_block(":warning: " + w) for w in warnings]
    return build_message(text, blocks, in_channel=new and not job.final and not card)


def format_unsubscribed(job_id: str, *, existed: bool, by_dm: bool = False) -> Message:
    if by_dm:
        text = (f"You no longer follow job {job_id} in direct messages." if existed
                else f"You don't follow job {job_id} in direct messages; nothing to do.")
        return build_message(text, [section_block(":no_bell: " + escape(text))])
    if existed:
        text = f"This channel no longer follows job {job_id}."
        return build_message(text, [section_block(f":no_bell: This channel no longer follows {code(job_id)}.")],
                             in_channel=True)
    text = f"This channel doesn't follow job {job_id}; nothing to do."
    return build_message(text, [section_block(f"This channel doesn't follow {code(job_id)}; nothing to do.")])


TRY_SHARE_ACTION = "try_share"


TRY_OPEN_ACTION = "try_open"


TRY_CALLBACK = "finetune_try"
