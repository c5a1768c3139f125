"""Settings come from the environment in one place; a missing one stops start-up with one clear line."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from bot.config import DEFAULT_MODEL, ConfigError, load
from tests import zygote
from tests.conftest import start_provider_of

SERVE_ENV = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "OPENAI_API_KEY": "sk-1"}


def test_defaults():
    settings = load(SERVE_ENV)
    assert settings.database_path == "finetune-bot.db"
    assert settings.poll_interval_seconds == 60
    assert settings.default_model == DEFAULT_MODEL == "gpt-4.1-mini-2025-04-14"
    assert settings.port == 3000 and settings.log_level == "INFO"
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.provider_name == "openai"


def test_everything_can_be_set():
    settings = load({**SERVE_ENV, "SLACK_API_URL": "http://127.0.0.1:1/api", "DATABASE_PATH": "/tmp/x.db",
                     "POLL_INTERVAL_SECONDS": "15", "DEFAULT_MODEL": "gpt-4o-mini-2024-07-18", "PORT": "8080",
                     "LOG_LEVEL": "debug", "ALLOWED_USER_IDS": "U1, U2", "ALLOWED_CHANNEL_IDS": "C1",
                     "OPENAI_BASE_URL": "https://res.openai.azure.com/openai/v1/"})
    assert settings.slack_api_url == "http://127.0.0.1:1/api/"
    assert (settings.database_path, settings.poll_interval_seconds, settings.port) == ("/tmp/x.db", 15, 8080)
    assert settings.allowed_user_ids == {"U1", "U2"} and settings.allowed_channel_ids == {"C1"}
    assert settings.log_level == "DEBUG" and settings.value("OPENAI_BASE_URL").endswith("/openai/v1/")


@pytest.mark.parametrize("missing", sorted(SERVE_ENV))
def test_missing_required_settings_are_named(missing):
    env = {k: v for k, v in SERVE_ENV.items() if k != missing}
    named = "No provider is configured" if missing == "OPENAI_API_KEY" else f"{missing} is not set"
    with pytest.raises(ConfigError, match=f"^{named}"):
        load(env)


def test_azure_needs_its_key_and_version():
    env = {"SLACK_BOT_TOKEN": "x", "SLACK_SIGNING_SECRET": "s", "AZURE_OPENAI_ENDPOINT": "https://r.azure.com"}
    with pytest.raises(ConfigError, match="AZURE_OPENAI_API_KEY"):
        load(env)
    settings = load({**env, "AZURE_OPENAI_API_KEY": "k", "OPENAI_API_VERSION": "2025-04-01-preview"})
    assert settings.provider_name == "azure" and settings.provider_names == ["azure"]


SLACK = {"SLACK_BOT_TOKEN": "x", "SLACK_SIGNING_SECRET": "s"}


def test_the_training_file_cap_is_a_setting():
    assert load(SERVE_ENV).max_training_file_bytes == 512 * 1024 * 1024
    assert load({**SERVE_ENV, "MAX_TRAINING_FILE_MB": "10"}).max_training_file_bytes == 10 * 1024 * 1024
    assert load({}, mode="check").default_model == DEFAULT_MODEL  # checking a file needs no Slack and no provider


def test_together_alone_is_a_provider_and_the_default():
    settings = load({**SLACK, "TOGETHER_API_KEY": "tgp-1"})
    assert settings.provider_names == ["together"] and start_provider_of(settings) == "together"
    assert settings.value("TOGETHER_BASE_URL") is None
    from bot.providers import registry

    assert registry.configured(settings).get("together").default_model.startswith("meta-llama/")
    assert "tgp-1" in settings.secrets() and "tgp-1" not in repr(settings)


def test_several_providers_at_once_default_to_openai_unless_told():
    env = {**SERVE_ENV, "TOGETHER_API_KEY": "tgp-1", "TOGETHER_BASE_URL": "http://127.0.0.1:9"}
    settings = load(env)
    assert settings.provider_names == ["openai", "together"] and start_provider_of(settings) == "openai"
    assert start_provider_of(load({**env, "DEFAULT_PROVIDER": "Together"})) == "together"
    with pytest.raises(ConfigError, match="^DEFAULT_PROVIDER must be one of openai, azure, together"):
        load({**env, "DEFAULT_PROVIDER": "mistral"})
    with pytest.raises(ConfigError, match="^DEFAULT_PROVIDER is azure, but azure is not configured"):
        load({**env, "DEFAULT_PROVIDER": "azure"})


@pytest.mark.parametrize(("env", "named"), [
    ({"TOGETHER_BASE_URL": "http://proxy"}, "TOGETHER_API_KEY"),
    ({"OPENAI_API_KEY": "k", "TOGETHER_BASE_URL": "http://proxy"}, "TOGETHER_API_KEY"),
    ({"AZURE_OPENAI_API_KEY": "k", "OPENAI_API_VERSION": "v"}, "AZURE_OPENAI_ENDPOINT"),
    ({"TOGETHER_API_KEY": "t", "AZURE_OPENAI_ENDPOINT": "https://r"}, "AZURE_OPENAI_API_KEY"),
])
def test_half_a_provider_is_named_in_one_line(env, named):
    with pytest.raises(ConfigError, match=f"^{named} is not set") as error:
        load({**SLACK, **env})
    assert "\n" not in str(error.value)


def test_the_missing_provider_line_names_every_way_to_set_one():
    with pytest.raises(ConfigError) as error:
        load(SLACK)
    said = str(error.value)  # (every registered shape's way, from the registry: none is listed in config.py)
    assert all(name in said for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "TOGETHER_API_KEY",
                                         "FIREWORKS_API_KEY", "--sandbox")) and "\n" not in said


def test_socket_mode_needs_the_app_token_not_the_signing_secret():
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        load({"SLACK_BOT_TOKEN": "x", "OPENAI_API_KEY": "k"}, mode="socket")
    assert load({"SLACK_BOT_TOKEN": "x", "OPENAI_API_KEY": "k", "SLACK_APP_TOKEN": "xapp-1"}, mode="socket")


def test_sandbox_and_shell_need_no_provider():
    assert load({"SLACK_BOT_TOKEN": "x", "SLACK_SIGNING_SECRET": "s"}, sandbox=True)
    assert load({}, mode="shell")


@pytest.mark.parametrize("name, value", [("POLL_INTERVAL_SECONDS", "soon"), ("PORT", "99999"),
                                         ("LOG_LEVEL", "LOUD"), ("MAX_TRAINING_FILE_MB", "0"),
                                         ("MAX_TRAINING_FILE_MB", "lots")])
def test_malformed_settings_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        load({**SERVE_ENV, name: value})


def test_secrets_are_not_in_repr():
    text = repr(load({**SERVE_ENV, "SLACK_BOT_TOKEN": "xoxb-very-secret"}))
    assert "xoxb-very-secret" not in text and "sk-1" not in text


def test_cli_stops_with_one_line_and_a_nonzero_exit(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_", "AZURE_"))}
    result = subprocess.run([sys.executable, "-m", "bot", "serve"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "finetune-bot: SLACK_BOT_TOKEN is not set: it is the Bot User OAuth Token on your Slack app's "
        "'OAuth & Permissions' page (xoxb-...)."]
    assert "Traceback" not in result.stderr


def test_database_url_chooses_postgresql_and_its_secret_part_is_scrubbed():
    url = "postgres://bot:s3@db.example.com:6543/fine?sslmode=require"  # Heroku's spelling, a 2-letter password
    settings = load({**SERVE_ENV, "DATABASE_URL": url})
    assert settings.database == url and settings.database_path == "finetune-bot.db"
    assert url not in repr(settings) and "s3" in settings.secrets()
    from bot.scrub import Scrubber

    said = Scrubber(settings.secrets())(f"could not connect to {url.replace('postgres:', 'postgresql+psycopg:')}")
    assert "s3@" not in said and "db.example.com:6543" in said
    assert load(SERVE_ENV).database == "finetune-bot.db"


@pytest.mark.parametrize(("env", "said"), [
    ({"DATABASE_URL": "postgresql://u:p@h/db", "DATABASE_PATH": "/data/bot.db"},
     "DATABASE_URL and DATABASE_PATH are both set"),
    ({"DATABASE_URL": "mysql://u:secretpw@h/db"}, "must be a PostgreSQL URL (postgresql://user:password@host:5432/db), "
                                                  "got mysql://"),
    ({"DATABASE_URL": "u:secretpw@h/db"}, "must be a PostgreSQL URL"),
    ({"DATABASE_URL": "postgresql://u:secretpw@h:port/db"}, "port is not a number"),
    ({"DATABASE_URL": "postgresql:///db"}, "names no host"),
])
def test_a_database_url_that_cannot_be_used_is_named_without_its_password(env, said):
    with pytest.raises(ConfigError, match=re.escape(said)) as refused:
        load({**SERVE_ENV, **env})
    assert "secretpw" not in str(refused.value)


def _serve(env: dict, cwd) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_", "AZURE_", "DATABASE_"))}
    return zygote.run([sys.executable, "-m", "bot", "serve"], env={**base, **SERVE_ENV, **env}, cwd=cwd, timeout=60)


def test_a_database_that_cannot_be_reached_stops_start_up_with_one_line_each(tmp_path, postgres_server):
    """Each cause its own line, naming the host and database, never the password; exit 2 and no traceback."""
    from urllib.parse import urlsplit

    good = postgres_server.new_database()
    parts = urlsplit(good)
    secret = parts.password
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cases = [
        (good.replace(f":{secret}@", ":not-the-password@"), "the server refused the password"),
        (good.rsplit("/", 1)[0] + "/no_such_db", 'database "no_such_db" does not exist'),
        (f"postgresql://bot:{secret}@127.0.0.1:{closed_port}/fine", "nothing answers there (connection refused)"),
    ]
    for url, said in cases:
        result = _serve({"DATABASE_URL": url}, tmp_path)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        where = urlsplit(url)
        assert line.startswith(f"finetune-bot: the database at PostgreSQL database '{where.path[1:]}' on "
                               f"{where.hostname}:{where.port} cannot be used: ") and said in line, line
        assert secret not in result.stderr + result.stdout and "not-the-password" not in result.stderr
    both = _serve({"DATABASE_URL": good, "DATABASE_PATH": str(tmp_path / "x.db")}, tmp_path)
    assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 1
    assert "both set" in both.stderr and secret not in both.stderr
