"""Answers to a command that are not about one job: help, usage problems, refusals, settings, providers, apologies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.commands import SUBCOMMANDS, Problem, quote
from bot.providers.types import ProviderError, provider_label

if TYPE_CHECKING:
    pass
from bot.messages.blocks import (
    SLACK_USER_ID,
    Message,
    build_message,
    code,
    context_block,
    dollars,
    escape,
    header_block,
    section_block,
    sections_of_lines,
)


def format_help() -> Message:
    lines = [f"{code(s.usage)}\n{s.summary}" for s in SUBCOMMANDS]
    # The fallback text (notifications, clients without blocks) lists every usage line; the blocks also say what each
    # does (both together pass Slack's 3,000 characters for the text).
    text = "finetune-bot commands:\n" + "\n".join(s.usage for s in SUBCOMMANDS)
    # One section a subcommand: evenly spaced wherever it is shown (together they would pass 3,000 characters).
    blocks = [header_block("finetune-bot"), *[section_block(line) for line in lines],
              context_block("Options are `key=value` words after the id, e.g. "
                            "`/finetune start file-abc123 suffix=support-bot epochs=3`.")]
    return build_message(text, blocks)


def format_problem(problem: Problem) -> Message:
    body = ":thinking_face: " + escape(problem.message)
    if problem.usage:
        body += f"\nUsage: {code(problem.usage)}"
    return build_message(problem.message + (f" Usage: {problem.usage}" if problem.usage else ""), [section_block(body)])


def format_refusal(reason: str) -> Message:
    return build_message(reason, [section_block(":lock: " + escape(reason))])


def format_provider_error(doing: str, error: ProviderError) -> Message:
    """The provider's own words, escaped, with what we were doing."""
    if error.own:  # the bot's own finding (no provider said it): no "said", no HTTP status
        said = error.message
    else:
        said = f"{provider_label(error.provider) if error.provider else 'The provider'} said: {error.message}"
        if error.status:
            said += f" (HTTP {error.status}{', ' + error.code if error.code else ''})"
    body = f":warning: Could not {escape(doing)}.\n>{escape(said)}"
    if error.retryable and not error.ambiguous:
        body += "\nThis looks temporary; try again in a minute."
    return build_message(f"Could not {doing}. {said}", [section_block(body)])


def format_note(text: str, *, emoji: str = ":information_source:") -> Message:
    """A sentence for the person who asked, untrusted parts and all, escaped."""
    return build_message(text, [section_block(f"{emoji} {escape(text)}")])


def format_settings(settings: Mapping, *, changed: bool) -> Message:
    """What a channel hears, and how to change it."""
    outcomes = "every outcome (succeeded, failed, cancelled)" if settings["outcomes"] == "all" else "failures only"
    onoff = {name: "on" if settings[name] else "off" for name in ("mentions", "cards", "progress")}
    minutes = int(settings["progress_minutes"])
    every = (f", at most one reply every {minutes} minute{'s' if minutes != 1 else ''}" if settings["progress"]
             else "")
    head = ":gear: This channel's settings are now:" if changed else ":gear: This channel's settings:"
    lines = [f"Outcomes announced: *{escape(outcomes)}*  (`outcomes=all|failures`)",
             f"Mentions of who started or subscribed: *{onoff['mentions']}*  (`mentions=on|off`)",
             f"A card per job, edited as it moves, with a thread: *{onoff['cards']}*  (`cards=on|off`; off: plain "
             "messages)",
             f"Progress replies in a card's thread: *{onoff['progress']}*{every}  (`progress=on|off`, "
             "`every=<minutes>`)"]
    threshold, budget = settings.get("confirm_above"), settings.get("budget")
    watchdog = settings.get("watchdog") or "warn"
    lines += [f"Starts above this estimate wait for a click: *{dollars(threshold) if threshold is not None else 'off'}*"
              "  (`confirm_above=<USD>|off`)",
              f"This month's budget: *{dollars(budget) if budget is not None else 'off'}*  (`budget=<USD>|off`; a "
              "start past it is held)",
              f"Watchdog (NaN or rising loss, a stalled run, overfitting): *{escape(watchdog)}*  "
              "(`watchdog=off|warn|cancel`)"]
    text = (f"{'Now: ' if changed else ''}outcomes {settings['outcomes']}, mentions {onoff['mentions']}, cards "
            f"{onoff['cards']}, progress {onoff['progress']}"
            + (f" every {minutes} min" if settings["progress"] else "")
            + f", confirm above {dollars(threshold) if threshold is not None else 'off'}, budget "
            f"{dollars(budget) if budget is not None else 'off'}, watchdog {watchdog}.")
    return build_message(text, [section_block(head + "\n" + "\n".join(lines))], in_channel=changed)


def format_unknown_provider(unknown: object, configured: Sequence[str], usage: str | None = None) -> Message:
    """A `provider=` naming no configured provider (bot.providers.types.UnknownProvider, or its name), with the ones
    that are; or, for a workspace without that key (bot.keyring.NoProviderKey), how to add one."""
    hint = getattr(unknown, "hint", None)
    if hint:
        return format_problem(Problem(hint + (f" Here: {', '.join(f'`{n}`' for n in configured)}." if configured
                                              else "")))
    return format_problem(Problem(f"No provider called `{quote(str(unknown))}` is configured here. "
                                  f"Configured: {', '.join(f'`{n}`' for n in configured)}.", usage))


def format_replay() -> Message:
    text = "I've already received this exact request, so I didn't act on it again."
    return build_message(text, [section_block(":repeat: " + escape(text))])


def format_database_unavailable(error_id: str) -> Message:
    text = (f"I can't reach my database right now, so I didn't do that. Try again in a moment; nothing already "
            f"under way is lost. (If it keeps happening, quote this id: {error_id})")
    return build_message(text, [section_block(":hourglass_flowing_sand: " + escape(text))])


def format_apology(error_id: str) -> Message:
    text = f"Sorry, something went wrong on my side. If it keeps happening, quote this id: {error_id}"
    return build_message(text, [section_block(":face_with_head_bandage: " + escape(text))])


@dataclass(frozen=True)
class ProviderInfo:
    """What `/finetune providers` says of one provider."""

    name: str
    default: bool
    capabilities: Sequence[str]
    cannot: Sequence[str]
    start_options: Sequence[str]
    taking_jobs: str  # a sentence: whether it takes new jobs, and until when
    taking: bool


def format_providers(infos: Sequence[ProviderInfo], *, sandbox: bool = False) -> Message:
    lines, text = [], []
    for info in infos:
        label = provider_label(info.name)
        head = f"*{escape(label)}*  `provider={escape(info.name)}`"
        head += "  _(default for start)_" if info.default else ""
        mark = ":large_green_circle:" if info.taking else ":no_entry:"
        body = [head, f"{mark} {escape(info.taking_jobs)}",
                "Can: " + escape(", ".join(info.capabilities) or "start, read and cancel jobs")]
        if info.cannot:
            body.append("Cannot: " + escape(", ".join(info.cannot)))
        body.append("Start options: " + ", ".join(code(o) for o in info.start_options))
        lines.append("\n".join(body))
        text.append(f"{label} (provider={info.name}{', default' if info.default else ''}): {info.taking_jobs}")
    title = "Configured providers" + (" (sandbox stand-ins)" if sandbox else "")
    return build_message(f"{title}: " + " ".join(text), [section_block(f"*{title}*"), *sections_of_lines(lines)])


def format_stopped_taking_jobs(error: ProviderError, others: Sequence[str], *, advice: str = "") -> Message:
    """A start refused because the provider no longer creates jobs at all: its words, and where else to go."""
    label = provider_label(error.provider)
    said = f"{label} no longer starts fine-tuning jobs. It said: {error.message}"
    if others:
        names = ", ".join(f"{provider_label(o)} (provider={o})" for o in others)
        advice = (f"Other providers configured here: {names}. "
                  f"For example: /finetune start <file_id> provider={others[0]}")
    else:
        advice = ("No other provider is configured here; whoever runs finetune-bot can add one"
                  + (f" ({advice})." if advice else "."))
    body = f":no_entry: {escape(label)} no longer starts fine-tuning jobs.\n>{escape(error.message)}\n{escape(advice)}"
    return build_message(f"{said} {advice}", [section_block(body)])


def invite_hint(bot_user_id: str | None) -> str:
    """How to add this bot to a channel, by the name this workspace gave it (mrkdwn)."""
    if bot_user_id and SLACK_USER_ID.fullmatch(bot_user_id):
        return f"type `/invite` <@{bot_user_id}> there"
    return "add the app there (channel details → Integrations → Add apps)"


def invite_warning(bot_user_id: str | None = None) -> str:
    return (f"I can't post in this channel yet (it's private and I'm not in it), so I couldn't tell you when the job "
            f"finishes. To fix it, {invite_hint(bot_user_id).replace(' there', ' here')}.")
