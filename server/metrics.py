"""
Prometheus metrics of contract §16, multiprocess-safe under ``--workers``.

Rules:

1. Names are those of §16 prefixed ``straico_gateway_``. Labels only take values from closed
   sets (outcome, error kind, mode, machine states and events, status classes), never a model
   id or a request id, so the number of series stays bounded whatever clients send.
2. An absent value is the empty label: ``error=""`` for a request without an error, ``mode=""``
   for one that reached neither ``streaming`` nor ``falling_back``. In PromQL an empty label
   is the same as no label.
3. One process: every :class:`Metrics` has its own registry (so two gateways in one process,
   as in tests, never mix), rendered as is, with the process collector.
   Several workers (contract §15): the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before any
   worker imports prometheus_client, whose value class is chosen at import (stack-notes §7).
   Each worker then writes its own files there, and ``/metrics``, whichever worker answers it,
   sums them with a fresh ``MultiProcessCollector`` per scrape. That output has no
   ``process_*`` series (stack-notes §7).
4. ``active_streams`` is a gauge, as §16 names it. Under several workers its mode is
   ``livesum``: the sum over live workers. Hypercorn has no hook to forget a dead worker's
   file, but the gateway's own supervisor has one: it calls :func:`forget_process` for every
   worker that exits, so a crashed worker's open streams do not stay counted.
5. A request is recorded once, when it ends: :meth:`Metrics.observe_chat` from the chat route's
   ``on_finish``, :meth:`Metrics.observe_rejected` from the error path of a request refused
   before any machine existed. Only ``active_streams`` moves at the start
   (:meth:`Metrics.chat_started`). Nothing is recorded per chunk.

Meanings the contract leaves open:

- ``requests_total`` counts every ``/v1/chat/completions`` request that reached the engine,
  and every ``/v1/*`` request rejected before it (outcome ``rejected``); it is the count of
  request log lines of those requests, with the same outcome, error kind and mode.
- ``fallbacks_total`` counts streaming clients' requests whose answer was replayed from a whole
  answer (mode ``fallback``), whatever their outcome; non-streaming clients never fall back.
- ``upstream_calls_total{status_class}``: ``2xx``, ``4xx``, ... by the status of each call's
  response head; ``none`` for a call that got no head (connection failure, timeout, the client
  or a shutdown ending it first).
- ``active_streams``: streaming clients' chat requests accepted and not yet ended.
- The histograms cover requests that reached the engine, by mode; time to first byte only
  when a first byte was sent (the head of a stream, or of an answer or an error).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)

from engine.errors import GatewayError
from engine.session import Session

__all__ = [
    "MULTIPROCESS_ENV",
    "PREFIX",
    "Metrics",
    "forget_process",
    "multiprocess_directory",
    "multiprocess_enabled",
    "status_class",
    "wipe_directory",
]

PREFIX = "straico_gateway_"
#: prometheus_client's switch for multiprocess mode, read when it is imported.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: From a fast first delta to Straico's slow whole answers (seconds).
TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

CAPABILITIES = ("streams", "answers_whole", "rejects_stream")
CACHE_RESULTS = ("hit", "miss", "expired")
NO_HEAD = "none"


def multiprocess_enabled() -> bool:
    """True when prometheus_client was imported with ``PROMETHEUS_MULTIPROC_DIR`` set."""
    # Testing the value class, not the environment: a variable set after the import is ignored
    # by prometheus_client (stack-notes §7), and so it must be here.
    return values.ValueClass is not values.MutexValue


def status_class(status: int | None) -> str:
    """``2xx`` for 200..299 and so on; ``none`` when there was no response head."""
    return NO_HEAD if status is None else f"{status // 100}xx"


class Metrics:
    """The gateway's metrics in one process; see the module docstring for what each means."""

    def __init__(self, *, multiprocess_mode: bool | None = None) -> None:
        if multiprocess_mode is None:
            multiprocess_mode = multiprocess_enabled()
        self.multiprocess = multiprocess_mode
        # Rule 3: in multiprocess mode the metrics belong to no registry; the files are read.
        registry = None if self.multiprocess else CollectorRegistry()
        self.registry = registry
        if registry is not None:
            ProcessCollector(registry=registry)

        self.requests = Counter(
            PREFIX + "requests",
            "Requests by outcome (done, cancelled, rejected, errored), error kind and mode.",
            ("outcome", "error", "mode"),
            registry=registry,
        )
        self.transitions = Counter(
            PREFIX + "transitions",
            "Transitions of the request machine, from the requests' traces.",
            ("source", "event", "target"),
            registry=registry,
        )
        self.detections = Counter(
            PREFIX + "detections",
            "Capabilities learned from upstream answers (streams, answers_whole, rejects_stream).",
            ("result",),
            registry=registry,
        )
        self.capability_cache = Counter(
            PREFIX + "capability_cache",
            "Capability cache lookups by result (hit, miss, expired).",
            ("result",),
            registry=registry,
        )
        self.upstream_calls = Counter(
            PREFIX + "upstream_calls",
            "Upstream chat calls by the status class of their response head (none: no head).",
            ("status_class",),
            registry=registry,
        )
        self.fallbacks = Counter(
            PREFIX + "fallbacks",
            "Streaming clients' requests answered by replaying a whole answer.",
            registry=registry,
        )
        self.heartbeats = Counter(
            PREFIX + "heartbeats",
            "Heartbeats sent to waiting streaming clients.",
            registry=registry,
        )
        self.active_streams = Gauge(
            PREFIX + "active_streams",
            "Streaming clients' requests in progress.",
            registry=registry,
            multiprocess_mode="livesum",  # rule 4
        )
        self.time_to_first_byte = Histogram(
            PREFIX + "time_to_first_byte_seconds",
            "Time from accepting a request to its first byte sent, by mode.",
            ("mode",),
            buckets=TTFB_BUCKETS,
            registry=registry,
        )
        self.request_duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from accepting a request to its end, by mode.",
            ("mode",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # Small closed sets start at zero, so rate() and ratios work from the first scrape.
        for result in CAPABILITIES:
            self.detections.labels(result)
        for result in CACHE_RESULTS:
            self.capability_cache.labels(result)

    # --- recording ----------------------------------------------------------------------

    def chat_started(self, session: Session) -> None:
        """A chat request was accepted and its session built."""
        if session.client_stream:
            self.active_streams.inc()

    def observe_chat(self, session: Session, *, duration: float) -> None:
        """
        Record a chat request that reached the engine, once it ended.

        Args:
            session: the finished session.
            duration: seconds from accepting the request to its end.
        """
        mode = session.mode or ""
        self.requests.labels(session.outcome, session.error_kind or "", mode).inc()
        for entry in session.cursor.entries:
            self.transitions.labels(entry.source, entry.event, entry.target).inc()
        if session.learned is not None:
            self.detections.labels(session.learned).inc()
        if session.cache_result is not None:
            self.capability_cache.labels(session.cache_result).inc()
        statuses = session.upstream_statuses
        for status in statuses:
            self.upstream_calls.labels(status_class(status)).inc()
        headless = session.upstream_calls - len(statuses)
        if headless > 0:
            self.upstream_calls.labels(NO_HEAD).inc(headless)
        if session.client_stream:
            self.active_streams.dec()
            if mode == "fallback":
                self.fallbacks.inc()
        if session.heartbeats:
            self.heartbeats.inc(session.heartbeats)
        if session.first_byte_at is not None:
            ttfb = max(0.0, session.first_byte_at - session.cursor.started_at)
            self.time_to_first_byte.labels(mode).observe(ttfb)
        self.request_duration.labels(mode).observe(max(0.0, duration))

    def observe_models(self, error: GatewayError | None) -> None:
        """Record a ``/v1/models`` request: no machine, so outcome done or errored."""
        if error is None:
            self.requests.labels("done", "", "").inc()
        else:
            self.requests.labels("errored", error.kind or "", "").inc()

    def observe_rejected(self, error: GatewayError) -> None:
        """Record a ``/v1/*`` request refused before any machine existed."""
        self.requests.labels("rejected", error.kind or "", "").inc()

    # --- exposition ---------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text for ``/metrics`` and its content type."""
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()  # rule 3: a fresh one per scrape
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


# --- several workers ------------------------------------------------------------------------


@contextlib.contextmanager
def multiprocess_directory() -> Iterator[str]:
    """
    Provide ``PROMETHEUS_MULTIPROC_DIR`` to the worker processes about to be started.

    An operator's directory (the variable already set) is created if missing and emptied of
    metric files, since files of an earlier run would be added in (stack-notes §7); otherwise
    a fresh temporary directory is created, set in the environment the workers inherit, and
    removed at the end.

    Yields:
        The directory.
    """
    given = os.environ.get(MULTIPROCESS_ENV, "").strip()
    if given:
        os.makedirs(given, exist_ok=True)
        wipe_directory(given)
        yield given
        return
    created = tempfile.mkdtemp(prefix="straico-gateway-metrics-")
    os.environ[MULTIPROCESS_ENV] = created
    try:
        yield created
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(created, ignore_errors=True)


def wipe_directory(path: str) -> None:
    """Remove the metric files (``*.db``) of earlier runs from *path*."""
    for name in glob.glob(os.path.join(path, "*.db")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def forget_process(pid: int, path: str) -> None:
    """A worker exited: its ``livesum`` gauge (open streams) no longer counts (rule 4)."""
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
