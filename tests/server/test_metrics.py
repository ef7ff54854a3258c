"""
``GET /metrics`` (contract §16) of one gateway process, against the simulator over loopback.

Each test starts its own gateway, so its counters start at zero (every ``Metrics`` has its own
registry in one process). Several workers summing their metrics are tested in
``test_workers.py``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.metrics import status_class
from server.settings import Settings
from server.simulator.app import create_simulator_app
from tests.support.gateway_process import EXIT_TIMEOUT, chat_body, wait_until
from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

SIM_KEY = "sim-key"
CLIENT_KEY = "ck-metrics-7f1"
P = "straico_gateway_"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(name="simulator", scope="module")
def _simulator() -> Iterator[ServerThread]:
    with ServerThread(create_simulator_app(SIM_KEY), graceful_timeout=0.5) as server:
        yield server


@pytest.fixture(name="start_gateway")
def _start_gateway(simulator: ServerThread) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(**flags: Any) -> ServerThread:
        given: dict[str, Any] = {
            "upstream_url": simulator.url,
            "upstream_key": SIM_KEY,
            "heartbeat_interval": 10.0,
        }
        given.update(flags)
        settings = Settings.resolve(given, env={}, file=None)
        server = ServerThread(create_app(settings), graceful_timeout=0.5).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def scrape(gateway: ServerThread) -> Samples:
    """Every sample of ``/metrics`` as {(sample name, sorted labels): value}."""
    response = httpx.get(f"{gateway.url}/metrics", timeout=5)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def only(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples named *name*, by labels, leaving out those still at zero."""
    return {
        labels: value for (sample, labels), value in samples.items() if sample == name and value
    }


def chat(gateway: ServerThread, model: str, *, stream: bool, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=chat_body(model, stream=stream),
        headers=headers,
        timeout=10,
    )


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_metrics_serves_every_family_of_the_contract_without_a_key(
    start_gateway: Callable[..., ServerThread],
) -> None:
    gateway = start_gateway(client_keys=(CLIENT_KEY,))

    response = httpx.get(f"{gateway.url}/metrics", timeout=5)
    declared = {line.split()[2] for line in response.text.splitlines() if line.startswith("# TYPE")}

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert {
        P + "requests_total",
        P + "transitions_total",
        P + "detections_total",
        P + "capability_cache_total",
        P + "upstream_calls_total",
        P + "fallbacks_total",
        P + "heartbeats_total",
        P + "active_streams",
        P + "time_to_first_byte_seconds",
        P + "request_duration_seconds",
    } <= declared


def test_metrics_requests_total_counts_by_outcome_error_and_mode(
    start_gateway: Callable[..., ServerThread],
) -> None:
    gateway = start_gateway(client_keys=(CLIENT_KEY,))
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    statuses = [
        chat(gateway, "sim/stream", stream=True, **auth).status_code,
        chat(gateway, "sim/json", stream=False, **auth).status_code,
        chat(gateway, "sim/reject", stream=True, **auth).status_code,
        chat(gateway, "sim/json:status=503", stream=False, **auth).status_code,
        chat(gateway, "sim/json", stream=False).status_code,  # no client key
        httpx.get(f"{gateway.url}/v1/nowhere", headers=auth, timeout=5).status_code,
    ]

    requests = only(scrape(gateway), P + "requests_total")

    assert statuses == [200, 200, 200, 503, 401, 404]
    assert requests == {
        (("error", ""), ("mode", "stream"), ("outcome", "done")): 1,
        (("error", ""), ("mode", "json"), ("outcome", "done")): 1,
        (("error", ""), ("mode", "fallback"), ("outcome", "done")): 1,
        (("error", "upstream_unavailable"), ("mode", "json"), ("outcome", "errored")): 1,
        (("error", "unauthorized"), ("mode", ""), ("outcome", "rejected")): 1,
        (("error", "not_found"), ("mode", ""), ("outcome", "rejected")): 1,
    }


def test_metrics_follow_the_traces_detections_and_cache_of_a_rejecting_model(
    start_gateway: Callable[..., ServerThread],
) -> None:
    """The first request learns rejects_stream (D4, two calls), the second hits the cache."""
    gateway = start_gateway()
    chat(gateway, "sim/reject", stream=True)
    chat(gateway, "sim/reject", stream=True)

    samples = scrape(gateway)

    assert only(samples, P + "transitions_total") == {
        (("event", "stream_rejected"), ("source", "detecting"), ("target", "falling_back")): 1,
        (("event", "stream_declined"), ("source", "detecting"), ("target", "falling_back")): 1,
        (("event", "answer_received"), ("source", "falling_back"), ("target", "draining")): 2,
        (("event", "drained"), ("source", "draining"), ("target", "done")): 2,
    }
    assert only(samples, P + "detections_total") == {(("result", "rejects_stream"),): 1}
    assert only(samples, P + "capability_cache_total") == {
        (("result", "miss"),): 1,
        (("result", "hit"),): 1,
    }
    assert only(samples, P + "upstream_calls_total") == {
        (("status_class", "4xx"),): 1,
        (("status_class", "2xx"),): 2,
    }
    assert samples[(P + "fallbacks_total", ())] == 2


def test_metrics_detections_of_streaming_and_whole_answers(
    start_gateway: Callable[..., ServerThread],
) -> None:
    gateway = start_gateway()
    chat(gateway, "sim/stream", stream=True)
    chat(gateway, "sim/json", stream=True)
    chat(gateway, "sim/json", stream=False)  # a non-streaming client teaches nothing (D1)

    samples = scrape(gateway)

    assert only(samples, P + "detections_total") == {
        (("result", "streams"),): 1,
        (("result", "answers_whole"),): 1,
    }
    assert only(samples, P + "capability_cache_total") == {(("result", "miss"),): 2}
    assert samples[(P + "fallbacks_total", ())] == 1  # sim/json to a streaming client


def test_metrics_an_upstream_call_without_a_head_counts_as_none(
    start_gateway: Callable[..., ServerThread],
) -> None:
    gateway = start_gateway(upstream_url=closed_port_url(), connect_timeout=2.0)

    status = chat(gateway, "sim/json", stream=False).status_code
    samples = scrape(gateway)

    assert status == 502
    assert only(samples, P + "upstream_calls_total") == {(("status_class", "none"),): 1}
    assert only(samples, P + "requests_total") == {
        (("error", "upstream_unreachable"), ("mode", "json"), ("outcome", "errored")): 1,
    }


def test_metrics_heartbeats_total_counts_the_heartbeats_sent(
    start_gateway: Callable[..., ServerThread],
) -> None:
    gateway = start_gateway(heartbeat_interval=0.1)

    response = chat(gateway, "sim/json:delay=600", stream=True)
    report = check_stream(response.content)
    heartbeats = scrape(gateway)[(P + "heartbeats_total", ())]

    assert report.comments >= 1  # the first tick commits; later ticks are heartbeats
    assert heartbeats == report.comments


def test_metrics_histograms_observe_each_request_by_mode(
    start_gateway: Callable[..., ServerThread],
) -> None:
    gateway = start_gateway()
    chat(gateway, "sim/stream", stream=True)
    chat(gateway, "sim/json", stream=False)
    chat(gateway, "sim/json:status=503", stream=False)  # its 503 is its first byte
    httpx.get(f"{gateway.url}/v1/nowhere", timeout=5)  # rejected: no histogram

    samples = scrape(gateway)

    assert only(samples, P + "time_to_first_byte_seconds_count") == {
        (("mode", "stream"),): 1,
        (("mode", "json"),): 2,
    }
    assert only(samples, P + "request_duration_seconds_count") == {
        (("mode", "stream"),): 1,
        (("mode", "json"),): 2,
    }


def test_metrics_active_streams_counts_a_stream_until_its_client_leaves(
    start_gateway: Callable[..., ServerThread],
) -> None:
    gateway = start_gateway()
    active = (P + "active_streams", ())
    before = scrape(gateway)[active]
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json=chat_body("sim/stream:stall=1", stream=True),
        ) as response,
    ):
        body = response.iter_raw()  # kept: dropping the iterator would close the response
        next(body)  # committed, then the upstream stalls
        during = scrape(gateway)[active]

    wait_until(lambda: scrape(gateway)[active] == 0, EXIT_TIMEOUT, "the stream to end")
    requests = only(scrape(gateway), P + "requests_total")

    assert (before, during) == (0, 1)
    assert requests == {
        (("error", "client_disconnected"), ("mode", "stream"), ("outcome", "cancelled")): 1,
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [(None, "none"), (200, "2xx"), (204, "2xx"), (301, "3xx"), (422, "4xx"), (503, "5xx")],
)
def test_status_class_of_a_response_head(status: int | None, expected: str) -> None:
    assert status_class(status) == expected


def test_metrics_requests_total_counts_models_requests(
    start_gateway: Callable[..., ServerThread],
) -> None:
    gateway = start_gateway()
    listed = httpx.get(f"{gateway.url}/v1/models", timeout=5)
    found = httpx.get(f"{gateway.url}/v1/models/sim/json", timeout=5)
    missing = httpx.get(f"{gateway.url}/v1/models/nobody/nothing", timeout=5)

    requests = only(scrape(gateway), P + "requests_total")

    assert [listed.status_code, found.status_code, missing.status_code] == [200, 200, 404]
    assert requests == {
        (("error", ""), ("mode", ""), ("outcome", "done")): 2,
        (("error", "upstream_not_found"), ("mode", ""), ("outcome", "errored")): 1,
    }
