"""Settings, read from the environment in one place into a frozen dataclass."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from bot.vault import check_keys

DEFAULT_MODEL = "gpt-4.1-mini-2025-04-14"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
# Sandbox jobs take seconds, so the shell and `--sandbox` poll every second unless told otherwise.
SANDBOX_POLL_INTERVAL = 1.0


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line meant for the person starting the bot."""


@dataclass(frozen=True)
class Settings:
    # Secrets are kept out of repr() so that a logged Settings never shows them.
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)
    slack_api_url: str = DEFAULT_SLACK_API_URL
    # OAuth mode (any workspace installs the app): the app's client id and secret, and no SLACK_BOT_TOKEN.
    slack_client_id: str | None = None
    slack_client_secret: str | None = field(default=None, repr=False)
    # Fernet keys sealing tokens and provider keys at rest (bot/vault.py): the first seals, every one opens.
    encryption_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_user_ids: frozenset[str] = frozenset()  # may set a workspace's provider keys, besides its admins and owners
    # OAuth mode: the workspaces (team or enterprise ids; "*" every one) the environment's provider keys serve.
    # Every other workspace uses only the keys its admins set with `/finetune keys`: none spends another's money.
    shared_keys_team_ids: frozenset[str] = frozenset()
    metrics_port: int | None = None  # Prometheus' /metrics on a listener of its own (None: none, library not loaded)
    metrics_host: str = "0.0.0.0"
    log_format: str = "text"  # or "json": one object a line
    sentry_dsn: str | None = field(default=None, repr=False)  # errors to Sentry (None: sentry-sdk not loaded)
    default_provider: str | None = None  # None: the only one configured, or the registry's first when several are
    database_path: str = "finetune-bot.db"
    database_url: str | None = field(default=None, repr=False)  # PostgreSQL instead of SQLite (holds a password)
    poll_interval_seconds: float = 60.0
    default_model: str = DEFAULT_MODEL
    port: int = 3000
    log_level: str = "INFO"
    allowed_user_ids: frozenset[str] = frozenset()
    allowed_channel_ids: frozenset[str] = frozenset()
    approver_user_ids: frozenset[str] = frozenset()  # when set, a held start needs one of them (not its requester)
    metrics_interval_seconds: float = 60.0  # the watchdog reads a running job's metrics at most this often
    watchdog_stall_minutes: float = 30.0  # training, yet no new step for this long: the watchdog warns
    provider_timeout_seconds: float = 20.0
    delivery_lease_seconds: float = 60.0
    delivery_give_up_seconds: float = 86400.0
    sandbox: bool = False
    sandbox_pace_seconds: float = 2.0
    temporary_database: bool = False  # the shell's sandbox keeps its records only as long as it runs
    max_training_file_mb: float = 512.0  # OpenAI's own limit for a training file
    try_max_tokens: int = 512  # the most tokens each model may answer a `try` with (it is billed)
    try_max_prompt_chars: int = 4000
    try_limit_per_minute: int = 20  # prompts a person may send to models a minute (try, Try it, compare's examples)
    download_deadline_seconds: float = 120.0  # a whole download of a Slack file, however slowly its bytes come
    # Every variable a registered provider shape declares (bot/providers/shape.py), by name, as set: how a shape
    # gets its settings without a field here. Secret ones are scrubbed like the fields above.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def max_training_file_bytes(self) -> int:
        return int(self.max_training_file_mb * 1024 * 1024)

    @property
    def provider_names(self) -> list[str]:
        """The providers whose settings are present, in the registry's order."""
        from bot.providers.registry import present  # (the registry's adapters import this module)

        return present(self)

    @property
    def provider_name(self) -> str:
        """The providers, as start-up prints them."""
        names = ", ".join(self.provider_names) or "none"
        return f"sandbox: {names}" if self.sandbox else names

    @property
    def oauth(self) -> bool:
        """Whether the bot is installed through Slack's OAuth flow (many workspaces) rather than one bot token."""
        return bool(self.slack_client_id and self.slack_client_secret and not self.slack_bot_token)

    @property
    def database(self) -> str:
        """Where the store keeps its tables: DATABASE_URL's server, or the SQLite file."""
        return self.database_url or self.database_path

    def secrets(self) -> list[str]:
        """Every secret value set, for scrubbing logs: Slack's, and every provider shape's (whichever it is)."""
        values = [
            self.slack_bot_token,
            self.slack_signing_secret,
            self.slack_app_token,
            self.slack_client_secret,
            self.sentry_dsn,
            *_dsn_secrets(self.sentry_dsn),
            *self.encryption_keys,
            *_url_secrets(self.database_url),
            *(self.env.get(name) for name in sorted(self.secret_names)),
        ]
        return [v for v in values if v]

    @property
    def secret_names(self) -> frozenset[str]:
        """The settings the registered shapes declare secret (their keys, webhook secrets)."""
        from bot.providers.registry import SHAPES  # (the registry's adapters import this module)

        return frozenset(setting.name for shape in SHAPES for setting in shape.settings if setting.secret)

    def value(self, name: str) -> str | None:
        """A registered shape's setting, as set in the environment (or by the sandbox)."""
        return self.env.get(name) or None

    def with_sandbox(self, values: Mapping[str, str]) -> Settings:
        """Point at the sandbox's stand-ins: `values` are settings by their environment names (each shape's sandbox
        says which), as if the person had set them; nothing real is left configured."""
        return replace(self, sandbox=True, env=dict(values))


_WHERE = {
    "SLACK_BOT_TOKEN": "the Bot User OAuth Token on your Slack app's 'OAuth & Permissions' page (xoxb-...)",
    "SLACK_SIGNING_SECRET": "the Signing Secret on your Slack app's 'Basic Information' page",
    "SLACK_CLIENT_SECRET": "the Client Secret on your Slack app's 'Basic Information' page",
    "SLACK_CLIENT_ID": "the Client ID on your Slack app's 'Basic Information' page",
    "ENCRYPTION_KEYS": "one or more Fernet keys, comma-separated, that seal every workspace's tokens and provider keys "
    "(python -c \"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())\")",
    "SLACK_APP_TOKEN": "an app-level token with connections:write, from your Slack app's 'Basic Information' page "
    "(xapp-...)",
}


def _number(env: Mapping[str, str], name: str, default: float, kind: type, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


def _ids(env: Mapping[str, str], name: str) -> frozenset[str]:
    return frozenset(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _database_url(url: str | None, path: str | None) -> str | None:
    """DATABASE_URL checked: a PostgreSQL URL (postgres:// is Heroku's spelling of postgresql://), never with
    DATABASE_PATH too. Errors name the scheme or the conflict, never the URL (it holds the password)."""
    if url is None:
        return None
    if path is not None:
        raise ConfigError("DATABASE_URL and DATABASE_PATH are both set: DATABASE_URL chooses PostgreSQL, DATABASE_PATH "
                          "a SQLite file. Unset one of them.")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise ConfigError(f"DATABASE_URL must be a PostgreSQL URL (postgresql://user:password@host:5432/db), got "
                          f"{shown}. For SQLite, set DATABASE_PATH instead.")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError("DATABASE_URL's port is not a number.") from None
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError("DATABASE_URL names no host (postgresql://user:password@host:5432/db).")
    return url


def _url_secrets(url: str | None) -> list[str]:
    """The parts of a database URL that are secret: its password, and the whole URL (which carries it)."""
    if not url:
        return []
    password = urlsplit(url).password
    return [url, *([password, unquote(password)] if password else [])]


def _dsn_secrets(dsn: str | None) -> list[str]:
    """The secret parts of a Sentry DSN (https://KEY@host/project): its key, besides the whole DSN."""
    try:
        key = urlsplit(dsn).username if dsn else None
    except ValueError:
        return []
    return [key] if key else []


def load(env: Mapping[str, str] | None = None, *, mode: str = "serve", sandbox: bool = False,
         real: bool = False) -> Settings:
    """Read settings for `mode` (serve, socket or shell); a missing required one raises ConfigError.

    The shell runs the sandbox unless asked for `real` providers (`shell --real`): an exported key never makes the
    Quick start spend money. `--sandbox` does the same for serve and socket.
    """
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    if mode == "check":
        sandbox = True  # a file check asks no provider and no Slack: nothing is required
    from bot.providers.registry import SHAPES  # (the registry's adapters import this module)

    if mode == "shell":
        sandbox = not real
        # Every provider alike, as the shapes declare their settings: one whose key (or required setting) is present.
        if real and not any(get(setting.name) for shape in SHAPES for setting in shape.settings
                            if setting.secret or setting.required):
            keys = ", ".join(sorted({setting.name for shape in SHAPES for setting in shape.settings
                                     if setting.required or setting.secret and "WEBHOOK" not in setting.name}))
            raise ConfigError(f"--real needs a provider's settings ({keys}); without --real the shell uses the "
                              "sandbox.")

    required = []
    # OAuth mode: the app's client id and secret instead of one bot token, and keys to seal the tokens installs give.
    oauth = (mode == "serve" and bool(get("SLACK_CLIENT_ID") or get("SLACK_CLIENT_SECRET"))
             and not get("SLACK_BOT_TOKEN"))
    if oauth:
        required += ["SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "ENCRYPTION_KEYS"]
    elif mode in {"serve", "socket"}:
        required.append("SLACK_BOT_TOKEN")
    if mode == "serve":
        required.append("SLACK_SIGNING_SECRET")
    if mode == "socket":
        required.append("SLACK_APP_TOKEN")

    declared = {setting.name: setting for shape in SHAPES for setting in shape.settings}
    where = {**{name: setting.where for name, setting in declared.items()}, **_WHERE}
    shape_env = {name: get(name) for name in declared if get(name)}
    if not sandbox:
        # Each provider is either fully set or not at all: half a provider is named, not silently ignored.
        for shape in SHAPES:
            required += shape.required(frozenset(shape_env))
    for name in required:
        if not get(name):
            raise ConfigError(f"{name} is not set: it is {where[name]}.")
    if (not sandbox and mode in {"serve", "socket"} and not oauth  # (OAuth: each workspace may bring its own keys)
            and not any(shape.present(Settings(env=shape_env)) for shape in SHAPES)):
        ways = "; ".join(shape.advice for shape in SHAPES if shape.advice)
        raise ConfigError(f"No provider is configured: set {ways}. Or run with --sandbox to try the bot without one.")
    try:
        encryption_keys = check_keys(get("ENCRYPTION_KEYS"))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    default_provider = (get("DEFAULT_PROVIDER") or "").lower() or None
    names = [name for shape in SHAPES for name in shape.labels]
    if default_provider is not None and default_provider not in names:
        raise ConfigError(f"DEFAULT_PROVIDER must be one of {', '.join(names)}, got {default_provider!r}")

    metrics_port = get("METRICS_PORT")
    if metrics_port is not None:
        metrics_port = int(_number(env, "METRICS_PORT", 0, int, 0, 65535))
    log_format = (get("LOG_FORMAT") or "text").lower()
    if log_format not in {"text", "json"}:
        raise ConfigError(f"LOG_FORMAT must be text or json, got {log_format!r}")
    # The shell is a conversation: warnings and worse only, unless asked.
    log_level = (get("LOG_LEVEL") or ("WARNING" if mode == "shell" else "INFO")).upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    api_url = get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
    database_url = _database_url(get("DATABASE_URL"), get("DATABASE_PATH"))
    settings = Settings(
        slack_bot_token=get("SLACK_BOT_TOKEN"),
        slack_signing_secret=get("SLACK_SIGNING_SECRET"),
        slack_app_token=get("SLACK_APP_TOKEN"),
        slack_client_id=get("SLACK_CLIENT_ID") if oauth else None,
        slack_client_secret=get("SLACK_CLIENT_SECRET") if oauth else None,
        encryption_keys=encryption_keys,
        admin_user_ids=_ids(env, "ADMIN_USER_IDS"),
        shared_keys_team_ids=_ids(env, "SHARED_KEYS_TEAM_IDS"),
        metrics_port=metrics_port,
        metrics_host=get("METRICS_HOST") or "0.0.0.0",
        log_format=log_format,
        sentry_dsn=get("SENTRY_DSN"),
        slack_api_url=api_url if api_url.endswith("/") else api_url + "/",
        default_provider=default_provider,
        database_path=get("DATABASE_PATH") or "finetune-bot.db",
        database_url=database_url,
        temporary_database=mode == "shell" and sandbox and not get("DATABASE_PATH") and not database_url,
        poll_interval_seconds=_number(env, "POLL_INTERVAL_SECONDS", SANDBOX_POLL_INTERVAL if sandbox else 60.0,
                                      float, 0.05, 86400),
        default_model=get("DEFAULT_MODEL") or DEFAULT_MODEL,
        port=int(_number(env, "PORT", 3000, int, 0, 65535)),
        log_level=log_level,
        allowed_user_ids=_ids(env, "ALLOWED_USER_IDS"),
        allowed_channel_ids=_ids(env, "ALLOWED_CHANNEL_IDS"),
        approver_user_ids=_ids(env, "APPROVER_USER_IDS"),
        metrics_interval_seconds=_number(env, "METRICS_INTERVAL_SECONDS", 60.0, float, 1, 86400),
        watchdog_stall_minutes=_number(env, "WATCHDOG_STALL_MINUTES", 30.0, float, 1, 7 * 1440),
        provider_timeout_seconds=_number(env, "PROVIDER_TIMEOUT_SECONDS", 20.0, float, 0.1, 600),
        delivery_lease_seconds=_number(env, "DELIVERY_LEASE_SECONDS", 60.0, float, 1, 3600),
        delivery_give_up_seconds=_number(env, "DELIVERY_GIVE_UP_SECONDS", 86400.0, float, 60, 30 * 86400),
        sandbox=sandbox,
        sandbox_pace_seconds=_number(env, "SANDBOX_PACE_SECONDS", 2.0, float, 0.01, 3600),
        max_training_file_mb=_number(env, "MAX_TRAINING_FILE_MB", 512.0, float, 0.001, 8192),
        try_max_tokens=int(_number(env, "TRY_MAX_TOKENS", 512, int, 1, 32768)),
        try_max_prompt_chars=int(_number(env, "TRY_MAX_PROMPT_CHARS", 4000, int, 1, 100_000)),
        try_limit_per_minute=int(_number(env, "TRY_LIMIT_PER_MINUTE", 20, int, 1, 10_000)),
        download_deadline_seconds=_number(env, "DOWNLOAD_DEADLINE_SECONDS", 120.0, float, 1, 3600),
        env=shape_env,
    )
    if default_provider is not None and not sandbox and default_provider not in settings.provider_names:
        raise ConfigError(f"DEFAULT_PROVIDER is {default_provider}, but {default_provider} is not configured.")
    return settings
