"""Imports that leave out a library's optional extras this bot never uses, and which would cost it memory only because
another library installed them: sqlite-utils imports numpy and pandas when they are installed (to store their
values; we store none) and openai imports aiohttp (for an async client we never make). numpy is installed for
matplotlib, which draws in a process of its own, and aiohttp for the fireworks-ai SDK; left to themselves they add
about 24 MB to every bot process (bench/: `python bench/run.py --only memory-idle`)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Held while one of the bot's libraries is imported: a library imported on another thread meanwhile would otherwise
# find an extra it needs (fireworks-ai needs aiohttp) left out.
_IMPORTING = threading.RLock()


@contextmanager
def leaving_out(*names: str) -> Iterator[None]:
    """Within the block, importing any of `names` fails as if it were not installed (an optional import then takes
    its fallback), unless the process already has it; afterwards each imports as usual."""
    with _IMPORTING:
        left_out = [name for name in names if name not in sys.modules]
        for name in left_out:
            sys.modules[name] = None  # type: ignore[assignment] - the import system's own mark for "not importable"
        try:
            yield
        finally:
            for name in left_out:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]
