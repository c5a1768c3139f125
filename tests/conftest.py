"""Shared fixtures: loopback stand-ins for Slack and the provider, a real SQLite file, the real HTTP server."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from itertools import islice

import pytest

from bench.processes import wait_until
from bot.app import build
from bot.config import Settings
from bot.sandbox.fireworks import FireworksSandbox
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import SlackStandIn, signed_headers, slash_command_body
from bot.sandbox.together import TogetherSandbox
from tests import zygote
from tests.storage_processes import claim_due  # noqa: F401 - the tests take it from here

BOT_TOKEN = "xoxb-test-0000-SECRETBOTTOKEN"
SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
OPENAI_KEY = "sk-test-SECRETOPENAIKEY0123456789"
TOGETHER_KEY = "tgp_v1_test-SECRETTOGETHERKEY0123456789"
FIREWORKS_KEY = "fw_test-SECRETFIREWORKSKEY0123456789"
WEBHOOK_SECRET = "whsec_c2VjcmV0LXdlYmhvb2sta2V5LWZvci10ZXN0cw=="
ENV_NAMES = [
    "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL", "SLACK_CLIENT_ID",
    "SLACK_CLIENT_SECRET", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY",
    "OPENAI_API_VERSION", "OPENAI_WEBHOOK_SECRET", "DATABASE_PATH", "POLL_INTERVAL_SECONDS", "DEFAULT_MODEL",
    "PORT", "LOG_LEVEL", "ALLOWED_USER_IDS", "ALLOWED_CHANNEL_IDS", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
    "AZURE_OPENAI_AD_TOKEN", "SANDBOX_PACE_SECONDS", "PROVIDER_TIMEOUT_SECONDS", "DELIVERY_LEASE_SECONDS",
    "TOGETHER_API_KEY", "TOGETHER_BASE_URL", "TOGETHER_DEFAULT_MODEL", "DEFAULT_PROVIDER", "DELIVERY_GIVE_UP_SECONDS",
    "MAX_TRAINING_FILE_MB", "FIREWORKS_API_KEY", "FIREWORKS_ACCOUNT_ID", "FIREWORKS_BASE_URL",
    "FIREWORKS_DEFAULT_MODEL", "APPROVER_USER_IDS", "METRICS_INTERVAL_SECONDS", "WATCHDOG_STALL_MINUTES",
    "TRY_LIMIT_PER_MINUTE", "ENCRYPTION_KEYS", "ADMIN_USER_IDS",
]


@pytest.fixture(scope="session", autouse=True)
def zygotes():
    """This test process connected to the run's zygotes (tests/zygote.py) when it starts, not inside its first test
    that needs one: each connection is a socket and a thread of the test process, which the soaks, counting both,
    must not see arrive."""
    zygote.start(*zygote.PRELOAD)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def logging_as_it_was():
    """The root logger as the test found it: `finetune-bot` commands run in process (`check`, `rotate-keys`, a
    `serve` refused) add the bot's handler on the worker's stderr, and a later test's bot thread logging after its
    test ended printed through it into the run's progress dots."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers and getattr(h, "_finetune_bot", False)]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def provider():
    with FineTuningSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def together():
    with TogetherSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def fireworks():
    with FireworksSandbox() as sandbox:
        yield sandbox


def with_fireworks(settings: Settings, sandbox: FireworksSandbox) -> Settings:
    """`settings` with Fireworks AI configured beside whatever they configure, pointed at `sandbox`."""
    return replace(settings, env={**settings.env, "FIREWORKS_API_KEY": FIREWORKS_KEY,
                                  "FIREWORKS_ACCOUNT_ID": sandbox.account, "FIREWORKS_BASE_URL": sandbox.url})


@pytest.fixture
def three(both, fireworks) -> Settings:
    """Settings with OpenAI's shape, Together AI and Fireworks AI configured at once."""
    return with_fireworks(both, fireworks)


@pytest.fixture
def both(settings, together) -> Settings:
    """Settings with OpenAI's shape and Together AI configured at once (OpenAI the default for start)."""
    return replace(settings, env={**settings.env, "TOGETHER_API_KEY": TOGETHER_KEY, "TOGETHER_BASE_URL": together.url})


@pytest.fixture
def slack():
    with SlackStandIn(token=BOT_TOKEN) as standin:
        yield standin


@pytest.fixture
def settings(tmp_path, provider, slack) -> Settings:
    return Settings(
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url,
        env={"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": provider.url + "/v1",
             "OPENAI_WEBHOOK_SECRET": WEBHOOK_SECRET},
        database_path=str(tmp_path / "bot.db"),
        poll_interval_seconds=3600,
        provider_timeout_seconds=5,
    )


@pytest.fixture
def make_bot(settings):
    bots = []

    def make(*, providers: dict[str, str | None] | None = None, start_drawing=zygote.start_drawing, **changes):
        """A bot from the session's settings, with `changes` to them and `providers`: provider settings by their
        environment names, set (or, with None, unset) beside the OpenAI sandbox's. Its drawing process is forked
        from the tests' zygote (tests/zygote.py) unless `start_drawing` says otherwise (the bot's own: the tests of
        the drawing process's life)."""
        if providers:
            env = {**changes.get("env", settings.env), **providers}
            changes["env"] = {name: value for name, value in env.items() if value is not None}
        bot = build(replace(settings, **changes) if changes else settings, start_drawing=start_drawing)
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        bot.stop(timeout=2)


@pytest.fixture
def bot(make_bot):
    return make_bot()


class Server:
    """The bot's real WSGI app on waitress, on a free loopback port."""

    def __init__(self, bot, **kwargs):
        from bot.web import make_server, make_wsgi

        self.bot = bot
        self._server = make_server(make_wsgi(bot), host="127.0.0.1", port=0, threads=8, **kwargs)
        self.url = f"http://127.0.0.1:{self._server.effective_port}"
        self._thread = threading.Thread(target=self._server.serve_until_stopped, daemon=True)
        self._thread.start()

    def close(self):
        self._server.stop()
        self._thread.join(10)

    def post(self, path: str, body: str | bytes, headers: dict) -> tuple[int, bytes]:
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def command(self, text: str, *, channel: str = "C0GENERAL", user: str = "U0ALICE",
                response_url: str = "", secret: str = SIGNING_SECRET, timestamp: int | None = None) -> tuple[int, dict]:
        """POST /finetune as Slack would, signed; returns the HTTP status and the ack's JSON (or {})."""
        body = slash_command_body(text, channel_id=channel, user_id=user, response_url=response_url)
        status, raw = self.post("/slack/events", body, signed_headers(body, secret, timestamp=timestamp))
        return status, (json.loads(raw) if raw.strip().startswith(b"{") else {})


@pytest.fixture
def server(bot):
    srv = Server(bot)
    yield srv
    srv.close()


def reply_to(slack: SlackStandIn, name: str, timeout: float = 5.0) -> dict:
    """The reply that arrived at response_url `name` (waits for it, bounded)."""
    found = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/" + name)], timeout)
    assert found, f"no reply reached response_url {name}; got {slack.responses}"
    return found[-1]


def ask(server: Server, slack: SlackStandIn, text: str, **kwargs) -> dict:
    """Run a command through HTTP and return what the user sees: the ack's content, or the later reply."""
    name = f"r{time.monotonic_ns()}"
    status, ack = server.command(text, response_url=slack.response_url(name), **kwargs)
    assert status == 200
    if ack.get("text"):
        return ack
    return reply_to(slack, name)


def followed_until_it_ends(server: Server, bot, slack: SlackStandIn, provider, status: str = "succeeded",
                           **fields) -> dict:
    """A running job #general subscribed to (its card posted while it ran), then ended at the provider (`status`,
    with `fields` such as an error) and seen by one poll; its outcome is then on its way to Slack, in the card's
    thread."""
    job = provider.add_job(status="running")
    ask(server, slack, f"subscribe {job['id']}")
    assert wait_until(lambda: slack.cards_in("C0GENERAL"), timeout=10)
    provider.set_status(job["id"], status, **fields)
    bot.services.poller.run_once()
    return job


def everything_said(message: dict) -> str:
    """The fallback text and every block's text, for assertions."""
    return message.get("text", "") + "\n" + json.dumps(message.get("blocks") or [])


os.environ.setdefault("PYTHONHASHSEED", "0")


def pytest_configure(config) -> None:  # noqa: ANN001
    config.addinivalue_line("markers", "heavy(seconds): a test that takes about that long on the 2-core machine "
                                       "(processes, replicas, soaks); spread over the workers first")
    if not hasattr(config, "workerinput"):  # once, before any worker starts
        _compile_once()
        zygote.start_for_run(*zygote.PRELOAD)  # (shared by the workers, which inherit where they listen)


def pytest_unconfigure(config) -> None:  # noqa: ANN001
    if not hasattr(config, "workerinput"):
        zygote.stop_for_run()


def _compile_once() -> None:
    """Compile the project's modules into __pycache__ before the workers and the processes the tests start import them.

    These machines set PYTHONDONTWRITEBYTECODE, so without this every process compiled the bot from source again (a
    fresh clone has no bytecode at all): about 0.3 s of CPU for each of the ~190 Python processes a run starts. The
    setting only stops Python writing bytecode, not reading it; py_compile writes it regardless, and only for sources
    newer than their bytecode."""
    import compileall
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for package in ("bot", "handlers", "storage", "bench", "tests"):
        compileall.compile_dir(str(root / package), quiet=2)


def pytest_xdist_auto_num_workers(config) -> int:  # noqa: ANN001
    """`-n auto` (pyproject.toml): three test processes a core. Most heavy tests wait on sockets, subprocesses and the
    clock more than they compute, so one a core leaves the cores idle; at three the 2-core machine is busy throughout
    (measured there at one commit: 4 workers 2 min 46 s with 77 s of idle CPU, 6 workers 2 min 20-32 s with 12-24 s
    idle, 8 workers 2 min 38 s, their extra start-up and contention costing more than they save).
    PYTEST_XDIST_AUTO_NUM_WORKERS still decides, as it does for xdist's own count."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "").isdigit():
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(2, min(12, 3 * cores))


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """Order the tests so that xdist's first hand-out gives each worker an even share of the heavy ones, first.

    `--dist worksteal` hands each worker a contiguous, equal share of the collection, and an idle worker later steals
    from the end of the longest queue, whatever its tests cost. In collection order the heavy tests bunched up (a
    worker ran both slow-Slack soaks last while the others had finished: 50 s of one core idle); here each share starts
    with its heavy tests (longest first, each to the share with the fewest heavy seconds so far) and is topped up with
    the light ones in their own order, which are what stealing moves. Every worker collects the same order."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 2:
        return

    def seconds(item) -> float:  # noqa: ANN001
        marker = item.get_closest_marker("heavy")
        return float(marker.args[0]) if marker else 0.0

    heavy = sorted((item for item in items if seconds(item)), key=seconds, reverse=True)
    light = [item for item in items if not seconds(item)]
    shares: list[list] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for item in heavy:
        k = min(range(workers), key=loads.__getitem__)
        shares[k].append(item)
        loads[k] += seconds(item)
    ordered, left, rest = [], len(items), iter(light)
    for k, share in enumerate(shares):
        size = left // (workers - k)  # what worksteal hands the k-th worker at the start
        ordered += share + list(islice(rest, max(0, size - len(share))))
        left -= size
    ordered += list(rest)
    assert len(ordered) == len(items)
    items[:] = ordered


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for this session (one per worker), or a skip that says why there is none. CI
    sets REQUIRE_POSTGRES=1, so that a server it failed to install is a failure there, never a quiet skip."""
    from bench.postgres import ThrowawayPostgres, unavailable_reason

    reason = unavailable_reason()
    if reason:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = ThrowawayPostgres().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    """Where a store keeps its tables, once for each engine: a new SQLite file, then a new database on the session's
    throwaway PostgreSQL server. Tests of what must hold on both take this rather than a path."""
    if request.param == "sqlite":
        return str(tmp_path / "bot.db")
    return request.getfixturevalue("postgres_url")


def database_env(location: str) -> dict[str, str]:
    """The setting that points a bot process at `location`: DATABASE_URL for a server, DATABASE_PATH for a file."""
    from storage.engines import is_postgres

    return {"DATABASE_URL": location} if is_postgres(location) else {"DATABASE_PATH": location}


def start_provider_of(settings) -> str:  # noqa: ANN001
    """Where `/finetune start` goes when not told, as the bot it builds decides."""
    from bot.providers import registry

    return registry.configured(settings).default.name


def start_intents(store) -> list[dict]:  # noqa: ANN001
    """Every start written down before its provider was asked, oldest first."""
    return store.engine.rows("SELECT * FROM start_intents ORDER BY created_at")


def delivered(sender) -> None:  # noqa: ANN001
    """Deliver what is due, and wait for it: a delivery a kick started may hold the sender, and a call meanwhile only
    asks it to look again (so reading Slack right after `deliver_due()` could find the post not yet made)."""
    sender.deliver_due()
    assert sender.wait_idle(10), "a delivery was still running after 10 s"
