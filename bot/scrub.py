"""The one scrubber: secrets and credentials out of every log line, provider error and Slack message."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shapes that must never leave the bot even when we were not told the value: Slack and OpenAI-style tokens,
# webhook secrets, and Slack's response URLs (each a credential that can post for 30 minutes).
_SHAPES = re.compile(
    r"\b(xox[abpre]-[A-Za-z0-9-]{6,}|xapp-[A-Za-z0-9-]{6,}|sk-[A-Za-z0-9_-]{12,}|whsec_[A-Za-z0-9+/=]{8,})"
    r"|https?(?::|%3A)(?://|%2F%2F)hooks\.slack\.com(?:/|%2F)[^\s\"'&<>|,}]+"
    # …and one on any host (a proxy, a test stand-in) by its path: /commands/TEAM/ID/SECRET or /actions/…
    r"|(?:/|%2F)(?:commands|actions)(?:/|%2F)T[A-Z0-9]+(?:/|%2F)\d+(?:/|%2F)[A-Za-z0-9]+"
)
# The password in any URL that carries one (a DATABASE_URL in a driver's error, however short the password).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^@/?#\s]+@")
# A response_url named as such, whatever its host: JSON, form-encoded or a Python repr.
_NAMED_URL = re.compile(r"(response_url[\"']?\s*(?:=|:|%3D)\s*[\"']?)[^\s\"'&,}]+", re.IGNORECASE)
# A literal that each match of the patterns above must contain: text with none of them has nothing for them to find,
# and a substring test is some twenty times cheaper than the three searches (every message and log line passes here,
# so this is the acks' largest cost of their own under load). `response_url` is looked for case-folded, as its pattern
# ignores case (casefold covers every letter that IGNORECASE matches: tests/test_scrub.py checks all of Unicode).
_HINTS = ("xox", "xapp-", "sk-", "whsec_", "hooks.slack.com", "commands/", "commands%2F", "actions/", "actions%2F",
          "://")
_NAMED_HINT = "response_url"


# Secrets the process learns while it runs (a workspace's provider keys, set through `/finetune keys`): the
# scrubbers of logs and error reports remove them too. Replaced whole, never changed in place: readers need no lock.
_learned: tuple[str, ...] = ()
_learning = threading.Lock()


def learn(secret: str | None) -> None:
    """From now on, logs and error reports never show `secret`."""
    global _learned
    if not secret or len(secret) < 6 or secret in _learned:
        return
    with _learning:
        _learned = tuple(sorted({*_learned, secret}, key=len, reverse=True))


class Scrubber:
    def __init__(self, secrets: Iterable[str | None] = (), *, learned: bool = False) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        self.learned = learned  # also the secrets learned since start-up (logs' and error reports' scrubbers)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        if self.learned:
            for secret in _learned:
                if secret in text:
                    text = text.replace(secret, REDACTED)
        return _without_shapes(text) if _may_hold_a_shape(text) else text

    def deep(self, value):
        """The same, through every string inside lists and dicts (Block Kit payloads)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        return value


def _without_shapes(text: str) -> str:
    text = _SHAPES.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: m[1] + REDACTED + "@", text)
    return _NAMED_URL.sub(lambda m: m[1] + REDACTED, text)


def _may_hold_a_shape(text: str) -> bool:
    return any(hint in text for hint in _HINTS) or _NAMED_HINT in text.casefold()
