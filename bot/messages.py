"""Slack messages as pure functions: data in, plain-text fallback plus Block Kit blocks out.

Every untrusted string (anything from a user or the provider) goes through `escape()`; Slack's limits (50 blocks,
3,000 characters a section) are enforced in `_message()`.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bot.commands import BY_NAME, SUBCOMMANDS, Problem, quote
from bot.providers.types import Job, JobEvent, ProviderError, provider_label, status_emoji
from bot.scrub import Scrubber

if TYPE_CHECKING:
    from bot.costs import Estimate

_SCRUB = Scrubber()  # credential shapes; configured secrets are removed where provider text enters (the adapters)
SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
SLACK_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")
MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_TEXT = 3000
MAX_BUTTON_VALUE = 2000  # Slack's limit for a button's value
MAX_FIELD = 2000  # and for a section field's text
MAX_INPUT_LENGTH = 3000  # the most a plain_text_input's max_length may say: Slack refuses the whole view past it
SANDBOX_NOTE = ":test_tube: Sandbox provider: a simulated job, no real training and no cost."


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list[dict] = field(default_factory=list)
    in_channel: bool = False  # a slash-command reply the whole channel sees, rather than only its author

    def plain(self) -> Message:
        """The fallback text alone, for when Slack refuses the blocks."""
        return replace(self, blocks=[])

    def reply_kwargs(self) -> dict:
        """As a slash-command reply (through `respond` or the ack)."""
        return {"text": self.text, "blocks": self.blocks,
                "response_type": "in_channel" if self.in_channel else "ephemeral"}

    def as_sandbox(self) -> Message:
        """The same message, saying plainly that it comes from the sandbox provider."""
        blocks = self.blocks[: MAX_BLOCKS - 1] + [_context(SANDBOX_NOTE)]
        return replace(self, text=f"[sandbox] {self.text}", blocks=blocks)


def escape(text: object) -> str:
    """Make untrusted text inert in mrkdwn: no mentions, links or channel pings can be formed from it."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: object) -> str:
    """Untrusted text shown as inline code (escaped; backticks that would end the span are replaced)."""
    return "`" + escape(str(text).replace("`", "'")) + "`"


def _clip(text: str, limit: int) -> str:
    """Cut to `limit` characters cleanly: never inside an `&lt;` entity or a `<…>` token, code spans closed. Anything
    shaped like a credential goes first: cut through, it would leave most of itself behind for no scrubber to see."""
    text = _SCRUB(text)
    if len(text) <= limit:
        return text
    cut = text[: limit - 5]  # room for "…" and closing a fence
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    fences = cut.count("```")
    if fences % 2:
        return cut + "…```"
    if cut.replace("```", "").count("`") % 2:
        return cut + "…`"
    return cut + "…"


def _section(mrkdwn: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn, MAX_SECTION)}}


def _context(mrkdwn: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(mrkdwn, MAX_SECTION)}]}


def _header(plain: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": _clip(plain, 150), "emoji": True}}


def _fields(pairs: Iterable[tuple[str, str]]) -> list[dict]:
    """Label/value pairs as section fields, ten to a section (Slack's limit)."""
    items = [{"type": "mrkdwn", "text": _clip(f"*{label}*\n{value}", 2000)} for label, value in pairs]
    return [{"type": "section", "fields": items[i:i + 10]} for i in range(0, len(items), 10)]


def _lines_in_sections(lines: Sequence[str], per: int = 10) -> list[dict]:
    """A long list as several sections, so no section nears Slack's 3,000 characters."""
    return [_section("\n".join(lines[i:i + per])) for i in range(0, len(lines), per)]


def _message(text: str, blocks: Sequence[dict], *, in_channel: bool = False, text_escaped: bool = False) -> Message:
    """The one exit of every formatter: the fallback text escaped (Slack parses it for mentions and shows it in
    notifications), and Slack's limits enforced."""
    blocks = list(blocks)
    if len(blocks) > MAX_BLOCKS:
        blocks = blocks[: MAX_BLOCKS - 1] + [_context(f"…and {len(blocks) - MAX_BLOCKS + 1} more not shown.")]
    return Message(_clip(text if text_escaped else escape(text), MAX_TEXT), blocks, in_channel)


def dollars(amount: float) -> str:
    """A price as people read it (bot.training_data's one rule; imported when first needed)."""
    from bot.training_data import dollars as said

    return said(amount)


def when(ts: int | float | None) -> str:
    """A timestamp as Slack shows it in each reader's own time zone, with a UTC fallback."""
    if not ts:
        return "—"
    ts = int(ts)
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
    return f"<!date^{ts}^{{date_short_pretty}} {{time}}|{fallback}>"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "—"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def tokens(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def status_label(status: str, state: str | None = None) -> str:
    """The provider's own status word, with an emoji for what it means (its outcome, when the word is new to us)."""
    return f"{status_emoji(status, state)} {escape(status)}"


def job_line(job_id: str, status: str, fine_tuned_model: str | None = None) -> str:
    """One job on one line, as lists show it."""
    line = f"{status_emoji(status)} {code(job_id)}  {escape(status)}"
    if fine_tuned_model:
        line += f" → {code(fine_tuned_model)}"
    return line


# -- help and problems -------------------------------------------------------------------------------


def format_help() -> Message:
    lines = [f"{code(s.usage)}\n{s.summary}" for s in SUBCOMMANDS]
    # The fallback text (notifications, clients without blocks) lists every usage line; the blocks also say what each
    # does (both together pass Slack's 3,000 characters for the text).
    text = "finetune-bot commands:\n" + "\n".join(s.usage for s in SUBCOMMANDS)
    # One section a subcommand: evenly spaced wherever it is shown (together they would pass 3,000 characters).
    blocks = [_header("finetune-bot"), *[_section(line) for line in lines],
              _context("Options are `key=value` words after the id, e.g. "
                       "`/finetune start file-abc123 suffix=support-bot epochs=3`.")]
    return _message(text, blocks)


def format_problem(problem: Problem) -> Message:
    body = ":thinking_face: " + escape(problem.message)
    if problem.usage:
        body += f"\nUsage: {code(problem.usage)}"
    return _message(problem.message + (f" Usage: {problem.usage}" if problem.usage else ""), [_section(body)])


def format_refusal(reason: str) -> Message:
    return _message(reason, [_section(":lock: " + escape(reason))])


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
    return _message(f"Could not {doing}. {said}", [_section(body)])


def format_note(text: str, *, emoji: str = ":information_source:") -> Message:
    """A sentence for the person who asked, untrusted parts and all, escaped."""
    return _message(text, [_section(f"{emoji} {escape(text)}")])


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
    return _message(text, [_section(head + "\n" + "\n".join(lines))], in_channel=changed)


def format_unknown_provider(name: str, configured: Sequence[str], usage: str | None = None) -> Message:
    """A `provider=` naming no configured provider, with the ones that are."""
    return format_problem(Problem(f"No provider called `{quote(name)}` is configured here. "
                                  f"Configured: {', '.join(f'`{n}`' for n in configured)}.", usage))


def format_replay() -> Message:
    text = "I've already received this exact request, so I didn't act on it again."
    return _message(text, [_section(":repeat: " + escape(text))])


def format_database_unavailable(error_id: str) -> Message:
    text = (f"I can't reach my database right now, so I didn't do that. Try again in a moment; nothing already "
            f"under way is lost. (If it keeps happening, quote this id: {error_id})")
    return _message(text, [_section(":hourglass_flowing_sand: " + escape(text))])


def format_apology(error_id: str) -> Message:
    text = f"Sorry, something went wrong on my side. If it keeps happening, quote this id: {error_id}"
    return _message(text, [_section(":face_with_head_bandage: " + escape(text))])


# -- jobs ----------------------------------------------------------------------------------------------


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
        _section(f":rocket: Started fine-tuning job {code(job.id)} on {escape(where)} ({code(job.model)}).\n" + (
            "Its card is in this channel: it shows the job as it moves, with progress in its thread." if card else
            "I'll post in this channel when it finishes.")),
    ]
    if not card:
        blocks += _fields(job_fields(job))
    if estimate is not None:
        said = f"Estimated cost: {estimate.words()}."
        text += " " + said
        blocks.append(_context(":moneybag: " + escape(said)))
    if job.provider_estimate is not None:
        said = f"{where}'s own estimate for this job: {dollars(job.provider_estimate)}."
        text += " " + said
        blocks.append(_context(":moneybag: " + escape(said)))
    blocks += [_section(":warning: " + w) for w in warnings]
    if not card:
        blocks.append(job_buttons(job))
    return _message(text, blocks, in_channel=not card)


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


def _plain_lines(lines: Sequence[str]) -> str:
    """mrkdwn lines (their untrusted parts escaped) as plain words for a fallback text, which is escaped once more."""
    return html.unescape(" ".join(re.sub(r"`|:truck: ", "", line) for line in lines))


def format_job_status(job: Job, events: Sequence[JobEvent], *, followed_here: bool,
                      links: Sequence[str] = ()) -> Message:
    text = f"Job {job.id}: {job.status}"
    if job.fine_tuned_model:
        text += f", model {job.fine_tuned_model}"
    blocks = [_section(f"*Fine-tuning job* {code(job.id)}"), *_fields(job_fields(job))]
    if job.error_message:
        blocks.append(_section(f"*Error* ({escape(job.error_code or 'unknown')})\n>{escape(job.error_message)}"))
        text += f". Error: {job.error_message}"
    if events:
        lines = "\n".join(f"{when(e.created_at)}  {escape(e.message)}" for e in events)
        blocks.append(_section(f"*Latest events*\n{lines}"))
    if links:
        blocks.append(_section("\n".join(links)))
        text += ". " + _plain_lines(links)
    blocks.append(job_buttons(job))
    note = "This channel follows this job." if followed_here else (
        f"This channel doesn't follow it; `/finetune subscribe {escape(job.id)}` to be told when it finishes.")
    blocks.append(_context(note))
    return _message(text, blocks)


def format_events(job: Job, events: Sequence[JobEvent], *, kept: bool = True) -> Message:
    """A job's latest events, for whoever asked; with `kept` False, that its provider keeps none (Fireworks)."""
    if not kept:
        text = (f"{provider_label(job.provider)} keeps no events for a job; its status says where {job.id} stands: "
                f"{job.status}.")
        return _message(text, [_section(escape(text))])
    if not events:
        text = f"Job {job.id} has no events yet."
        return _message(text, [_section(escape(text))])
    lines = [f"{when(e.created_at)}  {escape(e.message)}" for e in events]
    blocks = [_section(f"*Latest events of* {code(job.id)} ({escape(provider_label(job.provider))})"),
              *_lines_in_sections(lines)]
    return _message(f"Latest events of {job.id}: " + " / ".join(e.message for e in events[:5]), blocks)


def format_job_list(jobs: Sequence[Job], *, where: str | None = None, unreachable: Sequence[str] = ()) -> Message:
    """The most recent jobs across providers (or at `where`), each marked with its provider; `unreachable` are
    notes on providers that could not be asked this time."""
    notes = [_context(":warning: " + escape(note)) for note in unreachable]
    at = f" at {provider_label(where)}" if where else ""
    if not jobs:
        text = f"No fine-tuning jobs yet{at}."
        return _message(text + "".join(" " + n for n in unreachable), [_section(escape(text)), *notes])
    lines = [job_line(job.id, job.status, job.fine_tuned_model)
             + f"  {escape(provider_label(job.provider))} · {code(job.model)}" for job in jobs]
    blocks = [_section(f"*The {len(jobs)} most recent fine-tuning jobs{escape(at)}*"), *_lines_in_sections(lines),
              *notes]
    text = "Recent jobs: " + ", ".join(f"{j.id} {j.status} ({provider_label(j.provider)})" for j in jobs)
    return _message(text + "".join(" " + n for n in unreachable), blocks)


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
    return _message(f"{title}: " + " ".join(text), [_section(f"*{title}*"), *_lines_in_sections(lines)])


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
    return _message(f"{said} {advice}", [_section(body)])


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
    dm = [_section(f"*You follow {len(by_dm)} job(s) by direct message*"),
          *_lines_in_sections([_follow_line(r) for r in by_dm])] if by_dm else []
    if not view.active and not view.finished:
        text = "This channel doesn't follow any fine-tuning jobs. `/finetune start` or `/finetune subscribe` one."
        return _message(text + (f" You follow {len(by_dm)} by direct message." if by_dm else ""),
                        [_section(escape(text)), *dm])
    blocks = [_section(f"*{escape(title)}*: {view.active} running, {view.finished} finished")]
    if view.page == 1:
        if view.rows:
            blocks += _lines_in_sections([_follow_line(r) for r in view.rows])
        elif view.active == 0:
            blocks.append(_section("Nothing running."))
        if view.recent_finished:
            blocks.append(_section(f"*Finished* ({view.finished}); the most recent:"))
            blocks += _lines_in_sections([_follow_line(r) for r in view.recent_finished])
    else:
        blocks += _lines_in_sections([_follow_line(r) for r in view.rows]) or [_section("Nothing on this page.")]
    if view.pages > 1:
        more = f"Page {view.page} of {view.pages}."
        if view.page < view.pages:
            more += f" More: `/finetune subscriptions {view.page + 1}`"
        blocks.append(_context(more))
    shown = list(view.rows) + list(view.recent_finished)
    text = f"{title}: {view.active} running, {view.finished} finished. " + ", ".join(
        f"{r['job_id']} {r['status']}" for r in shown[:10])
    return _message(text, (blocks + dm)[:MAX_BLOCKS])


def format_start_reconciled(job: Job | None, training_file: str, *, estimate: float | None = None) -> Message:
    """What the person who started a job hears when the bot restarts after dying mid-start."""
    if job is None:
        text = (f"Your start of a fine-tuning job from {training_file} was interrupted before the provider created "
                "a job: nothing was started or billed. Try `/finetune start` again.")
        return _message(text, [_section(":information_source: " + escape(text))])
    text = (f"Your start from {training_file} did go through while I was restarting: job {job.id} ({job.status}). "
            "This channel follows it, so there is no need to start it again.")
    blocks = [_section(f":information_source: Your start from {code(training_file)} did go through while I was "
                       f"restarting: job {code(job.id)}. This channel follows it, so there is no need to start it "
                       "again."), *_fields(job_fields(job))]
    if estimate is not None:
        text += f" Estimated cost: {dollars(estimate)}."
        blocks.append(_context(f":moneybag: Estimated cost: {dollars(estimate)}."))
    return _message(text, blocks, in_channel=True)


def format_action(action: str, job: Job) -> Message:
    past = BY_NAME[action].past.capitalize()
    if action == "pause" and job.status != "paused":
        past = "Pausing"
    text = f"{past} job {job.id} (now {job.status})."
    return _message(text, [_section(f"{status_label(job.status)}  {past} job {code(job.id)}.")], in_channel=True)


def format_subscribed(job: Job, *, new: bool, warnings: Sequence[str] = (), by_dm: bool = False,
                      card: bool = False) -> Message:
    if by_dm and not job.final:
        text = (f"You now follow job {job.id} ({job.status}); I'll tell you in a direct message when it finishes."
                if new else f"You already follow job {job.id} in a direct message.")
        return _message(text, [_section(":bell: " + escape(text)), *_fields(job_fields(job))])
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
    blocks = [_section(head), *_fields(job_fields(job))]
    if job.error_message:
        blocks.append(_section(f"*Error*\n>{escape(job.error_message)}"))
    blocks += [_section(":warning: " + w) for w in warnings]
    return _message(text, blocks, in_channel=new and not job.final and not card)


def format_unsubscribed(job_id: str, *, existed: bool, by_dm: bool = False) -> Message:
    if by_dm:
        text = (f"You no longer follow job {job_id} in direct messages." if existed
                else f"You don't follow job {job_id} in direct messages; nothing to do.")
        return _message(text, [_section(":no_bell: " + escape(text))])
    if existed:
        text = f"This channel no longer follows job {job_id}."
        return _message(text, [_section(f":no_bell: This channel no longer follows {code(job_id)}.")], in_channel=True)
    text = f"This channel doesn't follow job {job_id}; nothing to do."
    return _message(text, [_section(f"This channel doesn't follow {code(job_id)}; nothing to do.")])


def invite_hint(bot_user_id: str | None) -> str:
    """How to add this bot to a channel, by the name this workspace gave it (mrkdwn)."""
    if bot_user_id and SLACK_USER_ID.fullmatch(bot_user_id):
        return f"type `/invite` <@{bot_user_id}> there"
    return "add the app there (channel details → Integrations → Add apps)"


def invite_warning(bot_user_id: str | None = None) -> str:
    return (f"I can't post in this channel yet (it's private and I'm not in it), so I couldn't tell you when the job "
            f"finishes. To fix it, {invite_hint(bot_user_id).replace(' there', ' here')}.")


# -- announcements -------------------------------------------------------------------------------------


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
            _header(":white_check_mark: Fine-tuning job succeeded"),
            _section(f"*Fine-tuned model* (call it by this name at {escape(where)})\n"
                     f"```{escape(str(model).replace('`', chr(39)))}```"),
            *_fields([*about, ("Cost", escape(cost_words(job))), ("Took", took)]),
        ]
        text += f" ({cost_words(job)})"
        if moved_from:
            text += f". Moved from {moved_from['source_job']} at {provider_label(moved_from['source_provider'])}."
            blocks.append(_context(f":truck: Moved from {code(moved_from['source_job'])} at "
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
            _header(":x: Fine-tuning job failed"),
            _section(f"*Why* ({escape(job.error_code or 'unknown')})\n>{escape(reason)}"),
            *_fields([*about, ("Cost so far", escape(cost_words(job))), ("Took", took)]),
        ]
        text += f" (cost so far: {cost_words(job)})"
    else:
        text = f"Fine-tuning job {job.id} on {where} was cancelled (cost so far: {cost_words(job)})."
        blocks = [
            _header(":no_entry_sign: Fine-tuning job cancelled"),
            *_fields([*about, ("Cost so far", escape(cost_words(job))), ("Took", took)]),
        ]
    user = subscription.user_id or ""
    if subscription.mention and SLACK_USER_ID.fullmatch(user):
        verb = "Started" if subscription.origin == "start" else "Followed here"
        blocks.append(_context(f"{verb} by <@{user}>"))
    return _message(text, blocks)


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
    blocks = [_header(f"{emoji} Fine-tuning job: {meaning}"),  # our words: the provider's are in the fields
              _section(f"{code(job.id)} on {escape(where)}"), *_fields(pairs)]
    if job.error_message or job.state == "failed":
        reason = job.error_message or "The provider gave no reason."
        shown = _clip(escape(reason), CARD_ERROR_LIMIT)
        cut = "" if shown == escape(reason) else (f"\n_(cut: the whole error is {len(reason):,} characters; "
                                                  f"`/finetune status {escape(job.id)}` shows it)_")
        blocks.append(_section(f"*Why* ({_clip(escape(job.error_code or 'unknown'), 100)})\n>{shown}{cut}"))
        text += f". Error: {_SCRUB(reason)[:CARD_ERROR_LIMIT]}"
    if links:
        blocks.append(_section("\n".join(links)))
        text += ". " + _plain_lines(links)
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
    blocks.append(_context(note))
    return _message(text, blocks)


def format_progress(job: Job, detail: Mapping) -> Message:
    """A reply in a card's thread: the job's status changed, or how far training has come."""
    if "to" in detail:
        before, after = str(detail.get("from") or "—"), str(detail["to"])
        text = f"Status of {job.id}: {before} → {after}"
        return _message(text, [_context(f"{status_label(after)}  Status: {escape(before)} → *{escape(after)}*")])
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
    return _message(text, [_context(":chart_with_downwards_trend: " + " · ".join(parts))])


# -- money: held starts, approvals, a month's spend ------------------------------------------------------------------

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
    blocks = [_section(f"{escape(head)}\n{code(what)}\n" + "\n".join(escape(line) for line in lines))]
    if not needs_approval:
        blocks.append({"type": "actions", "elements": [
            _hold_button(HOLD_START_ACTION, "Start anyway", hold_id, style="primary")]})
    return _message(text, blocks)


def format_approval_request(hold: Mapping) -> Message:
    """In the channel: a start waiting for an approver, with Approve and Deny."""
    user = str(hold.get("user_id") or "")
    who = f"<@{user}>" if SLACK_USER_ID.fullmatch(user) else code(user)
    amount = hold.get("estimate")
    estimate = dollars(amount) if isinstance(amount, (int, float)) else "unknown"
    text = (f"A fine-tuning start needs approval: {_start_words(hold['command'])}. Estimated cost: {estimate}. "
            f"Why: {hold.get('reason')}.")
    blocks = [_section(f":raised_hand: {who} asks to start a fine-tuning job that needs approval:\n"
                       f"{code(_start_words(hold['command']))}\nEstimated cost: *{escape(estimate)}*\n"
                       f"Why: {escape(hold.get('reason') or '')}."),
              {"type": "actions", "elements": [
                  _hold_button(HOLD_APPROVE_ACTION, "Approve", str(hold["id"]), style="primary"),
                  _hold_button(HOLD_DENY_ACTION, "Deny", str(hold["id"]), style="danger")]},
              _context("Approvers (APPROVER_USER_IDS) other than the requester may press these. It expires in a "
                       "day.")]
    return _message(text, blocks, in_channel=True)


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
    return _message(plain, [_section(said)], in_channel=True, text_escaped=True)


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
    blocks = [_section(escape(head) + "\n" + escape(sums)), *_lines_in_sections(lines)]
    if pages > 1:
        blocks.append(_context(f"Page {page} of {pages}. `/finetune spend {month_code(month)} page={page + 1}` "
                               "shows the next." if page < pages else f"Page {page} of {pages}."))
    return _message(f"{head}. {sums}.", blocks)


def month_code(month: str) -> str:
    """"November 2026" as it is typed: 2026-11."""
    return time.strftime("%Y-%m", time.strptime(month, "%B %Y"))


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
    blocks = [_section(f"{head}\n{escape(numbers)}."), *([_context(escape(done))] if done else [])]
    if not job.final and cancel != "cancelled":
        blocks.append(cancel_button(job.id))
    return _message(f"{text} {numbers}. {done}", blocks)


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
    return _message(text, [_section(body), *_fields(job_fields(job))], text_escaped=True)


# -- the Try it button, its form and its answers' Share button (built in bot/views.py and bot/comparison.py) -------

TRY_SHARE_ACTION = "try_share"
TRY_OPEN_ACTION = "try_open"
TRY_CALLBACK = "finetune_try"
