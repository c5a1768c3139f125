"""A recording loopback HTTP server with faults on demand: the base of both stand-ins."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    def json(self) -> dict:
        return json.loads(self.body or b"{}")

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode("utf-8")).items()}

    def params(self) -> dict:
        """The request's arguments, whether sent as JSON or as a form (slack_sdk sends both)."""
        if self.headers.get("content-type", "").startswith("application/json"):
            return self.json()
        return self.form()


@dataclass
class Fault:
    """What to do instead of answering normally, for the next `times` requests whose path contains `match`."""

    # "status": answer `status`; "drop": close before working; "drop_after": work, then close; "delay"; "garbage": a 200
    # whose body is not JSON; "trickle": the real answer, a byte every `delay` seconds
    kind: str
    match: str = ""
    times: int = 1
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    body: dict | None = None
    method: str | None = None  # only requests with this method
    exact: bool = False  # `match` is the whole path, not a part of it
    skip: int = 0  # let this many matching requests through first (the second page of a listing, say)
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    def release(self) -> None:
        """End a "delay" now: a test that needs a request held for as long as it looks holds it with a long delay and
        releases it when done, rather than racing a short delay against a slow machine."""
        self.released.set()


Answer = tuple[int, dict[str, str], bytes]


def json_answer(status: int, payload: object, headers: dict[str, str] | None = None) -> Answer:
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(payload).encode()


class StandInServer:
    """Serves `answer()` on 127.0.0.1 at a free port, recording every request and injecting faults on demand."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.faults: list[Fault] = []
        self.faults_injected = 0
        self.latency = 0.0  # seconds added to every answer
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- to be provided by each stand-in ---------------------------------------------------------

    def answer(self, request: Received) -> Answer:
        raise NotImplementedError

    def fault_answer(self, fault: Fault) -> Answer:
        headers = {} if fault.retry_after is None else {"retry-after": str(fault.retry_after)}
        return json_answer(fault.status, fault.body or {"error": "injected fault"}, headers)

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> StandInServer:
        handler = _make_handler(self)
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the stand-in first"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- faults and records ------------------------------------------------------------------------

    def fail(self, kind: str = "status", **kwargs: object) -> Fault:
        fault = Fault(kind=kind, **kwargs)  # type: ignore[arg-type]
        with self.lock:
            self.faults.append(fault)
        return fault

    def _take_fault(self, path: str, method: str = "") -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method not in (None, method):
                    continue
                if (path == fault.match) if fault.exact else (fault.match in path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    self.faults_injected += 1
                    return fault
        return None

    def requests_to(self, path_part: str, method: str | None = None) -> list[Received]:
        with self.lock:
            return [
                r for r in self.received if path_part in r.path and (method is None or r.method == method)
            ]


class PacedStandIn(StandInServer):
    """A stand-in whose jobs move on by themselves every `pace` seconds (or only when a test says, with no pace)."""

    serves = ""  # the provider each stand-in stands in for

    def __init__(self, *, pace: float | None = None, clock=time.time) -> None:
        super().__init__()
        self.pace = pace
        self.clock = clock
        self.jobs: dict[str, dict] = {}
        self.files: dict[str, dict] = {}
        self._stop_ticker = threading.Event()

    def start(self) -> PacedStandIn:
        super().start()
        if self.pace is not None:
            threading.Thread(target=self._tick, name=f"{type(self).__name__}-ticker", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop_ticker.set()
        super().stop()

    def _tick(self) -> None:
        while not self._stop_ticker.wait(min(0.1, self.pace or 0.1)):
            with self.lock:
                for job in list(self.jobs.values()):
                    self._advance(job)

    # -- state, for tests and the shell --------------------------------------------------------------

    default_model = ""
    sample_file = "file-sample"

    def add_job(self, *, model: str | None = None, status: str | None = None, **fields) -> dict:
        """Make a job directly, as if started elsewhere (the provider's dashboard, a script); returned as the bot
        names a job (the API's fields, and the provider this stands in for: `serves`)."""
        with self.lock:
            job = self._new_job({"model": model or self.default_model, "training_file": self.sample_file})
            if status:
                self._enter(job, status, **fields)
            else:
                job.update(fields)
            return {**self._public(job), "provider": self.serves}

    def set_status(self, job_id: str, status: str, **fields) -> dict:
        """Move a job to `status` as the real service would, with its events (and model name, and webhook)."""
        with self.lock:
            job = self.jobs[job_id]
            self._enter(job, status, **fields)
            return self._public(job)

    def _file(self, file_id: str, *, content: bool) -> Answer:
        """A stored file's record (without its private fields), or its bytes; the provider's own 404 if unknown."""
        file = self.files.get(file_id)
        if file is None:
            return self._no_such_file(file_id)
        if content:
            return 200, {"content-type": "application/octet-stream"}, file["_content"]
        return json_answer(200, {k: v for k, v in file.items() if not k.startswith("_")})

    def train(self, job_id: str, upto: int, *, total: int | None = None) -> None:
        """Report a running job's training up to step `upto` (of `total`), as the provider's metrics."""
        with self.lock:
            job = self.jobs[job_id]
            if total is not None:
                job["_total_steps"] = total
            self._train(job, upto)

    def report(self, job_id: str, step: int, train_loss: float | None, valid_loss: float | None = None) -> None:
        """Report one training step with the losses given (NaN and infinities too), as the provider's metrics:
        a scripted run for the watchdog."""
        with self.lock:
            self._report(self.jobs[job_id], step, train_loss, valid_loss)

    def _report(self, job: dict, step: int, train_loss: float | None, valid_loss: float | None) -> None:
        raise NotImplementedError

    def job(self, job_id: str) -> dict:
        with self.lock:
            self._advance(self.jobs[job_id])
            return self._public(self.jobs[job_id])

    # -- to be provided by each provider's stand-in ----------------------------------------------------

    def _new_job(self, body: dict) -> dict:
        raise NotImplementedError

    def _enter(self, job: dict, status: str, **fields) -> None:
        raise NotImplementedError

    def _train(self, job: dict, upto: int) -> None:
        raise NotImplementedError

    def _no_such_file(self, file_id: str) -> Answer:
        raise NotImplementedError

    def _public(self, job: dict) -> dict:
        """A job as the API shows it."""
        raise NotImplementedError

    def _advance(self, job: dict) -> None:
        """Move a paced job on by as many stages as its time allows."""
        raise NotImplementedError


class _QuietServer(ThreadingHTTPServer):
    # socketserver's default backlog is 5: fifty clients at once (a burst of tries) had connections refused by the
    # stand-in itself, which a provider's front end never does.
    request_queue_size = 128
    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - the stdlib's signature
        """A client that hung up (a timeout, a test's dropped connection) is not worth a traceback."""


def _make_handler(server: StandInServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # An answer's headers and body are two writes: with Nagle's algorithm on, the body waits for the client's
        # delayed ACK of the headers (40 ms a request on Linux, every request of a kept-alive connection).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = Received(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            with server.lock:
                server.received.append(request)
            fault = server._take_fault(parts.path, self.command)
            if server.latency:
                time.sleep(server.latency)
            if fault is not None and fault.kind == "delay":
                fault.released.wait(fault.delay)
                fault = None
            if fault is not None and fault.kind == "drop":
                self.close_connection = True
                return
            if fault is not None and fault.kind == "status":
                self._send(server.fault_answer(fault))
                return
            if fault is not None and fault.kind == "garbage":
                # A 200 that is not what it claims: a proxy's error page, or an answer cut off mid-way.
                self._send((200, {"content-type": "application/json"}, b"<html><body>502 Bad Gateway</body>"))
                return
            if fault is not None and fault.kind == "trickle":
                self._trickle(server.answer(request), fault)
                return
            answer = server.answer(request)
            if fault is not None and fault.kind == "drop_after":
                self.close_connection = True
                return
            self._send(answer)

        def _send(self, answer: Answer) -> None:
            self.wfile.write(self._head(answer))

        def _head(self, answer: Answer) -> bytes:
            """Send an answer's status and headers; its body, for the caller to send."""
            status, headers, payload = answer
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            return payload

        def _trickle(self, answer: Answer, fault: Fault) -> None:
            """The answer's headers at once, then its body a byte every `fault.delay` seconds (until released)."""
            payload = self._head(answer)
            try:
                for byte in payload:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if fault.released.wait(fault.delay):
                        break
            except OSError:
                pass
            self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    return Handler

