"""What an adapter module declares about its API shape, so that nothing else in the bot has to know it: its
settings (and which are secret), its providers' labels and status words, its prices and epoch rule, its start
options, its sandbox stand-in. No SDK is imported here; `bot/providers/registry.py` lists the shapes, one line each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

# The formats of training examples a model may take.
CHAT, CHAT_TOOLS, PREFERENCE, COMPLETION = "chat", "chat with tools", "preference pairs", "prompt/completion"


@dataclass(frozen=True)
class ModelFacts:
    """A fine-tunable model, as the data check needs it."""

    name: str
    provider: str
    encoding: str  # the tokenizer counts are made with
    context: int  # the most tokens one training example may have
    price_per_million: float | None
    formats: frozenset[str]
    own_tokenizer: bool = True  # False: counted with an OpenAI encoding, so only approximately
    retired: str | None = None


@dataclass(frozen=True)
class Pricing:
    """What training costs at a provider, and how many epochs it runs when none are asked for."""

    source: str  # where the prices come from, and when they were read
    models: tuple[ModelFacts, ...]
    default_epochs: Callable[[int], int] = lambda examples: 1
    min_examples: int = 0  # fewer is refused by the provider: an error in the data check, not a warning
    aliases: Mapping[str, str] = field(default_factory=dict)  # names it also takes -> the dated model

    def per_million(self, model: str) -> float | None:
        """The price of a million training tokens of `model` (an alias, or a model fine-tuned from one, priced as
        its base model); None for a model this table does not price."""
        if model.startswith("ft:") and model.count(":") >= 2:
            model = model.split(":")[1]
        model = self.aliases.get(model, model)
        return next((m.price_per_million for m in self.models if m.name == model), None)

    def cost_of(self, model: str, tokens: int | None) -> float | None:
        """What `tokens` trained tokens of `model` cost by this table, in US dollars; None when either is unknown."""
        if not tokens:  # (a running job has trained nothing yet: no price is looked up for it)
            return None
        price = self.per_million(model)
        return None if price is None else tokens / 1_000_000 * price


@dataclass(frozen=True)
class Nearest:
    """The nearest tunable base model at a shape for a base model elsewhere, and why (size and family)."""

    model: str
    reason: str


# Why an OpenAI model maps to an open one of a size (OpenAI publishes none), shared by the nearest-model tables.
CLOSED_SMALL = ("OpenAI publishes no sizes; a small, fast chat model maps to the 8B instruct model of the open "
                "families here")
CLOSED_LARGE = "OpenAI publishes no sizes; a large chat model maps to the largest instruct model tunable here (70B)"


@dataclass(frozen=True)
class Moves:
    """What a move to this shape needs: the nearest base here for each base elsewhere (read with its date), and the
    keys of a chat example this shape's training files take (others are dropped, and the move says so)."""

    nearest: Mapping[str, Nearest]
    source: str  # how the mapping was judged, and when
    message_keys: frozenset[str] | None = None  # None: every key OpenAI's chat format has
    example_keys: frozenset[str] | None = None


@dataclass(frozen=True)
class Retirement:
    """A date after which something at a provider stops: it takes no new jobs (`model` None), or a base model's
    fine-tunes stop answering. With where the date comes from."""

    on: date
    what: str  # what stops, in words
    source: str
    model: str | None = None  # the base model (its dated name) whose fine-tunes are affected; None: every job


@dataclass(frozen=True)
class EnvSetting:
    """An environment variable the shape reads (only bot/config.py reads the environment, by these names)."""

    name: str
    where: str  # where a person finds its value, for the line that names it when it is missing
    secret: bool = False  # scrubbed from every log line, error and message
    required: bool = False  # needed whenever any of the shape's settings is set: half a provider is named


@dataclass(frozen=True)
class SandboxSpec:
    """The shape's loopback stand-in, for the shell and `--sandbox`: how to start one, and the settings that point
    the shape's providers at it."""

    start: Callable[[float | None], Any]  # pace -> a started stand-in with `.url` and `.stop()`
    settings: Callable[[Any], Mapping[str, str]]  # stand-in -> environment values, as if the person had set them
    label: str  # how the shell names it: "OpenAI's shape"


@dataclass(frozen=True)
class ProviderShape:
    """One API shape: the adapter module's whole declaration."""

    name: str
    configured: Callable[..., list]  # (settings, clock=...) -> the providers whose settings are present
    present: Callable[[Any], list[str]]  # settings -> the names of the providers they configure (no SDK loaded)
    labels: Mapping[str, str]  # provider name -> how people read it
    settings: tuple[EnvSetting, ...] = ()
    status_emoji: Mapping[str, str] = field(default_factory=dict)
    pricing: Pricing | None = None
    start_options: tuple = ()  # bot.commands.Value of the options only this shape takes (parsed by the grammar)
    sandbox: SandboxSpec | None = None
    owns_model: Callable[[str], bool] = lambda model: False  # a fine-tuned model name in this shape's own form
    advice: str = ""  # the settings that add it, for a person told to configure another provider
    moves: Moves | None = None  # None: nothing is moved to this shape
    # Which settings must be set, given those that are (names): by default, once any of the shape's is set, every
    # one it declares required. A shape with several providers says its own (OpenAI's: Azure's three together).
    requires: Callable[[frozenset[str]], list[str]] | None = None
    # The provider that owned rows written before jobs were named by provider, if this shape's (OpenAI's: Azure
    # OpenAI when its endpoint is set, else OpenAI), for the settings given.
    legacy: Callable[[Any], str | None] = lambda settings: None
    sdk_loggers: tuple[str, ...] = ()  # the SDK's loggers that speak of every request (quiet unless LOG_LEVEL=DEBUG)
    # OAuth mode: the settings a workspace sets for its own account (`/finetune keys`), by provider; the first of
    # each is its secret key. The rest of the shape's settings (base URLs, defaults) stay the operator's.
    own_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # ... and the secrets it may set with its key but need not, by provider, each with its label in the form
    # (OpenAI's webhook signing secret: the workspace's own webhooks, bot/webhooks.py).
    own_secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def required(self, set_names: frozenset[str]) -> list[str]:
        if self.requires is not None:
            return self.requires(set_names)
        if not any(setting.name in set_names for setting in self.settings):
            return []
        return [setting.name for setting in self.settings if setting.required]
