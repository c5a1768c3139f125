"""`/finetune keys`: the form where a workspace's admins set, replace or remove its own provider keys, and what it
says when sent. A key is never shown again: at most its last four characters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.messages.blocks import context_block, escape, section_block
from bot.providers.types import provider_label

KEYS_CALLBACK = "finetune_keys"
KEYS_TITLE = "Provider keys"  # (a modal's title: at most 24 characters)
KEY_MAX_LENGTH = 500  # longer than any provider's key; a paste of something else is refused by its length
REMOVE = "remove"


def _when(ts: float | None) -> str:
    return f"<!date^{int(ts)}^{{date_short}}|{int(ts)}>" if ts else "some time ago"


def keys_lines(settable: Mapping[str, Sequence[str]], stored: Sequence[Mapping], shared: Sequence[str]) -> list[str]:
    """One line a provider: whose key this workspace uses for it (its own, ending in …, the operator's, or none)."""
    by_provider = {row["provider"]: row for row in stored}
    lines = []
    for name in settable:
        label = escape(provider_label(name))
        row = by_provider.get(name)
        if row is not None:
            ending = f", ending in `{escape(row['last4'])}`" if row.get("last4") else ""
            lines.append(f"*{label}:* this workspace's own key{ending}, set by <@{escape(row['set_by'])}> "
                         f"{_when(row.get('set_at'))}")
        elif name in shared:
            lines.append(f"*{label}:* the key of whoever runs finetune-bot (shared with this workspace)")
        else:
            lines.append(f"*{label}:* no key: jobs cannot be started or followed there from this workspace")
    return lines


def keys_form_view(*, settable: Mapping[str, Sequence[str]], lines: Sequence[str], metadata: str,
                   secrets: Mapping[str, Mapping[str, str]] | None = None) -> dict:
    """The form: the keys as they stand, then a provider, its key (and any other setting it needs, and any secret it
    may have: `secrets`, provider -> setting -> label), or remove."""
    options = [{"text": {"type": "plain_text", "text": provider_label(name)[:75]}, "value": name}
               for name in settable]
    extra = sorted({setting for names in settable.values() for setting in names[1:]})
    blocks: list[dict] = [
        section_block("The providers this workspace's jobs use, and whose key pays for them:\n" + "\n".join(lines)),
        context_block("A key is sealed before it is stored and never shown again, here or anywhere: at most its last "
                      "four characters. Only workspace admins and owners can change keys."),
        {"type": "input", "block_id": "provider", "label": {"type": "plain_text", "text": "Provider"},
         "element": {"type": "static_select", "action_id": "value", "options": options,
                     "initial_option": options[0]}},
        {"type": "input", "block_id": "key", "optional": True, "label": {"type": "plain_text", "text": "API key"},
         "hint": {"type": "plain_text", "text": "Leave empty to remove this provider's key."},
         "element": {"type": "plain_text_input", "action_id": "value", "max_length": KEY_MAX_LENGTH}},
    ]
    for setting in extra:  # (Fireworks' account id: a setting that goes with its key)
        owners = ", ".join(provider_label(n) for n, names in settable.items() if setting in names[1:])
        blocks.append({"type": "input", "block_id": f"setting:{setting}", "optional": True,
                       "label": {"type": "plain_text", "text": f"{setting} ({owners} only)"[:2000]},
                       "element": {"type": "plain_text_input", "action_id": "value", "max_length": 200}})
    for provider, labels in (secrets or {}).items():  # (OpenAI's webhook signing secret: optional)
        for setting, label in labels.items():
            blocks.append({
                "type": "input", "block_id": f"setting:{setting}", "optional": True,
                "label": {"type": "plain_text", "text": f"{label} ({provider_label(provider)} only, optional)"[:2000]},
                "hint": {"type": "plain_text", "text": "Sealed like the key and never shown again. Give it with the "
                                                       "key each time you save (saving without it removes it)."},
                "element": {"type": "plain_text_input", "action_id": "value", "max_length": KEY_MAX_LENGTH}})
    return {"type": "modal", "callback_id": KEYS_CALLBACK, "title": {"type": "plain_text", "text": KEYS_TITLE},
            "submit": {"type": "plain_text", "text": "Save"}, "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": blocks, "private_metadata": metadata}


def keys_done_view(sentence: str) -> dict:
    """What became of a submission (saved, removed, or why not)."""
    return {"type": "modal", "callback_id": KEYS_CALLBACK, "title": {"type": "plain_text", "text": KEYS_TITLE},
            "close": {"type": "plain_text", "text": "Close"}, "blocks": [section_block(escape(sentence))]}
