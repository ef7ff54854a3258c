"""
Try emulated tool calls on the real Straico API through the gateway (docs/tools.md).

Not run in CI: it needs a Straico key and spends a few coins.

    STRAICO_API_KEY=... .venv/bin/python docs/examples/straico_tools_live.py [MODEL]

The script serves the gateway in this process on an ephemeral loopback port, with your key as
the server key, and runs a tool loop with the official openai SDK, streamed: the model asks for
``get_weather``, the script answers each call, and the model writes the final answer. It prints
every turn: the text, the calls (id, name, arguments) and the finish reason. MODEL defaults to
``openai/gpt-4o-mini``; any chat model of ``GET /v1/models`` works. To rehearse without coins,
point it at the simulator and script the model's replies (contract §12, ``text=`` keys)::

    .venv/bin/straico-gateway simulate --port 8001 --key sim-key &
    STRAICO_API_KEY=sim-key STRAICO_GATEWAY_UPSTREAM_URL=http://127.0.0.1:8001 \
        .venv/bin/python docs/examples/straico_tools_live.py "sim/json:text=...:text2=..."
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from openai import AsyncOpenAI

from server.logging import configure_logging
from server.run import listening_socket, serve_gateway
from server.settings import Settings

MODEL = sys.argv[1] if len(sys.argv) > 1 else "openai/gpt-4o-mini"
MAX_TURNS = 4
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "the city's name"}},
                "required": ["city"],
            },
        },
    }
]


def get_weather(city: str) -> dict[str, Any]:
    """A stand-in for a real weather service."""
    return {"city": city, "temperature_c": 21 if city == "Paris" else 9, "sky": "sunny"}


async def tool_loop(base_url: str) -> None:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    messages: list[Any] = [
        {"role": "user", "content": "What is the weather in Paris and in Oslo right now?"}
    ]
    for turn in range(1, MAX_TURNS + 1):
        stream = await client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, stream=True
        )
        content = ""
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
        print(f"--- turn {turn}: finish_reason={finish}")
        if content:
            print(content)
        for call in calls.values():
            print(f"call {call['id']}: {call['name']}({call['arguments']})")
        if finish != "tool_calls":
            return
        messages.append(
            {
                "role": "assistant",
                "content": content or None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                    for call in calls.values()
                ],
            }
        )
        for call in calls.values():
            result = get_weather(**json.loads(call["arguments"]))
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)}
            )
    print(f"--- stopped after {MAX_TURNS} turns")


async def main() -> None:
    # The environment gives the key (STRAICO_API_KEY) and may point elsewhere
    # (STRAICO_GATEWAY_UPSTREAM_URL, e.g. at `straico-gateway simulate`).
    settings = Settings.resolve(
        {"log_format": "console", "log_level": "warning"}, env=os.environ, file=None
    )
    if not settings.upstream_key:
        sys.exit("Set STRAICO_API_KEY to your Straico API key.")
    configure_logging("console", settings.log_level)
    sock = listening_socket("127.0.0.1", 0)
    stop = asyncio.Event()

    async def on_ready(url: str) -> None:
        async def run() -> None:
            try:
                await tool_loop(url)
            finally:
                stop.set()

        asyncio.get_running_loop().create_task(run())

    await serve_gateway(settings, sock=sock, stop=stop, on_ready=on_ready)


if __name__ == "__main__":
    asyncio.run(main())
