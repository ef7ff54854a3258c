"""
The floor of our stack: a bare Quart + Hypercorn + httpx pass-through with no logic.

``POST /v1/chat/completions`` is sent to ``{upstream}/chat/completions`` over one shared
``httpx.AsyncClient`` and the upstream's raw body is relayed with ``aiter_raw`` as it arrives,
status and content type kept. No validation, no SSE parsing, no identity, no heartbeats: what
the gateway costs beyond this is what its logic costs.

It runs the way the gateway does (one process, Hypercorn's ``serve()``, uvloop where installed
unless ``--loop asyncio``) so the two compare on the same interpreter and loop:
``python -m bench.floor_app --upstream-url http://127.0.0.1:PORT/v1 --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request

from bench.fake_upstream import raise_open_files_limit

__all__ = ["create_floor_app", "main"]


def create_floor_app(upstream_url: str) -> Quart:
    app = Quart("floor")
    app.config["RESPONSE_TIMEOUT"] = None
    clients: list[httpx.AsyncClient] = []

    @app.while_serving
    async def lifespan() -> AsyncGenerator[None, None]:
        clients.append(
            httpx.AsyncClient(
                timeout=httpx.Timeout(connect=10, read=None, write=300, pool=300),
                limits=httpx.Limits(
                    max_connections=2000, max_keepalive_connections=2000, keepalive_expiry=4
                ),
                trust_env=False,
            )
        )
        yield
        await clients[0].aclose()

    @app.post("/v1/chat/completions")
    async def relay() -> Response:
        client = clients[0]
        upstream_request = client.build_request(
            "POST",
            f"{upstream_url}/chat/completions",
            content=await request.get_data(),
            headers={"Content-Type": "application/json"},
        )
        reply = await client.send(upstream_request, stream=True)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for data in reply.aiter_raw():
                    yield data
            finally:
                await reply.aclose()

        response = Response(body(), status=reply.status_code)
        response.content_type = reply.headers.get("content-type", "application/json")
        response.timeout = None
        return response

    return app


async def _serve(upstream_url: str, host: str, port: int) -> None:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 5.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(create_floor_app(upstream_url), config, shutdown_trigger=stop.wait)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The bare pass-through floor.")
    parser.add_argument("--upstream-url", required=True, help="base URL with its /v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args(argv)
    raise_open_files_limit()
    loop_factory = None
    if args.loop != "asyncio":
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            if args.loop == "uvloop":
                raise
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        runner.run(_serve(args.upstream_url.rstrip("/"), args.host, args.port))


if __name__ == "__main__":
    main()
