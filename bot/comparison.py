"""A fine-tuned model beside its base model: `try`'s answers and `compare`'s examples, as Slack messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.messages import (
    _SCRUB,
    MAX_BLOCKS,
    MAX_FIELD,
    MAX_TEXT,
    TRY_SHARE_ACTION,
    Message,
    _clip,
    _context,
    _header,
    _message,
    _section,
    code,
    escape,
)
from bot.providers.types import provider_label
from bot.scoring import SIMILARITY_CHARS, similarity
from bot.scoring import exact as is_exact

# -- trying a fine-tuned model -----------------------------------------------------------------------------------

_ANSWER_LIMIT = 1800  # each side's answer in a field (Slack: 2,000 characters a field)


@dataclass(frozen=True)
class TrySide:
    """One model's side of a try: its answer or its error, and how long it took."""

    label: str
    model: str
    answer: object | None  # a ChatAnswer
    error: str | None
    seconds: float

    def usage(self) -> str:
        answer = self.answer
        used = getattr(answer, "completion_tokens", None)
        cut = " · cut at the token limit" if getattr(answer, "finish_reason", None) == "length" else ""
        return f"{self.seconds:.1f} s" + (f" · {used:,} tokens out" if used is not None else "") + cut


def _side_text(side: TrySide, limit: int) -> str:
    if side.error is not None:
        return f":warning: {_clip(escape(side.error), limit)}"
    text = str(getattr(side.answer, "text", "") or "(an empty answer)")
    shown = _clip(escape(text), limit)
    return shown if len(escape(text)) <= limit else shown + f"\n_(cut: {len(text):,} characters in all)_"


def format_try(prompt: str, tuned: TrySide, base: TrySide, *, provider: str, system: str | None = None,
               share_id: str | None = None) -> Message:
    """Both answers side by side, each with its model, time and tokens; untrusted text escaped and cut cleanly."""
    fields = [_clip(f"*{escape(s.label)}* {code(s.model[:150])}\n{_side_text(s, _ANSWER_LIMIT)}\n_{escape(s.usage())}_",
                    MAX_FIELD) for s in (tuned, base)]
    blocks = [_section(f"*Prompt* ({escape(provider_label(provider))})\n>{_clip(escape(prompt), 600)}")]
    if system:
        blocks.append(_context(f"System message: {_clip(escape(system), 300)}"))
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
    if share_id:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "action_id": TRY_SHARE_ACTION, "value": share_id,
            "text": {"type": "plain_text", "text": "Share in channel"}}]})
    text = (f"Fine-tuned {tuned.model}: {getattr(tuned.answer, 'text', '') or tuned.error}\n"
            f"Base {base.model}: {getattr(base.answer, 'text', '') or base.error}")
    return _message(_SCRUB(text)[:MAX_TEXT], blocks)


def format_comparison(job_id: str, source: str, where: str, rows: Sequence[tuple], *, provider: str) -> Message:
    """Per held-out example: the expected answer, the base model's and the fine-tuned model's; then the tally."""
    blocks = [_header(":scales: Fine-tuned vs base"),
              _context(f"Job {code(job_id)} at {escape(provider_label(provider))}: {len(rows)} example(s) from the "
                       f"{escape(where)} {code(source)}.")]
    exact = {"Fine-tuned": 0, "Base": 0}
    scores: dict[str, list[float]] = {"Fine-tuned": [], "Base": []}
    for index, (line, expected, tuned, base) in enumerate(rows, start=1):
        parts = [f"*Example {index}* (line {line})", f"*Expected:* {_clip(escape(expected), 500)}"]
        for side in (base, tuned):
            text = str(getattr(side.answer, "text", "") or "")
            if side.error is None:
                exact[side.label] += int(is_exact(expected, text))
                scores[side.label].append(similarity(expected, text))
            parts.append(f"*{side.label}:* {_side_text(side, 500)}")
        blocks.append(_section("\n".join(parts)))
    mean = {k: (sum(v) / len(v) if v else 0.0) for k, v in scores.items()}
    summary = (f"Exact matches with the expected answer: fine-tuned {exact['Fine-tuned']}/{len(rows)}, base "
               f"{exact['Base']}/{len(rows)}. Similarity to the expected answer (difflib character ratio over the "
               f"first {SIMILARITY_CHARS:,} characters, 0 to 1, mean): fine-tuned {mean['Fine-tuned']:.2f}, base "
               f"{mean['Base']:.2f}.")
    blocks.insert(2, _section(f"*Summary* {escape(summary)}"))
    return _message(f"Compared job {job_id}: {summary}", blocks[:MAX_BLOCKS])
