"""A fine-tuned model beside its base model: `try`'s answers and `compare`'s examples, as Slack messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.messages.blocks import (
    MAX_BLOCKS,
    MAX_FIELD,
    MAX_TEXT,
    SCRUB,
    Message,
    build_message,
    clip,
    code,
    context_block,
    escape,
    header_block,
    section_block,
)
from bot.messages.jobs import TRY_SHARE_ACTION
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
        return f":warning: {clip(escape(side.error), limit)}"
    text = str(getattr(side.answer, "text", "") or "(an empty answer)")
    shown = clip(escape(text), limit)
    return shown if len(escape(text)) <= limit else shown + f"\n_(cut: {len(text):,} characters in all)_"


def format_try(prompt: str, tuned: TrySide, base: TrySide, *, provider: str, system: str | None = None,
               share_id: str | None = None) -> Message:
    """Both answers side by side, each with its model, time and tokens; untrusted text escaped and cut cleanly."""
    fields = [clip(f"*{escape(s.label)}* {code(s.model[:150])}\n{_side_text(s, _ANSWER_LIMIT)}\n_{escape(s.usage())}_",
                   MAX_FIELD) for s in (tuned, base)]
    blocks = [section_block(f"*Prompt* ({escape(provider_label(provider))})\n>{clip(escape(prompt), 600)}")]
    if system:
        blocks.append(context_block(f"System message: {clip(escape(system), 300)}"))
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
    if share_id:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "action_id": TRY_SHARE_ACTION, "value": share_id,
            "text": {"type": "plain_text", "text": "Share in channel"}}]})
    text = (f"Fine-tuned {tuned.model}: {getattr(tuned.answer, 'text', '') or tuned.error}\n"
            f"Base {base.model}: {getattr(base.answer, 'text', '') or base.error}")
    return build_message(SCRUB(text)[:MAX_TEXT], blocks)


def format_comparison(job_id: str, source: str, where: str, rows: Sequence[tuple], *, provider: str) -> Message:
    """Per held-out example: the expected answer, the base model's and the fine-tuned model's; then the tally."""
    about = (f"Job {code(job_id)} at {escape(provider_label(provider))}: {_examples(len(rows))} from the "
             f"{escape(where)} {code(source)}.")
    return _compared(":scales: Fine-tuned vs base", about, f"Compared job {job_id}", rows,
                     names={"Fine-tuned": "fine-tuned", "Base": "base"}, order=("Base", "Fine-tuned"))


def format_two_fine_tunes(first: tuple, second: tuple, source: str, where: str, rows: Sequence[tuple]) -> Message:
    """Two fine-tuned models (a moved fine-tune and its original), each at its own provider, on the same held-out
    examples of the first: per example the expected answer and each model's, then exact matches and similarity."""
    (job_a, model_a), (job_b, model_b) = first, second
    names = {label: f"{job.id} ({provider_label(job.provider)})" for label, job in (("A", job_a), ("B", job_b))}
    about = (f"*A* {code(model_a)} (job {code(job_a.id)} at {escape(provider_label(job_a.provider))}) and *B* "
             f"{code(model_b)} (job {code(job_b.id)} at {escape(provider_label(job_b.provider))}) on "
             f"{_examples(len(rows))} from A's {escape(where)} {code(source)}.")
    return _compared(":scales: Two fine-tunes compared", about, f"Compared {job_a.id} with {job_b.id}", rows,
                     names=names, order=("A", "B"))


def _examples(count: int) -> str:
    return f"{count} example{'s' if count != 1 else ''}"


def _compared(title: str, about: str, said: str, rows: Sequence[tuple], *, names: dict[str, str],
              order: tuple[str, str]) -> Message:
    """Rows of (line, expected, side, side) shown example by example, the sides in `order`, then the tally of each
    side by its label (`names` says how the summary calls each)."""
    blocks = [header_block(title), context_block(about)]
    exact = {label: 0 for label in names}
    scores: dict[str, list[float]] = {label: [] for label in names}
    for index, (line, expected, *sides) in enumerate(rows, start=1):
        parts = [f"*Example {index}* (line {line})", f"*Expected:* {clip(escape(expected), 500)}"]
        for side in sorted(sides, key=lambda s: order.index(s.label)):
            text = str(getattr(side.answer, "text", "") or "")
            if side.error is None:
                exact[side.label] += int(is_exact(expected, text))
                scores[side.label].append(similarity(expected, text))
            parts.append(f"*{side.label}:* {_side_text(side, 500)}")
        blocks.append(section_block("\n".join(parts)))
    mean = {k: (sum(v) / len(v) if v else 0.0) for k, v in scores.items()}
    first, second = order[::-1] if order[0] == "Base" else order
    summary = (f"Exact matches with the expected answer: {names[first]} {exact[first]}/{len(rows)}, "
               f"{names[second]} {exact[second]}/{len(rows)}. Similarity to the expected answer (difflib character "
               f"ratio over the first {SIMILARITY_CHARS:,} characters, 0 to 1, mean): {names[first]} "
               f"{mean[first]:.2f}, {names[second]} {mean[second]:.2f}.")
    blocks.insert(2, section_block(f"*Summary* {escape(summary)}"))
    return build_message(f"{said}: {summary}", blocks[:MAX_BLOCKS])
