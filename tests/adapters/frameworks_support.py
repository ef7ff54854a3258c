"""
The chat service hosted by three frameworks, each served over real loopback sockets.

- Starlette and FastAPI mount :class:`adapters.asgi.ChatCompletionsApp` as the endpoint of a
  ``Route``; Hypercorn serves them in a :class:`tests.support.servers.ServerThread`.
- aiohttp mounts :func:`adapters.aiohttp_app.chat_completions_handler`; its own server runs in
  an :class:`AiohttpServerThread`, with ``handler_cancellation=True`` (contract §17).

:class:`SimRecords` asks the simulator directly: what it recorded, and its own answers.

Every host closes the service's shared upstream client when it stops (its lifespan, or aiohttp's
``on_cleanup``); it has a test-only route, ``POST /_test/shut-down``, that calls
:meth:`ChatService.shut_down_all` in its serving loop; and it reports each finished exchange to
a :class:`FinishedExchanges`, so a test can read the session of a request whose client left.

Rules, as in :mod:`tests.support.servers`:

1. A socket bound to port 0 is handed to the server (aiohttp's ``SockSite``), so the port is
   never chosen and then lost to someone else.
2. ``start()`` returns once the server accepts connections; ``stop()`` is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Literal, Self

import httpx
from aiohttp import web
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.aiohttp_app import chat_completions_handler
from adapters.asgi import ChatCompletionsApp
from adapters.driver import Exchange
from adapters.service import ChatService
from server.simulator.answers import answer_text
from server.simulator.grammar import parse_model_id
from tests.support.servers import ServerThread

from .conftest import SIM_KEY

__all__ = [
    "CHAT_PATH",
    "CLIENT_TIMEOUT",
    "FRAMEWORKS",
    "PROMPT",
    "SHUT_DOWN_PATH",
    "AiohttpServerThread",
    "FinishedExchanges",
    "Framework",
    "SimRecords",
    "aiohttp_application",
    "chat_body",
    "fastapi_application",
    "serve_service",
    "simulated_answer",
    "starlette_application",
]

Framework = Literal["starlette", "fastapi", "aiohttp"]
FRAMEWORKS: tuple[Framework, ...] = ("starlette", "fastapi", "aiohttp")
CHAT_PATH = "/v1/chat/completions"
#: ``POST`` here calls :meth:`ChatService.shut_down_all` in the serving loop (tests only).
SHUT_DOWN_PATH = "/_test/shut-down"
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 10.0
#: How long aiohttp waits for open requests at shutdown before it cancels them.
SHUTDOWN_TIMEOUT = 1.0
JOIN_TIMEOUT = 10.0
CLIENT_TIMEOUT = 10.0
#: How long the simulator may take to see the gateway close its upstream connection.
CLOSE_NOTICE_SECONDS = 2.0
POLL_SECONDS = 0.01
#: The user message of every request in these tests.
PROMPT = "tell me about adapters"


# --- the simulator, asked directly -----------------------------------------------------------


class SimRecords:
    """The simulator, asked directly: its records and its own answers."""

    def __init__(self, url: str) -> None:
        self.url = url

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_sim/requests", timeout=CLIENT_TIMEOUT)

    def settled(self, model: str) -> list[dict[str, Any]]:
        """The chat calls for *model*, once none is still being answered (bounded wait)."""
        response = httpx.get(
            f"{self.url}/_sim/requests",
            params={"wait": CLOSE_NOTICE_SECONDS},
            timeout=CLOSE_NOTICE_SECONDS + CLIENT_TIMEOUT,
        )
        return [r for r in response.json() if r["model"] == model]

    def wait_received(self, model: str) -> None:
        """Return once a chat call for *model* reached the simulator (bounded poll)."""
        give_up = time.monotonic() + CLOSE_NOTICE_SECONDS
        while not any(r["model"] == model for r in self._records()):
            assert time.monotonic() < give_up, f"the simulator never received a call for {model}"
            time.sleep(POLL_SECONDS)

    def _records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = httpx.get(
            f"{self.url}/_sim/requests", timeout=CLIENT_TIMEOUT
        ).json()
        return records

    def answer(self, model: str) -> str:
        """The simulator's own non-streaming answer to :data:`PROMPT` (not recorded after)."""
        response = httpx.post(
            f"{self.url}/v2/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": PROMPT}]},
            headers={"Authorization": f"Bearer {SIM_KEY}"},
            timeout=CLIENT_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        self.clear()
        content: str = response.json()["choices"][0]["message"]["content"]
        return content


def chat_body(model: str, *, stream: bool, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": PROMPT}]
    return {"model": model, "messages": messages, "stream": stream, **extra}


def simulated_answer(model: str) -> str:
    """
    The simulator's answer text to :data:`PROMPT`, from its own answer function.

    For slow models, where asking the simulator first would cost the model's delay again.
    """
    simulated = parse_model_id(model)
    assert simulated is not None, model
    return answer_text(simulated, model, [{"role": "user", "content": PROMPT}])


class FinishedExchanges:
    """The exchanges whose session finished, in order; safe to read from the test's thread."""

    def __init__(self) -> None:
        self._done: list[Exchange] = []
        self._changed = threading.Condition()

    def __call__(self, exchange: Exchange) -> None:
        with self._changed:
            self._done.append(exchange)
            self._changed.notify_all()

    def wait_for_one(self, timeout: float = 5.0) -> Exchange:
        """The one finished exchange, once there is one (bounded by *timeout*)."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._done), timeout)
            assert len(self._done) == 1, f"{len(self._done)} exchanges finished"
            return self._done[0]


# --- the three applications -----------------------------------------------------------------


def _closing_lifespan(
    service: ChatService,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        await service.aclose()  # the shared upstream client lives as long as the app serves

    return lifespan


def _shut_down_endpoint(service: ChatService) -> Callable[[Request], Awaitable[Response]]:
    async def shut_down(_: Request) -> Response:
        service.shut_down_all()  # in the serving loop, as a host's shutdown code would
        return Response(status_code=204)

    return shut_down


def starlette_application(
    service: ChatService, on_finish: Callable[[Exchange], None] | None = None
) -> Starlette:
    """A Starlette app: the chat endpoint, and the test's shutdown switch."""
    endpoint = ChatCompletionsApp(service, on_finish=on_finish)
    routes = [
        Route(CHAT_PATH, endpoint),
        Route(SHUT_DOWN_PATH, _shut_down_endpoint(service), methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=_closing_lifespan(service))


def fastapi_application(
    service: ChatService, on_finish: Callable[[Exchange], None] | None = None
) -> FastAPI:
    """A FastAPI app: a route of its own, the chat endpoint beside it, the shutdown switch."""
    app = FastAPI(lifespan=_closing_lifespan(service))

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    app.router.routes.append(Route(CHAT_PATH, ChatCompletionsApp(service, on_finish=on_finish)))
    app.router.routes.append(Route(SHUT_DOWN_PATH, _shut_down_endpoint(service), methods=["POST"]))
    return app


def aiohttp_application(
    service: ChatService, on_finish: Callable[[Exchange], None] | None = None
) -> web.Application:
    """An aiohttp app: the chat endpoint, and the test's shutdown switch."""
    app = web.Application(client_max_size=service.max_body_size)
    app.router.add_post(CHAT_PATH, chat_completions_handler(service, on_finish=on_finish))

    async def shut_down(_: web.Request) -> web.Response:
        service.shut_down_all()
        return web.Response(status=204)

    async def close_service(_: web.Application) -> None:
        await service.aclose()

    app.router.add_post(SHUT_DOWN_PATH, shut_down)
    app.on_cleanup.append(close_service)
    return app


# --- aiohttp's own server in a thread -------------------------------------------------------


class AiohttpServerThread:
    """One aiohttp application served by aiohttp in a thread on an ephemeral loopback port."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._serving = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        self._port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"aiohttp-{self._port}", daemon=True
        )
        self._thread.start()
        if not self._serving.wait(STARTUP_TIMEOUT):
            self.stop()
            raise RuntimeError("the aiohttp server did not start in time")
        if self._failure is not None:
            self._thread.join(JOIN_TIMEOUT)
            raise RuntimeError("the aiohttp server failed to start") from self._failure
        return self

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._main(sock))
        except BaseException as exc:  # reported to start(); a thread has nobody else to tell
            self._failure = exc
        finally:
            self._serving.set()

    async def _main(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        # handler_cancellation: a client leaving cancels its handler (contract §17).
        runner = web.AppRunner(
            self._app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            self._serving.set()
            await self._stop_requested.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Shut the server down and join its thread; safe to call twice."""
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may have closed meanwhile
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(SHUTDOWN_TIMEOUT + JOIN_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("the aiohttp server thread did not stop")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def serve_service(
    framework: Framework,
    service: ChatService,
    on_finish: Callable[[Exchange], None] | None = None,
) -> Iterator[str]:
    """Serve *service* under *framework* on loopback; yield the base URL."""
    if framework == "aiohttp":
        with AiohttpServerThread(aiohttp_application(service, on_finish)) as aiohttp_server:
            yield aiohttp_server.url
        return
    build = starlette_application if framework == "starlette" else fastapi_application
    with ServerThread(build(service, on_finish), graceful_timeout=0.5) as server:
        yield server.url
