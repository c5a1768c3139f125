"""A throwaway PostgreSQL server for the tests: the machine's own `initdb` and `pg_ctl`, a temporary directory, a free
loopback port, and every test its own database. As the `postgres` user when the tests run as root (PostgreSQL refuses
to run as root). `TEST_DATABASE_URL` names a server to use instead (its user must be allowed to create databases)."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

START_SECONDS = 60


def server_binaries() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`: on the PATH, or where Debian's packages put them."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(candidate, "initdb"), os.X_OK):
            return Path(candidate)
    return None


def unavailable_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    if os.environ.get("TEST_DATABASE_URL") or server_binaries() is not None:
        return None
    return ("no PostgreSQL server here: install one (Debian: apt-get install postgresql, as .ci/run does) or set "
            "TEST_DATABASE_URL=postgresql://user:password@host:port/db")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    """One PostgreSQL server for a test session, removed with everything in it by `stop()`."""

    def __init__(self) -> None:
        self.given = os.environ.get("TEST_DATABASE_URL")
        self.workdir: str | None = None
        self.url = self.given or ""
        self.password = urlsplit(self.given).password if self.given else None
        self._as_user = {}

    def start(self) -> ThrowawayPostgres:
        if self.given:
            return self
        binaries = server_binaries()
        if binaries is None:
            raise RuntimeError(unavailable_reason())
        self.workdir = tempfile.mkdtemp(prefix="finetune-bot-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            self._as_user = {"user": "postgres", "group": "postgres"}
        data, port = os.path.join(self.workdir, "data"), _free_port()
        # A password over TCP, as a managed server asks: the bot's URLs carry one, so every test also shows that it
        # never reaches a log line or a message.
        self.password = "pw-" + secrets.token_urlsafe(12)
        pwfile = os.path.join(self.workdir, "pwfile")
        Path(pwfile).write_text(self.password + "\n")
        if self._as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run([str(binaries / "initdb"), "-D", data, "-U", "postgres", "--auth-local=trust",
                   "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"])
        os.unlink(pwfile)
        options = (f"-p {port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
                   " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._pg_ctl, self._data, self._options = str(binaries / "pg_ctl"), data, options
        self.resume()
        self.url = f"postgresql://postgres:{self.password}@127.0.0.1:{port}/postgres"
        return self

    def halt(self) -> None:
        """Stop the server (an outage): every connection to it drops. `resume()` starts it again on the same port."""
        self._run([self._pg_ctl, "-D", self._data, "-m", "fast", "-w", "stop"])

    def resume(self) -> None:
        self._run([self._pg_ctl, "-D", self._data, "-o", self._options, "-l", os.path.join(self.workdir, "log"),
                   "-w", "-t", str(START_SECONDS), "start"])

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=START_SECONDS, cwd=self.workdir,
                                **self._as_user)
        if result.returncode != 0:
            raise RuntimeError(f"{os.path.basename(argv[0])} failed: {result.stderr.strip() or result.stdout}")

    def new_database(self) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg

        name = "ftb_" + secrets.token_hex(6)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + name))

    def stop(self) -> None:
        if self.workdir is None:
            return
        subprocess.run([self._pg_ctl, "-D", os.path.join(self.workdir, "data"), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=START_SECONDS, cwd=self.workdir, **self._as_user)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None
