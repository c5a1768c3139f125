"""How close a model's answer is to the expected one: the score `compare` reports, named for what it is."""

from __future__ import annotations

import difflib

# difflib's matching takes time that grows with the product of the two lengths (7.8 s for two 5,000-character
# answers, minutes for 20,000): the score is of each answer's first this many characters.
SIMILARITY_CHARS = 1000


def similarity(expected: str, answer: str) -> float:
    """difflib's character ratio, 0 to 1: twice the matching characters over both lengths, over the first
    SIMILARITY_CHARS characters of each."""
    return difflib.SequenceMatcher(None, expected.strip()[:SIMILARITY_CHARS], answer.strip()[:SIMILARITY_CHARS],
                                   autojunk=False).ratio()


def exact(expected: str, answer: str) -> bool:
    return expected.strip() == answer.strip()
