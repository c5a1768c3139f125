"""Moving fine-tunes, as Slack messages: a move's answer, a move waiting for its file, which fine-tunes a date puts
at risk (the list and the notice), and the links between a job and where it moved (for its card and status)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, timedelta

from bot.messages.blocks import (
    MAX_BUTTON_VALUE,
    SLACK_USER_ID,
    Message,
    build_message,
    code,
    context_block,
    escape,
    header_block,
    section_block,
    sections_of_lines,
)
from bot.messages.jobs import status_label
from bot.providers.types import Job, provider_label

MOVE_PICK_ACTION = "move_pick_file"  # a move whose file its provider keeps: pick it in Slack
MOVE_OPEN_ACTION = "move_open"  # a fine-tune at risk: the small form that moves it


def _value(target: Mapping) -> str:
    value = escape(json.dumps(target))
    return value if len(value) <= MAX_BUTTON_VALUE else "{}"


def format_moving(job: Job, target: str, notes: Sequence[str], *, started: Message | None = None,
                  report: Sequence[str] = (), role: str = "training") -> Message:
    """A move's answer: how it was made (the base model and why, epochs, what was converted), then the start's own
    answer (started, held, or the provider's refusal); or, when the target's rules refuse the data, the report."""
    where, source = provider_label(target), provider_label(job.provider)
    head = f":truck: Moving {code(job.id)} from {escape(source)} to {escape(where)}"
    if started is None:
        said = (f"The {role} file of {job.id} doesn't meet {where}'s rules, so nothing was uploaded or started. "
                "Fix these in the file and start it there yourself, or move it with another `model=`:")
        blocks = [section_block(f"{head}\n{escape(said)}"), *sections_of_lines([escape(line) for line in report],
                                                                               per=8)]
        return build_message(f"Moving {job.id} to {where}: {said} " + " ".join(report[:3]), blocks)
    blocks = [section_block(head), context_block("\n".join(escape(note) for note in notes)), *started.blocks]
    text = f"Moving {escape(job.id)} from {escape(source)} to {escape(where)}. {started.text}"  # (its text: escaped)
    return build_message(text, blocks, in_channel=started.in_channel, text_escaped=True)


def format_move_refused(job: Job, target: str, move: Mapping) -> Message:
    """A move asked for again while it is under way, held or done: what it is, and nothing done twice."""
    where = provider_label(target)
    user = str(move.get("user_id") or "")
    who = f" by <@{user}>" if SLACK_USER_ID.fullmatch(user) else ""
    state = move.get("state")
    if state == "started":
        said = (f"{code(job.id)} was already moved to {escape(where)}{who}: job {code(move.get('new_job'))}. "
                f"`/finetune status {escape(move.get('new_job'))}` shows where it stands.")
    elif state == "held":
        said = (f"A move of {code(job.id)} to {escape(where)}{who} is held, waiting for its Start anyway or an "
                "approver; nothing was started again.")
    else:
        said = f"{code(job.id)} is being moved to {escape(where)}{who} right now; nothing was started again."
    return build_message(said.replace("`", ""), [section_block(f":information_source: {said}")], text_escaped=True)


def format_move_needs_file(move: Mapping, job: Job, target: str, words: str, *, role: str) -> Message:
    """The source keeps the file to itself: say so in its words, and offer the form that takes it from Slack."""
    source, where = provider_label(job.provider), provider_label(target)
    options = move.get("options") or {}
    kept = ", ".join(f"{name}={value}" for name, value in options.items() if value is not None)
    said = (f"{source} won't give back the {role} file of {job.id}, so I can't copy it to {where} myself. "
            f"{source} said: {words}. Pick the file in Slack and the move goes on from there, with everything else "
            f"kept (to {where}{', ' + kept if kept else ''}). Nothing was uploaded or started.")
    blocks = [section_block(f":file_folder: {escape(said)}"),
              {"type": "actions", "elements": [
                  {"type": "button", "action_id": MOVE_PICK_ACTION, "style": "primary",
                   "text": {"type": "plain_text", "text": "Pick the training file…"},
                   "value": _value({"move": move["id"]})}]}]
    return build_message(said, blocks)


def move_links(moved_from: Mapping | None, moved_to: Sequence[Mapping]) -> list[str]:
    """A job's links to the moves it came from and went to, as mrkdwn lines (ids escaped)."""
    lines = []
    if moved_from:
        lines.append(f":truck: Moved from {code(moved_from['source_job'])} at "
                     f"{escape(provider_label(moved_from['source_provider']))}.")
    for move in moved_to:
        status = move.get("new_status")
        state = f" ({status_label(status, move.get('new_state'))})" if status else ""
        lines.append(f":truck: Moved to {code(move['new_job'])} at "
                     f"{escape(provider_label(move['target_provider']))}{state}.")
    return lines


def _risk_line(entry: Mapping, today: date) -> str:
    days = (date.fromisoformat(entry["date"]) - today).days
    when = "today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
    model = entry.get("fine_tuned_model") or entry["job"]
    moved = "".join(f" Already moved to {code(job)} at {escape(provider_label(where))}."
                    for job, where in entry.get("moved") or ())
    return (f"{code(model)} (job {code(entry['job'])} at {escape(provider_label(entry['provider']))}, base "
            f"{code(entry['model'])}): on *{escape(entry['date'])}* ({when}), {escape(entry['what'])}. "
            f"_Source: {escape(entry['source'])}._{moved}")


def _move_button(entry: Mapping) -> dict:
    return {"type": "actions", "elements": [
        {"type": "button", "action_id": MOVE_OPEN_ACTION, "text": {"type": "plain_text", "text": "Move…"},
         "value": _value({"provider": entry["provider"], "job": entry["job"]})}]}


def _risk_blocks(entries: Sequence[Mapping], today: date) -> list[dict]:
    blocks = []
    for entry in entries:
        blocks += [section_block(_risk_line(entry, today)), _move_button(entry)]
    return blocks


def format_retiring(entries: Sequence[Mapping], *, today: date, listed: int = 20) -> Message:
    """`/finetune retiring`: the followed fine-tunes a coming date puts at risk, soonest first, each with its date,
    where the date comes from, and a Move… button."""
    if not entries:
        text = ("No fine-tune this channel follows is at risk: no provider it uses has announced an end of jobs or "
                "of their base models.")
        return build_message(text, [section_block(f":white_check_mark: {escape(text)}")])
    blocks = [header_block(":hourglass: Fine-tunes at risk"),
              context_block("Each date is where it comes from: a provider's own page, or reports marked as such. "
                            "Move… re-trains one at another provider (`/finetune move <job_id> to=<provider>`)."),
              *_risk_blocks(entries[:listed], today)]
    if len(entries) > listed:
        blocks.append(context_block(f"…and {len(entries) - listed} more."))
    text = f"{len(entries)} fine-tune(s) this channel follows are at risk; the soonest date is {entries[0]['date']}."
    return build_message(text, blocks)


def format_retiring_notice(detail: Mapping) -> Message:
    """The notice a channel gets 30 and 7 days before a date that puts fine-tunes it follows at risk (counted in days
    from when it was queued)."""
    entries = detail.get("entries") or []
    days = int(detail.get("days") or 0)
    today = date.fromisoformat(detail["date"]) - timedelta(days=days)
    when = "today" if days <= 0 else f"in {days} day{'s' if days != 1 else ''}"
    head = f":hourglass: {len(entries) + int(detail.get('more') or 0)} fine-tune(s) here are at risk {when}"
    blocks = [header_block(head.removeprefix(":hourglass: ")), *_risk_blocks(entries, today)]
    if detail.get("more"):
        blocks.append(context_block(f"…and {detail['more']} more: `/finetune retiring` lists them all."))
    blocks.append(context_block("`/finetune retiring` lists every fine-tune at risk here; Move… re-trains one "
                                "elsewhere."))
    return build_message(f"{head.removeprefix(':hourglass: ')} ({detail['date']}). `/finetune retiring` lists them.",
                         blocks, in_channel=True)
