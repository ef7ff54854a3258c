"""
``make demo``: the gateway on the built-in simulator, shown working.

It serves ``straico-gateway serve --simulate`` on ``DEMO_PORT`` (8000), prints a curl line and an
openai-SDK snippet that work against it, then sends three requests of its own and prints what
arrived: a pass-through stream, a slow JSON upstream replayed with heartbeats, and an upstream
that refuses the stream flag. It keeps serving until Ctrl-C (``DEMO_EXIT=1``: stop after the
showcase).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import attrs
import httpx

from .logging import configure_logging
from .run import serve_gateway
from .settings import Settings

SHOWCASE = (
    ("sim/stream:chunks=6:gap=150", "the upstream streams: chunks are relayed as they come"),
    ("sim/json:delay=2500", "the upstream answers whole after 2.5 s: heartbeats, then a replay"),
    ("sim/reject", "the upstream refuses the stream flag: one repeat, then a replay"),
)


def banner(url: str) -> str:
    return f"""
straico-gateway is running at {url} on the built-in Straico simulator.

Try it with curl:
  curl -N {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "sim/stream", "stream": true,
         "messages": [{{"role": "user", "content": "hi"}}]}}'

Or with the openai SDK:
  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="any")
  for chunk in client.chat.completions.create(
          model="sim/json:delay=3000", stream=True,
          messages=[{{"role": "user", "content": "hi"}}]):
      print(chunk.choices[0].delta.content or "", end="", flush=True) if chunk.choices else None

Models: sim/stream, sim/json, sim/reject (and keys like :delay=MS, :status=429; see the README).
"""


def describe(line: str) -> str:
    """One SSE line, summarised: what a client would notice in it."""
    if not line.startswith("data: {"):
        return line
    chunk = json.loads(line[len("data: ") :])
    if "error" in chunk:
        return f"error event: {chunk['error']['code']}"
    if not chunk["choices"]:
        return f"usage: {chunk.get('usage')}"
    choice = chunk["choices"][0]
    if choice.get("finish_reason"):
        return f"finish chunk: {choice['finish_reason']}"
    delta = choice["delta"]
    if "role" in delta:
        return f"role chunk ({chunk['id']}, model {chunk['model']})"
    return f"content: {delta.get('content')!r}"


async def showcase(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for model, what in SHOWCASE:
            print(f"\n=== {model}: {what}")
            body = {
                "model": model,
                "stream": True,
                "messages": [{"role": "user", "content": "Say something nice."}],
            }
            started = time.perf_counter()
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                mode = response.headers.get("x-gateway-stream-mode")
                print(f"HTTP {response.status_code}, X-Gateway-Stream-Mode: {mode}")
                async for line in response.aiter_lines():
                    if line:
                        elapsed = time.perf_counter() - started
                        print(f"  {elapsed:6.2f}s  {describe(line)}")


async def main() -> None:
    port = int(os.environ.get("DEMO_PORT", "8000"))
    settings = Settings.resolve(
        {"simulate": True, "port": port, "heartbeat_interval": 1.0, "log_format": "console"},
        env=os.environ,
        file=None,
    )
    settings = attrs.evolve(settings, log_level="warning")
    configure_logging("console", settings.log_level)
    stop = asyncio.Event()

    async def on_ready(url: str) -> None:
        print(banner(url), flush=True)

        async def run_showcase() -> None:
            try:
                await showcase(url)
            finally:
                print("\nThe gateway keeps serving; press Ctrl-C to stop.", flush=True)
                if os.environ.get("DEMO_EXIT") == "1":
                    stop.set()

        asyncio.get_running_loop().create_task(run_showcase())

    await serve_gateway(settings, stop=stop, on_ready=on_ready)


if __name__ == "__main__":
    asyncio.run(main())
