"""How close a model's answer is to the expected one: the score `compare` reports, named for what it is."""

from __future__ import annotations

import difflib


def similarity(expected: str, answer: str) -> float:
    """difflib's character ratio, 0 to 1: twice the matching characters over both lengths."""
    return difflib.SequenceMatcher(None, expected.strip(), answer.strip(), autojunk=False).ratio()


def exact(expected: str, answer: str) -> bool:
    return expected.strip() == answer.strip()
