"""What a start is expected to cost, and the months spend is counted in.

An estimate counts the training file's tokens with the real tokenizer (the same check as `/finetune check`), read
once through the provider's files API, streamed, and remembered per file and model; epochs are the ones asked for or
the provider's own rule; the price is the shape's table (with its source and date). What cannot be known is said to
be unknown, with why: never a made-up figure, never $0.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from bot import training_data
from bot.providers.types import FineTuningProvider, ProviderError, provider_label
from storage import Store

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Estimate:
    """What a start is expected to cost: an amount in US dollars, or None with the reason it is unknown."""

    amount: float | None
    tokens: int | None = None  # billed: tokens per epoch × epochs
    epochs: int | None = None
    price_per_million: float | None = None
    unknown_because: str | None = None
    source: str | None = None  # where the price comes from, and when it was read

    def words(self) -> str:
        """The estimate in a sentence's words: "$12.34 (1,234,567 tokens × 3 epochs at $8.00 per million)"."""
        if self.amount is None:
            return f"unknown ({self.unknown_because or 'no price is known'})"
        how = ""
        if self.tokens is not None and self.price_per_million is not None:
            epochs = f" over {self.epochs} epoch{'s' if self.epochs != 1 else ''}" if self.epochs else ""
            how = f" ({self.tokens:,} tokens{epochs} at ${self.price_per_million:.2f} per million)"
        return training_data.dollars(self.amount) + how


def estimate_start(provider: FineTuningProvider, store: Store, *, training_file: str, model: str,
                   epochs: int | None, max_bytes: int) -> Estimate:
    """The estimate for a start from a file already at the provider (its tokens counted once per file and model)."""
    facts = training_data.facts_for(model)
    if facts.price_per_million is None:
        return Estimate(None, unknown_because=f"no published price for {model} in this bot's table")
    counted = store.spend.file_tokens(provider.name, training_file, facts.name)
    if counted is None:
        try:
            report = provider.read_file(
                training_file, lambda lines: training_data.check(_stream_of(lines), model=model,
                                                                 max_bytes=max_bytes),
                max_bytes=max_bytes)
        except ProviderError as error:
            log.info("could not read %s to estimate a start: %s", training_file, error.message)
            return Estimate(None, unknown_because=f"{provider_label(provider.name)} would not let me read "
                                                  f"{training_file}: {error.message}")
        if report.refused or not report.examples:
            return Estimate(None, unknown_because=f"{training_file} could not be counted: "
                                                  f"{report.refused or 'it holds no usable example'}")
        store.spend.remember_file_tokens(provider.name, training_file, facts.name,
                                         billable_per_epoch=report.billable_per_epoch, examples=report.examples)
        counted = {"billable_per_epoch": report.billable_per_epoch, "examples": report.examples}
    # The count per epoch, times the epochs asked for (or the provider's rule for this many examples), at the price.
    epochs = epochs or training_data.default_epochs(counted["examples"], provider.name)
    tokens = counted["billable_per_epoch"] * epochs
    return Estimate(tokens / 1_000_000 * facts.price_per_million, tokens, epochs, facts.price_per_million,
                    source=training_data.price_source(provider.name))


def remember_checked(store: Store, provider: str, file_id: str, model: str, *, per_epoch: int,
                     examples: int) -> None:
    """A file checked in Slack and uploaded: its count is known, so its start need not read it again."""
    store.spend.remember_file_tokens(provider, file_id, training_data.facts_for(model).name,
                                     billable_per_epoch=per_epoch, examples=examples)


class _LineStream(io.RawIOBase):
    """A file's lines, as they arrive from the provider, read as the stream the data check takes."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        while not self._pending:
            line = next(self._lines, None)
            if line is None:
                return 0
            self._pending = line + b"\n"
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _stream_of(lines: Iterator[bytes]) -> io.BufferedReader:
    return io.BufferedReader(_LineStream(lines), buffer_size=1024 * 1024)


# -- months --------------------------------------------------------------------------------------------------------


def month_bounds(month: str | None, now: float) -> tuple[float, float, str]:
    """A month (`YYYY-MM`, as the grammar checked it, or this one for None) as its first second, the first second
    after it, and its name."""
    if month is None:
        today = datetime.fromtimestamp(now, timezone.utc)
        year, number = today.year, today.month
    else:
        year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=timezone.utc)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=timezone.utc)
    return start.timestamp(), end.timestamp(), start.strftime("%B %Y")
