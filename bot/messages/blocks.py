"""Block Kit's building blocks and Slack's limits: every message is made by `build_message()`, which keeps it within
50 blocks and 3,000 characters a section; every untrusted string goes through `escape()` (or `code()`), and the
fallback `text` is escaped like the blocks."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bot.scrub import Scrubber

if TYPE_CHECKING:
    pass



SCRUB = Scrubber()  # credential shapes; configured secrets are removed where provider text enters (the adapters)


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
        blocks = self.blocks[: MAX_BLOCKS - 1] + [context_block(SANDBOX_NOTE)]
        return replace(self, text=f"[sandbox] {self.text}", blocks=blocks)


def escape(text: object) -> str:
    """Make untrusted text inert in mrkdwn: no mentions, links or channel pings can be formed from it."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: object) -> str:
    """Untrusted text shown as inline code (escaped; backticks that would end the span are replaced)."""
    return "`" + escape(str(text).replace("`", "'")) + "`"


def clip(text: str, limit: int) -> str:
    """Cut to `limit` characters cleanly: never inside an `&lt;` entity or a `<…>` token, code spans closed. Anything
    shaped like a credential goes first: cut through, it would leave most of itself behind for no scrubber to see."""
    text = SCRUB(text)
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


def section_block(mrkdwn: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(mrkdwn, MAX_SECTION)}}


def context_block(mrkdwn: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(mrkdwn, MAX_SECTION)}]}


def header_block(plain: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": clip(plain, 150), "emoji": True}}


def field_blocks(pairs: Iterable[tuple[str, str]]) -> list[dict]:
    """Label/value pairs as section fields, ten to a section (Slack's limit)."""
    items = [{"type": "mrkdwn", "text": clip(f"*{label}*\n{value}", 2000)} for label, value in pairs]
    return [{"type": "section", "fields": items[i:i + 10]} for i in range(0, len(items), 10)]


def sections_of_lines(lines: Sequence[str], per: int = 10) -> list[dict]:
    """A long list as several sections, so no section nears Slack's 3,000 characters."""
    return [section_block("\n".join(lines[i:i + per])) for i in range(0, len(lines), per)]


def build_message(text: str, blocks: Sequence[dict], *, in_channel: bool = False,
                  text_escaped: bool = False) -> Message:
    """The one exit of every formatter: the fallback text escaped (Slack parses it for mentions and shows it in
    notifications), and Slack's limits enforced."""
    blocks = list(blocks)
    if len(blocks) > MAX_BLOCKS:
        blocks = blocks[: MAX_BLOCKS - 1] + [context_block(f"…and {len(blocks) - MAX_BLOCKS + 1} more not shown.")]
    return Message(clip(text if text_escaped else escape(text), MAX_TEXT), blocks, in_channel)


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


def plain_lines(lines: Sequence[str]) -> str:
    """mrkdwn lines (their untrusted parts escaped) as plain words for a fallback text, which is escaped once more."""
    return html.unescape(" ".join(re.sub(r"`|:truck: ", "", line) for line in lines))
