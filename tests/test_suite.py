"""The suite's own machinery (tests/rewritten.py): what makes it cheaper must keep doing so."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_every_test_module_is_rewritten_once_a_run_before_the_workers_collect_it(request):
    """The main process leaves each test module's assertion-rewritten bytecode where the workers look for it first,
    current for its source: no worker parses and rewrites one again."""
    from _pytest.assertion import rewrite

    if request.config.getoption("assertmode") != "rewrite":
        pytest.skip("run with --assert=plain: nothing is rewritten")

    sources = sorted(Path(__file__).resolve().parent.glob("test_*.py"))
    assert len(sources) > 40
    for source in sources:
        pyc = rewrite.get_cache_dir(source) / (source.name[:-3] + rewrite.PYC_TAIL)
        assert rewrite._read_pyc(source, pyc) is not None, source.name
