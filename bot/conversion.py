"""Training examples rewritten for another provider's rules, one line at a time: what a move converts, and what it
says it changed. Lines it need not change are kept byte for byte; lines it cannot read are kept for the data check
to report."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Set
from dataclasses import dataclass, field

from bot.providers.shape import CHAT, COMPLETION


class NotMovable(Exception):
    """An example no target of a move can take (a preference pair: moves carry supervised fine-tunes only)."""


@dataclass
class Conversion:
    """Rewrites examples for a target: its model's formats, and the keys its chat examples take (None: any)."""

    formats: Set[str]
    message_keys: Set[str] | None = None
    example_keys: Set[str] | None = None
    counts: Counter = field(default_factory=Counter)
    refused: str | None = None  # why the file cannot be moved at all, once a line said so

    def line(self, raw: bytes) -> bytes:
        """One line of the source file as the target takes it (without its newline)."""
        try:
            example = json.loads(raw)
        except ValueError:
            return raw
        if not isinstance(example, dict):
            return raw
        if "preferred_output" in example or "non_preferred_output" in example:
            raise NotMovable("it holds preference pairs (a DPO fine-tune); a move carries supervised fine-tunes only")
        changed = False
        if "prompt" in example and "completion" in example and "messages" not in example:
            if COMPLETION in self.formats or CHAT not in self.formats:
                return raw
            example = {"messages": [{"role": "user", "content": example["prompt"]},
                                    {"role": "assistant", "content": example["completion"]}]}
            self.counts["as_chat"] += 1
            changed = True
        if self.example_keys is not None:
            for key in [k for k in example if k not in self.example_keys]:
                del example[key]
                self.counts[f"example:{key}"] += 1
                changed = True
        messages = example.get("messages")
        if self.message_keys is not None and isinstance(messages, list):
            for message in messages:
                if not isinstance(message, dict):
                    continue
                for key in [k for k in message if k not in self.message_keys]:
                    if key == "weight" and message[key] == 0:
                        self.counts["weight_zero"] += 1
                    del message[key]
                    self.counts[f"message:{key}"] += 1
                    changed = True
        return json.dumps(example, ensure_ascii=False).encode() if changed else raw

    def changes(self) -> list[str]:
        """What was changed, in sentences (none: the examples went as they were)."""
        said = []
        if self.counts["as_chat"]:
            said.append(f"{self.counts['as_chat']:,} prompt/completion example(s) rewritten as chat (the prompt as "
                        "the user's message, the completion as the assistant's)")
        for name, count in sorted(self.counts.items()):
            kind, _, key = name.partition(":")
            if kind == "example":
                said.append(f"`{key}` removed from {count:,} example(s) (the target does not take it)")
            elif kind == "message":
                extra = ""
                if key == "weight" and self.counts["weight_zero"]:
                    extra = (f"; {self.counts['weight_zero']:,} had weight 0, which the source did not train on "
                             "and the target will")
                said.append(f"`{key}` removed from {count:,} message(s) (the target does not take it{extra})")
        return said
