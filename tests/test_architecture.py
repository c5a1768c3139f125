"""Imports flow one way (handlers -> bot -> storage); exactly one module imports openai; nothing builds at import."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSITION_ROOT = {"bot/app.py"}  # the one place that wires handlers into the app
REGISTRY = "bot/providers/registry.py"  # the one place that names the adapters


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
    assert importers == ["bot/providers/openai_shape.py"]


def test_exactly_one_module_imports_together():
    importers = [str(p.relative_to(ROOT)) for pkg in ("bot", "handlers", "storage") for p in _files(pkg)
                 if "together" in _imports(p)]
    assert importers == ["bot/providers/together_shape.py"]


def test_exactly_one_module_imports_fireworks():
    importers = [str(p.relative_to(ROOT)) for pkg in ("bot", "handlers", "storage") for p in _files(pkg)
                 if "fireworks" in _imports(p)]
    assert importers == ["bot/providers/fireworks_shape.py"]


def _provider_modules(tree: ast.AST) -> set[str]:
    """The bot.providers modules a file imports, however spelt (`from bot.providers import x` included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "bot.providers":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bot.providers."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("bot.providers.")}
    return found


def test_services_know_providers_only_through_the_shared_types():
    """A new API shape is an added module and a line in the registry: nothing else names an adapter. The bot reads
    what shapes declare through the registry (labels, prices, settings, sandboxes); handlers know only the types."""
    for path in _files("bot") + _files("handlers"):
        relative = str(path.relative_to(ROOT))
        if relative.startswith("bot/providers/"):
            continue
        allowed = {"types"} | ({"registry", "shape"} if relative.startswith("bot/") else set())
        assert _provider_modules(ast.parse(path.read_text())) <= allowed, relative
    importers = {str(p.relative_to(ROOT)) for p in _files("bot") + _files("handlers")
                 if _provider_modules(ast.parse(p.read_text())) & {"openai_shape", "together_shape", "fireworks_shape"}}
    assert importers == {REGISTRY}
    types = _imports(ROOT / "bot/providers/types.py")
    assert not types & {"openai", "together", "bot"}


_ENV_NAMES = {"environ", "getenv", "putenv", "unsetenv", "environb", "getenvb"}


def _reads_environment(tree: ast.AST) -> bool:
    """`os.environ`, `os.getenv(...)`, `from os import environ` and the like, however spelt."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _ENV_NAMES:
            return True
        if isinstance(node, ast.ImportFrom) and node.module in {"os", "posix", "nt"}:
            if any(alias.name in _ENV_NAMES for alias in node.names):
                return True
    return False


def test_only_the_settings_module_reads_the_environment():
    readers = [str(p.relative_to(ROOT)) for pkg in ("bot", "handlers", "storage") for p in _files(pkg)
               if _reads_environment(ast.parse(p.read_text()))]
    assert readers == ["bot/config.py"]


def test_the_environment_check_sees_every_spelling():
    for source in ("import os\nos.environ['X']", "import os\nos.getenv('X')", "from os import environ",
                   "from os import getenv as g", "import os as o\no.environ.get('X')"):
        assert _reads_environment(ast.parse(source)), source
    assert not _reads_environment(ast.parse("import os\nos.path.join('a')"))
    assert not _reads_environment(ast.parse("def app(environ, start_response): return environ['PATH_INFO']"))


def test_every_registered_shape_is_a_whole_provider():
    """A shape added to the registry provides every method and attribute the services use."""
    from bot.config import Settings
    from bot.providers import registry
    from bot.providers.types import FineTuningProvider

    settings = Settings(openai_api_key="k", together_api_key="t", azure_openai_endpoint="https://r.openai.azure.com",
                        azure_openai_api_key="k", openai_api_version="2025-04-01-preview",
                        env={"FIREWORKS_API_KEY": "f", "FIREWORKS_ACCOUNT_ID": "acme"})
    providers = registry.configured(settings)
    assert providers.names == ["openai", "azure", "together", "fireworks"]
    assert [shape.name for shape in registry.SHAPES] == ["openai", "together", "fireworks"]
    for provider in providers:
        assert isinstance(provider, FineTuningProvider), provider.name
        assert {o.name for o in provider.start_options} >= {"model", "epochs", "suffix"}


def test_every_mutation_row_still_breaks_a_line_that_exists():
    """`python tests/mutations.py` breaks each guarded line and runs the tests named for it; a row whose line was
    since rewritten breaks nothing and guards nothing, so each must still find its line (and its test files)."""
    from tests.mutations import MUTATIONS

    stale = [name for name, path, old, _new, _tests in MUTATIONS if old not in (ROOT / path).read_text()]
    assert stale == []
    missing = [name for name, *_, tests in MUTATIONS
               if not all((ROOT / word.split("::")[0]).exists() for word in tests.split() if word.endswith(".py")
                          or ".py::" in word)]
    assert missing == []
