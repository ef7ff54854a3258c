"""
The end-to-end streaming checks under every framework adapter, over real loopback sockets.

Each check runs three times: the plain ASGI adapter under Starlette and under FastAPI (both
served by Hypercorn), and the aiohttp adapter under aiohttp's own server with
``handler_cancellation=True`` (contract §17). The upstream is the Straico simulator
(contract §12); answers are compared with the simulator's own non-streaming answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import attrs
import httpx
import pytest

from adapters.asgi import ChatCompletionsApp
from adapters.keys import KeyPolicy
from adapters.service import ChatService, first_reply
from adapters.upstream import StraicoUpstream
from engine.config import StreamingConfig
from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import SIM_KEY
from .frameworks_support import (
    CHAT_PATH,
    CLIENT_TIMEOUT,
    FRAMEWORKS,
    SHUT_DOWN_PATH,
    FinishedExchanges,
    Framework,
    SimRecords,
    chat_body,
    serve_service,
    simulated_answer,
)

HEARTBEAT = 0.2
CHAT_ID = re.compile(r"chatcmpl-[A-Za-z0-9]{24}")


@attrs.frozen
class Gateway:
    """One served chat service: its base URL, the service, and the exchanges that finished."""

    url: str
    service: ChatService
    finished: FinishedExchanges

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=CLIENT_TIMEOUT)

    def chat(self, body: dict[str, Any]) -> httpx.Response:
        with self.client() as http:
            return http.post(CHAT_PATH, json=body)


def openai_error(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of an OpenAI error body (contract §7), after checking its shape."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


@pytest.fixture(name="framework", params=FRAMEWORKS)
def _framework(request: pytest.FixtureRequest) -> Framework:
    framework: Framework = request.param
    return framework


@pytest.fixture(name="records")
def _records(simulator: ServerThread) -> SimRecords:
    records = SimRecords(simulator.url)
    records.clear()
    return records


Serve = Callable[..., Gateway]


@pytest.fixture(name="serve")
def _serve(framework: Framework, simulator: ServerThread) -> Iterator[Serve]:
    """``serve(**streaming_config)``: the chat service under *framework*, stopped after the test."""
    with contextlib.ExitStack() as servers:

        def serve(**config: Any) -> Gateway:
            service = ChatService(
                StraicoUpstream(base_url=simulator.url),
                config=StreamingConfig(**config),
                keys=KeyPolicy(server_key=SIM_KEY),
            )
            finished = FinishedExchanges()
            url = servers.enter_context(serve_service(framework, service, finished))
            return Gateway(url, service, finished)

        yield serve


def test_framework_pass_through_relays_the_upstream_stream(
    serve: Serve, records: SimRecords
) -> None:
    model = "sim/stream"
    expected = records.answer(model)
    gateway = serve()

    response = gateway.chat(chat_body(model, stream=True, stream_options={"include_usage": True}))

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["x-gateway-stream-mode"] == "stream"
    report = check_stream(response.content, include_usage=True)
    assert report.content == expected
    assert report.finish_reason == "stop"
    assert report.usage is not None
    assert [r["stream"] for r in records.settled(model)] == [True]


def test_framework_fallback_sends_heartbeats_before_the_content(
    serve: Serve, records: SimRecords
) -> None:
    model = "sim/json:delay=900"
    expected = simulated_answer(model)
    gateway = serve(heartbeat_interval=HEARTBEAT)

    response = gateway.chat(chat_body(model, stream=True))

    assert response.status_code == 200
    assert response.headers["x-gateway-stream-mode"] == "detecting"  # the first tick committed
    report = check_stream(response.content)
    assert report.comments >= 2
    blocks = response.content.decode().split("\n\n")
    role, *before_content = blocks[: 1 + report.comments]
    assert json.loads(role.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
    assert before_content == [": keep-alive"] * report.comments
    assert report.content == expected


def test_framework_upstream_error_after_the_commit_is_an_error_event(
    serve: Serve, records: SimRecords
) -> None:
    gateway = serve(heartbeat_interval=HEARTBEAT)

    response = gateway.chat(chat_body("sim/json:delay=700:status=500", stream=True))

    assert response.status_code == 200
    report = check_stream(response.content)
    assert report.comments >= 1
    assert report.error is not None
    assert report.error["code"] == "upstream_error"
    assert report.done is False
    assert b"[DONE]" not in response.content


def test_framework_quick_upstream_error_keeps_its_status(serve: Serve, records: SimRecords) -> None:
    gateway = serve()

    response = gateway.chat(chat_body("sim/json:status=429:retry=2", stream=True))

    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    error = openai_error(response)
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("application/json", b'{"model": "sim/stream", "messages": [', 400, "invalid_json"),
        ("text/plain", b"{}", 415, "unsupported_media_type"),
    ],
    ids=["invalid_json", "unsupported_media_type"],
)
def test_framework_bad_request_is_an_openai_error(
    serve: Serve, records: SimRecords, content_type: str, body: bytes, status: int, code: str
) -> None:
    gateway = serve()

    with gateway.client() as http:
        response = http.post(CHAT_PATH, content=body, headers={"Content-Type": content_type})

    assert response.status_code == status
    assert openai_error(response)["code"] == code
    assert records.settled("sim/stream") == []  # nothing went upstream


def test_framework_non_streaming_client_gets_one_completion(
    serve: Serve, records: SimRecords
) -> None:
    model = "sim/stream"
    expected = records.answer(model)
    gateway = serve(heartbeat_interval=HEARTBEAT)

    response = gateway.chat(chat_body(model, stream=False))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert CHAT_ID.fullmatch(completion["id"])
    assert completion["model"] == model
    assert completion["choices"][0]["message"]["content"] == expected
    assert completion["choices"][0]["finish_reason"] == "stop"


def test_framework_client_leaving_cancels_the_upstream_call(
    serve: Serve, records: SimRecords
) -> None:
    model = "sim/json:delay=3000"
    gateway = serve(heartbeat_interval=HEARTBEAT)
    received = b""

    with (
        gateway.client() as http,
        http.stream("POST", CHAT_PATH, json=chat_body(model, stream=True)) as response,
    ):
        assert response.status_code == 200
        for data in response.iter_raw():
            received += data
            if b": keep-alive" in received:
                break

    report = check_stream(received, partial=True)
    assert report.comments >= 1
    assert report.content == ""
    [record] = records.settled(model)
    assert record["closed_early"] is True
    session = gateway.finished.wait_for_one().session
    assert (session.state, session.error_kind) == ("errored", "client_disconnected")
    assert session.cursor.entries[-1].event == "client_gone"


def test_framework_client_leaving_before_the_head_cancels_the_upstream_call(
    serve: Serve, records: SimRecords
) -> None:
    """No byte was sent yet (the head is held back): only the disconnect itself can tell."""
    model = "sim/json:delay=3000"
    gateway = serve()  # the default 10 s heartbeat: nothing is written while the test runs
    body = json.dumps(chat_body(model, stream=True)).encode()
    host, port = httpx.URL(gateway.url).host, httpx.URL(gateway.url).port
    head = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )

    with socket.create_connection((host, port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(head.encode() + body)
        records.wait_received(model)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            assert sock.recv(65536) == b"", "the head must still be held back"

    [record] = records.settled(model)
    assert record["closed_early"] is True
    session = gateway.finished.wait_for_one().session
    assert (session.state, session.error_kind) == ("errored", "client_disconnected")
    assert session.committed is False
    assert [entry.event for entry in session.cursor.entries] == ["client_gone"]


def test_framework_shut_down_after_the_commit_ends_the_stream_with_an_error_event(
    serve: Serve, records: SimRecords
) -> None:
    """The host ends its grace period (``shut_down_all``) while a stream waits (contract §15)."""
    model = "sim/json:delay=3000"
    gateway = serve(heartbeat_interval=HEARTBEAT)
    received = b""

    with (
        gateway.client() as http,
        http.stream("POST", CHAT_PATH, json=chat_body(model, stream=True)) as response,
    ):
        chunks = response.iter_raw()
        for data in chunks:
            received += data
            if b": keep-alive" in received:
                break
        assert http.post(SHUT_DOWN_PATH).status_code == 204
        for data in chunks:  # the rest, to the end of the body
            received += data

    report = check_stream(received)
    assert report.error is not None
    assert report.error["code"] == "server_shutting_down"
    assert report.done is False
    [record] = records.settled(model)
    assert record["closed_early"] is True
    session = gateway.finished.wait_for_one().session
    assert (session.state, session.error_kind) == ("errored", "shutdown")
    assert session.cursor.entries[-1].event == "shut_down"


def test_framework_new_request_while_shutting_down_is_refused(
    serve: Serve, records: SimRecords
) -> None:
    gateway = serve()
    gateway.service.shutting_down = True  # a plain flag: what a host sets as shutdown begins

    response = gateway.chat(chat_body("sim/stream", stream=True))

    assert response.status_code == 503
    assert openai_error(response)["code"] == "server_shutting_down"
    assert records.settled("sim/stream") == []


# --- the seam every adapter relies on -------------------------------------------------------


async def test_service_stream_closed_before_its_first_chunk_ends_the_exchange_at_once(
    simulator: ServerThread, records: SimRecords
) -> None:
    """
    An adapter whose client leaves right after the head closes a stream it never iterated;
    that must end the exchange then, not whenever the garbage collector gets to it.
    """
    model = "sim/json:delay=3000"
    service = ChatService(
        StraicoUpstream(base_url=simulator.url),
        config=StreamingConfig(heartbeat_interval=0.05),
        keys=KeyPolicy(server_key=SIM_KEY),
    )
    finished = FinishedExchanges()
    try:
        body = json.dumps(chat_body(model, stream=True)).encode()
        exchange = service.open(body, upstream_key=SIM_KEY, on_finish=finished)
        reply = await first_reply(exchange)
        assert reply.stream is not None

        await reply.stream.aclose()

        session = finished.wait_for_one(timeout=0).session
        assert (session.state, session.error_kind) == ("errored", "client_disconnected")
        assert service.exchanges == set()
        async with httpx.AsyncClient(base_url=simulator.url, timeout=CLIENT_TIMEOUT) as http:
            recorded = (await http.get("/_sim/requests", params={"wait": 2})).json()
        assert [r["closed_early"] for r in recorded if r["model"] == model] == [True]
    finally:
        await service.aclose()


async def test_asgi_app_client_leaving_while_the_head_is_sent_ends_the_exchange_at_once(
    simulator: ServerThread,
) -> None:
    """The server is stuck sending the head when the client leaves: the stream is closed too."""
    service = ChatService(
        StraicoUpstream(base_url=simulator.url),
        config=StreamingConfig(heartbeat_interval=0.05),
        keys=KeyPolicy(server_key=SIM_KEY),
    )
    finished = FinishedExchanges()
    app = ChatCompletionsApp(service, on_finish=finished)
    body = json.dumps(chat_body("sim/json:delay=3000", stream=True)).encode()
    request = [{"type": "http.request", "body": body, "more_body": False}]
    head_sending = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if request:
            return request.pop()
        await head_sending.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            head_sending.set()
            await asyncio.Event().wait()  # the network never takes the head

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"application/json")]}
    try:
        await asyncio.wait_for(app(scope, receive, send), CLIENT_TIMEOUT)

        session = finished.wait_for_one(timeout=0).session
        assert (session.committed, session.error_kind) == (True, "client_disconnected")
    finally:
        await service.aclose()
