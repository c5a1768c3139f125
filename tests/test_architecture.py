"""Imports flow one way (handlers -> bot -> storage); exactly one module imports openai; nothing builds at import."""

from __future__ import annotations

import ast
import functools
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSITION_ROOT = {"bot/app.py"}  # the one place that wires handlers into the app
REGISTRY = "bot/providers/registry.py"  # the one place that names the adapters


@functools.cache
def _tree(path: pathlib.Path) -> ast.Module:
    """A module's syntax tree, parsed once a run (a dozen tests walk the same files; none changes them)."""
    return ast.parse(path.read_text())


def _imports(path: pathlib.Path) -> set[str]:
    tree = _tree(path)
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
        assert _provider_modules(_tree(path)) <= allowed, relative
    importers = {str(p.relative_to(ROOT)) for p in _files("bot") + _files("handlers")
                 if _provider_modules(_tree(p)) & {"openai_shape", "together_shape", "fireworks_shape"}}
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
               if _reads_environment(_tree(p))]
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

    settings = Settings(env={"OPENAI_API_KEY": "k", "TOGETHER_API_KEY": "t", "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
                             "AZURE_OPENAI_API_KEY": "k", "OPENAI_API_VERSION": "2025-04-01-preview",
                             "FIREWORKS_API_KEY": "f", "FIREWORKS_ACCOUNT_ID": "acme"})
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


# The layers, top to bottom: a module imports from its own layer or the ones below it, never above. A new module
# gets a line here (the test below fails until it has one): that line is where a newcomer learns what it is.
LAYERS = (
    ("entry points and the composition root", ("bot.app", "bot.cli", "bot.web", "bot.shell", "bot.shell_render",
                                                "bot.__main__")),
    ("Slack listeners", ("handlers",)),
    ("services", ("bot.jobs", "bot.holds", "bot.subscriptions", "bot.following", "bot.data_flow", "bot.trying",
                  "bot.charting", "bot.poller", "bot.delivery", "bot.watchdog", "bot.moves", "bot.webhooks",
                  "bot.turns", "bot.slack", "bot.installs", "bot.home", "bot.keyring", "bot.keys",
                  "bot.reconciling")),
    ("Slack surfaces", ("bot.messages", "bot.views", "bot.comparison", "bot.move_messages")),
    ("the grammar, settings, money and the provider seam", (
        "bot.commands", "bot.config", "bot.costs", "bot.training_data", "bot.conversion", "bot.charts",
        "bot.drawing", "bot.providers", "bot.sandbox")),
    ("helpers that know nothing of the rest", ("bot.values", "bot.scrub", "bot.tokens", "bot.scoring",
                                               "bot.retry_after", "bot.logs", "bot.vault", "bot.metrics",
                                               "bot.error_reports")),
    ("storage", ("storage",)),
)
# Today's rooms still bigger than a newcomer should have to read whole (no class over 25 methods, no module over
# 500 lines): each may shrink, none may grow, and nothing joins them.
TOO_BIG: dict = {}


def _module_name(path: pathlib.Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _graph() -> dict[str, set[str]]:
    """Every module of ours and the modules of ours it imports, wherever in it (imports made only for type checking
    aside: they run nowhere)."""
    paths = {_module_name(p): p for pkg in ("bot", "handlers", "storage") for p in _files(pkg)}
    graph = {}
    for name, path in paths.items():
        tree = _tree(path)
        typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.dump(block.test) for node in ast.walk(block)}
        found = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in paths and m != name}
    return graph


def _layer(module: str) -> int | None:
    matches = [(len(prefix), n) for n, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower():
    graph = _graph()
    unplaced = sorted(m for m in graph if m not in ("bot",) and _layer(m) is None)
    assert unplaced == [], f"give these a line in LAYERS: {unplaced}"
    upward = sorted(f"{m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})" for m, targets in graph.items()
                    for t in targets if m != "bot" and t != "bot" and _layer(t) < _layer(m))
    assert upward == []


def test_no_module_imports_itself_round_a_circle():
    graph, index, low, stack, circles = _graph(), {}, {}, [], []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while (top := stack.pop()) != module:
                component.append(top)
            if component:
                circles.append(sorted([module, *component]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert circles == []


def test_no_class_over_25_methods_and_no_module_over_500_lines_beyond_the_known_ones():
    sizes = {}
    for path in (p for pkg in ("bot", "handlers", "storage") for p in _files(pkg)):
        text = path.read_text()
        sizes[str(path.relative_to(ROOT))] = (len(text.splitlines()), 500)
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef):
                methods = sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in node.body)
                sizes[f"{_module_name(path)}.{node.name}"] = (methods, 25)
    over = {name: size for name, (size, limit) in sizes.items() if size > limit}
    grown = {name: (size, TOO_BIG.get(name)) for name, size in over.items() if size > TOO_BIG.get(name, 0)}
    assert grown == {}, "split these rather than letting them grow (name: (now, allowed))"
    within = sorted(name for name in TOO_BIG if name not in over)
    assert within == [], f"these are within the limits now: take them off TOO_BIG ({within})"


def test_the_benchmarks_stand_on_their_own():
    """`bench/` is a tool of its own: the tests may use its harness (a `serve` process, a throwaway PostgreSQL), never
    the reverse."""
    for path in _files("bench"):
        assert "tests" not in _imports(path), path


def test_a_listeners_unexpected_error_ends_in_one_place():
    """Work before `ack()` fails into Bolt's error handler, work after it into `handlers.errors.apologizing`: no
    listener catches everything on its own (each used to, with its own apology)."""
    for path in _files("handlers"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ExceptHandler):
                assert not (isinstance(node.type, ast.Name) and node.type.id in {"Exception", "BaseException"}), (
                    f"{path.name}:{node.lineno}")


def test_no_provider_is_named_in_code_outside_the_seam():
    """A provider is named in code only in bot/providers/ and bot/sandbox/ (storage names none either: every job it
    stores says whose it is): no name of ours spelt after one, no provider id, SDK logger or provider-only option as a
    string (prose about one, such as which tokenizer counts,
    is words, not code). A new provider is then one shape module and its stand-in."""
    import io
    import re
    import tokenize

    named = re.compile(r"openai|azure|together|fireworks", re.IGNORECASE)
    as_id = re.compile(r"^(openai|azure|together|fireworks)([._:/-]\w*)*$")
    found = []
    for path in (p for pkg in ("bot", "handlers", "storage") for p in _files(pkg)):
        if path.relative_to(ROOT).parts[:2] in {("bot", "providers"), ("bot", "sandbox")}:
            continue
        for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            text = token.string
            if token.type == tokenize.STRING:
                text = text.strip("\"'fbr")
                if not as_id.match(text) and "_deployment" not in text:
                    continue
            elif token.type != tokenize.NAME or not named.search(text):
                continue
            found.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {token.string}")
    assert found == []


def test_each_subcommand_a_service_answers_is_in_its_table_of_callables(bot):
    """A service answers its subcommands from a table of its own methods (no method found by a name built from a
    string): the grammar's rows for that service and the table's keys are the same set."""
    from bot.commands import SUBCOMMANDS

    for name in ("jobs", "subscriptions", "trying", "moves"):
        served = {spec.name for spec in SUBCOMMANDS if spec.service == name} - {"check", "upload"}  # (forms)
        assert set(getattr(bot.services, name).answers) == served, name


def test_each_concerns_named_queries_are_all_used_and_all_there():
    """A concern with its SQL in storage/sql/<concern>.sql asks for each query by name (`SQL["name"]`): every
    name asked for is in the file, every query in the file is asked for, and they take named parameters only."""
    import re

    from storage.queries import SQL_DIR, Queries

    words = {"skip_locked": "", "for_update": "", "queue_order": "rowid"}
    for sql_file in sorted(SQL_DIR.glob("*.sql")):
        concern = sql_file.stem
        module = ROOT / "storage" / f"{concern}.py"
        asked = set(re.findall(r'\b(?:self\.sql|SQL)\["([a-z_0-9]+)"\]', module.read_text()))
        queries = Queries(concern, words)
        assert asked == set(queries.names()), concern
        for name in queries.names():
            assert "?" not in queries[name], (concern, name)


def test_the_stores_sql_is_all_in_named_queries():
    """No concern of the store writes SQL of its own: every statement is a named query in storage/sql/. What stays
    in Python is the engines' own (their locks, LISTEN/NOTIFY, presence) and the schema's steps."""
    import ast

    own = {"engines.py", "sqlite_engine.py", "notify.py", "migrations.py", "schema.py"}
    statement = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
    found = []
    for path in sorted((ROOT / "storage").glob("*.py")):
        if path.name in own:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and statement.match(node.value):
                found.append(f"{path.name}:{node.lineno}: {node.value[:60]}")
            if isinstance(node, ast.JoinedStr) and any(
                    isinstance(part, ast.Constant) and statement.match(str(part.value)) for part in node.values[:1]):
                found.append(f"{path.name}:{node.lineno}: an f-string of SQL")
    assert found == []
