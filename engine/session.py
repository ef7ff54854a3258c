"""
One request, sans-IO: facts in, actions out, time as an argument.

Theory of operation
-------------------
The driver builds a :class:`Session`, calls :meth:`Session.start`, performs the actions it
returns, and from then on tells the session what happened (:meth:`Session.handle`) and when
its deadline passed (:meth:`Session.handle_timer`), performing the actions each call returns.

Rules:

1. The lifecycle goes through :class:`engine.trace.Cursor` only: a handful of transitions per
   request. The per-chunk relay (:meth:`Session._relay`) never touches it.
2. Once the cursor is final, every input is absorbed; in ``draining`` the upstream's inputs
   are absorbed too (contract §2).
3. §5 commit rule: a streaming client's head goes out at the first of: something to relay,
   or the first tick. Before the commit a failure is an HTTP error; after it one error event.
4. A failure leaves the session in ``errored`` with its error recorded, and the actions
   returned say what the client gets. An unexpected exception is a bug: the session records
   it in :attr:`Session.exception`, ends ``errored`` via ``gateway_failed`` and answers
   ``internal_error``; the driver logs the exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

from .answer import Answer, StreamAssembler, parse_completion_bytes
from .capability import CacheKey, CapabilityCache, plan_call
from .chunks import Identity, dumps, function_call_deltas, tool_call_deltas
from .config import StreamingConfig
from .errors import (
    GatewayError,
    InternalError,
    ShuttingDown,
    StreamingUnsupported,
    StreamTimeout,
    UpstreamDisconnected,
    UpstreamMalformed,
    UpstreamTimeout,
)
from .events import (
    Action,
    CallUpstream,
    CancelUpstream,
    ClientGone,
    Delivered,
    Finish,
    Input,
    SendBytes,
    SendHead,
    ShutDown,
    UpstreamData,
    UpstreamEnd,
    UpstreamFailed,
    UpstreamHead,
)
from .finish import map_finish_reason
from .replay import split_for_replay
from .request import ChatRequest
from .sse import DONE, KEEP_ALIVE, SSEDecoder, SSEEvent
from .trace import Cursor
from .upstream_errors import classify_upstream_error, error_from_event

__all__ = ["AnswerTransform", "Session"]

#: Adapter hook applied to a whole answer before it is delivered (Straico ``stop``, tools).
AnswerTransform = Callable[[Answer], Answer]

JSON_HEADERS: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
SSE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
)
STREAM_MODE_HEADER = "X-Gateway-Stream-Mode"
_MODE_AT_COMMIT = {
    "detecting": "detecting",
    "streaming": "stream",
    "falling_back": "fallback",
    "draining": "fallback",
}

#: How much of an upstream error body is kept to classify it.
ERROR_BODY_LIMIT = 64 * 1024
#: The largest whole answer accepted from the upstream.
ANSWER_BODY_LIMIT = 64 * 1024 * 1024

# What the current upstream body is being read as.
BodyMode = Literal["none", "relay", "assemble", "whole", "error"]


class Session:
    """The engine's view of one chat request, from acceptance to its last byte."""

    def __init__(
        self,
        request: ChatRequest,
        *,
        config: StreamingConfig,
        cache: CapabilityCache,
        cache_key: CacheKey,
        now: float,
        chat_id: str,
        created: int,
        server_key: bool,
        needs_whole: bool = False,
        secrets: Sequence[str] = (),
        transform_answer: AnswerTransform | None = None,
        record_answer: bool = False,
    ) -> None:
        self.request = request
        self.config = config
        self.cursor = Cursor(started_at=now)
        self.identity = Identity(chat_id, created, request.model)
        self.client_stream = request.stream
        self.include_usage = request.include_usage
        self._cache = cache
        self._cache_key = cache_key
        self._server_key = server_key
        self._needs_whole = needs_whole
        self._secrets = tuple(s for s in secrets if s)
        self._transform = transform_answer
        self._record_answer = record_answer
        self._started_at = now

        # What the log line reports (contract §11).
        self.capability = "unknown"
        self.cache_result: str | None = None
        self.learned: str | None = None
        self.upstream_calls = 0
        #: The status of each upstream call's response head, in order (metrics, readiness).
        self.upstream_statuses: list[int] = []
        self.committed = False
        self.status: int | None = None
        self.first_byte_at: float | None = None
        self.chunks_out = 0
        self.heartbeats = 0
        self.finish_reason: str | None = None
        self.upstream_finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.upstream_model: str | None = None
        self.price: Any = None
        self.words: Any = None
        self.error: GatewayError | None = None
        self.error_kind: str | None = None
        self.exception: BaseException | None = None
        self.answer_text: list[str] = []

        # The upstream call in progress.
        self._stream_requested = False
        self._mode: BodyMode = "none"
        self._head: UpstreamHead | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._decoder: SSEDecoder | None = None
        self._assembler: StreamAssembler | None = None
        self._learn_on_answer = False
        self._upstream_done = False

        # Deadlines, in the driver's clock; None when not running.
        self._answer_deadline: float | None = None
        self._silence_deadline: float | None = None
        self._tick_deadline: float | None = None
        self._awaiting_delivery = False

    # --- the driver's interface ---------------------------------------------------------

    @property
    def state(self) -> str:
        return self.cursor.state

    @property
    def is_final(self) -> bool:
        return self.cursor.is_final

    @property
    def outcome(self) -> str:
        """done, cancelled or errored (contract §11); ``running`` while not final."""
        if self.cursor.state == "done":
            return "done"
        if self.cursor.state == "errored":
            return "cancelled" if self.error_kind == "client_disconnected" else "errored"
        return "running"

    @property
    def mode(self) -> str | None:
        """json for a non-streaming client, else stream or fallback (the last visited)."""
        if not self.client_stream:
            return "json"
        for entry in reversed(self.cursor.entries):
            if entry.target == "streaming":
                return "stream"
            if entry.target == "falling_back":
                return "fallback"
        return None

    def start(self, now: float) -> list[Action]:
        """Decide the first upstream call (D1, D9, D10)."""
        return self._guard(self._start, now)

    def handle(self, event: Input, now: float) -> list[Action]:
        """Tell the session what happened at time *now*; return what to do about it."""
        if self.cursor.is_final:
            return []
        return self._guard(lambda t: self._dispatch(event, t), now)

    def handle_timer(self, now: float) -> list[Action]:
        """The driver woke at :meth:`next_deadline`; act on every deadline that passed."""
        if self.cursor.is_final:
            return []
        return self._guard(self._on_timer, now)

    def next_deadline(self) -> float | None:
        """When the driver must call :meth:`handle_timer` next; None if nothing is due."""
        if self.cursor.is_final or self.cursor.state == "draining":
            return None
        deadlines = [
            d
            for d in (self._answer_deadline, self._silence_deadline, self._tick_deadline)
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    # --- dispatch -----------------------------------------------------------------------

    def _guard(self, step: Callable[[float], list[Action]], now: float) -> list[Action]:
        try:
            return step(now)
        except GatewayError as exc:
            return self._fail(exc, now)
        except Exception as exc:
            self.exception = exc
            return self._fail(InternalError(), now)

    def _start(self, now: float) -> list[Action]:
        plan = plan_call(
            self.config,
            self._cache,
            self._cache_key,
            client_stream=self.client_stream,
            needs_whole=self._needs_whole,
            now=now,
        )
        self.capability = plan.capability
        self.cache_result = plan.cache_result
        if self.client_stream and self.config.heartbeat_interval > 0:
            self._tick_deadline = now + self.config.heartbeat_interval
        if plan.failure is not None:
            raise plan.failure
        if not plan.stream:
            self.cursor.fire("stream_declined", now)
        return [self._call(stream=plan.stream, now=now)]

    def _call(self, *, stream: bool, now: float) -> CallUpstream:
        self.upstream_calls += 1
        self._stream_requested = stream
        self._mode = "none"
        self._head = None
        self._body = []
        self._body_size = 0
        self._answer_deadline = now + self.config.answer_timeout
        return CallUpstream(stream=stream)

    def _dispatch(self, event: Input, now: float) -> list[Action]:
        if isinstance(event, UpstreamData):
            if self._mode == "relay":
                return self._relay(event.data, now)
            return self._collect(event.data, now)
        if isinstance(event, UpstreamHead):
            return self._on_head(event, now)
        if isinstance(event, UpstreamEnd):
            return self._on_end(now)
        if isinstance(event, UpstreamFailed):
            return self._on_upstream_failed(event.error, now)
        if isinstance(event, ClientGone):
            return self._on_client_gone(now)
        if isinstance(event, ShutDown):
            raise ShuttingDown()
        if isinstance(event, Delivered):
            return self._on_delivered(now)
        raise TypeError(f"unknown input {event!r}")

    def _upstream_wanted(self) -> bool:
        return self.cursor.state in ("detecting", "streaming", "falling_back") and (
            not self._upstream_done
        )

    # --- upstream head and body ---------------------------------------------------------

    def _on_head(self, head: UpstreamHead, now: float) -> list[Action]:
        self.upstream_statuses.append(head.status)
        if not self._upstream_wanted():
            return []
        self._head = head
        if not 200 <= head.status < 300:
            self._mode = "error"
            return []
        is_sse = head.content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
        probing = self._stream_requested and self.cursor.state == "detecting"
        if is_sse and probing:  # D2
            self.cursor.fire("upstream_streamed", now)
            self._learn("streams", now)
            self._mode = "relay"
            self._decoder = SSEDecoder()
            self._answer_deadline = None
            self._silence_deadline = now + self.config.streaming_timeout
            return []
        if probing:  # D3: the body is the answer, no second call
            if self.client_stream and not self.config.enable_fallback:  # D10
                self._learn("answers_whole", now)
                raise StreamingUnsupported()
            self.cursor.fire("upstream_answered_whole", now)
            self._learn_on_answer = self.config.force_streaming is None
        if is_sse:  # D11: a stream to a stream:false request is read whole
            self._mode = "assemble"
            self._decoder = SSEDecoder()
            self._assembler = StreamAssembler()
        else:
            self._mode = "whole"
        return []

    def _collect(self, data: bytes, now: float) -> list[Action]:
        if self._mode == "assemble":
            assert self._decoder is not None and self._assembler is not None
            for event in self._decoder.feed(data):
                if self._assemble_event(event):
                    break
            return []
        if self._mode == "error":
            if self._body_size < ERROR_BODY_LIMIT:
                self._body.append(data)
                self._body_size += len(data)
            return []
        if self._mode == "whole":
            self._body.append(data)
            self._body_size += len(data)
            if self._body_size > ANSWER_BODY_LIMIT:
                raise UpstreamMalformed("The upstream's answer is larger than the gateway accepts.")
        return []

    def _assemble_event(self, event: SSEEvent) -> bool:
        """Add one event of a D11 stream; True once it signalled its end."""
        assert self._assembler is not None
        if event.data == "[DONE]":
            return True
        chunk = _load_chunk(event.data)
        if event.event == "error" or chunk.get("error") is not None:
            raise error_from_event(chunk, secrets=self._secrets)
        self._assembler.add(chunk)
        return False

    def _on_end(self, now: float) -> list[Action]:
        if not self._upstream_wanted():
            return []
        mode = self._mode
        if mode == "relay":
            assert self._decoder is not None
            self._decoder.close()
            return self._upstream_stream_ended(now, cancel=False)
        if mode == "error":
            return self._on_error_body(now)
        if mode == "assemble":
            assert self._decoder is not None and self._assembler is not None
            self._decoder.close()
            return self._on_answer(self._assembler.finish(), now)
        if mode == "whole":
            return self._on_answer(parse_completion_bytes(b"".join(self._body)), now)
        raise UpstreamDisconnected("The upstream ended the call without answering.")

    def _on_error_body(self, now: float) -> list[Action]:
        assert self._head is not None
        error = classify_upstream_error(
            self._head.status,
            b"".join(self._body),
            model=self.request.model,
            server_key=self._server_key,
            stream_requested=self._stream_requested,
            retry_after=self._head.retry_after,
            secrets=self._secrets,
        )
        if error is not None:
            raise error
        # D4: the upstream refused the stream flag.
        self._learn("rejects_stream", now)
        if self.client_stream and not self.config.enable_fallback:  # D10
            raise StreamingUnsupported()
        self.cursor.fire("stream_rejected", now)
        return [self._call(stream=False, now=now)]

    def _on_upstream_failed(self, error: GatewayError, now: float) -> list[Action]:
        if not self._upstream_wanted():
            return []
        if self._mode == "relay" and self.upstream_finish_reason is not None:
            return self._upstream_stream_ended(now)  # R3: after the finish chunk any end is fine
        raise error

    def _on_answer(self, answer: Answer, now: float) -> list[Action]:
        if self._transform is not None:
            answer = self._transform(answer)
        if self._learn_on_answer:
            self._learn("answers_whole", now)
        self._upstream_done = True
        self._answer_deadline = None
        self.upstream_finish_reason = answer.finish_reason
        self.finish_reason = (
            "tool_calls" if answer.tool_calls else map_finish_reason(answer.finish_reason)
        )
        if answer.function_call is not None:
            self.finish_reason = "function_call"
        self.usage = answer.usage
        self.upstream_model = answer.model
        self.price = answer.price
        self.words = answer.words
        if self._record_answer:
            self.answer_text.append(answer.content)
        self.cursor.fire("answer_received", now)
        if not self.client_stream:
            body = dumps(self.identity.completion(answer, self.finish_reason)).encode()
            self.status = 200
            self.first_byte_at = now
            self._awaiting_delivery = True
            return [SendHead(200, JSON_HEADERS), SendBytes(body), Finish()]
        return self._replay(answer, now)

    def _learn(self, capability: Any, now: float) -> None:
        """Write the cache, except in forced modes (D9); remember it for the log line."""
        self.learned = capability
        if self.config.force_streaming is None and self.client_stream:
            self._cache.learn(self._cache_key, capability, now)

    # --- the per-chunk relay (off the machine) ------------------------------------------

    def _relay(self, data: bytes, now: float) -> list[Action]:
        assert self._decoder is not None
        self._silence_deadline = now + self.config.streaming_timeout  # §6: any bytes reset it
        out: list[bytes] = []
        identity = self.identity
        ended = cancel = False
        for event in self._decoder.feed(data):
            payload = event.data
            if payload == "[DONE]":
                ended = True
                break
            chunk = _load_chunk(payload)
            if event.event == "error" or chunk.get("error") is not None:
                if self.upstream_finish_reason is not None:
                    ended = cancel = True  # R3
                    break
                raise error_from_event(chunk, secrets=self._secrets)
            if self.upstream_model is None and isinstance(chunk.get("model"), str):
                self.upstream_model = chunk["model"]
            usage = chunk.pop("usage", None)
            if isinstance(usage, dict):
                self.usage = usage
            if not self._strip_choices(chunk):
                continue
            identity.rewrite(chunk)
            out.append(b"data: " + dumps(chunk).encode() + b"\n\n")
        actions: list[Action] = []
        if out:
            self.chunks_out += len(out)
            actions = self._send(b"".join(out), now)
        if ended:
            actions.extend(self._upstream_stream_ended(now, cancel=cancel))
        return actions

    def _strip_choices(self, chunk: dict[str, Any]) -> bool:
        """R1, R2: drop our duplicates from an upstream chunk; False when nothing remains."""
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            if choices is None:
                return False
            raise UpstreamMalformed("The upstream sent a chunk whose choices are not a list.")
        keep = False
        for choice in choices:
            if not isinstance(choice, dict):
                raise UpstreamMalformed("The upstream sent a choice that is not an object.")
            finish = choice.get("finish_reason")
            if finish is not None:
                self.upstream_finish_reason = str(finish)
                choice["finish_reason"] = None
            delta = choice.get("delta")
            if isinstance(delta, dict):
                delta.pop("role", None)
                if any(value not in (None, "", [], {}) for value in delta.values()):
                    keep = True
                    if self._record_answer and isinstance(delta.get("content"), str):
                        self.answer_text.append(delta["content"])
            if choice.get("logprobs"):
                keep = True
        return keep

    def _upstream_stream_ended(self, now: float, *, cancel: bool = True) -> list[Action]:
        """
        R3: the stream is over; the gateway's own finish, usage and [DONE] follow.

        After ``[DONE]`` or a clean end the upstream body is left to end by itself, so its
        connection can go back to the pool; after silence or a fault it is closed now.
        """
        self._upstream_done = True
        self._silence_deadline = None
        self.finish_reason = map_finish_reason(self.upstream_finish_reason)
        self.cursor.fire("upstream_finished", now)
        actions: list[Action] = [CancelUpstream()] if cancel else []
        actions.extend(self._send(self._closing_bytes(), now))
        actions.append(Finish())
        self._awaiting_delivery = True
        return actions

    def _closing_bytes(self) -> bytes:
        assert self.finish_reason is not None
        parts = [self.identity.finish_chunk(self.finish_reason)]
        if self.include_usage:
            parts.append(self.identity.usage_chunk(self.usage))
        self.chunks_out += len(parts)
        parts.append(DONE)
        return b"".join(parts)

    # --- replay -------------------------------------------------------------------------

    def _replay(self, answer: Answer, now: float) -> list[Action]:
        identity = self.identity
        max_chars = self.config.replay_chunk_chars
        pieces = split_for_replay(answer.content, max_chars)
        deltas: list[dict[str, Any]] = []
        if answer.tool_calls:
            calls = tool_call_deltas(answer.tool_calls, max_chars)
            deltas.extend({"tool_calls": [delta]} for delta in calls)
        if answer.function_call is not None:
            parts = function_call_deltas(answer.function_call, max_chars)
            deltas.extend({"function_call": part} for part in parts)
        self.chunks_out += len(pieces) + len(deltas)
        body = identity.content_chunks(pieces) + b"".join(map(identity.delta_chunk, deltas))
        actions = self._send(body, now) if body else self._commit(now)
        actions.extend(self._send(self._closing_bytes(), now))
        actions.append(Finish())
        self._awaiting_delivery = True
        return actions

    # --- sending, commit and ticks ------------------------------------------------------

    def _commit(self, now: float) -> list[Action]:
        """§5: status 200, the SSE headers and the role chunk; nothing if already done."""
        if self.committed:
            return []
        self.committed = True
        self.status = 200
        self.first_byte_at = now
        mode = _MODE_AT_COMMIT[self.cursor.state]
        self.chunks_out += 1
        self._last_sent(now)
        return [
            SendHead(200, (*SSE_HEADERS, (STREAM_MODE_HEADER, mode))),
            SendBytes(self.identity.role_chunk()),
        ]

    def _send(self, data: bytes, now: float) -> list[Action]:
        actions = self._commit(now)
        actions.append(SendBytes(data))
        self._last_sent(now)
        return actions

    def _last_sent(self, now: float) -> None:
        if self._tick_deadline is not None:
            self._tick_deadline = now + self.config.heartbeat_interval

    def _on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self._answer_deadline is not None and now >= self._answer_deadline:
            raise UpstreamTimeout(
                f"The upstream did not answer within {self.config.answer_timeout:g} s."
            )
        if self._silence_deadline is not None and now >= self._silence_deadline:
            if self.upstream_finish_reason is not None:
                return self._upstream_stream_ended(now)  # R3
            raise StreamTimeout(
                f"The upstream stream was silent for {self.config.streaming_timeout:g} s."
            )
        if self._tick_deadline is not None and now >= self._tick_deadline:
            if not self.committed:
                actions.extend(self._commit(now))
            else:
                self.heartbeats += 1
                actions.append(SendBytes(self._heartbeat()))
                self._last_sent(now)
        return actions

    def _heartbeat(self) -> bytes:
        if self.config.heartbeat_style == "chunk":
            return self.identity.content_chunk("")
        return KEEP_ALIVE

    # --- endings ------------------------------------------------------------------------

    def _on_delivered(self, now: float) -> list[Action]:
        if self.cursor.state == "draining" and self._awaiting_delivery:
            self._awaiting_delivery = False
            self.cursor.fire("drained", now)
        return []

    def _on_client_gone(self, now: float) -> list[Action]:
        self.error_kind = "client_disconnected"
        self._clear_deadlines()
        self.cursor.fire("client_gone", now)
        return [CancelUpstream()]

    def _fail(self, error: GatewayError, now: float) -> list[Action]:
        """End the request with *error*: an HTTP error before the commit, an event after."""
        if self.cursor.is_final:
            return []
        event = error.event or "gateway_failed"
        if self.cursor.state == "draining" and event in ("upstream_failed", "timed_out"):
            event = "gateway_failed"  # an upstream fault cannot reach a draining request
        self.error = error
        self.error_kind = error.kind
        self._clear_deadlines()
        self.cursor.fire(event, now)
        actions: list[Action] = [CancelUpstream()]
        body = dumps(error.to_dict())
        if self.committed:
            self.chunks_out += 1
            actions.append(SendBytes(f"data: {body}\n\n".encode()))
        else:
            self.status = error.status
            self.first_byte_at = now
            headers = (*JSON_HEADERS, *error.headers())
            actions.extend([SendHead(error.status, headers), SendBytes(body.encode())])
        actions.append(Finish())
        return actions

    def _clear_deadlines(self) -> None:
        self._answer_deadline = self._silence_deadline = self._tick_deadline = None

    # --- the log line -------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The engine's part of the request log line (contract §11)."""
        return {
            "status": self.status,
            "outcome": self.outcome,
            "error": self.error_kind,
            "error_code": self.error.code if self.error is not None else None,
            "model": self.request.model,
            "upstream_model": self.upstream_model,
            "client_stream": self.client_stream,
            "mode": self.mode,
            "upstream_calls": self.upstream_calls,
            "capability": self.capability,
            "committed": self.committed,
            "ttfb_ms": _ms(self.first_byte_at, self._started_at),
            "chunks_out": self.chunks_out,
            "heartbeats": self.heartbeats,
            "finish_reason": self.finish_reason,
            "upstream_finish_reason": self.upstream_finish_reason,
            "usage": self.usage,
            "price": self.price,
            "words": self.words,
            "trace": [entry.to_dict() for entry in self.cursor.entries],
        }


def _ms(at: float | None, start: float) -> float | None:
    return None if at is None else round((at - start) * 1000, 3)


def _load_chunk(payload: str) -> dict[str, Any]:
    try:
        chunk = json.loads(payload)
    except ValueError as exc:
        raise UpstreamMalformed("The upstream sent a stream event that is not valid JSON.") from exc
    if not isinstance(chunk, dict):
        raise UpstreamMalformed("The upstream sent a stream event that is not a JSON object.")
    return chunk
