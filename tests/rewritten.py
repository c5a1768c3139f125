"""Each test module's assertion rewriting done once a run, not once a worker (`-p tests.rewritten`, pyproject.toml).

pytest rewrites the `assert`s of the test modules, and of every module of the plugins it loads (hypothesis, anyio,
xdist, pytest-timeout: 112 more), and keeps the result as `__pycache__/*-pytest-*.pyc`, but not where
PYTHONDONTWRITEBYTECODE is set, as on these machines: every worker then parsed and rewrote all 153 modules again
before its first test (7.0 s of CPU to collect the suite, 2.8 s from the rewritten bytecode; `python -m pytest -n0
--collect-only`, twice). Loaded by `-p`, this module runs before pytest imports its plugins, and lets it write them:
the main process rewrites the plugins' modules as it loads them, and then (`pytest_configure`, before any worker
starts) the test modules, which it does not itself import. Each is written atomically and checked by its source's
hash when read (pytest's own format), so a worker that finds none, or one out of date, rewrites it as before.

Only this test process writes bytecode: the processes the tests start keep the environment as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.dont_write_bytecode = False


def pytest_configure(config) -> None:  # noqa: ANN001
    if hasattr(config, "workerinput") or config.getoption("assertmode", "rewrite") != "rewrite":
        return
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        for source in sorted(Path(__file__).resolve().parent.glob("test_*.py")):
            pyc = rewrite.get_cache_dir(source) / (source.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(source, pyc) is None:
                pyc.parent.mkdir(exist_ok=True)
                source_hash, code = rewrite._rewrite_test(source, config)
                rewrite._write_pyc(state, code, source_hash, pyc)
    except (AttributeError, ImportError, KeyError, TypeError, OSError):  # (another pytest: workers rewrite as before)
        return
