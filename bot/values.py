"""A value of the `/finetune` grammar: a positional argument or a key=value option, what it accepts and how it reads.
At the bottom of the house: the grammar (`bot.commands`) is built of these, and a provider shape declares the start
options only it takes with them."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Starts with a letter or digit: an id made only of dots (`..`) would name another path at the provider.
# "/" between segments, for full resource names (Fireworks: accounts/{account}/datasets/{id}); no segment is empty,
# "." or "..", so an id never names another path (the SDKs percent-encode path values as well).
ID_PATTERN = re.compile(r"(?=.{1,200}$)[A-Za-z0-9][A-Za-z0-9_.:\-]*(?:/(?!\.\.?(?:/|$))[A-Za-z0-9_.:\-]+)*")
SUFFIX_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# Model names may hold an organization: meta-llama/Meta-Llama-3.1-8B-Instruct-Reference (sent in a body, not a path).
MODEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,255}")
PROVIDER_PATTERN = re.compile(r"[a-z][a-z0-9_\-]{0,31}")
NUMBER_PATTERN = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")
BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class Value:
    """A positional argument or a key=value option, and what it accepts."""

    name: str
    kind: str  # "id", "model", "suffix", "provider", "int", "number" (low < x <= high) or "bool"
    low: float = 0
    high: float = 0
    placeholder: str = ""
    choices: tuple[str, ...] = ()  # for kind "choice": the words it takes
    required: bool = False  # an option the command needs (`move`'s `to=`)

    def describe(self) -> str:
        if self.kind == "int":
            return f"a whole number from {int(self.low)} to {int(self.high)}"
        if self.kind == "number":
            return f"a number above {self.low:g} and at most {self.high:g}, such as 0.00001"
        if self.kind == "bool":
            return "`true` or `false`"
        if self.kind == "suffix":
            return "up to 64 letters, digits, `-`, `_` or `.`"
        if self.kind == "dm":
            return "`dm` (to follow it in a direct message to you)"
        if self.kind == "choice":
            return " or ".join(f"`{c}`" for c in self.choices)
        if self.kind == "usd":
            return (f"an amount of US dollars from 0 to {self.high:,.0f} with at most four decimals, such as `250`, "
                    "`99.50` or `0.005`, or `off`")
        if self.kind == "month":
            return "a month written `YYYY-MM`, such as `2026-11`"
        if self.kind == "provider":
            return "a provider's name, as `/finetune providers` lists them"
        if self.kind == "model":
            return "a model name: letters, digits, `-`, `_`, `.`, `:` or `/`, starting with a letter or digit"
        return "up to 200 letters, digits, `-`, `_`, `.`, `:` or `/`, starting with a letter or digit"

    def convert(self, raw: str) -> str | int | float | bool | None:
        """The value, or None when `raw` is not acceptable."""
        if self.kind == "int":
            if not re.fullmatch(r"[0-9]{1,12}", raw):
                return None
            number = int(raw)
            return number if self.low <= number <= self.high else None
        if self.kind == "number":
            if not NUMBER_PATTERN.fullmatch(raw):
                return None
            value = float(raw)
            return value if self.low < value <= self.high else None
        if self.kind == "bool":
            return BOOLEANS.get(raw.lower())
        if self.kind == "provider":
            return raw.lower() if PROVIDER_PATTERN.fullmatch(raw.lower()) else None
        if self.kind == "dm":
            return "dm" if raw.lower() == "dm" else None
        if self.kind == "choice":
            return raw.lower() if raw.lower() in self.choices else None
        if self.kind == "usd":
            if raw.lower() == "off":
                return "off"
            amount = raw.removeprefix("$")
            # Commas only as thousands separators: `1,0,0` is no amount (it was read as $100).
            if not re.fullmatch(r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,9})(?:\.[0-9]{1,4})?", amount):
                return None
            return float(amount.replace(",", "")) if float(amount.replace(",", "")) <= self.high else None
        if self.kind == "month":
            found = re.fullmatch(r"([0-9]{4})-([0-9]{2})", raw)
            return raw if found and 1 <= int(found[2]) <= 12 and 2000 <= int(found[1]) <= 2999 else None
        pattern = {"suffix": SUFFIX_PATTERN, "model": MODEL_PATTERN}.get(self.kind, ID_PATTERN)
        return raw if pattern.fullmatch(raw) else None
