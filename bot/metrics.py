"""Prometheus metrics, served on METRICS_PORT (a listener of its own: the Slack-facing port never serves them).

Every metric is declared once, below. Code records with `metrics.inc`, `metrics.observe` and `metrics.gauge`: until
`serve()` is called (METRICS_PORT set) those are no-ops and prometheus_client is never imported. Labels are bounded
by construction: provider names, Slack method names, outcomes and kinds from the code, never a job, channel or user
id, and never text a person or a provider wrote. What the database holds (the outbox's backlog, followed jobs, holds)
is read at each scrape through `snapshot`, a function the composition root gives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

PREFIX = "finetune_bot_"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class Declared:
    kind: str  # counter, histogram or gauge
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS


# What the bot records as it works (names without PREFIX; counters without their _total, which the library adds).
RECORDED = {
    "provider_requests": Declared("counter", "Calls to a provider's API, by provider and outcome (ok; retried: an "
                                  "attempt that failed and was tried again; refused: the provider said no; failed: "
                                  "it could not be reached or kept failing; unreadable: an answer that made no sense)",
                                  ("provider", "outcome")),
    "provider_request_seconds": Declared("histogram", "How long a call to a provider's API took, retries included",
                                         ("provider",)),
    "slack_calls": Declared("counter", "Calls to Slack's Web API, by method and outcome (ok, ratelimited, failed, "
                            "refused)", ("method", "outcome")),
    "ack_seconds": Declared("histogram", "From a Slack request's arrival to its answer (the ack), by kind (command, "
                            "action, form, event, other)", ("kind",)),
    "poll_cycle_seconds": Declared("histogram", "How long a poll cycle took (this replica's, when it held the turn)",
                                   buckets=CYCLE_BUCKETS),
    "poll_last_success_timestamp_seconds": Declared("gauge", "When this replica last finished a poll cycle (Unix "
                                                    "time)"),
    "announcements_delivered": Declared("counter", "Posts and edits delivered to Slack, by kind (announcement, "
                                        "card, card_update, progress, watchdog, …)", ("kind",)),
    "watchdog_findings": Declared("counter", "What the loss watchdog found, by kind", ("kind",)),
    "charts_skipped": Declared("counter", "Loss charts after successes not drawn: too many were already waiting to "
                               "be"),
    "database_errors": Declared("counter", "Times the database could not be used, by where (a scheduled task, or "
                                "request)", ("where",)),
}

# Read from the database at each scrape (what `snapshot` returns, by these names).
SCRAPED = {
    "outbox_pending": Declared("gauge", "Posts owed to Slack and not yet delivered"),
    "outbox_oldest_age_seconds": Declared("gauge", "Age of the oldest post owed to Slack (0 when none is)"),
    "jobs_followed": Declared("gauge", "Jobs followed and not yet ended, by provider and state", ("provider", "state")),
    "holds_waiting": Declared("gauge", "Starts held for a confirmation or an approval"),
    "poll_turn_held": Declared("gauge", "1 while this replica holds the poll turn (runs the poll cycle), else 0"),
}


class _Off:
    """Recording while metrics are off: nothing, at the cost of a call."""

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        pass

    def observe(self, name: str, value: float, **labels: str) -> None:
        pass

    def gauge(self, name: str, value: float, **labels: str) -> None:
        pass


_current: _Off = _Off()
_lock = threading.Lock()


def inc(name: str, amount: float = 1.0, **labels: str) -> None:
    _current.inc(name, amount, **labels)


def observe(name: str, value: float, **labels: str) -> None:
    _current.observe(name, value, **labels)


def gauge(name: str, value: float, **labels: str) -> None:
    _current.gauge(name, value, **labels)


class Exporter(_Off):
    """The metrics of one bot, in a registry of its own, served over HTTP until `stop()`."""

    def __init__(self, snapshot: Callable[[], Mapping[str, object]]) -> None:
        import prometheus_client as prom

        self.registry = prom.CollectorRegistry(auto_describe=True)
        kinds = {"counter": prom.Counter, "gauge": prom.Gauge, "histogram": prom.Histogram}
        self._metrics = {}
        for name, declared in RECORDED.items():
            extra = {"buckets": declared.buckets} if declared.kind == "histogram" else {}
            self._metrics[name] = kinds[declared.kind](PREFIX + name, declared.help, declared.labels,
                                                       registry=self.registry, **extra)
        self.registry.register(_Scraped(snapshot))
        self._server = self._thread = None
        self.port: int | None = None

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        metric = self._metrics[name]
        (metric.labels(**labels) if labels else metric).inc(amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        metric = self._metrics[name]
        (metric.labels(**labels) if labels else metric).observe(value)

    def gauge(self, name: str, value: float, **labels: str) -> None:
        metric = self._metrics[name]
        (metric.labels(**labels) if labels else metric).set(value)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def start(self, host: str, port: int) -> Exporter:
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Scraped:
    """A collector of what the database says at scrape time."""

    def __init__(self, snapshot: Callable[[], Mapping[str, object]]) -> None:
        self.snapshot = snapshot

    def describe(self):  # noqa: ANN201 - prometheus_client's collector protocol
        return []

    def collect(self):  # noqa: ANN201
        from prometheus_client.core import GaugeMetricFamily

        try:
            values = self.snapshot()
        except Exception as error:  # noqa: BLE001 - a scrape must answer; what failed is said, and counted
            log.warning("metrics: the database could not be read for a scrape (%s)", type(error).__name__)
            inc("database_errors", where="metrics")
            return
        for name, declared in SCRAPED.items():
            family = GaugeMetricFamily(PREFIX + name, declared.help, labels=declared.labels)
            value = values.get(name)
            if isinstance(value, Mapping):  # labelled: {(label values): value}
                for labels, number in value.items():
                    family.add_metric(list(labels), float(number))
            elif value is not None:
                family.add_metric([], float(value))
            yield family


def serve(snapshot: Callable[[], Mapping[str, object]], *, host: str, port: int) -> Exporter:
    """Start recording and serving (imports prometheus_client); what the bot records from now on is exported."""
    global _current
    exporter = Exporter(snapshot).start(host, port)
    with _lock:
        _current = exporter
    return exporter


def stop(exporter: Exporter) -> None:
    """Stop serving; recording goes back to nothing (unless another bot's exporter took over meanwhile)."""
    global _current
    exporter.stop()
    with _lock:
        if _current is exporter:
            _current = _Off()
