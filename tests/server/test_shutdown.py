"""
Graceful shutdown (contract §15), tested on the real command in a subprocess.

``straico-gateway serve --simulate`` with one and with two workers, two streams in flight at
SIGTERM: one ends within ``--shutdown-grace``, the other is told ``server_shutting_down``.
Every subprocess runs in its own process group and is killed in a ``finally``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import httpx
import pytest

from tests.support.gateway_process import (
    EXIT_TIMEOUT,
    GatewayProcess,
    chat_body,
    read_stream,
    serve_args,
    wait_ready_status,
)
from tests.support.sse_check import check_stream


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
async def test_shutdown_with_streams_in_flight_finishes_one_and_shuts_down_the_other(
    start_gateway: Callable[..., GatewayProcess], workers: int
) -> None:
    """
    SIGTERM with two streams in flight: /readyz and new requests get 503, the stream that ends
    within the grace period ends with [DONE], the other gets the shutdown error event and a
    normally ended body, and the process exits 0.
    """
    gateway = start_gateway(*serve_args(workers=workers))
    url = gateway.url
    short_started, long_started = asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient(timeout=EXIT_TIMEOUT) as client:
        short = asyncio.create_task(
            read_stream(client, url, "sim/json:delay=1000", "short-1", short_started)
        )
        long = asyncio.create_task(
            read_stream(client, url, "sim/json:delay=10000", "long-1", long_started)
        )
        await asyncio.wait_for(asyncio.gather(short_started.wait(), long_started.wait()), 10)

        gateway.send_signal(signal.SIGTERM)
        readiness = await wait_ready_status(url, 503)
        async with httpx.AsyncClient(timeout=5) as fresh:
            refused = await fresh.post(
                f"{url}/v1/chat/completions",
                json=chat_body("sim/json", stream=False),
                headers={"X-Request-ID": "refused-1"},
            )
        short_body, long_body = await asyncio.gather(short, long)

    exit_code = await asyncio.to_thread(gateway.wait_exit)
    lines = gateway.lines()
    in_flight = sum(line["in_flight"] for line in lines if line["event"] == "shutdown_started")
    short_stream = check_stream(short_body)
    long_stream = check_stream(long_body)
    long_line = gateway.request_line("long-1")
    short_line = gateway.request_line("short-1")
    refused_line = gateway.request_line("refused-1")

    assert exit_code == 0
    assert in_flight == 2  # both streams were in flight when the signal came
    assert readiness == {"status": "shutting_down"}
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "server_shutting_down")
    assert (refused_line["outcome"], refused_line["error"]) == ("rejected", "shutdown")
    assert (short_stream.done, short_stream.error) == (True, None)
    assert (short_line["outcome"], short_line["error"]) == ("done", None)
    assert long_stream.done is False
    assert long_stream.error is not None
    assert long_stream.error["code"] == "server_shutting_down"
    assert long_body.endswith(b"\n\n")
    assert (long_line["outcome"], long_line["error"]) == ("errored", "shutdown")
    assert long_line["trace"][-1]["event"] == "shut_down"
    assert [entry for entry in long_line["trace"] if entry["event"] == "client_gone"] == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_shutdown_of_an_idle_gateway_exits_zero(
    start_gateway: Callable[..., GatewayProcess], workers: int, signum: int
) -> None:
    gateway = start_gateway(*serve_args(workers=workers, grace=60))
    assert httpx.get(f"{gateway.url}/healthz", timeout=5).json() == {"status": "ok"}

    gateway.send_signal(signum)

    assert gateway.wait_exit() == 0  # nothing in flight: no wait for the 60 s grace period
    assert gateway.lines()[-1]["event"] in ("gateway_stopped", "workers_stopped")
