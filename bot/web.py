"""HTTP mode: one WSGI app (Slack's endpoint, the health check, OpenAI webhooks) served by waitress."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

from slack_bolt.request import BoltRequest
from slack_sdk.signature import SignatureVerifier
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error

from bot import metrics
from bot.app import Bot, set_aside_start_up
from bot.installs import ADMITTED, NOT_INSTALLED, InstallBusy, InstallRefused, Installs
from bot.logs import REQUEST
from storage import DB_ERRORS

log = logging.getLogger(__name__)

# What one request may carry. Slack's payloads are usually a few KB, but a click in one of the bot's own modals
# carries the whole view: the largest the bot can build (a data report of 100 blocks of non-ASCII text) form-encodes
# to 0.99 MB (tests/test_front_door.py measures it), so this is the bound.
MAX_BODY = 1_000_000
# What all requests may hold at once while they arrive and wait for a worker: past it a new connection's bytes are
# refused and it is closed (800 connections each sending 1 MB once took the process from 91 to 526 MB).
BUFFER_BUDGET = 48_000_000
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

    def refused(self, why: str = "without a valid Slack signature") -> None:
        with self._lock:
            now = self.clock()
            self._count += 1
            if self._since is not None and now - self._since < self.every:
                return
            count, self._count, self._since = self._count, 0, now
        log.warning("refused %d request(s) %s%s", count, why, "" if count == 1 else f" in the last {self.every:.0f}s")


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
    own_webhooks = bot.services.workspace_webhooks  # (OAuth mode) route -> each workspace's own, beneath it

    verifier = SignatureVerifier(bot.settings.slack_signing_secret or "")
    refusals = RefusalLog()

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        arrived = time.monotonic()
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/healthz" and method in {"GET", "HEAD"}:
            healthy, reason = bot.health()
            return _answer(start_response, 200 if healthy else 503,
                           {"ok": healthy, "reason": reason, "cycles": dict(bot.heartbeat.runs)})
        installs = bot.services.installs
        if installs is not None and path in {"/slack/install", "/slack/oauth_redirect"}:
            if method not in {"GET", "HEAD"}:
                return _answer(start_response, 405, {"error": "method not allowed"})
            return _install(installs, path, environ.get("QUERY_STRING", ""), start_response)
        route, _, segment = path.rpartition("/")
        own = own_webhooks.get(route)
        if path != "/slack/events" and path not in webhooks and own is None:
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
        if path in webhooks or own is not None:
            answer = webhooks[path].handle(body, headers) if path in webhooks else own.handle(segment, body, headers)
            return _answer(start_response, answer.status, {"result": answer.text})
        text = body.decode("utf-8", "replace")
        # Checked before anything reads the body: an unsigned request, well-formed or not, is a 401 and no more.
        if not slack_signed(verifier, text, headers):
            refusals.refused()
            return _answer(start_response, 401, {"error": "invalid request signature"})
        try:
            request = BoltRequest(body=text, query=environ.get("QUERY_STRING", ""), headers=headers)
            # (in a context of its own: the workspace a request concerns never carries over to the next one)
            context = contextvars.Context()
            context.run(REQUEST.set, f"R{secrets.token_hex(5)}")  # (what its log lines, and its work's, carry)
            if installs is not None:
                admitted = installs.admit(request.body, request.context.enterprise_id, request.context.team_id)
                if admitted is False:  # said here, at once: Bolt would post it to the response_url before the ack
                    return _answer(start_response, 200, {"response_type": "ephemeral", "text": NOT_INSTALLED})
                if admitted is not True:
                    context.run(ADMITTED.set, admitted)
            response = context.run(app.dispatch, request)
            metrics.observe("ack_seconds", time.monotonic() - arrived, kind=_kind_of(request.body))
        except DB_ERRORS:
            log.warning("a request could not be admitted: the database is away")
            return _answer(start_response, 503, {"error": "the database is away; try again"})
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("a signed request from Slack could not be read")
            return _answer(start_response, 400, {"error": "unreadable request"})
        out = response.body.encode("utf-8") if isinstance(response.body, str) else response.body
        response_headers = [(name, value) for name, values in response.headers.items() for value in values
                            if name.lower() != "content-length"]
        start_response(_status(response.status), response_headers + [("Content-Length", str(len(out)))])
        return [out]

    return wsgi


def _kind_of(body: dict) -> str:
    """What a Slack request is, as the ack metric labels it (a bounded set)."""
    if "command" in body:
        return "command"
    kind = body.get("type")
    if kind in {"block_actions", "block_suggestion", "shortcut", "message_action"}:
        return "action"
    if kind in {"view_submission", "view_closed"}:
        return "form"
    return "event" if kind == "event_callback" else "other"


def _install(installs: Installs, path: str, query: str, start_response: Callable) -> list[bytes]:
    """OAuth mode's two pages: /slack/install sends the browser to Slack's consent page with a one-time state;
    /slack/oauth_redirect is where Slack sends it back, with the code to exchange for the workspace's tokens."""
    try:
        if path == "/slack/install":
            location = installs.begin()
            start_response(_status(302), [("Location", location), ("Cache-Control", "no-store"),
                                          ("Content-Length", "0")])
            return [b""]
        params = {k: v[0] for k, v in parse_qs(query, max_num_fields=10).items()}
        found = installs.finish(code=params.get("code"), state=params.get("state"), error=params.get("error"))
        page, status = installs.pages.render_success_page(app_id=installs.client_id, team_id=found.team_id,
                                                          is_enterprise_install=found.team_id is None), 200
    except InstallRefused as refused:
        status = 503 if isinstance(refused, InstallBusy) else 400
        page = installs.pages.render_failure_page(str(refused))
    except DB_ERRORS as error:
        log.warning("an install could not be kept: the database is away (%s)", error)
        page, status = installs.pages.render_failure_page("the bot's database is away; try again in a minute"), 503
    except ValueError:
        page, status = installs.pages.render_failure_page("an unreadable address"), 400
    out = page.encode("utf-8")
    start_response(_status(status), [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                                     ("Content-Length", str(len(out)))])
    return [out]


def _status(code: int) -> str:
    reasons = {200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
               405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error",
               503: "Service Unavailable"}
    return f"{code} {reasons.get(code, 'Status')}"


def _answer(start_response: Callable, status: int, payload: dict) -> list[bytes]:
    out = json.dumps(payload).encode()
    start_response(_status(status), [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


class Unauthorized(Error):
    code = 401
    reason = "Unauthorized"


class Busy(Error):
    code = 503
    reason = "Service Unavailable"


class SignedOrRefused(HTTPRequestParser):
    """Judged as soon as its headers are in, before any of its body is read or held: a request to Slack's endpoint
    whose headers cannot carry Slack's signature is a 401; one whose body would take the requests held at once past
    BUFFER_BUDGET is a 503 (Slack retries it); else its body's size is reserved until it has been served."""

    judged = False
    refused_early = False

    def __init__(self, adj: Adjustments, admit: Callable[[int], bool] = lambda size: True) -> None:
        super().__init__(adj)
        self.admit = admit

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if self.headers_finished and not self.completed and not self.judged:
            self.judged = True
            if self.path == "/slack/events" and not (
                    TIMESTAMP.fullmatch(self.headers.get("X_SLACK_REQUEST_TIMESTAMP", ""))
                    and SIGNATURE.fullmatch(self.headers.get("X_SLACK_SIGNATURE", ""))):
                self.error = Unauthorized("invalid request signature")
            elif not self.admit(self.content_length if not self.chunked else self.adj.max_request_body_size):
                self.error = Busy("too many requests under way; try again")
            if self.error:
                self.completed = self.refused_early = True
                return len(data)  # (the rest of this piece is the body: dropped unread)
        return consumed


class BoundedChannel(HTTPChannel):
    """A connection whose requests' bodies are reserved against the server's BUFFER_BUDGET from their headers until
    they have been served; the rest of a request refused early is dropped unread."""

    held = 0
    discarding = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.parser_class = lambda adj: SignedOrRefused(adj, admit=self.admit)

    def admit(self, size: int) -> bool:
        self.settle()
        if self.server.buffered + size > self.server.buffer_budget:
            self.server.over_budget()
            return False
        self.held += size
        return True

    def received(self, data: bytes) -> bool:
        if self.discarding:
            return bool(data)
        result = super().received(data)
        if any(getattr(r, "refused_early", False) for r in self.requests):
            self.discarding = True
            self.server.refusals.refused()
        return result

    def settle(self) -> None:
        """Give back what this connection reserved once nothing of it is waiting (its requests have been served)."""
        if self.held and self.request is None and not self.requests:
            self.held = 0


class HardenedServer(TcpWSGIServer):
    """waitress, with a deadline for each request to arrive whole, run and stopped from one thread."""

    request_deadline = REQUEST_DEADLINE
    channel_class = BoundedChannel
    buffer_budget = BUFFER_BUDGET

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._arriving: dict[int, tuple[object, float]] = {}  # channel -> (its partial request, first seen)
        self._stop = threading.Event()
        self.refusals = RefusalLog()
        self._over_budget = RefusalLog()

    @property
    def buffered(self) -> int:
        """Bytes of requests held now over every open connection (a closed one holds nothing: it is not counted)."""
        return sum(channel.held for channel in list(self._map.values()) if isinstance(channel, BoundedChannel))

    def over_budget(self) -> None:
        self._over_budget.refused(f"with a 503: the requests under way already hold {self.buffered / 1e6:.0f} MB")

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
            if isinstance(channel, BoundedChannel):
                channel.settle()
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
    set_aside_start_up()
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
