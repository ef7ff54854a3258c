"""
Driver-level fixtures: the upstreams over real loopback sockets, and one request through
:class:`adapters.driver.Exchange` with no web framework in between.

- ``simulator`` / ``sim``: the Straico simulator (contract §12) in a :class:`ServerThread`, and a
  reader of what it recorded (cleared before each test).
- ``openai_app`` / ``openai_server``: the OpenAI-style test server of
  :mod:`tests.support.openai_server`, and its thread.
- ``client``: the shared ``httpx.AsyncClient`` of one test, built by ``make_client`` as the
  gateway builds it.
- :func:`open_exchange` builds a session as the chat route does (cache key
  ``(upstream.cache_prefix, model)``, the loop's clock) and its exchange; :func:`run_exchange`
  collects every frame and returns an :class:`Outcome`.

Time: the exchange reads the event loop's clock; the capability cache is told that time at each
lookup. Tests move a cache entry in time through the cache's own API (``learn(key, capability,
now)`` with a past ``now``) rather than by waiting, so no test sleeps to let an entry expire.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs
import httpx
import pytest

from adapters.driver import Exchange
from adapters.upstream import OpenAIUpstream, StraicoUpstream, Upstream, make_client
from engine.capability import CapabilityCache
from engine.config import StreamingConfig
from engine.events import SendHead
from engine.request import parse_chat_request
from engine.session import Session
from server.simulator.app import create_simulator_app
from tests.support.openai_server import OpenAITestServer
from tests.support.servers import ServerThread
from tests.support.sse_check import StreamReport, check_stream

SIM_KEY = "sim-key"
OPENAI_KEY = "oa-key"
#: How long a test waits for the simulator to notice a closed connection.
CLOSE_NOTICE_SECONDS = 1.0
_ALPHANUMERIC = string.ascii_letters + string.digits


# --- servers --------------------------------------------------------------------------------


@pytest.fixture(name="simulator", scope="session")
def _simulator() -> Iterator[ServerThread]:
    with ServerThread(create_simulator_app(SIM_KEY), graceful_timeout=0.5) as server:
        yield server


@pytest.fixture(name="openai_app", scope="session")
def _openai_app() -> OpenAITestServer:
    return OpenAITestServer(key=OPENAI_KEY)


@pytest.fixture(name="openai_server", scope="session")
def _openai_server(openai_app: OpenAITestServer) -> Iterator[ServerThread]:
    with ServerThread(openai_app, graceful_timeout=0.5) as server:
        yield server


class Sim:
    """What the simulator recorded; every call goes through a client of its own."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def records(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            records: list[dict[str, Any]] = (await http.get("/_sim/requests")).json()
        return records

    async def chat_records(self, model: str | None = None) -> list[dict[str, Any]]:
        return [
            record
            for record in await self.records()
            if record["path"] == "/v2/chat/completions"
            and (model is None or record["model"] == model)
        ]

    async def streams_sent(self, model: str | None = None) -> list[object]:
        """The ``stream`` flag of every chat call received, oldest first."""
        return [record["stream"] for record in await self.chat_records(model)]

    async def clear(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            await http.delete("/_sim/requests")

    async def reference(self, model: str, text: str = "hello") -> dict[str, Any]:
        """
        The simulator's own non-streaming answer to one user message, asked directly.

        The records are cleared afterwards, so this call never counts as one of the gateway's.
        """
        body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": False}
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            answer = await http.post(
                "/v2/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {SIM_KEY}"},
            )
        assert answer.status_code == 200, answer.text
        await self.clear()
        result: dict[str, Any] = answer.json()
        return result

    async def wait_closed_early(self, model: str) -> dict[str, Any]:
        """
        Poll (bounded by ``CLOSE_NOTICE_SECONDS``) until the last chat call for *model* is marked
        ``closed_early``; return that record either way, so the caller's assertion says what
        was seen.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CLOSE_NOTICE_SECONDS
        while True:
            records = await self.chat_records(model)
            if records and (records[-1]["closed_early"] or loop.time() >= give_up):
                return records[-1]
            assert loop.time() < give_up, f"the simulator never received a call for {model}"
            await asyncio.sleep(0.02)

    async def wait_received(self, model: str) -> None:
        """Poll (bounded) until the simulator has received a chat call for *model*."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CLOSE_NOTICE_SECONDS
        while not await self.chat_records(model):
            assert loop.time() < give_up, f"the simulator never received a call for {model}"
            await asyncio.sleep(0.02)


@pytest.fixture(name="sim")
async def _sim(simulator: ServerThread) -> Sim:
    sim = Sim(simulator.url)
    await sim.clear()
    return sim


@pytest.fixture(name="straico")
def _straico(simulator: ServerThread) -> StraicoUpstream:
    return StraicoUpstream(base_url=simulator.url)


@pytest.fixture(name="openai_upstream")
def _openai_upstream(openai_server: ServerThread, openai_app: OpenAITestServer) -> OpenAIUpstream:
    openai_app.clear()
    return OpenAIUpstream(base_url=f"{openai_server.url}/v1")


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    client = make_client(StreamingConfig(), connect_timeout=5, max_connections=100)
    yield client
    await client.aclose()


# --- one request through the driver -----------------------------------------------------------


def chat_body(model: str, *, stream: bool, text: str = "hello", **extra: Any) -> dict[str, Any]:
    """A client's chat request body with one user message."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        **extra,
    }


def new_chat_id() -> str:
    return "chatcmpl-" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(24))


@attrs.define
class Outcome:
    """Everything the client got from one exchange, and the session that produced it."""

    head: SendHead
    body: bytes
    session: Session
    #: The body frames as the exchange yielded them.
    frames: list[bytes]

    @property
    def status(self) -> int:
        return self.head.status

    @property
    def headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.head.headers}

    def json(self) -> Any:
        return json.loads(self.body)

    def stream(self, *, include_usage: bool = False) -> StreamReport:
        """The body checked as an OpenAI SSE stream."""
        assert self.headers["content-type"].startswith("text/event-stream"), self.body[:200]
        return check_stream(self.body, include_usage=include_usage)

    def error(self) -> dict[str, Any]:
        """The error object, from the HTTP error body or from the stream's error event."""
        if self.headers["content-type"].startswith("text/event-stream"):
            report = self.stream()
            assert report.error is not None, "the stream ended without an error event"
            return report.error
        error: dict[str, Any] = self.json()["error"]
        return error

    def path(self) -> list[str]:
        """The machine events of the request, in order."""
        return [entry.event for entry in self.session.cursor.entries]


def open_exchange(
    upstream: Upstream,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    config: StreamingConfig | None = None,
    cache: CapabilityCache | None = None,
    key: str = SIM_KEY,
    server_key: bool = True,
    shutting_down: Callable[[], bool] = lambda: False,
) -> Exchange:
    """The session for *body* and its exchange, built as the gateway's chat route builds them."""
    config = config or StreamingConfig()
    cache = cache if cache is not None else CapabilityCache(ttl=config.detection_cache_duration)
    request = parse_chat_request(json.dumps(body).encode())
    prepared = upstream.prepare(request)
    session = Session(
        request,
        config=config,
        cache=cache,
        cache_key=(upstream.cache_prefix, request.model),
        now=asyncio.get_running_loop().time(),
        chat_id=new_chat_id(),
        created=int(time.time()),
        server_key=server_key,
        needs_whole=prepared.needs_whole,
        secrets=(key,),
        transform_answer=prepared.transform,
    )
    return Exchange(session, upstream, prepared, client, key=key, shutting_down=shutting_down)


async def collect(exchange: Exchange) -> Outcome:
    """Run *exchange* to its end: the head first, then every body frame."""
    head: SendHead | None = None
    frames: list[bytes] = []
    async for frame in exchange.frames():
        if isinstance(frame, SendHead):
            assert head is None, "two heads"
            head = frame
        else:
            assert head is not None, "body bytes before the head"
            frames.append(frame)
    assert head is not None, "the exchange ended without a head"
    return Outcome(head, b"".join(frames), exchange.session, frames)


async def run_exchange(
    upstream: Upstream,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    config: StreamingConfig | None = None,
    cache: CapabilityCache | None = None,
    key: str = SIM_KEY,
    server_key: bool = True,
) -> Outcome:
    """One client request through the driver, from the session's start to its last frame."""
    exchange = open_exchange(
        upstream, client, body, config=config, cache=cache, key=key, server_key=server_key
    )
    return await collect(exchange)


def pool_connections(client: httpx.AsyncClient) -> list[Any]:
    """
    The connections httpx keeps for *client* (httpx 0.28 / httpcore 1.0 internals).

    ``AsyncClient._transport`` is the ``AsyncHTTPTransport`` built from the client's limits; its
    ``_pool`` is an ``httpcore.AsyncConnectionPool`` whose public ``connections`` property lists
    every connection it holds, in use or idle. httpcore closes a connection whose response was
    not read to its end (a cancelled head wait, or ``aclose()`` on a half-read body) and drops
    closed connections from that list in the same call, so a cancelled request leaves nothing
    behind; a completed one leaves an idle, reusable connection.
    """
    transport = client._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    return list(transport._pool.connections)
