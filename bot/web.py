"""HTTP mode: one WSGI app (Slack's endpoint, the health check, OpenAI webhooks) served by waitress."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterable

from slack_bolt.request import BoltRequest

from bot.app import Bot

log = logging.getLogger(__name__)

MAX_BODY = 1_000_000  # Slack's payloads are a few KB; anything near this is not from Slack
SERVER_THREADS = 32


def make_wsgi(bot: Bot) -> Callable:
    app = bot.app
    webhooks_enabled = bool(bot.settings.openai_webhook_secret)

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/healthz" and method in {"GET", "HEAD"}:
            return _answer(start_response, 200, {"ok": True})
        if path not in {"/slack/events", "/openai/webhook"} or (path == "/openai/webhook" and not webhooks_enabled):
            return _answer(start_response, 404, {"error": "not found"})
        if method != "POST":
            return _answer(start_response, 405, {"error": "method not allowed"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            return _answer(start_response, 413, {"error": "payload too large"})
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        if path == "/openai/webhook":
            answer = bot.services.webhooks.handle(body, headers)
            return _answer(start_response, answer.status, {"result": answer.text})
        response = app.dispatch(BoltRequest(body=body.decode("utf-8", "replace"),
                                            query=environ.get("QUERY_STRING", ""), headers=headers))
        out = response.body.encode("utf-8") if isinstance(response.body, str) else response.body
        response_headers = [(name, value) for name, values in response.headers.items() for value in values
                            if name.lower() != "content-length"]
        start_response(_status(response.status), response_headers + [("Content-Length", str(len(out)))])
        return [out]

    return wsgi


def _status(code: int) -> str:
    reasons = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
               413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
    return f"{code} {reasons.get(code, 'Status')}"


def _answer(start_response: Callable, status: int, payload: dict) -> list[bytes]:
    out = json.dumps(payload).encode()
    start_response(_status(status), [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def serve(bot: Bot, *, host: str = "0.0.0.0", port: int | None = None,
          ready: Callable[[int], None] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then stop taking requests, finish deliveries and exit 0."""
    from waitress.server import create_server

    server = create_server(make_wsgi(bot), host=host, port=bot.settings.port if port is None else port,
                           threads=SERVER_THREADS, max_request_body_size=MAX_BODY, ident="finetune-bot",
                           clear_untrusted_proxy_headers=True)
    stopping = threading.Event()

    def on_signal(signum, frame):  # noqa: ANN001 - signal's signature
        if not stopping.is_set():
            stopping.set()
            log.info("received %s; stopping", signal.Signals(signum).name)
            server.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bot.start_background()
    actual_port = server.effective_port
    # Always said, whatever LOG_LEVEL: it is how a person (and a supervisor) knows the bot is up, and where.
    print(f"finetune-bot serving on {host}:{actual_port} (provider: {bot.settings.provider_name})", flush=True)
    if ready:
        ready(actual_port)
    try:
        server.run()
    except OSError:
        if not stopping.is_set():
            raise
    finally:
        bot.stop()
    return 0
