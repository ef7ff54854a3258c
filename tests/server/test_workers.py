"""
``--workers 2`` on the real command (contract §15, §16): one socket, one simulator, metrics
summed across workers, a dead worker replaced, workers that end with their supervisor.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway_process import (
    EXIT_TIMEOUT,
    GatewayProcess,
    chat_body,
    serve_args,
    wait_until,
)

MAX_ATTEMPTS = 200
BATCH = 10


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}, on a fresh connection."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def request_pids(gateway: GatewayProcess) -> set[int]:
    return {line["pid"] for line in gateway.lines() if line.get("event") == "request"}


def worker_pids(gateway: GatewayProcess) -> list[int]:
    return [line["worker_pid"] for line in gateway.lines() if line["event"] == "worker_ready"]


def lines_of(gateway: GatewayProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in gateway.lines() if line.get("event") == event]


def wait_logged(gateway: GatewayProcess, count: int) -> None:
    """Wait until *count* request log lines are written (a line follows its answer)."""
    wait_until(lambda: len(lines_of(gateway, "request")) == count, EXIT_TIMEOUT, "the log lines")


def ask(url: str, request_id: str) -> httpx.Response:
    """One non-streaming chat request on a fresh connection (a fresh connection may land on
    either worker; a kept-alive one stays with its worker)."""
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=chat_body("sim/json", stream=False),
        headers={"X-Request-ID": request_id},
        timeout=10,
    )


def test_workers_two_serve_one_socket_with_one_simulator_and_summed_metrics(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(*serve_args(workers=2))
    sent = 0
    while len(request_pids(gateway)) < 2 and sent < MAX_ATTEMPTS:
        for _ in range(BATCH):
            assert ask(gateway.url, f"req-{sent}").status_code == 200
            sent += 1
        wait_logged(gateway, sent)
    samples = metric_samples(gateway.url)
    listening = lines_of(gateway, "gateway_listening")
    upstreams = {line["upstream"] for line in listening if "worker" in line}
    metrics_dir = lines_of(gateway, "workers_starting")[0]["metrics_dir"]

    gateway.send_signal(signal.SIGTERM)
    exit_code = gateway.wait_exit()

    assert request_pids(gateway) == set(worker_pids(gateway))  # both workers served
    assert len(request_pids(gateway)) == 2
    assert len(upstreams) == 1  # one simulator for both
    done = (
        "straico_gateway_requests_total",
        (("error", ""), ("mode", "json"), ("outcome", "done")),
    )
    assert samples[done] == sent  # whichever worker answered the scrape
    assert samples[("straico_gateway_upstream_calls_total", (("status_class", "2xx"),))] == sent
    assert exit_code == 0
    assert Path(metrics_dir).exists() is False  # the parent's temporary directory is removed


def test_workers_a_killed_worker_is_replaced_and_its_open_streams_forgotten(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    """
    Both workers are killed while one holds an open stream: each is replaced, and the
    ``active_streams`` gauge (mode livesum) no longer counts the dead worker's stream.
    """
    gateway = start_gateway(*serve_args(workers=2))
    first_pids = worker_pids(gateway)
    active = ("straico_gateway_active_streams", ())
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json=chat_body("sim/stream:stall=1", stream=True),
        ) as response,
    ):
        body = response.iter_raw()
        next(body)  # the stream is open, then stalls
        active_while_open = metric_samples(gateway.url)[active]
        for pid in first_pids:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(worker_pids(gateway)) == 4, EXIT_TIMEOUT, "two new workers")
        with pytest.raises(httpx.HTTPError):  # its worker died: the stream is cut
            b"".join(body)
    active_after = metric_samples(gateway.url)[active]
    replaced = lines_of(gateway, "worker_exited_unexpectedly")
    answer = ask(gateway.url, "after-1")

    gateway.send_signal(signal.SIGTERM)
    exit_code = gateway.wait_exit()

    assert (active_while_open, active_after) == (1.0, 0.0)
    assert sorted(line["worker_pid"] for line in replaced) == sorted(first_pids)
    assert answer.status_code == 200
    assert set(worker_pids(gateway)[2:]).isdisjoint(first_pids)
    assert exit_code == 0


def test_workers_end_when_their_supervisor_is_killed(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(*serve_args(workers=2))
    pids = worker_pids(gateway)

    os.kill(gateway.process.pid, signal.SIGKILL)

    wait_until(lambda: len(stopped_workers(gateway)) == 2, EXIT_TIMEOUT, "both workers to stop")
    assert sorted(stopped_workers(gateway)) == sorted(pids)
    assert sorted(line["pid"] for line in lines_of(gateway, "supervisor_gone")) == sorted(pids)


def stopped_workers(gateway: GatewayProcess) -> list[int]:
    return [line["pid"] for line in lines_of(gateway, "gateway_stopped") if "worker" in line]
