"""The API shapes the bot speaks, one line each. A new shape (Fireworks, Vertex AI, Bedrock) is a module that
declares a `SHAPE` (bot/providers/shape.py: its settings, labels, status words, prices, start options, sandbox) and
one line here; nothing else in the bot names it. Importing this module loads no SDK: each adapter imports its own
the first time one of its providers is configured."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bot.providers import fireworks_shape, openai_shape, together_shape
from bot.providers.shape import ModelFacts, ProviderShape
from bot.providers.types import LABELS, STATUS_EMOJI, Providers

SHAPES: list[ProviderShape] = [
    openai_shape.SHAPE,  # OpenAI, Azure OpenAI, OpenAI-compatible base URLs
    together_shape.SHAPE,  # Together AI
    fireworks_shape.SHAPE,  # Fireworks AI
]


def _publish() -> None:
    """What every part of the bot reads from the shapes without naming one: labels and status emoji."""
    LABELS.clear()
    STATUS_EMOJI.clear()
    for shape in SHAPES:
        LABELS.update(shape.labels)
        for word, emoji in shape.status_emoji.items():
            STATUS_EMOJI.setdefault(word, emoji)


_publish()


@contextmanager
def registered(shape: ProviderShape) -> Iterator[ProviderShape]:
    """One more shape, for as long as the block runs (how a test proves a shape needs nothing but this)."""
    SHAPES.append(shape)
    _publish()
    try:
        yield shape
    finally:
        SHAPES.remove(shape)
        _publish()


def present(settings) -> list[str]:  # noqa: ANN001 - bot.config.Settings (which imports this module lazily)
    """The names of the providers the settings configure, in the registry's order; no SDK is loaded."""
    return [name for shape in SHAPES for name in shape.present(settings)]


def configured(settings, *, clock: Callable[[], float] = time.time) -> Providers:  # noqa: ANN001
    """Every provider whose settings are present, with the one `start` uses by default (DEFAULT_PROVIDER, or the
    first configured)."""
    found = [provider for shape in SHAPES for provider in shape.configured(settings, clock=clock)]
    if not found:
        raise ValueError("no provider is configured")
    names = [p.name for p in found]
    return Providers(found, default=settings.default_provider if settings.default_provider in names else None)


def legacy(settings) -> str | None:  # noqa: ANN001
    """The provider that owned the rows written before jobs were named by provider, as the shapes say."""
    return next((name for shape in SHAPES if (name := shape.legacy(settings))), None)


def sdk_loggers() -> list[str]:
    """The loggers of every shape's SDK that speak of each request."""
    return [name for shape in SHAPES for name in shape.sdk_loggers]


def models() -> dict[str, ModelFacts]:
    """Every fine-tunable model the shapes price, by name."""
    return {m.name: m for shape in SHAPES if shape.pricing for m in shape.pricing.models}


def aliases() -> dict[str, str]:
    return {alias: dated for shape in SHAPES if shape.pricing for alias, dated in shape.pricing.aliases.items()}


def shape_of(provider: str) -> ProviderShape | None:
    """The shape whose providers include `provider` (a name such as "azure", or a model table's provider)."""
    return next((shape for shape in SHAPES if provider in shape.labels), None)


def start_options() -> list:
    """The start options only some shapes take (bot.commands.Value), for the grammar."""
    return [value for shape in SHAPES for value in shape.start_options]


def advice() -> str:
    """The settings that add a provider, in words."""
    return ", or ".join(shape.advice for shape in SHAPES if shape.advice)
