"""HTTP mode: one WSGI app (Slack's endpoint, the health check, OpenAI webhooks) served by waitress."""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable

from slack_bolt.request import BoltRequest
from slack_sdk.signature import SignatureVerifier
from waitress.adjustments import Adjustments
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from bot.app import Bot

log = logging.getLogger(__name__)

MAX_BODY = 1_000_000  # Slack's payloads are a few KB; anything near this is not from Slack
SERVER_THREADS = 32
# Connections are cheap (one socket each in poll()); threads are not, and waitress only hands a request to a thread
# once it has fully arrived. So: many connections, a short idle timeout, and a deadline for a request to arrive
# whole, so that slow or idle clients can hold neither the threads nor the connection slots that Slack needs.
CONNECTION_LIMIT = 1000
IDLE_TIMEOUT = 10  # seconds a keep-alive connection may sit with no request (waitress's default is 120)
REQUEST_DEADLINE = 10.0  # seconds from a request's first byte to its last
# waitress takes one connection from the listening socket's backlog per turn of its loop, and each turn waits for
# the interpreter after its poll(): under load a burst's connections waited in the backlog for most of their ack
# time. Each turn now takes all that are waiting, up to this many.
ACCEPT_AT_ONCE = 64


# A signature as Slack writes it, and a timestamp as Slack sends it (Unix seconds, ASCII digits). Anything else is
# refused before slack_sdk's verifier sees it: it raised on `abc`, `nan`, 5,000 digits or Arabic digits (a 500 and a
# traceback each time).
SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
REFUSALS_LOGGED_EVERY = 60.0  # seconds: refused requests are counted, and said in at most one line this often


class RefusalLog:
    """Requests refused at the door, said in one line an interval at most (a flood must not fill the disk)."""

    def __init__(self, every: float = REFUSALS_LOGGED_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self._lock = threading.Lock()
        self._count, self._since = 0, None

    def refused(self) -> None:
        with self._lock:
            now = self.clock()
            self._count += 1
            if self._since is not None and now - self._since < self.every:
                return
            count, self._count, self._since = self._count, 0, now
        log.warning("refused %d request(s) without a valid Slack signature%s", count,
                    "" if count == 1 else f" in the last {self.every:.0f}s")


def slack_signed(verifier: SignatureVerifier, body: str, headers: dict) -> bool:
    """Whether a request carries Slack's signature over this body, judged without ever raising."""
    timestamp = headers.get("x-slack-request-timestamp") or ""
    signature = headers.get("x-slack-signature") or ""
    if not TIMESTAMP.fullmatch(timestamp) or not SIGNATURE.fullmatch(signature):
        return False
    try:
        return verifier.is_valid_request(body, headers)
    except (ValueError, TypeError, OverflowError, UnicodeError):
        return False


def make_wsgi(bot: Bot) -> Callable:
    app = bot.app
    webhooks = bot.services.webhook_routes  # path -> receiver, for each provider that sends verifiable webhooks

    verifier = SignatureVerifier(bot.settings.slack_signing_secret or "")
    refusals = RefusalLog()

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/healthz" and method in {"GET", "HEAD"}:
            healthy, reason = bot.health()
            return _answer(start_response, 200 if healthy else 503,
                           {"ok": healthy, "reason": reason, "cycles": dict(bot.heartbeat.runs)})
        if path != "/slack/events" and path not in webhooks:
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
        if path in webhooks:
            answer = webhooks[path].handle(body, headers)
            return _answer(start_response, answer.status, {"result": answer.text})
        text = body.decode("utf-8", "replace")
        # Checked before anything reads the body: an unsigned request, well-formed or not, is a 401 and no more.
        if not slack_signed(verifier, text, headers):
            refusals.refused()
            return _answer(start_response, 401, {"error": "invalid request signature"})
        try:
            response = app.dispatch(BoltRequest(body=text, query=environ.get("QUERY_STRING", ""), headers=headers))
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("a signed request from Slack could not be read")
            return _answer(start_response, 400, {"error": "unreadable request"})
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


class HardenedServer(TcpWSGIServer):
    """waitress, with a deadline for each request to arrive whole, run and stopped from one thread."""

    request_deadline = REQUEST_DEADLINE

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._arriving: dict[int, tuple[object, float]] = {}  # channel -> (its partial request, first seen)
        self._stop = threading.Event()

    def handle_accept(self) -> None:
        """Every connection waiting (up to ACCEPT_AT_ONCE, and never past the connection limit), not just one."""
        for _ in range(ACCEPT_AT_ONCE):
            open_now = len(self._map)
            if open_now >= self.adj.connection_limit:
                return  # the limit, as readable() keeps it: the rest wait in the backlog
            super().handle_accept()
            if len(self._map) == open_now:
                return  # none left waiting (or one that failed: the next turn tries again)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle keep-alive connections
        for channel_id, channel in list(self.active_channels.items()):
            partial = getattr(channel, "request", None)
            if partial is None:
                self._arriving.pop(channel_id, None)
                continue
            seen, since = self._arriving.get(channel_id, (None, now))
            if seen is not partial:
                self._arriving[channel_id] = (partial, now)
            elif now - since > self.request_deadline:
                log.info("closing a connection whose request took over %.0fs to arrive", self.request_deadline)
                channel.will_close = True
        for gone in set(self._arriving) - set(self.active_channels):
            del self._arriving[gone]

    def serve_until_stopped(self) -> None:
        """Serve until stop(); then close every socket and the worker threads from this same thread."""
        try:
            while not self._stop.is_set():
                self.asyncore.loop(timeout=self.adj.asyncore_loop_timeout, map=self._map,
                                   use_poll=self.adj.asyncore_use_poll, count=1)
        finally:
            self.task_dispatcher.shutdown()
            self.asyncore.close_all(self._map)

    def stop(self) -> None:
        """Ask the serving thread to finish; safe from any thread or a signal handler."""
        self._stop.set()
        try:
            self.pull_trigger()
        except OSError:
            pass


def make_server(wsgi: Callable, *, host: str, port: int, threads: int = SERVER_THREADS,
                request_deadline: float = REQUEST_DEADLINE) -> HardenedServer:
    adj = Adjustments(host=host, port=port, threads=threads, connection_limit=CONNECTION_LIMIT,
                      channel_timeout=IDLE_TIMEOUT, cleanup_interval=1, asyncore_use_poll=True,
                      max_request_body_size=MAX_BODY, ident="finetune-bot", clear_untrusted_proxy_headers=True)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    server = HardenedServer(wsgi, map={}, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])
    server.request_deadline = request_deadline
    return server


def serve(bot: Bot, *, host: str = "0.0.0.0", port: int | None = None,
          ready: Callable[[int], None] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then stop taking requests, finish deliveries and exit 0."""
    server = make_server(make_wsgi(bot), host=host, port=bot.settings.port if port is None else port)
    stopping = threading.Event()

    def on_signal(signum, frame):  # noqa: ANN001 - signal's signature
        if not stopping.is_set():
            stopping.set()
            log.info("received %s; stopping", signal.Signals(signum).name)
            server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bot.start_background()
    actual_port = server.effective_port
    # Always said, whatever LOG_LEVEL: it is how a person (and a supervisor) knows the bot is up, and where.
    print(f"finetune-bot serving on {host}:{actual_port} (provider: {bot.settings.provider_name})", flush=True)
    if ready:
        ready(actual_port)
    try:
        server.serve_until_stopped()
    finally:
        bot.stop()
    return 0
