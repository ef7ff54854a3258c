"""
The engine's own cost: CPU per request of one :class:`engine.session.Session`, no IO.

Contract §14: from a parsed request to its last output, a pass-through costs at most 50 µs of
CPU (machine, ids, head, role, finish, usage and ``[DONE]`` chunks, trace), the per-chunk relay
excluded and measured on its own; a 200-word replay costs at most 50 µs with all its deltas.

What is timed (``time.process_time`` over many iterations, median of several repeats):

- ``passthrough``: a chat id drawn as the server draws it, a ``Session``, ``start``, the SSE
  head, one read holding the upstream's role, finish and usage chunks and ``[DONE]``, and
  ``Delivered``: every fixed step of a relayed stream;
- ``relay_per_chunk``: the same with 100 content chunks, each its own read, minus the above,
  divided by 100;
- ``replay_200_words``: a JSON head, the whole 200-word body in one read, the end of the body,
  the replay (all its deltas) and ``Delivered``;
- ``parse_request`` and ``make_chat_id`` on their own, for the breakdown (parsing is outside
  the budget: the session starts from a parsed request).

``python -m bench.engine_micro`` prints the result as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

from engine.capability import CapabilityCache
from engine.config import StreamingConfig
from engine.events import Delivered, UpstreamData, UpstreamEnd, UpstreamHead
from engine.request import ChatRequest, parse_chat_request
from engine.session import Session

__all__ = ["measure", "run_engine_micro"]

CACHE_KEY = ("openai http://upstream/v1", "provider/model")
#: Where the service draws its chat ids (the first module that has it).
CHAT_ID_MODULES = ("adapters.service", "server.gateway")


def _service_make_chat_id() -> Callable[[], str]:
    """The service's own chat-id function, so its cost is measured as it is."""
    for name in CHAT_ID_MODULES:
        with contextlib.suppress(ImportError, AttributeError):
            return cast(Callable[[], str], importlib.import_module(name).make_chat_id)
    raise ImportError(f"no make_chat_id in {', '.join(CHAT_ID_MODULES)}")


make_chat_id = _service_make_chat_id()
REQUEST_BODY = json.dumps(
    {
        "model": "provider/model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something."},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    obj = {
        "id": "up-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "provider/model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


ROLE = _chunk({"role": "assistant", "content": ""})
FINISH = _chunk({}, "stop")
USAGE = (
    b'data: {"id":"up-1","object":"chat.completion.chunk","created":1,"model":"provider/model",'
    b'"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":100,"total_tokens":109}}\n\n'
)
DONE = b"data: [DONE]\n\n"
CONTENT = [_chunk({"content": f"word{i} "}) for i in range(100)]
ANSWER_200_WORDS = json.dumps(
    {
        "id": "up-1",
        "object": "chat.completion",
        "created": 1,
        "model": "provider/model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": " ".join(f"word{i}" for i in range(200)),
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 200, "total_tokens": 209},
    }
).encode()

SSE_HEAD = UpstreamHead(200, "text/event-stream")
JSON_HEAD = UpstreamHead(200, "application/json")


def _session(request: ChatRequest, config: StreamingConfig, cache: CapabilityCache) -> Session:
    return Session(
        request,
        config=config,
        cache=cache,
        cache_key=CACHE_KEY,
        now=0.0,
        chat_id=make_chat_id(),
        created=int(time.time()),
        server_key=True,
    )


def _out(actions: list[Any]) -> int:
    """Touch every action, as a driver would: count the bytes to send."""
    return sum(len(getattr(action, "data", b"")) for action in actions)


def passthrough(request: ChatRequest, config: StreamingConfig, cache: CapabilityCache) -> int:
    session = _session(request, config, cache)
    sent = _out(session.start(0.0))
    sent += _out(session.handle(SSE_HEAD, 0.001))
    sent += _out(session.handle(UpstreamData(ROLE + FINISH + USAGE + DONE), 0.002))
    sent += _out(session.handle(Delivered(), 0.003))
    assert session.state == "done"
    return sent


def passthrough_100(request: ChatRequest, config: StreamingConfig, cache: CapabilityCache) -> int:
    session = _session(request, config, cache)
    sent = _out(session.start(0.0))
    sent += _out(session.handle(SSE_HEAD, 0.001))
    sent += _out(session.handle(UpstreamData(ROLE), 0.002))
    for chunk in CONTENT:
        sent += _out(session.handle(UpstreamData(chunk), 0.003))
    sent += _out(session.handle(UpstreamData(FINISH + USAGE + DONE), 0.004))
    sent += _out(session.handle(Delivered(), 0.005))
    assert session.state == "done"
    return sent


def replay(request: ChatRequest, config: StreamingConfig, cache: CapabilityCache) -> int:
    session = _session(request, config, cache)
    sent = _out(session.start(0.0))
    sent += _out(session.handle(JSON_HEAD, 0.001))
    sent += _out(session.handle(UpstreamData(ANSWER_200_WORDS), 0.002))
    sent += _out(session.handle(UpstreamEnd(), 0.003))
    sent += _out(session.handle(Delivered(), 0.004))
    assert session.state == "done"
    return sent


def measure(step: Callable[[], object], *, iterations: int, repeats: int) -> float:
    """Median CPU µs per call of *step* over *repeats* runs of *iterations* calls."""
    step()  # warm caches and imports
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(iterations):
            step()
        samples.append((time.process_time() - started) / iterations * 1e6)
    return round(statistics.median(samples), 2)


def run_engine_micro(*, iterations: int = 5000, repeats: int = 5) -> dict[str, Any]:
    """Every figure of the module docstring, in CPU µs."""
    config = StreamingConfig()
    cache = CapabilityCache(ttl=600)
    request = parse_chat_request(REQUEST_BODY)
    fixed = measure(
        lambda: passthrough(request, config, cache), iterations=iterations, repeats=repeats
    )
    with_chunks = measure(
        lambda: passthrough_100(request, config, cache),
        iterations=max(1, iterations // 20),
        repeats=repeats,
    )
    return {
        "iterations": iterations,
        "repeats": repeats,
        "passthrough_us": fixed,
        "passthrough_100_chunks_us": with_chunks,
        "relay_per_chunk_us": round((with_chunks - fixed) / len(CONTENT), 2),
        "replay_200_words_us": measure(
            lambda: replay(request, config, cache), iterations=iterations, repeats=repeats
        ),
        "make_chat_id_us": measure(make_chat_id, iterations=iterations * 4, repeats=repeats),
        "parse_request_us": measure(
            lambda: parse_chat_request(REQUEST_BODY), iterations=iterations, repeats=repeats
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CPU cost of one engine session, no IO.")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(run_engine_micro(iterations=args.iterations, repeats=args.repeats)))


if __name__ == "__main__":
    main()
