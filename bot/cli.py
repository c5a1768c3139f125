"""The `finetune-bot` command: serve (HTTP), socket (Socket Mode), shell, check (a training file), and rotate-keys
(every stored token and key sealed again under the first of ENCRYPTION_KEYS)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from bot import logs
from bot.config import ConfigError, Settings, load
from bot.providers import registry

log = logging.getLogger("finetune_bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune-bot", description="Slack chat-ops for fine-tuning jobs.")
    sub = parser.add_subparsers(dest="mode", required=True)
    serve = sub.add_parser("serve", help="HTTP mode: Slack's requests arrive at POST /slack/events on PORT")
    serve.add_argument("--sandbox", action="store_true", help="use the built-in sandbox provider (no real jobs)")
    socket = sub.add_parser("socket", help="Socket Mode, for workspaces without a public URL (SLACK_APP_TOKEN)")
    socket.add_argument("--sandbox", action="store_true", help="use the built-in sandbox provider (no real jobs)")
    shell = sub.add_parser("shell", help="talk to the bot in this terminal; no Slack needed")
    shell.add_argument("--timeout", type=float, default=300.0,
                       help="with piped input: seconds to wait for followed jobs to finish (default 300)")
    where = shell.add_mutually_exclusive_group()
    where.add_argument("--sandbox", action="store_true",
                       help="the built-in sandbox providers: no real jobs, no money spent (the default)")
    where.add_argument("--real", action="store_true",
                       help="the providers your environment configures: REAL jobs, billed to your accounts")
    check = sub.add_parser("check", help="check a JSONL training file and print its report; exits 1 when it has "
                                         "errors (needs no Slack and no provider)")
    check.add_argument("path", help="the training file (.jsonl)")
    check.add_argument("--model", help="the base model it is for (default: DEFAULT_MODEL)")
    check.add_argument("--epochs", type=int, help="epochs to price (default: the provider's own rule)")
    sub.add_parser("rotate-keys", help="seal every stored token and provider key again under the first of "
                                       "ENCRYPTION_KEYS (after putting a new key first); the others may then go")
    return parser


def _rotate_keys(settings: Settings) -> int:
    from bot.vault import Vault, VaultError
    from storage import DB_ERRORS, Store
    from storage.store import StorageUnavailable

    if not settings.encryption_keys:
        print("finetune-bot: ENCRYPTION_KEYS is not set: put the new key first, then the old ones, comma-separated.",
              file=sys.stderr)
        return 2
    try:
        store = Store(settings.database)
    except StorageUnavailable as error:
        print(f"finetune-bot: {error}", file=sys.stderr)
        return 2
    try:
        count = store.workspaces.reseal_all(Vault(settings.encryption_keys).reseal)
    except VaultError as error:
        print(f"finetune-bot: {error}", file=sys.stderr)
        return 1
    except DB_ERRORS as error:
        print(f"finetune-bot: the database at {store.where} could not be changed ({error}); nothing was resealed",
              file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"resealed {count} stored {'secret' if count == 1 else 'secrets'} under the first of ENCRYPTION_KEYS; the "
          "other keys may now be removed")
    return 0


def _check(settings: Settings, path: str, model: str | None, epochs: int | None) -> int:
    import os

    from bot import training_data

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as stream:
            report = training_data.check(stream, model=model or settings.default_model, epochs=epochs, size=size,
                                         max_bytes=settings.max_training_file_bytes)
    except OSError as error:
        print(f"finetune-bot: cannot read {path}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"{path} for {report.model.name}:")
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _start_sandbox(settings: Settings) -> tuple[Settings, object]:
    from bot.sandbox.stand_ins import SandboxProviders

    sandbox = SandboxProviders.start(settings.sandbox_pace_seconds)
    return sandbox.configure(settings), sandbox


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load(mode=args.mode, sandbox=getattr(args, "sandbox", False), real=getattr(args, "real", False))
    except ConfigError as error:
        print(f"finetune-bot: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.secrets(), chatty=registry.sdk_loggers(), fmt=settings.log_format)
    if settings.sentry_dsn:
        from bot import error_reports

        error_reports.start(settings.sentry_dsn, settings.secrets())
    if args.mode == "check":
        if args.epochs is not None and not 1 <= args.epochs <= 50:
            print("finetune-bot: --epochs must be from 1 to 50", file=sys.stderr)
            return 2
        return _check(settings, args.path, args.model, args.epochs)
    if args.mode == "rotate-keys":
        return _rotate_keys(settings)
    if args.mode == "shell":
        from bot import shell

        return shell.run(settings, timeout=args.timeout)
    sandbox = None
    if settings.sandbox:
        settings, sandbox = _start_sandbox(settings)
    from bot.app import build

    bot = _build_or_explain(build, settings)
    if bot is None:
        return 2
    try:
        if args.mode == "serve":
            from bot.web import serve

            return serve(bot)
        return _socket(bot)
    finally:
        if settings.sentry_dsn:
            from bot import error_reports

            error_reports.stop()  # what is queued for Sentry goes before the process ends


def _build_or_explain(build, settings: Settings):
    """The bot, or None after one line saying why it cannot run: a database it cannot open or write is no place to
    promise announcements from (every command would end in an apology)."""
    from storage import DB_ERRORS, Store
    from storage.store import StorageUnavailable

    try:
        store = Store(settings.database)
    except StorageUnavailable as error:
        print(f"finetune-bot: {error}", file=sys.stderr)
        return None
    try:
        store.check_writable()
    except DB_ERRORS as error:
        print(f"finetune-bot: the database at {store.where} cannot be written: {error}", file=sys.stderr)
        return None
    finally:
        store.close()
    return build(settings)


class _Stop(Exception):
    """A signal arrived while the bot was still starting."""


def wait_for_stop_signal(started: Callable[[], None] = lambda: None) -> str:
    """Block until SIGTERM or SIGINT and return its name, whichever of the process's threads the kernel hands it to.

    `signal.pause()` waits for a signal to *this* thread: with Bolt's socket threads, the scheduler and the sender
    running, the kernel may deliver SIGTERM to one of those, and the main thread sleeps on (CI saw a `socket` process
    killed 15 s after its SIGTERM). Python's C-level handler writes each signal's number to the wakeup fd on whatever
    thread took it, so reading that fd wakes at once and says which signal it was, with no race against the moment
    Python runs its own handler. `started` runs once the handlers are in place: a signal during it cuts it short (a
    start that hangs, Slack unreachable, still ends at Ctrl-C) and is not lost."""
    import select
    import signal
    import socket

    stopping = {signal.SIGTERM.value, signal.SIGINT.value}
    starting = True

    def on_signal(signum, frame):  # noqa: ANN001 - signal's signature
        if starting:
            raise _Stop

    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    old_fd = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
    old_handlers = {sig: signal.signal(sig, on_signal) for sig in stopping}
    try:
        try:
            started()
        except _Stop:
            pass
        starting = False
        while True:
            select.select([wake_read], [], [])
            try:
                arrived = wake_read.recv(64)
            except BlockingIOError:
                continue
            for signum in arrived:
                if signum in stopping:
                    return signal.Signals(signum).name
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        wake_read.close()
        wake_write.close()


def _socket(bot) -> int:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    handler = SocketModeHandler(bot.app, bot.settings.slack_app_token)

    def connect() -> None:
        from bot.app import set_aside_start_up

        bot.start_background()
        set_aside_start_up()
        handler.connect()
        print(f"finetune-bot connected over Socket Mode (provider: {bot.settings.provider_name})", flush=True)

    try:
        log.info("received %s; stopping", wait_for_stop_signal(connect))
    finally:
        handler.close()
        bot.stop()
    return 0
