"""The API shapes the bot speaks, one line each. A new shape (Fireworks, Vertex AI, Bedrock) is a module with a
`configured(settings, clock=...)` function and one line here."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.config import Settings
from bot.providers import openai_shape, together_shape
from bot.providers.types import FineTuningProvider, Providers

ADAPTERS: tuple[Callable[..., list[FineTuningProvider]], ...] = (
    openai_shape.configured,  # OpenAI, Azure OpenAI, OpenAI-compatible base URLs
    together_shape.configured,  # Together AI
)


def configured(settings: Settings, *, clock: Callable[[], float] = time.time) -> Providers:
    """Every provider whose settings are present, with the one `start` uses by default."""
    found = [provider for adapter in ADAPTERS for provider in adapter(settings, clock=clock)]
    if not found:
        raise ValueError("no provider is configured")
    return Providers(found, default=settings.start_provider)
