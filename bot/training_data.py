"""Checking a training file before any money is spent: its format, every error with its lines, token counts, the
tokens training will bill, and the price.

The file is read as a stream, one line at a time, so memory stays flat however large it is. Nothing here talks to
Slack or a provider: the CLI (`finetune-bot check`), the shell and the Slack modal all show the same `DataReport`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from bot import tokens
from bot.providers import registry
from bot.providers.shape import CHAT, CHAT_TOOLS, COMPLETION, PREFERENCE, ModelFacts
from bot.providers.types import provider_label

MIN_EXAMPLES = 10  # the providers' own minimum
FIRST_LINES = 5  # line numbers shown per kind of error
SNIFF_BYTES = 8192
MAX_LINE_BYTES = 8 * 1024 * 1024  # one example; a longer line is an error, read past in pieces, never held whole
# Duplicates are found among the first this many examples (each later one is compared with them): memory stays
# bounded (about 6 MB) however long the file, and past it the report says "at least".
DUPLICATES_REMEMBERED = 100_000

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id", "refusal"}
TOP_KEYS = {
    CHAT: {"messages", "tools", "functions", "parallel_tool_calls"},
    PREFERENCE: {"input", "preferred_output", "non_preferred_output"},
    COMPLETION: {"prompt", "completion"},
}

# -- the models: what each accepts, how long an example may be, and what training costs ---------------------------
# Each provider shape declares its own (bot/providers/<shape>.py, `PRICING`: the prices with their source and date,
# the epoch rule, the minimum number of examples, the names it also takes); the registry gathers them.


def facts_for(model: str) -> ModelFacts:
    """What is known of a model (an alias, as the dated model it stands for); an unknown one is counted with
    o200k_base, with no length limit and no price."""
    known, aliases = registry.models(), registry.aliases()
    model = aliases.get(model, model)
    if model in known:
        return known[model]
    base = model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 2 else None
    base = aliases.get(base, base)
    if base in known:  # continuing from a fine-tuned model: its base model's facts
        return known[base]
    return ModelFacts(model, "", "o200k_base", 0, None, _OPEN_MODEL, own_tokenizer=False)


def models_of(provider: str) -> list[str]:
    """The models a provider fine-tunes, as far as its shape knows, current ones first."""
    return [m.name for m in registry.models().values() if m.provider == provider and not m.retired]


def default_epochs(examples: int, provider: str) -> int:
    """The epochs a provider applies when none are given (its shape's rule; 1 when it declares none)."""
    shape = registry.shape_of(provider)
    return shape.pricing.default_epochs(examples) if shape and shape.pricing else 1


def price_source(provider: str) -> str:
    shape = registry.shape_of(provider)
    return shape.pricing.source if shape and shape.pricing else "no published price"


def min_examples(provider: str) -> int:
    """The fewest examples a provider takes (0: it says nothing)."""
    shape = registry.shape_of(provider)
    return shape.pricing.min_examples if shape and shape.pricing else 0


_OPEN_MODEL = frozenset({CHAT, CHAT_TOOLS, PREFERENCE, COMPLETION})


# -- the report -------------------------------------------------------------------------------------------------

ERROR_WORDS = {
    "not_json": "not valid JSON",
    "not_object": "not a JSON object",
    "missing_messages": "no `messages` list",
    "empty_messages": "an empty `messages` list",
    "bad_message": "a message that is not an object",
    "unknown_role": "a message with an unknown role",
    "bad_content": "a message with missing or non-string content",
    "no_assistant": "no assistant message",
    "unknown_keys": "unknown keys",
    "bad_preference": "a preference pair missing `input`, `preferred_output` or `non_preferred_output`",
    "bad_completion": "a `prompt` or `completion` that is not a string",
    "wrong_format": "a different format from the rest of the file",
    "too_long": "more tokens than the model takes in one example",
    "not_for_model": "a format this model does not take",
    "huge_line": f"a line over {MAX_LINE_BYTES // (1024 * 1024)} MB",
}


@dataclass
class Problem:
    count: int = 0
    lines: list[int] = field(default_factory=list)

    def add(self, line: int) -> None:
        self.count += 1
        if len(self.lines) < FIRST_LINES:
            self.lines.append(line)


@dataclass
class DataReport:
    model: ModelFacts
    epochs_asked: int | None = None
    refused: str | None = None  # the file could not be read at all: why
    format: str | None = None
    examples: int = 0
    errors: dict[str, Problem] = field(default_factory=dict)
    duplicates: Problem = field(default_factory=Problem)
    missing_system: Problem = field(default_factory=Problem)
    blank_lines: int = 0
    tokens: list[int] = field(default_factory=list, repr=False)  # per example; ints only, a few MB at most
    billable_per_epoch: int = 0
    provider_estimate: float | None = None  # the provider's own price, once it has been asked
    validation: bool = False  # a validation file: no minimum number of examples

    @property
    def too_few(self) -> bool:
        """Fewer examples than the provider takes: its create refuses such a file, so it is an error there."""
        return not self.validation and 0 < self.examples < min_examples(self.model.provider)

    @property
    def ok(self) -> bool:
        return self.refused is None and not self.errors and self.examples > 0 and not self.too_few

    @property
    def epochs(self) -> int:
        return self.epochs_asked or default_epochs(self.examples, self.model.provider)

    @property
    def billed_tokens(self) -> int:
        return self.billable_per_epoch * self.epochs

    @property
    def price(self) -> float | None:
        if self.model.price_per_million is None:
            return None
        return self.billed_tokens / 1_000_000 * self.model.price_per_million

    @property
    def fits_model(self) -> bool:
        return self.format is None or self.format in self.model.formats

    def warnings(self) -> list[str]:
        found = []
        if self.model.retired:
            found.append(f"{self.model.name} was {self.model.retired}.")
        if 0 < self.examples < MIN_EXAMPLES and not self.too_few:
            found.append(f"Only {self.examples} example{'s' if self.examples != 1 else ''}: providers need at "
                         f"least {MIN_EXAMPLES}.")
        if self.duplicates.count:
            at_least = "At least " if self.examples > DUPLICATES_REMEMBERED else ""
            found.append(f"{at_least}{self.duplicates.count} duplicate example(s), first at "
                         f"{_lines(self.duplicates)}.")
        if self.missing_system.count:
            found.append(f"{self.missing_system.count} example(s) have no system message while others do, first at "
                         f"{_lines(self.missing_system)}.")
        if self.blank_lines:
            found.append(f"{self.blank_lines} blank line(s), skipped.")
        return found

    def lines(self) -> list[str]:
        """The report as plain lines of text, for a terminal; Slack's version escapes these same lines."""
        out = []
        if self.refused:
            return [f"Not checked: {self.refused}"]
        fit = "" if self.fits_model else f" ({self.model.name} does not take this format)"
        out.append(f"Format: {self.format or 'none found'}{fit}. Examples: {self.examples:,}.")
        if self.errors or self.too_few:
            total = sum(p.count for p in self.errors.values()) + int(self.too_few)
            out.append(f"Errors: {total:,}. Nothing is uploaded until they are fixed.")
            if self.too_few:
                out.append(f"  only {self.examples} example{'s' if self.examples != 1 else ''}: "
                           f"{provider_label(self.model.provider)} needs at least {min_examples(self.model.provider)}")
            out += [f"  {ERROR_WORDS[kind]}: {p.count:,} (line {_lines(p)})" for kind, p in self.errors.items()]
        else:
            out.append("Errors: none.")
        warnings = self.warnings()
        if warnings:
            out.append("Warnings:")
            out += [f"  {w}" for w in warnings]
        if self.tokens:
            how = "" if self.model.own_tokenizer else f" (approximate: counted with OpenAI's {self.model.encoding})"
            out.append(f"Tokens{how}: {sum(self.tokens):,} in all; per example min {min(self.tokens):,}, mean "
                       f"{sum(self.tokens) / len(self.tokens):,.0f}, max {max(self.tokens):,}.")
            epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
            if not self.epochs_asked:
                epochs += " (the provider's default for this many examples)"
            out.append(f"Billed: {self.billed_tokens:,} tokens ({self.billable_per_epoch:,} per epoch × {epochs}).")
            if self.price is not None:
                out.append(f"Estimated price: {dollars(self.price)} at ${self.model.price_per_million:.2f} per million "
                           f"training tokens for {self.model.name} ({price_source(self.model.provider)}). "
                           "An estimate, not a quote.")
            else:
                out.append(f"Estimated price: unknown for {self.model.name}.")
            if self.provider_estimate is not None:
                out.append(f"The provider's own estimate: {dollars(self.provider_estimate)}.")
        return out


def dollars(amount: float) -> str:
    """A price as people read it: cents, or "under $0.01" rather than a misleading $0.00."""
    return "under $0.01" if 0 < amount < 0.005 else f"${amount:,.2f}"


def _lines(problem: Problem) -> str:
    shown = ", ".join(str(n) for n in problem.lines)
    return shown + (", …" if problem.count > len(problem.lines) else "")


# -- checking ---------------------------------------------------------------------------------------------------


def refusal_for(size: int | None, head: bytes, *, max_bytes: int) -> str | None:
    """Why a file cannot be checked at all, judged from its size and first bytes, before anything more is read."""
    if size is not None and size > max_bytes:
        return (f"the file is {size / 1e6:,.1f} MB; the most this bot checks is {max_bytes / 1e6:,.0f} MB "
                "(MAX_TRAINING_FILE_MB).")
    if size == 0 or not head.strip():
        return "the file is empty."
    if b"\x00" in head:
        return "this is not a text file (it holds binary data). Training files are JSON Lines: one JSON object a line."
    return None


def check(stream: BinaryIO, *, model: str, epochs: int | None = None, size: int | None = None,
          max_bytes: int = 512 * 1024 * 1024, validation: bool = False) -> DataReport:
    """Check a JSONL training (or, with `validation`, validation) file, read as a stream of lines."""
    report = DataReport(facts_for(model), epochs_asked=epochs, validation=validation)
    head = stream.read(SNIFF_BYTES)
    stream = _Prefixed(head, stream)
    report.refused = refusal_for(size, head, max_bytes=max_bytes)
    if report.refused:
        return report
    encoder = tokens.encoding(report.model.encoding)
    seen: set[int] = set()  # 8-byte digests of the first DUPLICATES_REMEMBERED examples
    formats: Counter[str] = Counter()
    with_system = without_system = 0
    first_without_system: list[int] = []
    read = 0
    for number, (raw, length) in enumerate(_lines_of(stream), start=1):
        read += length
        if read > max_bytes:
            report.refused = (f"the file is larger than {max_bytes / 1e6:,.0f} MB, the most this bot checks "
                              "(MAX_TRAINING_FILE_MB).")
            return report
        if raw is None:
            _error(report, "huge_line", number)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            report.refused = f"line {number} is not UTF-8 text. Save the file as UTF-8 and try again."
            return report
        if not text.strip():
            report.blank_lines += 1
            continue
        try:
            example = json.loads(text)
        except ValueError:
            _error(report, "not_json", number)
            continue
        if not isinstance(example, dict):
            _error(report, "not_object", number)
            continue
        shape = _format_of(example)
        formats[shape] += 1
        if report.format is None:
            report.format = shape
        elif _family(shape) != _family(report.format):
            _error(report, "wrong_format", number)
            continue
        elif shape == CHAT_TOOLS:
            report.format = CHAT_TOOLS  # a file with any tools is a file with tools
        if shape not in report.model.formats:
            _error(report, "not_for_model", number)
            continue
        problems = _problems(example, shape)
        for kind in problems:
            _error(report, kind, number)
        if problems:
            continue
        report.examples += 1
        digest = int.from_bytes(hashlib.blake2b(json.dumps(example, sort_keys=True).encode(), digest_size=8).digest(),
                                "big")
        if digest in seen:
            report.duplicates.add(number)
        elif len(seen) < DUPLICATES_REMEMBERED:
            seen.add(digest)
        if shape in (CHAT, CHAT_TOOLS):
            if any(m.get("role") in {"system", "developer"} for m in example["messages"]):
                with_system += 1
            else:
                without_system += 1
                if len(first_without_system) < FIRST_LINES:
                    first_without_system.append(number)
        count = _tokens(example, shape, encoder)
        report.tokens.append(count)
        limit = report.model.context
        if limit and count > limit:
            _error(report, "too_long", number)
        report.billable_per_epoch += min(count, limit) if limit else count
    if with_system and without_system:
        report.missing_system = Problem(without_system, first_without_system)
    return report


class _Prefixed:
    """A stream whose first bytes were already read (to judge the file): those bytes, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest

    def readline(self, limit: int) -> bytes:
        line = self._head.readline(limit)
        if line.endswith(b"\n") or len(line) >= limit:
            return line
        return line + self._rest.readline(limit - len(line))


def _lines_of(stream: _Prefixed) -> Iterator[tuple[bytes | None, int]]:
    """Each line and its length in bytes; a line longer than MAX_LINE_BYTES comes as None, read past in pieces."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line, len(line)
            continue
        length = len(line)
        while line and not line.endswith(b"\n"):
            line = stream.readline(MAX_LINE_BYTES)
            length += len(line)
        yield None, length


def _error(report: DataReport, kind: str, line: int) -> None:
    report.errors.setdefault(kind, Problem()).add(line)


def _format_of(example: dict) -> str:
    if "input" in example or "preferred_output" in example or "non_preferred_output" in example:
        return PREFERENCE
    if "prompt" in example or "completion" in example:
        return COMPLETION
    messages = example.get("messages")
    if example.get("tools") or example.get("functions") or (isinstance(messages, list) and any(
            isinstance(m, dict) and (m.get("tool_calls") or m.get("function_call") or m.get("role") in {"tool",
                                                                                                         "function"})
            for m in messages)):
        return CHAT_TOOLS
    return CHAT


def _family(shape: str) -> str:
    return CHAT if shape in (CHAT, CHAT_TOOLS) else shape


def _problems(example: dict, shape: str) -> list[str]:
    family = _family(shape)
    found = []
    if set(example) - TOP_KEYS[family]:
        found.append("unknown_keys")
    if family == CHAT:
        found += _message_problems(example.get("messages"), need_assistant=True)
    elif family == PREFERENCE:
        source = example.get("input")
        preferred, other = example.get("preferred_output"), example.get("non_preferred_output")
        if not isinstance(source, dict) or not isinstance(preferred, list) or not isinstance(other, list):
            return [*found, "bad_preference"]
        found += _message_problems(source.get("messages"), need_assistant=False)
        for output in (preferred, other):
            found += [p for p in _message_problems(output, need_assistant=True) if p not in found]
    else:
        if not isinstance(example.get("prompt"), str) or not isinstance(example.get("completion"), str):
            found.append("bad_completion")
    return list(dict.fromkeys(found))


def _message_problems(messages: object, *, need_assistant: bool) -> list[str]:
    if not isinstance(messages, list):
        return ["missing_messages"]
    if not messages:
        return ["empty_messages"]
    found = []
    for message in messages:
        if not isinstance(message, dict):
            found.append("bad_message")
            continue
        role = message.get("role")
        if role not in ROLES:
            found.append("unknown_role")
        content = message.get("content")
        calls = message.get("tool_calls") or message.get("function_call")
        if not (isinstance(content, str) or (content is None and role == "assistant" and calls)):
            found.append("bad_content")
        if set(message) - MESSAGE_KEYS:
            found.append("unknown_keys")
    if need_assistant and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        found.append("no_assistant")
    return found


def _tokens(example: dict, shape: str, encoder) -> int:
    """Tokens as OpenAI counts a chat for training: 3 per message and 1 per name on top of the values, 3 to prime
    the reply; tools and function definitions as their JSON."""
    def text(value: object) -> int:
        if isinstance(value, str):
            return len(encoder.encode_ordinary(value))
        return len(encoder.encode_ordinary(json.dumps(value, ensure_ascii=False))) if value else 0

    def conversation(messages: list) -> int:
        total = 3
        for message in messages:
            total += 3 + sum(text(v) for k, v in message.items() if k not in {"weight"})
            total += 1 if "name" in message else 0
        return total

    if shape == COMPLETION:
        return text(example.get("prompt")) + text(example.get("completion"))
    if shape == PREFERENCE:
        source = conversation(example["input"]["messages"])
        return source + conversation(example["preferred_output"]) + conversation(example["non_preferred_output"])
    return conversation(example["messages"]) + text(example.get("tools")) + text(example.get("functions"))
