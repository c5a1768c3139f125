"""Imports flow one way (handlers -> bot -> storage); exactly one module imports openai; nothing builds at import."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSITION_ROOT = {"bot/app.py"}  # the one place that wires handlers into the app


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def test_storage_imports_nothing_of_ours():
    for path in _files("storage"):
        assert not _imports(path) & {"bot", "handlers"}, path


def test_bot_does_not_import_handlers_except_the_composition_root():
    for path in _files("bot"):
        relative = str(path.relative_to(ROOT))
        if relative not in COMPOSITION_ROOT:
            assert "handlers" not in _imports(path), relative


def test_exactly_one_module_imports_openai():
    importers = [str(p.relative_to(ROOT)) for pkg in ("bot", "handlers", "storage") for p in _files(pkg)
                 if "openai" in _imports(p)]
    assert importers == ["bot/provider.py"]


def test_only_the_settings_module_reads_the_environment():
    readers = []
    for pkg in ("bot", "handlers", "storage"):
        for path in _files(pkg):
            text = path.read_text()
            if "os.environ" in text or "os.getenv" in text:
                readers.append(str(path.relative_to(ROOT)))
    assert readers == ["bot/cli.py", "bot/config.py"]  # cli only hands os.environ to bot.config.load
