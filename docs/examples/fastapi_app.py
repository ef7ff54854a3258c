"""
The gateway's chat endpoint inside a FastAPI app of your own, served by Hypercorn.

    STRAICO_API_KEY=... python docs/examples/fastapi_app.py [--upstream-url URL] [--port 8000]

Then ``POST http://127.0.0.1:8000/v1/chat/completions`` answers as the gateway does (any
OpenAI client works), and ``GET /hello`` is the app's own route.
With ``STRAICO_API_KEY`` set, that key is sent upstream for every call (server key mode);
without it, each client's own ``Authorization: Bearer`` token is (per-request mode).
To try it without a Straico key, run the simulator and point the app at it::

    straico-gateway simulate --port 8001 --key sim-key &
    STRAICO_API_KEY=sim-key python docs/examples/fastapi_app.py --upstream-url http://127.0.0.1:8001

How it is put together (docs/embedding.md):

- one :class:`adapters.service.ChatService` per upstream: its shared HTTP client, its
  capability cache and the exchanges in flight;
- :class:`adapters.asgi.ChatCompletionsApp` is a plain ASGI app, mounted as the endpoint of a
  Starlette ``Route`` (FastAPI's router accepts it as is);
- the lifespan closes the service's client when the app stops;
- on SIGINT or SIGTERM, new requests are refused (503) and requests in flight get
  ``GRACE_SECONDS`` to end by themselves; then :meth:`ChatService.shut_down_all` ends the rest
  with the shutdown error (contract §15).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

from fastapi import FastAPI
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.routing import Route

from adapters.asgi import ChatCompletionsApp
from adapters.keys import KeyPolicy
from adapters.service import ChatService
from adapters.upstream import DEFAULT_STRAICO_URL, StraicoUpstream
from engine.config import StreamingConfig

GRACE_SECONDS = 30.0


def create_app(
    upstream_url: str = DEFAULT_STRAICO_URL,
    key: str | None = None,
    *,
    config: StreamingConfig | None = None,
) -> FastAPI:
    """
    A FastAPI app with a route of its own and the gateway's chat endpoint.

    Args:
        upstream_url: Straico's base URL (or the simulator's).
        key: the Straico key for every call; None lets each client send its own.
        config: the engine's streaming settings (heartbeats, timeouts, detection).
    """
    service = ChatService(
        StraicoUpstream(base_url=upstream_url), config=config, keys=KeyPolicy(server_key=key)
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await service.aclose()

    app = FastAPI(lifespan=lifespan)
    app.state.chat_service = service

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "from the app's own route"}

    app.router.routes.append(Route("/v1/chat/completions", ChatCompletionsApp(service)))
    return app


async def serve_until_signalled(app: FastAPI, host: str, port: int) -> None:
    """Serve *app* until SIGINT or SIGTERM, then shut down within the grace period."""
    service: ChatService = app.state.chat_service
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, signalled.set)

    async def shutdown_trigger() -> None:
        await signalled.wait()
        service.shutting_down = True  # new requests get 503; those in flight go on
        # Hypercorn stops accepting and waits for open streams; at the end of the grace
        # period the service ends those still running, so the wait ends on every Python.
        loop.call_later(GRACE_SECONDS, service.shut_down_all)

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = GRACE_SECONDS + 5
    # Starlette types ASGI messages as plain mappings, Hypercorn as TypedDicts: same protocol.
    await serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description="The gateway's chat endpoint in a FastAPI app.")
    parser.add_argument("--upstream-url", default=DEFAULT_STRAICO_URL)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = create_app(args.upstream_url, os.environ.get("STRAICO_API_KEY") or None)
    asyncio.run(serve_until_signalled(app, args.host, args.port))


if __name__ == "__main__":
    main()
