"""
Drive the gateway's engine with no web framework, no event loop and no network.

    python docs/examples/plain_engine.py

The engine is sans-IO (docs/embedding.md): a :class:`engine.Session` is told what happened
(inputs) at explicit times and answers with what to do (actions).
This script plays the upstream from a script and the driver by hand, in three scenes:

1. pass-through: the upstream streams SSE; the chunks are relayed as they come;
2. fallback: the upstream answers one JSON body after 25 s; heartbeats keep the client alive
   meanwhile, then the answer is replayed as a stream;
3. the client leaves while the gateway waits; the session asks to cancel the upstream call.

For each scene it prints the actions as ``>>`` lines, the SSE bytes the client would get
verbatim between them, then the trace of the request's machine. The ids and times are fixed, so
the output is the same on every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from engine import (
    Action,
    CallUpstream,
    CancelUpstream,
    CapabilityCache,
    ClientGone,
    Delivered,
    Finish,
    Input,
    SendBytes,
    SendHead,
    Session,
    StreamingConfig,
    UpstreamData,
    UpstreamEnd,
    UpstreamHead,
    parse_chat_request,
)

CHAT_ID = "chatcmpl-" + "example".ljust(24, "0")  # a real adapter draws 24 at random
CREATED = 1_700_000_000
MODEL = "example/model"
CONFIG = StreamingConfig(heartbeat_interval=10.0)

#: What happened, and when (seconds since the request was accepted).
Script = Sequence[tuple[float, Input]]


def sse(chunk: dict[str, object]) -> bytes:
    """One upstream SSE event."""
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def upstream_chunk(delta: dict[str, object], finish_reason: str | None = None) -> bytes:
    """A chunk as an OpenAI-compatible upstream streams it (its own id; the gateway rewrites it)."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return sse({"id": "upstream-1", "object": "chat.completion.chunk", "choices": [choice]})


STREAMED: Script = [
    (0.4, UpstreamHead(200, "text/event-stream")),
    # Bytes arrive however the network splits them: here one event is cut in two.
    (0.5, UpstreamData(upstream_chunk({"role": "assistant", "content": ""}))),
    (0.6, UpstreamData(upstream_chunk({"content": "Hello"})[:20])),
    (0.6, UpstreamData(upstream_chunk({"content": "Hello"})[20:])),
    (0.7, UpstreamData(upstream_chunk({"content": " from the engine."}))),
    (0.8, UpstreamData(upstream_chunk({}, "stop") + b"data: [DONE]\n\n")),
    (0.8, UpstreamEnd()),
]

WHOLE_ANSWER = {
    "object": "chat.completion",
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "A whole answer, replayed in pieces."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}

ANSWERED_WHOLE: Script = [
    (25.0, UpstreamHead(200, "application/json")),
    (25.1, UpstreamData(json.dumps(WHOLE_ANSWER).encode())),
    (25.1, UpstreamEnd()),
]

CLIENT_LEFT: Script = [(12.5, ClientGone())]


def new_session(*, stream: bool, cache: CapabilityCache) -> Session:
    """A session for one chat request, as a framework adapter would build it."""
    request = parse_chat_request(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello."}],
            "stream": stream,
            "stream_options": {"include_usage": True},
        }
    )
    return Session(
        request,
        config=CONFIG,
        cache=cache,
        cache_key=("example upstream", MODEL),
        now=0.0,
        chat_id=CHAT_ID,
        created=CREATED,
        server_key=True,
    )


def perform(actions: Iterable[Action]) -> bool:
    """Do what the session asks (here: print it); True once it asked to finish."""
    finished = False
    for action in actions:
        if isinstance(action, CallUpstream):
            print(f">> call the upstream with stream={action.stream}")
        elif isinstance(action, CancelUpstream):
            print(">> cancel the upstream call")
        elif isinstance(action, SendHead):
            headers = ", ".join(f"{name}: {value}" for name, value in action.headers)
            print(f">> send the head: {action.status} ({headers})")
        elif isinstance(action, SendBytes):
            print(action.data.decode(), end="")  # the client's bytes, verbatim
        elif isinstance(action, Finish):
            print(">> end the response body")
            finished = True
    return finished


def run(title: str, session: Session, script: Script) -> None:
    """Play *script* against *session*, waking it at its deadlines in between."""
    print(f"### {title}")
    finished = perform(session.start(now=0.0))
    for at, event in script:
        # A real driver sleeps until the next input or the session's deadline, whichever
        # comes first; here the inputs' times are known, so the deadlines before each are run.
        while (deadline := session.next_deadline()) is not None and deadline <= at:
            finished |= perform(session.handle_timer(deadline))
        finished |= perform(session.handle(event, at))
    if finished:
        # Every byte was handed to the client: the session can end cleanly (drained).
        session.handle(Delivered(), now=script[-1][0])
    for entry in session.cursor.entries:
        print(f">> trace: {entry.source} --{entry.event}--> {entry.target} at {entry.at_ms} ms")
    print(f">> outcome: {session.outcome} (error: {session.error_kind})")


def main() -> None:
    cache = CapabilityCache(ttl=600.0)  # one per upstream, shared by every request
    run("pass-through", new_session(stream=True, cache=cache), STREAMED)
    run("fallback with heartbeats", new_session(stream=True, cache=cache), ANSWERED_WHOLE)
    run("client gone", new_session(stream=True, cache=cache), CLIENT_LEFT)


if __name__ == "__main__":
    main()
