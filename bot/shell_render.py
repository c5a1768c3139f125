"""How the shell draws what the bot sends to Slack in a terminal: Block Kit as plain text, Slack's markup and emoji
codes as characters, each button as [its label]."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping

EMOJI = {
    ":white_check_mark:": "✅", ":x:": "❌", ":no_entry_sign:": "🚫", ":gear:": "⚙️", ":mag:": "🔍",
    ":hourglass_flowing_sand:": "⏳", ":double_vertical_bar:": "⏸", ":rocket:": "🚀", ":warning:": "⚠️",
    ":bell:": "🔔", ":no_bell:": "🔕", ":lock:": "🔒", ":test_tube:": "🧪", ":thinking_face:": "🤔",
    ":grey_question:": "❔", ":face_with_head_bandage:": "🤕", ":chart_with_downwards_trend:": "📉",
    ":package:": "📦", ":outbox_tray:": "📤", ":scales:": "⚖️", ":information_source:": "ℹ️",
    ":large_green_circle:": "🟢", ":no_entry:": "⛔", ":repeat:": "🔁", ":moneybag:": "💰", ":key:": "🔑",
    ":hourglass:": "⌛", ":raised_hand:": "✋", ":rotating_light:": "🚨", ":truck:": "🚚", ":file_folder:": "📁",
}


def buttons_of(message: Mapping) -> list[dict]:
    blocks = message.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return [e for b in blocks if b.get("type") == "actions" for e in b.get("elements", []) if e.get("text")]


BOLD = re.compile(r"[*]([^*\n]+)[*]")


def render_mrkdwn(text: str, channels: Mapping[str, str]) -> str:
    text = re.sub(r"<!date\^\d+\^[^|>]*\|([^>]*)>", r"\1", text)
    text = re.sub(r"<#(\w+)>", lambda m: "#" + channels.get(m[1], m[1]), text)
    text = re.sub(r"<@(\w+)>", lambda m: "@" + channels.get(m[1], m[1]), text)
    for code, char in EMOJI.items():
        text = text.replace(code, char)
    return html.unescape(text)


def render(message: Mapping, channels: Mapping[str, str]) -> str:
    """Block Kit as plain text; the `text` fallback when there are no blocks."""
    blocks = message.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines.append(render_mrkdwn(block["text"]["text"], channels).upper())
        elif kind == "section":
            if block.get("text"):
                lines.append(block["text"]["text"])
            for item in block.get("fields") or []:
                label, _, value = item["text"].partition("\n")
                label = BOLD.sub(lambda m: m[1], label)  # "*Fine-tuned* `model`" reads "Fine-tuned `model`"
                lines.append(f"{label}: {value}")
        elif kind == "actions":
            lines.append("  ".join(f"[{e['text']['text']}]" for e in block.get("elements", []) if e.get("text")))
        elif kind == "context":
            lines.append("  " + " ".join(e.get("text", "") for e in block.get("elements", [])))
    if not lines:
        lines = [message.get("text") or ""]
    return "\n".join(render_mrkdwn(line, channels) for line in lines)
