"""A person's App Home: the jobs they started (running first, each with its status and a link to its card), what they
started this month and its cost, the channels where they follow jobs, and a button for help. Always within Slack's
100 blocks for a Home."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.messages.blocks import context_block, dollars, escape, header_block, section_block
from bot.messages.jobs import job_line
from bot.providers.types import provider_label

HOME_HELP_ACTION = "home_help"
HOME_KEYS_ACTION = "home_keys"  # (shown to a workspace's admins, in OAuth mode: `/finetune keys`' form)
HOME_JOBS = 30  # the most jobs a Home lists (running first): one block each
HOME_CHANNELS = 20  # the most channels it names
MAX_HOME_BLOCKS = 100  # Slack's limit for a Home view


def card_link(channel_id: str, ts: str | None) -> str | None:
    """A link to a card (a message Slack keeps at channel and ts); None when the card was never posted."""
    if not ts or not ts.replace(".", "").isdigit():
        return None
    return f"https://slack.com/archives/{channel_id}/p{ts.replace('.', '')}"


def _job_block(row: Mapping) -> dict:
    line = job_line(row["id"], row["status"], row.get("fine_tuned_model"))
    line += f"  {escape(provider_label(row.get('provider') or ''))}"
    where = f"<#{row['channel_id']}>" if row.get("channel_id") else ""
    link = card_link(row.get("channel_id") or "", row.get("card_ts"))
    if link:
        where += f" · <{link}|its card>"
    return section_block(f"{line}\n{where}" if where else line)


def home_view(*, started: Sequence[Mapping], month: Mapping, month_name: str, channels: Sequence[Mapping],
              total_started: int | None = None, keys_button: bool = False) -> dict:
    """The Home tab's view for one person."""
    blocks: list[dict] = [header_block("Your fine-tuning")]
    running = [r for r in started if not r.get("final")]
    ended = [r for r in started if r.get("final")]
    if not started:
        blocks.append(section_block("You have not started a job here yet. In any channel, type `/finetune start` "
                                    "to pick a training file, or `/finetune help` for everything I do."))
    if running:
        blocks.append(section_block(f"*Running* ({len(running)})"))
        blocks += [_job_block(r) for r in running]
    if ended:
        blocks.append(section_block("*Finished*"))
        blocks += [_job_block(r) for r in ended]
    if total_started is not None and total_started > len(started):
        blocks.append(context_block(f"{len(started)} of your jobs are shown: the running ones, then the newest."))
    spent = month.get("spent") or 0
    jobs = month.get("jobs") or 0
    line = (f"*{escape(month_name)}:* {jobs} {'job' if jobs == 1 else 'jobs'} started, {dollars(spent)}"
            if jobs else f"*{escape(month_name)}:* no jobs started yet")
    if month.get("unknown"):
        line += f" (and {month['unknown']} whose cost is not known)"
    blocks += [{"type": "divider"}, section_block(line)]
    if channels:
        named = ", ".join(f"<#{c['channel_id']}>" for c in channels)
        blocks.append(section_block(f"*Where you follow jobs:* {named}"))
    buttons = [{"type": "button", "action_id": HOME_HELP_ACTION, "text": {"type": "plain_text", "text": "Help"},
                "value": "help"}]
    if keys_button:
        buttons.append({"type": "button", "action_id": HOME_KEYS_ACTION, "value": "keys",
                        "text": {"type": "plain_text", "text": "Provider keys"}})
    blocks.append({"type": "actions", "elements": buttons})
    return {"type": "home", "blocks": blocks[:MAX_HOME_BLOCKS]}


def help_modal(help_blocks: Sequence[dict]) -> dict:
    """Help, in a modal opened from the Home's button."""
    return {"type": "modal", "title": {"type": "plain_text", "text": "finetune-bot help"},
            "close": {"type": "plain_text", "text": "Close"}, "blocks": list(help_blocks)[:MAX_HOME_BLOCKS]}

