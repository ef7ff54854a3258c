"""
What the simulator answers to a chat call, as data: the text, its bodies, and the plan of steps.

Rules:

1. The text is a function of the model id and the request's messages only: ``words`` words
   drawn from a fixed vocabulary by SHA-256 of the model id and the last user message, or the
   scripted ``text``/``textN`` chosen by the number of assistant messages (k assistant messages
   get text number k+1, the last given repeating). Streaming or not, the text is the same.
2. A simulated stream is: role chunk, ``chunks`` content chunks (character slices of the text
   whose concatenation is the text), finish chunk, usage chunk (``choices: []``), ``[DONE]``.
   ``gap`` is waited before every event after the role chunk.
3. A plan is a tuple of steps (:class:`Head`, :class:`Pause`, :class:`Send`, :class:`Drop`,
   :class:`Stall`); the app only executes it. A plan that does not end in ``Drop`` or ``Stall``
   ends the body cleanly. ``delay`` is waited before every head, errors included.
4. Event points (grammar rule 5) compete: the earliest wins; at the same point the order is
   ``drop``, ``stall``, ``errevent``, ``badsse``. ``errevent`` and ``badsse`` end the body
   cleanly after their event (no finish chunk, no ``[DONE]``); ``drop`` and ``stall`` send
   nothing more. On a JSON answer K does not matter: ``drop`` sends half of the body its
   ``Content-Length`` announces and closes, ``stall`` stops after the head, ``gap`` is waited
   between the head and the body, ``badjson=1`` sends the first half of the real body (with a
   matching ``Content-Length``), and ``badsse`` and ``errevent`` do nothing. ``badjson`` does
   nothing to a stream.
5. ``status=CODE`` answers every call except a ``reject`` rejection with that status and a fixed
   message that never holds the model id; ``retry=S`` adds ``Retry-After: S`` to it. ``errobj=1``
   turns every error of the model (status and rejection) into Straico's v1 per-model object.
6. Counts are fake but consistent: words are whitespace-separated words, tokens are
   ``(4 * words + 2) // 3``, the price is 0.2 coins per 100 words.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .grammar import SimModel

__all__ = [
    "SSE_BROKEN_EVENT",
    "SSE_DONE",
    "SSE_ERROR_EVENT",
    "STATUS_MESSAGES",
    "Answer",
    "Drop",
    "Head",
    "Pause",
    "Send",
    "Stall",
    "Step",
    "answer_text",
    "completion_body",
    "error_body",
    "json_steps",
    "last_user_text",
    "make_answer",
    "plan_chat",
    "split_into_chunks",
    "status_message",
    "stream_events",
    "to_json_bytes",
]

VOCABULARY = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor",
    "island", "juniper", "kestrel", "lagoon", "meadow", "nectar", "orchid", "pebble",
    "quartz", "river", "saffron", "thistle", "umber", "valley", "willow", "xenon",
    "yarrow", "zephyr", "anchor", "beacon", "canyon", "dune", "estuary", "forest",
    "glacier", "heather", "inlet", "jasper", "kelp", "lantern", "marsh", "nimbus",
    "oasis", "prairie", "quill", "reef", "summit", "tundra", "upland", "vista",
    "wharf", "yonder", "acorn", "birch", "cobalt", "drift", "echo", "flint",
    "grove", "hollow", "ivory", "jade", "knoll", "lichen", "maple", "nova",
)  # fmt: skip
"""64 words, so one digest byte picks one word without bias."""

COINS_PER_WORD = 0.2 / 100
PROVIDER = "Simulator"

STATUS_MESSAGES = {
    401: "Invalid API key",
    402: "Insufficient coins",
    403: "Forbidden",
    404: "Not found",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}
OTHER_STATUS_MESSAGE = "Simulated error"
STREAM_REJECTED_MESSAGE = "stream is not supported"

SSE_DONE = b"data: [DONE]\n\n"
SSE_BROKEN_EVENT = b'data: {"broken\n\n'
SSE_ERROR_EVENT = b'data: {"error": {"message": "simulated error", "type": "server_error"}}\n\n'

SSE_HEADERS = (("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"))


# --- the text -------------------------------------------------------------------------------


def _message_text(message: object) -> str:
    """The text of one message: a string content, or its ``text`` parts joined by spaces."""
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _role(message: object) -> object:
    return message.get("role") if isinstance(message, Mapping) else None


def last_user_text(messages: Sequence[object]) -> str:
    """The text of the last ``user`` message ("" when there is none)."""
    for message in reversed(messages):
        if _role(message) == "user":
            return _message_text(message)
    return ""


def _generated_text(model_id: str, user_text: str, words: int) -> str:
    seed = hashlib.sha256(f"{model_id}\n{user_text}".encode()).digest()
    picked: list[str] = []
    block = 0
    while len(picked) < words:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        picked.extend(VOCABULARY[byte % len(VOCABULARY)] for byte in digest)
        block += 1
    if not words:
        return ""
    sentence = " ".join(picked[:words])
    return sentence[0].upper() + sentence[1:] + "."


def answer_text(model: SimModel, model_id: str, messages: Sequence[object]) -> str:
    """The answer's text (rule 1)."""
    if model.texts:
        assistant_turns = sum(1 for message in messages if _role(message) == "assistant")
        return model.texts[min(assistant_turns, len(model.texts) - 1)]
    return _generated_text(model_id, last_user_text(messages), model.words)


def split_into_chunks(text: str, chunks: int) -> list[str]:
    """``chunks`` character slices of *text*, as even as possible; empty only when text is short."""
    size = len(text)
    return [text[index * size // chunks : (index + 1) * size // chunks] for index in range(chunks)]


# --- the bodies -----------------------------------------------------------------------------


def _count_words(text: str) -> int:
    return len(text.split())


def _tokens(words: int) -> int:
    return (4 * words + 2) // 3


def _triple(first: float, second: float) -> dict[str, float]:
    return {"input": first, "output": second, "total": round(first + second, 6)}


@attrs.frozen(kw_only=True)
class Answer:
    """One simulated answer; ``completion_id`` and ``created`` are drawn by the caller."""

    model_id: str
    text: str
    finish_reason: str
    prompt_words: int
    completion_id: str
    created: int

    @property
    def completion_words(self) -> int:
        return _count_words(self.text)

    def usage(self) -> dict[str, int]:
        prompt, completion = _tokens(self.prompt_words), _tokens(self.completion_words)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }


def make_answer(
    model: SimModel, model_id: str, messages: Sequence[object], *, completion_id: str, created: int
) -> Answer:
    """The answer to *messages* (rule 1), with the finish reason the model id asks for."""
    return Answer(
        model_id=model_id,
        text=answer_text(model, model_id, messages),
        finish_reason=model.finish,
        prompt_words=sum(_count_words(_message_text(message)) for message in messages),
        completion_id=completion_id,
        created=created,
    )


def completion_body(answer: Answer) -> dict[str, Any]:
    """The whole Straico body (straico-api.md §3): top-level ``choices`` plus price and words."""
    return {
        "id": answer.completion_id,
        "provider": PROVIDER,
        "model": answer.model_id,
        "object": "chat.completion",
        "created": answer.created,
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": answer.finish_reason,
                "native_finish_reason": answer.finish_reason,
                "message": {
                    "role": "assistant",
                    "content": answer.text,
                    "refusal": None,
                    "reasoning": None,
                },
            }
        ],
        "usage": answer.usage(),
        "price": _triple(
            round(answer.prompt_words * COINS_PER_WORD, 6),
            round(answer.completion_words * COINS_PER_WORD, 6),
        ),
        "words": _triple(answer.prompt_words, answer.completion_words),
    }


def status_message(status: int) -> str:
    """The fixed message of a ``status=CODE`` answer (never the model id)."""
    return STATUS_MESSAGES.get(status, OTHER_STATUS_MESSAGE)


def error_body(message: str, *, model_id: str, errobj: bool) -> dict[str, Any]:
    """Straico's error envelope; with *errobj* the v1 per-model object (straico-api.md §5)."""
    if not errobj:
        return {"error": message, "success": False}
    nothing = _triple(0, 0)
    return {
        "error": {
            "overall_price": nothing,
            "overall_words": nothing,
            "completions": {
                model_id: {"completion": {"error": message}, "price": nothing, "words": nothing}
            },
        },
        "success": False,
    }


def to_json_bytes(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _sse(body: object) -> bytes:
    return b"data: " + to_json_bytes(body) + b"\n\n"


def _chunk(answer: Answer, delta: dict[str, str], finish_reason: str | None) -> bytes:
    return _sse(
        {
            "id": answer.completion_id,
            "provider": PROVIDER,
            "model": answer.model_id,
            "object": "chat.completion.chunk",
            "created": answer.created,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish_reason,
                    "native_finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
        }
    )


def stream_events(answer: Answer, chunks: int) -> list[bytes]:
    """The events of a simulated stream (rule 2): role, contents, finish, usage, ``[DONE]``."""
    usage = {
        "id": answer.completion_id,
        "provider": PROVIDER,
        "model": answer.model_id,
        "object": "chat.completion.chunk",
        "created": answer.created,
        "choices": [],
        "usage": answer.usage(),
    }
    return [
        _chunk(answer, {"role": "assistant", "content": ""}, None),
        *(
            _chunk(answer, {"content": piece}, None)
            for piece in split_into_chunks(answer.text, chunks)
        ),
        _chunk(answer, {}, answer.finish_reason),
        _sse(usage),
        SSE_DONE,
    ]


# --- the plan -------------------------------------------------------------------------------


@attrs.frozen
class Head:
    """Send the response head."""

    status: int
    headers: tuple[tuple[str, str], ...]


@attrs.frozen
class Pause:
    """Wait this long (the client leaving is noticed meanwhile)."""

    seconds: float


@attrs.frozen
class Send:
    """Send these body bytes."""

    data: bytes


@attrs.frozen
class Drop:
    """Close the connection abruptly: the client sees a broken body, not a clean end."""


@attrs.frozen
class Stall:
    """Send nothing more and keep the connection open until the client leaves."""


Step = Head | Pause | Send | Drop | Stall


def _json_headers(length: int, retry: int | None = None) -> tuple[tuple[str, str], ...]:
    headers = (("content-type", "application/json"), ("content-length", str(length)))
    return (*headers, ("retry-after", str(retry))) if retry is not None else headers


def json_steps(status: int, body: object, *, retry: int | None = None) -> tuple[Step, ...]:
    """A plain JSON answer: head, then the whole body."""
    data = to_json_bytes(body)
    return (Head(status, _json_headers(len(data), retry)), Send(data))


def _pause(milliseconds: int) -> list[Step]:
    return [Pause(milliseconds / 1000)] if milliseconds else []


def _error_steps(
    model: SimModel, model_id: str, status: int, message: str, *, retry: int | None = None
) -> tuple[Step, ...]:
    body = error_body(message, model_id=model_id, errobj=model.errobj)
    return json_steps(status, body, retry=retry)


def _first_event_point(model: SimModel) -> tuple[int, str] | None:
    """(content chunks sent before it, name) of the earliest event point; rule 4."""
    candidates = [
        (min(point, model.chunks), order, name)
        for order, (name, point) in enumerate(
            (
                ("drop", model.drop),
                ("stall", model.stall),
                ("errevent", model.errevent),
                ("badsse", model.badsse),
            )
        )
        if point is not None
    ]
    if not candidates:
        return None
    point, _, name = min(candidates)
    return point, name


def _event_steps(name: str, gap: list[Step]) -> list[Step]:
    match name:
        case "drop":
            return [Drop()]
        case "stall":
            return [Stall()]
        case "errevent":
            return [*gap, Send(SSE_ERROR_EVENT)]
    return [*gap, Send(SSE_BROKEN_EVENT)]


def _stream_steps(model: SimModel, answer: Answer) -> list[Step]:
    role, *rest = stream_events(answer, model.chunks)
    contents, (finish, usage, done) = rest[: model.chunks], rest[model.chunks :]
    gap = _pause(model.gap_ms)
    event = _first_event_point(model)
    steps: list[Step] = [Head(200, SSE_HEADERS), Send(role)]
    for sent, content in enumerate(contents):
        if event is not None and event[0] == sent:
            return steps + _event_steps(event[1], gap)
        steps += [*gap, Send(content)]
    steps += [*gap, Send(finish)]
    if event is not None:  # K >= chunks: after the finish chunk
        return steps + _event_steps(event[1], gap)
    return [*steps, *gap, Send(usage), *gap, Send(done)]


def _json_steps(model: SimModel, answer: Answer) -> list[Step]:
    data = to_json_bytes(completion_body(answer))
    if model.badjson:
        data = data[: len(data) // 2]
    head = Head(200, _json_headers(len(data)))
    if model.stall is not None:
        return [head, Stall()]
    if model.drop is not None:
        return [head, *_pause(model.gap_ms), Send(data[: len(data) // 2]), Drop()]
    return [head, *_pause(model.gap_ms), Send(data)]


def plan_chat(
    model: SimModel,
    model_id: str,
    messages: Sequence[object],
    *,
    stream: bool,
    completion_id: str,
    created: int,
) -> tuple[Step, ...]:
    """
    The steps that answer one chat call to a known model (rules 3 to 5).

    Args:
        stream: the request asked for a stream (its ``stream`` field is exactly ``true``).
    """
    steps = _pause(model.delay_ms)
    if model.kind == "reject" and stream:
        return (*steps, *_error_steps(model, model_id, 400, STREAM_REJECTED_MESSAGE))
    if model.status is not None:
        message = status_message(model.status)
        return (*steps, *_error_steps(model, model_id, model.status, message, retry=model.retry))
    answer = make_answer(model, model_id, messages, completion_id=completion_id, created=created)
    if model.kind == "stream" and stream:
        return (*steps, *_stream_steps(model, answer))
    return (*steps, *_json_steps(model, answer))
