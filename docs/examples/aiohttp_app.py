"""
The gateway's chat endpoint inside an aiohttp app of your own, served by aiohttp.

    STRAICO_API_KEY=... python docs/examples/aiohttp_app.py [--upstream-url URL] [--port 8000]

Then ``POST http://127.0.0.1:8000/v1/chat/completions`` answers as the gateway does (any
OpenAI client works), and ``GET /hello`` is the app's own route.
With ``STRAICO_API_KEY`` set, that key is sent upstream for every call (server key mode);
without it, each client's own ``Authorization: Bearer`` token is (per-request mode).
To try it without a Straico key, run the simulator and point the app at it::

    straico-gateway simulate --port 8001 --key sim-key &
    STRAICO_API_KEY=sim-key python docs/examples/aiohttp_app.py --upstream-url http://127.0.0.1:8001

How it is put together (docs/embedding.md):

- one :class:`adapters.service.ChatService` per upstream, kept under an ``AppKey``;
- :func:`adapters.aiohttp_app.chat_completions_handler` is an ordinary aiohttp handler;
- the server runs with ``handler_cancellation=True``: only then does aiohttp cancel a handler
  whose client left, which is how the upstream call gets cancelled at once (contract §17);
- on shutdown, new requests are refused (503) and requests in flight get ``GRACE_SECONDS`` to
  end by themselves; then :meth:`ChatService.shut_down_all` ends the rest with the shutdown
  error (contract §15), and the cleanup closes the service's client.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from aiohttp import web

from adapters.aiohttp_app import chat_completions_handler
from adapters.keys import KeyPolicy
from adapters.service import ChatService
from adapters.upstream import DEFAULT_STRAICO_URL, StraicoUpstream
from engine.config import StreamingConfig

GRACE_SECONDS = 30.0
CHAT_SERVICE = web.AppKey("chat_service", ChatService)


async def hello(_: web.Request) -> web.Response:
    return web.json_response({"hello": "from the app's own route"})


async def end_streams_after_grace(app: web.Application) -> None:
    # aiohttp calls this once it stopped accepting, then waits for the handlers still running.
    service = app[CHAT_SERVICE]
    service.shutting_down = True  # new requests get 503; those in flight go on
    asyncio.get_running_loop().call_later(GRACE_SECONDS, service.shut_down_all)


async def close_service(app: web.Application) -> None:
    await app[CHAT_SERVICE].aclose()


def create_app(
    upstream_url: str = DEFAULT_STRAICO_URL,
    key: str | None = None,
    *,
    config: StreamingConfig | None = None,
) -> web.Application:
    """
    An aiohttp app with a route of its own and the gateway's chat endpoint.

    Serve it with ``handler_cancellation=True`` (see :func:`main`).

    Args:
        upstream_url: Straico's base URL (or the simulator's).
        key: the Straico key for every call; None lets each client send its own.
        config: the engine's streaming settings (heartbeats, timeouts, detection).
    """
    service = ChatService(
        StraicoUpstream(base_url=upstream_url), config=config, keys=KeyPolicy(server_key=key)
    )
    app = web.Application(client_max_size=service.max_body_size)
    app[CHAT_SERVICE] = service
    app.router.add_get("/hello", hello)
    app.router.add_post("/v1/chat/completions", chat_completions_handler(service))
    app.on_shutdown.append(end_streams_after_grace)
    app.on_cleanup.append(close_service)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="The gateway's chat endpoint in an aiohttp app.")
    parser.add_argument("--upstream-url", default=DEFAULT_STRAICO_URL)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = create_app(args.upstream_url, os.environ.get("STRAICO_API_KEY") or None)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        handler_cancellation=True,  # a client leaving cancels its handler, and the upstream call
        shutdown_timeout=GRACE_SECONDS + 5,
    )


if __name__ == "__main__":
    main()
