"""The scrubber's shortcut: text is searched for credential shapes only when it holds a literal that every shape
contains. It must never let through what the full search would have caught."""

from __future__ import annotations

import random
import re
import sys

import pytest

from bot.scrub import _HINTS, _NAMED_HINT, REDACTED, Scrubber, _without_shapes

# One of each shape the patterns know, as it may reach a message or a log line.
SHAPES = [
    "xoxb-123456789012-abcdefABCDEF",
    "xoxp-1-2-3-abcdef",
    "xapp-1-A0B1C2D3-abcdef",
    "sk-proj_abcdefghijklmnop",
    "whsec_c2VjcmV0c2VjcmV0",
    "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
    "https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT0%2F1%2Fabc",
    "http://127.0.0.1:4000/commands/T0SANDBOX/12345/abcDEF987",
    "http://proxy/x%2Factions%2FT0ABC%2F99%2Fzz9",
    "postgresql://bot:p4ss@db.example.com/finetune",
    "response_url=https://proxy.example.com/any/path/x123",
    '"Response_URL": "https://elsewhere.example/cb/1"',
    "reſponse_url: https://elsewhere.example/cb/2",  # the long s, which IGNORECASE matches as "s"
    "reſponse_url=opaque-callback-123",  # …with no other hint beside it
    "Response_Url=opaque-callback-456",
    "RESPONSE_URL%3Dhttps%3A%2F%2Fexample.org%2Fcb",
]
WORDS = ["job", "ftjob-abc123", "failed:", "<@U0ALICE>", "&amp;", "`code`", "task-", "disk", "https", "://", "/", "%2F",
         "commands", "actions", "hooks", "slack.com", "=", ":", '"', " ", "\n", "é", "ſ", "K", "response", "_url"]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_scrubbed_in_any_text(shape):
    for text in (shape, f"the job failed: {shape} (and more)", f"{shape}\n{shape}"):
        said = Scrubber()(text)
        assert REDACTED in said and said == _without_shapes(text)


def test_the_shortcut_never_skips_what_the_full_search_would_change():
    rng = random.Random(20261202)
    for _ in range(5000):
        text = "".join(rng.choice(WORDS + SHAPES if rng.random() < 0.1 else WORDS) for _ in range(rng.randint(1, 30)))
        assert Scrubber()(text) == _without_shapes(text), text


def test_each_hint_is_in_every_match_of_its_pattern():
    """Every match of the shapes holds one of the hints (what the shortcut relies on), found by searching every
    sample with the patterns and checking what they matched."""
    from bot.scrub import _NAMED_URL, _SHAPES, _URL_PASSWORD

    for text in SHAPES:
        for pattern in (_SHAPES, _URL_PASSWORD, _NAMED_URL):
            for match in pattern.finditer(text):
                found = match[0]
                assert any(h in found for h in _HINTS) or _NAMED_HINT in found.casefold(), (pattern.pattern, found)


def test_case_folding_covers_every_letter_the_pattern_matches_without_case():
    """`response_url` is matched ignoring case; the shortcut looks for it case-folded. Every character of all of
    Unicode that IGNORECASE takes for one of its letters folds to that letter."""
    letters = set(_NAMED_HINT)
    any_of = re.compile("[" + re.escape("".join(letters)) + "]", re.IGNORECASE)
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        if any_of.fullmatch(char):
            for letter in letters:
                if re.fullmatch(re.escape(letter), char, re.IGNORECASE):
                    assert letter in char.casefold(), (hex(point), letter)


def test_text_with_no_hint_is_returned_as_it_is_and_secrets_still_go():
    scrub = Scrubber(["my-signing-secret"])
    assert scrub("status of ftjob-abc: running") == "status of ftjob-abc: running"
    assert scrub("signed with my-signing-secret") == f"signed with {REDACTED}"
