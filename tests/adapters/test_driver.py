"""
The driver (``adapters.driver.Exchange``) against the simulator over loopback: every behaviour of
the simulator's grammar (contract §12) as the client sees it, cancellation reaching the upstream,
and shutdown.

Waits in these tests are orderings, never measurements: a simulated ``delay``/``gap`` is ten
times or more the gateway's tick or timeout it is compared with (the one exception, the D4
repeat's own ``answer_timeout``, keeps 400 ms on each side). Models whose JSON answer is broken
on purpose (``drop``, ``stall``) cannot give a reference answer, so they answer a scripted text.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from typing import Any

import httpx
import pytest

from adapters.upstream import StraicoUpstream
from engine.capability import CapabilityCache
from engine.config import StreamingConfig
from engine.events import SendHead
from tests.support.sse_check import StreamReport, check_stream

from .conftest import Sim, chat_body, open_exchange, pool_connections, run_exchange

FAST_TICKS = StreamingConfig(heartbeat_interval=0.05)


def content_of(answer: dict[str, Any]) -> str:
    text: str = answer["choices"][0]["message"]["content"]
    return text


def content_deltas(report: StreamReport) -> list[str]:
    """The non-empty content deltas of a checked stream, in order."""
    return [
        event["choices"][0]["delta"]["content"]
        for event in report.events
        if event["choices"] and event["choices"][0]["delta"].get("content")
    ]


def scripted(kind: str, text: str, *keys: str) -> str:
    """A simulated model id answering exactly *text* (for models that cannot answer whole)."""
    encoded = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    return ":".join([f"sim/{kind}", f"text={encoded}", *keys])


SCRIPT = "The scripted answer has more than four chunks worth of words in it."


# --- sim/stream, sim/json, sim/reject -------------------------------------------------------


async def test_driver_stream_model_relays_chunk_by_chunk(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/stream:words=30:chunks=6"
    expected = await sim.reference(model)
    cache = CapabilityCache(ttl=600)

    outcome = await run_exchange(
        straico,
        client,
        chat_body(model, stream=True, stream_options={"include_usage": True}),
        cache=cache,
    )

    assert outcome.status == 200
    assert outcome.headers["x-gateway-stream-mode"] == "stream"
    report = outcome.stream(include_usage=True)
    assert report.content == content_of(expected)
    assert report.usage == expected["usage"]
    assert report.finish_reason == "stop"
    assert (report.id, report.model) == (outcome.session.identity.id, model)
    assert len(content_deltas(report)) == 6  # one relayed chunk per upstream content chunk
    assert outcome.path() == ["upstream_streamed", "upstream_finished", "drained"]
    assert await sim.streams_sent() == [True]
    assert cache.lookup((straico.cache_prefix, model), asyncio.get_running_loop().time()) == (
        "streams",
        "hit",
    )


async def test_driver_stream_model_for_json_client_answers_whole(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/stream"
    expected = await sim.reference(model)

    outcome = await run_exchange(straico, client, chat_body(model, stream=False))

    assert outcome.status == 200
    answer = outcome.json()
    assert content_of(answer) == content_of(expected)
    assert answer["usage"] == expected["usage"]
    assert answer["model"] == model
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert outcome.path() == ["stream_declined", "answer_received", "drained"]
    assert await sim.streams_sent() == [False]


async def test_driver_json_model_is_replayed_as_a_stream(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/json:words=40"
    expected = await sim.reference(model)

    outcome = await run_exchange(
        straico, client, chat_body(model, stream=True, stream_options={"include_usage": True})
    )

    assert outcome.headers["x-gateway-stream-mode"] == "fallback"
    report = outcome.stream(include_usage=True)
    assert report.content == content_of(expected)
    assert report.usage == expected["usage"]
    deltas = content_deltas(report)
    assert len(deltas) > 1
    assert all(len(d) <= 24 or " " not in d.strip() for d in deltas)  # replay_chunk_chars
    assert outcome.path() == ["upstream_answered_whole", "answer_received", "drained"]
    assert await sim.streams_sent() == [True]


async def test_driver_reject_model_repeats_without_stream(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/reject"
    expected = await sim.reference(model)

    outcome = await run_exchange(straico, client, chat_body(model, stream=True))

    assert outcome.headers["x-gateway-stream-mode"] == "fallback"
    assert outcome.stream().content == content_of(expected)
    assert outcome.path() == ["stream_rejected", "answer_received", "drained"]
    assert outcome.session.upstream_calls == 2
    assert await sim.streams_sent() == [True, False]


# --- delay and gap ----------------------------------------------------------------------------


async def test_driver_delay_commits_at_the_first_tick_and_sends_heartbeats(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/json:delay=600"
    expected = await sim.reference(model)

    outcome = await run_exchange(straico, client, chat_body(model, stream=True), config=FAST_TICKS)

    assert outcome.headers["x-gateway-stream-mode"] == "detecting"
    report = outcome.stream()
    assert report.content == content_of(expected)
    assert report.comments == outcome.session.heartbeats
    assert report.comments >= 1
    assert outcome.path() == ["upstream_answered_whole", "answer_received", "drained"]


async def test_driver_gap_shorter_than_stream_timeout_streams_to_the_end(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/stream:gap=30:chunks=3"
    expected = await sim.reference(model)

    outcome = await run_exchange(
        straico, client, chat_body(model, stream=True), config=StreamingConfig(streaming_timeout=2)
    )

    assert outcome.stream().content == content_of(expected)
    assert outcome.session.state == "done"


async def test_driver_gap_longer_than_stream_timeout_is_stream_timeout(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    config = StreamingConfig(streaming_timeout=0.15)

    outcome = await run_exchange(
        straico, client, chat_body("sim/stream:gap=1500", stream=True), config=config
    )

    # The role chunk carries nothing to relay, so nothing was committed: an HTTP error.
    assert outcome.status == 504
    assert outcome.error()["code"] == "stream_timeout"
    assert outcome.path() == ["upstream_streamed", "timed_out"]


async def test_driver_gap_on_a_json_body_past_answer_timeout_is_upstream_timeout(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    config = StreamingConfig(answer_timeout=0.15)

    outcome = await run_exchange(
        straico, client, chat_body("sim/json:gap=1500", stream=True), config=config
    )

    assert outcome.status == 504
    assert outcome.error()["code"] == "upstream_timeout"
    assert outcome.path() == ["upstream_answered_whole", "timed_out"]


async def test_driver_json_client_never_commits_early_nor_gets_heartbeats(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/json:delay=600"
    expected = await sim.reference(model)

    outcome = await run_exchange(straico, client, chat_body(model, stream=False), config=FAST_TICKS)

    assert outcome.headers["content-type"] == "application/json"
    assert content_of(outcome.json()) == content_of(expected)
    assert outcome.session.heartbeats == 0
    assert outcome.frames == [outcome.body]  # the whole body at once, nothing before it


async def test_driver_rejection_repeat_gets_its_own_answer_timeout(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    # Each call waits 600 ms for its head, under the 1 s answer_timeout; both together do not.
    model = "sim/reject:delay=600"
    config = StreamingConfig(answer_timeout=1.0)

    outcome = await run_exchange(straico, client, chat_body(model, stream=True), config=config)

    assert outcome.status == 200
    assert outcome.path() == ["stream_rejected", "answer_received", "drained"]
    assert await sim.streams_sent(model) == [True, False]


# --- drop -------------------------------------------------------------------------------------


async def test_driver_drop_before_the_finish_is_upstream_disconnected(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    model = scripted("stream", SCRIPT, "drop=2")
    expected = SCRIPT

    outcome = await run_exchange(straico, client, chat_body(model, stream=True))

    assert outcome.status == 200  # two chunks were relayed: committed
    report = outcome.stream()
    assert report.error is not None
    assert report.error["code"] == "upstream_disconnected"
    assert not report.done
    assert expected.startswith(report.content)
    assert 0 < len(report.content) < len(expected)
    assert outcome.path() == ["upstream_streamed", "upstream_failed"]


async def test_driver_drop_after_the_finish_chunk_is_a_clean_end(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    model = scripted("stream", SCRIPT, "drop=4")  # chunks=4 by default: after the finish
    expected = SCRIPT

    outcome = await run_exchange(
        straico, client, chat_body(model, stream=True, stream_options={"include_usage": True})
    )

    report = outcome.stream(include_usage=True)
    assert report.done
    assert report.content == expected
    assert report.finish_reason == "stop"
    assert report.usage is None  # the upstream's usage chunk never came
    assert outcome.path() == ["upstream_streamed", "upstream_finished", "drained"]


@pytest.mark.parametrize("client_stream", [True, False], ids=["stream-client", "json-client"])
async def test_driver_drop_in_a_json_body_is_upstream_disconnected(
    straico: StraicoUpstream, client: httpx.AsyncClient, client_stream: bool
) -> None:
    cache = CapabilityCache(ttl=600)

    outcome = await run_exchange(
        straico, client, chat_body("sim/json:drop=1", stream=client_stream), cache=cache
    )

    assert outcome.status == 502
    assert outcome.error()["code"] == "upstream_disconnected"
    assert outcome.path()[-1] == "upstream_failed"
    assert len(cache) == 0  # a broken body teaches nothing


# --- stall ------------------------------------------------------------------------------------


async def test_driver_stall_mid_stream_is_stream_timeout_and_closes_upstream(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/stream:stall=2"
    config = StreamingConfig(streaming_timeout=0.3)

    outcome = await run_exchange(straico, client, chat_body(model, stream=True), config=config)

    assert outcome.status == 200
    report = outcome.stream()
    assert report.error is not None
    assert report.error["code"] == "stream_timeout"
    assert report.content != ""
    assert outcome.path() == ["upstream_streamed", "timed_out"]
    assert (await sim.wait_closed_early(model))["closed_early"] is True


async def test_driver_stall_after_the_finish_chunk_is_a_clean_end(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = scripted("stream", SCRIPT, "stall=4")
    expected = SCRIPT
    config = StreamingConfig(streaming_timeout=0.3)

    outcome = await run_exchange(straico, client, chat_body(model, stream=True), config=config)

    report = outcome.stream()
    assert report.done
    assert report.content == expected
    assert outcome.path() == ["upstream_streamed", "upstream_finished", "drained"]
    assert (await sim.wait_closed_early(model))["closed_early"] is True  # R3: closed after


async def test_driver_stall_in_a_json_answer_is_upstream_timeout(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    config = StreamingConfig(answer_timeout=0.3)

    outcome = await run_exchange(
        straico, client, chat_body("sim/json:stall=1", stream=False), config=config
    )

    assert outcome.status == 504
    assert outcome.error()["code"] == "upstream_timeout"


# --- malformed bodies and error events --------------------------------------------------------


@pytest.mark.parametrize("client_stream", [True, False], ids=["stream-client", "json-client"])
async def test_driver_badjson_is_upstream_malformed(
    straico: StraicoUpstream, client: httpx.AsyncClient, client_stream: bool
) -> None:
    cache = CapabilityCache(ttl=600)

    outcome = await run_exchange(
        straico, client, chat_body("sim/json:badjson=1", stream=client_stream), cache=cache
    )

    assert outcome.status == 502
    assert outcome.error()["code"] == "upstream_malformed"
    assert outcome.headers["x-should-retry"] == "false"
    assert len(cache) == 0  # D3: a malformed body teaches nothing


async def test_driver_badsse_is_upstream_malformed_after_the_commit(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    outcome = await run_exchange(straico, client, chat_body("sim/stream:badsse=1", stream=True))

    assert outcome.status == 200
    report = outcome.stream()
    assert report.error is not None
    assert report.error["code"] == "upstream_malformed"
    assert report.finish_reason is None
    assert outcome.path() == ["upstream_streamed", "upstream_failed"]


async def test_driver_error_event_is_upstream_error_with_its_message(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    outcome = await run_exchange(straico, client, chat_body("sim/stream:errevent=1", stream=True))

    report = outcome.stream()
    assert report.error is not None
    assert report.error["code"] == "upstream_error"
    assert "simulated error" in report.error["message"]
    assert not report.done
    assert outcome.path() == ["upstream_streamed", "upstream_failed"]


async def test_driver_error_event_after_the_finish_chunk_is_a_clean_end(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    model = scripted("stream", SCRIPT, "errevent=4")
    expected = SCRIPT

    outcome = await run_exchange(straico, client, chat_body(model, stream=True))

    report = outcome.stream()
    assert report.done
    assert report.content == expected
    assert outcome.session.state == "done"


# --- finish_reason mapping --------------------------------------------------------------------

FINISH_CASES = {"length": "length", "tool_use": "tool_calls", "content_filter": "content_filter"}


@pytest.mark.parametrize("upstream_finish", sorted(FINISH_CASES))
@pytest.mark.parametrize("kind", ["stream", "json"])
async def test_driver_finish_reason_is_mapped_for_a_streaming_client(
    straico: StraicoUpstream, client: httpx.AsyncClient, kind: str, upstream_finish: str
) -> None:
    model = f"sim/{kind}:finish={upstream_finish}"

    outcome = await run_exchange(straico, client, chat_body(model, stream=True))

    assert outcome.stream().finish_reason == FINISH_CASES[upstream_finish]
    assert outcome.session.upstream_finish_reason == upstream_finish


@pytest.mark.parametrize("upstream_finish", sorted(FINISH_CASES))
async def test_driver_finish_reason_is_mapped_for_a_json_client(
    straico: StraicoUpstream, client: httpx.AsyncClient, upstream_finish: str
) -> None:
    model = f"sim/json:finish={upstream_finish}"

    outcome = await run_exchange(straico, client, chat_body(model, stream=False))

    assert outcome.json()["choices"][0]["finish_reason"] == FINISH_CASES[upstream_finish]


# --- the client leaving -----------------------------------------------------------------------


async def test_driver_client_gone_while_waiting_cancels_the_upstream_call(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/json:delay=3000"
    exchange = open_exchange(straico, client, chat_body(model, stream=True), config=FAST_TICKS)
    frames = exchange.frames()

    head = await anext(frames)
    role = await anext(frames)
    await frames.aclose()  # type: ignore[attr-defined]

    assert isinstance(head, SendHead)
    assert dict(head.headers)["X-Gateway-Stream-Mode"] == "detecting"
    assert isinstance(role, bytes)
    assert (await sim.wait_closed_early(model))["closed_early"] is True
    session = exchange.session
    assert (session.state, session.error_kind, session.outcome) == (
        "errored",
        "client_disconnected",
        "cancelled",
    )
    assert [e.event for e in session.cursor.entries] == ["client_gone"]
    # aclose() returned after the reader task ended: httpcore closed the connection it was
    # waiting on and dropped it from the pool; nothing is left open for this request.
    assert pool_connections(client) == []


async def test_driver_client_gone_mid_stream_cancels_the_upstream_call(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/stream:stall=1"
    exchange = open_exchange(straico, client, chat_body(model, stream=True))
    frames = exchange.frames()

    head = await anext(frames)
    role = await anext(frames)
    first_content = await anext(frames)
    await frames.aclose()  # type: ignore[attr-defined]

    assert isinstance(head, SendHead)
    assert dict(head.headers)["X-Gateway-Stream-Mode"] == "stream"
    assert isinstance(role, bytes) and isinstance(first_content, bytes)
    assert b'"content":' in first_content
    assert (await sim.wait_closed_early(model))["closed_early"] is True
    session = exchange.session
    assert (session.state, session.error_kind) == ("errored", "client_disconnected")
    assert [e.event for e in session.cursor.entries] == ["upstream_streamed", "client_gone"]
    # The half-read body was closed, not returned to the pool (see pool_connections).
    assert pool_connections(client) == []


async def test_driver_completed_request_leaves_its_connection_idle_for_reuse(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    for _ in range(3):
        outcome = await run_exchange(straico, client, chat_body("sim/json", stream=False))
        assert outcome.status == 200

    connections = pool_connections(client)
    assert len(connections) == 1  # kept alive and reused
    assert connections[0].is_idle()


# --- shutdown ---------------------------------------------------------------------------------


async def test_driver_shut_down_before_the_commit_answers_503(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/json:delay=3000"
    exchange = open_exchange(straico, client, chat_body(model, stream=True))
    frames = exchange.frames()
    first = asyncio.ensure_future(anext(frames))
    await sim.wait_received(model)

    exchange.shut_down()
    head = await first
    rest = [frame async for frame in frames]

    assert isinstance(head, SendHead)
    assert head.status == 503
    body = b"".join(f for f in rest if isinstance(f, bytes))
    assert b'"code":"server_shutting_down"' in body
    session = exchange.session
    assert (session.state, session.error_kind) == ("errored", "shutdown")
    assert [e.event for e in session.cursor.entries] == ["shut_down"]
    assert (await sim.wait_closed_early(model))["closed_early"] is True


async def test_driver_shut_down_after_a_heartbeat_commit_sends_an_error_event(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/json:delay=3000"
    exchange = open_exchange(straico, client, chat_body(model, stream=True), config=FAST_TICKS)
    frames = exchange.frames()
    head = await anext(frames)
    role = await anext(frames)

    exchange.shut_down()
    rest = [frame async for frame in frames]

    assert isinstance(head, SendHead)
    assert head.status == 200
    assert isinstance(role, bytes)
    body = role + b"".join(f for f in rest if isinstance(f, bytes))
    report = check_stream(body)
    assert report.error is not None
    assert report.error["code"] == "server_shutting_down"
    assert not report.done
    assert exchange.session.error_kind == "shutdown"
    assert (await sim.wait_closed_early(model))["closed_early"] is True


# --- no upstream ------------------------------------------------------------------------------


async def test_driver_refused_connection_is_upstream_unreachable(
    client: httpx.AsyncClient,
) -> None:
    # A bound socket that does not listen refuses connections, and nobody else can take its port.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        upstream = StraicoUpstream(base_url=f"http://127.0.0.1:{port}")

        outcome = await run_exchange(upstream, client, chat_body("sim/json", stream=True))

    assert outcome.status == 502
    assert outcome.error()["code"] == "upstream_unreachable"
    assert outcome.path() == ["upstream_failed"]


async def test_driver_close_during_shutdown_is_shut_down_not_client_gone(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/json:delay=3000"
    exchange = open_exchange(
        straico,
        client,
        chat_body(model, stream=True),
        config=FAST_TICKS,
        shutting_down=lambda: True,
    )
    frames = exchange.frames()
    await anext(frames)

    await frames.aclose()  # type: ignore[attr-defined]

    session = exchange.session
    assert (session.state, session.error_kind) == ("errored", "shutdown")
    assert [e.event for e in session.cursor.entries] == ["shut_down"]
    assert (await sim.wait_closed_early(model))["closed_early"] is True
