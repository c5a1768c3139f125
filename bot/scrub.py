"""The one scrubber: secrets and credentials out of every log line, provider error and Slack message."""

from __future__ import annotations

import re
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


class Scrubber:
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _SHAPES.sub(REDACTED, text)
        text = _URL_PASSWORD.sub(lambda m: m[1] + REDACTED + "@", text)
        return _NAMED_URL.sub(lambda m: m[1] + REDACTED, text)

    def deep(self, value):
        """The same, through every string inside lists and dicts (Block Kit payloads)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        return value
