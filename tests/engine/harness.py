"""A synchronous stand-in for the driver: feeds a session and records what the client gets."""

from __future__ import annotations

import json
from typing import Any

from engine.capability import CapabilityCache
from engine.config import StreamingConfig
from engine.events import (
    Action,
    CallUpstream,
    CancelUpstream,
    Delivered,
    Finish,
    Input,
    SendBytes,
    SendHead,
)
from engine.request import parse_chat_request
from engine.session import AnswerTransform, Session

MODEL = "sim/test"
KEY = ("straico http://upstream", MODEL)


def chat_body(*, stream: bool, include_usage: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(extra)
    return body


def sse_stream(
    pieces: list[str],
    *,
    finish: str | None = "stop",
    usage: dict[str, Any] | None = None,
    done: bool = True,
    role: bool = True,
) -> list[bytes]:
    """The upstream's SSE events, one bytes object per event."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        obj = {
            "id": "up-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "provider/model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(obj)}\n\n".encode()

    events = []
    if role:
        events.append(chunk({"role": "assistant", "content": ""}))
    events.extend(chunk({"content": piece}) for piece in pieces)
    if finish is not None:
        events.append(chunk({}, finish))
    if usage is not None:
        obj = {
            "id": "up-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "provider/model",
            "choices": [],
            "usage": usage,
        }
        events.append(f"data: {json.dumps(obj)}\n\n".encode())
    if done:
        events.append(b"data: [DONE]\n\n")
    return events


def completion_body(
    text: str, *, finish: str | None = "stop", usage: dict[str, Any] | None = None, **extra: Any
) -> bytes:
    body = {
        "id": "gen-1",
        "object": "chat.completion",
        "created": 1,
        "model": "provider/model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
        "usage": usage or {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        **extra,
    }
    return json.dumps(body).encode()


class Harness:
    """Runs one session; ``calls`` lists the stream flag of every upstream call."""

    def __init__(
        self,
        body: dict[str, Any],
        *,
        config: StreamingConfig | None = None,
        cache: CapabilityCache | None = None,
        server_key: bool = True,
        needs_whole: bool = False,
        transform: AnswerTransform | None = None,
        secrets: tuple[str, ...] = (),
        now: float = 0.0,
    ) -> None:
        self.config = config or StreamingConfig()
        self.cache = cache if cache is not None else CapabilityCache(ttl=600)
        self.session = Session(
            parse_chat_request(json.dumps(body).encode()),
            config=self.config,
            cache=self.cache,
            cache_key=KEY,
            now=now,
            chat_id="chatcmpl-" + "a" * 24,
            created=1700000000,
            server_key=server_key,
            needs_whole=needs_whole,
            secrets=secrets,
            transform_answer=transform,
        )
        self.head: SendHead | None = None
        self.body = bytearray()
        self.calls: list[bool] = []
        self.cancels = 0
        self.finished = False
        self.now = now

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendHead):
                assert self.head is None, "two heads"
                self.head = action
            elif isinstance(action, SendBytes):
                assert self.head is not None, "bytes before the head"
                assert not self.finished, "bytes after Finish"
                self.body += action.data
            elif isinstance(action, CallUpstream):
                self.calls.append(action.stream)
            elif isinstance(action, CancelUpstream):
                self.cancels += 1
            elif isinstance(action, Finish):
                self.finished = True
        if self.finished and not self.session.is_final:
            self.session.handle(Delivered(), self.now)

    def start(self) -> Harness:
        self.apply(self.session.start(self.now))
        return self

    def feed(self, *events: Input, at: float | None = None) -> Harness:
        for event in events:
            if at is not None:
                self.now = at
            self.apply(self.session.handle(event, self.now))
        return self

    def tick(self, at: float) -> Harness:
        self.now = at
        self.apply(self.session.handle_timer(at))
        return self

    @property
    def status(self) -> int | None:
        return self.head.status if self.head else None

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.head.headers) if self.head else {}

    def json(self) -> Any:
        return json.loads(bytes(self.body))

    def path(self) -> list[str]:
        return [e.event for e in self.session.cursor.entries]
