"""
The Straico simulator as a raw ASGI app (contract §12).

Why raw ASGI and not Quart: the simulator misbehaves on purpose, and each misbehaviour needs
control a framework takes away.

- An abrupt close (``drop``) is returning from the ASGI call after a ``more_body: True`` message:
  Hypercorn then closes the connection without the terminating chunk, so the client sees a broken
  body. Quart owns the response's end and would finish it cleanly or answer 500.
- The head goes out exactly when a step says so (``stall`` after the head), the body is never
  buffered, and no framework timeout (Quart's ``RESPONSE_TIMEOUT``) cuts a long stall.
- The client leaving is the ``http.disconnect`` message: a watcher task reads it beside every
  answer, so ``closed_early`` is set at once, during ``delay``, ``gap`` and ``stall`` too.

Routes:

- ``/v2/*`` needs ``Authorization: Bearer <key>`` (else 401 in Straico's envelope) and is
  recorded; ``/_sim/*`` needs no key and is not recorded; anything else is a 404.
- ``POST /v2/chat/completions``: checks in order: key (401), JSON object body (400 "Invalid JSON
  body"), ``model`` a string (400), ``messages`` a list (400), model known (422 "Model not found:
  <id>"); then the plan of :func:`~server.simulator.answers.plan_chat`.
- ``GET /v2/models``, ``GET /v2/models/{id}`` (the id is the rest of the decoded path, slashes
  included): the catalogue, in straico-api.md §6's list and flat single shapes.
- ``GET /_sim/requests[?wait=SECONDS]``: the records, oldest first, as a JSON list. With
  ``wait`` the answer is held until no recorded request is still being answered, or SECONDS
  pass (at most 30): a test can read the outcome of a request its client just left without
  polling. ``DELETE /_sim/requests`` clears them (204).

Recording keeps the newest ``max_records`` requests (10 000 by default), so a long run on the
simulator stays bounded in memory. ``model`` is the body's ``model`` (a chat call, filled even
when a check refuses the call) or the id looked up; ``stream`` is the body's ``stream`` value as
sent (null when absent); ``key_sent`` is true when the right key came; ``status`` is the status
of the head sent (null when none was); ``closed_early`` is true when the client left before the
simulator ended its answer (a ``drop`` ends it: that close is the server's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import attrs

from .answers import Drop, Head, Pause, Send, Stall, Step, error_body, json_steps, plan_chat
from .grammar import ORDINARY_MODEL_IDS, parse_model_id

__all__ = ["RequestRecord", "SimulatorApp", "create_simulator_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Sender = Callable[[Message], Awaitable[None]]

CHAT_PATH = "/v2/chat/completions"
MODELS_PATH = "/v2/models"
RECORDS_PATH = "/_sim/requests"
MAX_WAIT_SECONDS = 30.0
DEFAULT_MAX_RECORDS = 10_000  # a long run (a benchmark on --simulate) must not grow without end

CATALOGUE_CREATED = 1_735_689_600  # 2025-01-01, a fixed date keeps the catalogue stable
IMAGE_MODEL_ID = "openai/dall-e-3"
CHAT_MODEL_NAMES = {
    "sim/stream": "Simulator: streams when asked",
    "sim/json": "Simulator: answers JSON",
    "sim/reject": "Simulator: rejects the stream flag",
    **{model_id: f"Simulated {model_id}" for model_id in ORDINARY_MODEL_IDS},
}

_ID_ALPHABET = string.ascii_letters + string.digits


# --- the catalogue --------------------------------------------------------------------------


def _owner(model_id: str) -> str:
    return model_id.partition("/")[0]


def _metadata() -> dict[str, Any]:
    return {
        "editors_link": "",
        "editors_choice_level": -1,
        "pros": [],
        "cons": [],
        "applications": [],
        "capabilities": [],
        "features": [],
        "other": [],
        "icon": "",
        "model_date": "2025-01-01T00:00:00.000Z",
    }


def _chat_list_entry(model_id: str) -> dict[str, Any]:
    return {
        "name": CHAT_MODEL_NAMES.get(model_id, f"Simulator: {model_id}"),
        "id": model_id,
        "word_limit": 100_000,
        "pricing": {"coins": 0.2, "words": 100},
        "max_output": 4096,
        "metadata": _metadata(),
        "owned_by": _owner(model_id),
        "created": CATALOGUE_CREATED,
        "object": "model",
        "model_type": "chat",
    }


def _image_list_entry() -> dict[str, Any]:
    size = {"coins": 90, "size": "1024x1024"}
    return {
        "name": "OpenAI: DALL-E 3 (simulated)",
        "id": IMAGE_MODEL_ID,
        "pricing": {"square": size, "landscape": size, "portrait": size},
        "metadata": _metadata(),
        "owned_by": _owner(IMAGE_MODEL_ID),
        "created": CATALOGUE_CREATED,
        "object": "model",
        "model_type": "image",
    }


def model_list() -> list[dict[str, Any]]:
    """``GET /v2/models``'s ``data``: the chat models, then one image model."""
    return [*(_chat_list_entry(model_id) for model_id in CHAT_MODEL_NAMES), _image_list_entry()]


def single_model(model_id: str) -> dict[str, Any] | None:
    """``GET /v2/models/{id}``'s ``data`` in the flat single shape; None for an unknown id."""
    if model_id == IMAGE_MODEL_ID:
        entry = _image_list_entry()
    elif model_id in CHAT_MODEL_NAMES or parse_model_id(model_id) is not None:
        entry = _chat_list_entry(model_id)
    else:
        return None
    return {
        "id": model_id,
        "api_model": model_id,
        "name": entry["name"],
        "pricing": entry["pricing"],
        "words_text": entry.get("word_limit"),
        "max_output": entry.get("max_output"),
        "model_pros": [],
        "model_cons": [],
        "model_applications": [],
        "model_capabilities": [],
        "model_features": [],
        "model_other": [],
        "editors_choice_level": -1,
        "model_icon": "",
        "model_date": "2025-01-01T00:00:00.000Z",
        "object": "model",
        "model_type": entry["model_type"],
        "metadata": {},
        "created": CATALOGUE_CREATED,
        "owned_by": entry["owned_by"],
    }


# --- recording ------------------------------------------------------------------------------


@attrs.define(eq=False)
class RequestRecord:
    """One recorded ``/v2/*`` request; see the module docstring for what each field means."""

    method: str
    path: str
    key_sent: bool
    model: str | None = None
    stream: object = None
    body: object = None
    status: int | None = None
    closed_early: bool = False
    answered: bool = False
    """The simulator ended its answer (last byte handed over, or dropped); not reported."""
    settled: bool = False
    """The handler has returned; not reported."""

    def as_json(self) -> dict[str, object]:
        return {
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "stream": self.stream,
            "key_sent": self.key_sent,
            "body": self.body,
            "status": self.status,
            "closed_early": self.closed_early,
        }


@attrs.define
class Recorder:
    """The newest *max_records* records, oldest first, and the waiters for "all answered"."""

    max_records: int
    records: deque[RequestRecord] = attrs.field(init=False)
    _idle_waiters: list[asyncio.Future[None]] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.records = deque(maxlen=self.max_records)

    def open(self, record: RequestRecord) -> None:
        self.records.append(record)

    def settle(self, record: RequestRecord) -> None:
        record.settled = True
        if self.is_idle():
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()

    def is_idle(self) -> bool:
        return all(record.settled for record in self.records)

    def clear(self) -> None:
        self.records.clear()

    async def wait_idle(self, timeout: float) -> None:
        """Return once no recorded request is being answered, or after *timeout* seconds."""
        if self.is_idle():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout)


# --- one exchange ---------------------------------------------------------------------------


class _ClientLeft(Exception):
    """The client closed the connection; the answer stops here."""


class _Exchange:
    """
    One recorded request's IO: reads the body, watches for ``http.disconnect``, runs a plan.

    The watcher marks ``closed_early`` the moment the client leaves, unless the answer had
    already ended; pauses and stalls wake on it, so a left request settles at once.
    """

    def __init__(self, receive: Receive, send: Sender, record: RequestRecord) -> None:
        self._receive = receive
        self._send = send
        self._record = record
        self._gone = asyncio.Event()

    def _client_left(self) -> None:
        if not self._record.answered:
            self._record.closed_early = True
        self._gone.set()

    async def read_body(self) -> bytes | None:
        """The whole request body, or None when the client left while sending it."""
        parts: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._client_left()
                return None
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._client_left()

    async def run(self, steps: Sequence[Step]) -> None:
        """Perform *steps*; stop quietly when the client leaves."""
        watcher = asyncio.create_task(self._watch())
        try:
            await self._perform(steps)
        except _ClientLeft:
            pass
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._gone.wait(), seconds)
        if self._gone.is_set():
            raise _ClientLeft

    async def _perform(self, steps: Sequence[Step]) -> None:
        last = len(steps) - 1
        for index, step in enumerate(steps):
            if self._gone.is_set():
                raise _ClientLeft
            match step:
                case Head(status, headers):
                    self._record.status = status
                    await self._send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": [(name.encode(), value.encode()) for name, value in headers],
                        }
                    )
                case Pause(seconds):
                    await self._pause(seconds)
                case Send(data):
                    # Marked before the last send: the close that follows is then not "early".
                    self._record.answered = index == last
                    await self._send(
                        {"type": "http.response.body", "body": data, "more_body": index != last}
                    )
                case Drop():
                    # Returning with the body unfinished makes Hypercorn cut the connection.
                    self._record.answered = True
                    return
                case Stall():
                    await self._gone.wait()
                    raise _ClientLeft


# --- the app --------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _parse_json(data: bytes) -> object:
    """The parsed body, or None when it is empty or not JSON."""
    try:
        return json.loads(data) if data else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _describe(record: RequestRecord) -> None:
    """Fill ``model`` and ``stream`` from the path or the body, before any check can refuse it."""
    if record.path.startswith(MODELS_PATH + "/"):
        record.model = record.path.removeprefix(MODELS_PATH + "/")
    elif isinstance(record.body, Mapping):
        model_id = record.body.get("model")
        record.model = model_id if isinstance(model_id, str) else None
        record.stream = record.body.get("stream")


def _error(status: int, message: str) -> tuple[Step, ...]:
    return json_steps(status, error_body(message, model_id="", errobj=False))


def _completion_id(created: int) -> str:
    return f"gen-{created}-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


async def _send_plain(send: Sender, steps: Sequence[Step]) -> None:
    """Send a short unrecorded answer (``/_sim/*``, unknown paths)."""
    for step in steps:
        if isinstance(step, Head):
            headers = [(name.encode(), value.encode()) for name, value in step.headers]
            await send({"type": "http.response.start", "status": step.status, "headers": headers})
        elif isinstance(step, Send):
            await send({"type": "http.response.body", "body": step.data})


class SimulatorApp:
    """The simulator; an ASGI callable. Build it with :func:`create_simulator_app`."""

    def __init__(self, key: str, *, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        if not key:
            raise ValueError("the simulator needs a non-empty key")
        self._key = key.encode()
        self.recorder = Recorder(max_records)

    async def __call__(self, scope: Scope, receive: Receive, send: Sender) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif scope["path"].startswith("/v2/"):
            await self._recorded(scope, receive, send)
        elif scope["path"].startswith("/_sim/"):
            await self._inspect(scope, receive, send)
        else:
            await _send_plain(send, _error(404, "Not found"))

    async def _lifespan(self, receive: Receive, send: Sender) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _key_sent(self, scope: Scope) -> bool:
        scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key)

    async def _recorded(self, scope: Scope, receive: Receive, send: Sender) -> None:
        record = RequestRecord(
            method=scope["method"], path=scope["path"], key_sent=self._key_sent(scope)
        )
        self.recorder.open(record)
        try:
            exchange = _Exchange(receive, send, record)
            data = await exchange.read_body()
            if data is not None:
                record.body = _parse_json(data)
                _describe(record)
                await exchange.run(self._route(scope, record))
        finally:
            self.recorder.settle(record)

    def _route(self, scope: Scope, record: RequestRecord) -> tuple[Step, ...]:
        path, method = scope["path"], scope["method"]
        if not record.key_sent:
            has_header = bool(_header(scope, b"authorization"))
            return _error(401, "Invalid API key" if has_header else "Missing API key")
        if path == CHAT_PATH:
            return self._chat(record) if method == "POST" else _error(405, "Method not allowed")
        if path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
            if method != "GET":
                return _error(405, "Method not allowed")
            if path == MODELS_PATH:
                return json_steps(200, {"data": model_list(), "success": True})
            model_id = path.removeprefix(MODELS_PATH + "/")
            found = single_model(model_id)
            if found is None:
                return _error(404, f"Model not found: {model_id}")
            return json_steps(200, {"data": found, "success": True})
        return _error(404, "Not found")

    def _chat(self, record: RequestRecord) -> tuple[Step, ...]:
        body = record.body
        if not isinstance(body, Mapping):
            return _error(400, "Invalid JSON body: send a JSON object")
        model_id, messages = body.get("model"), body.get("messages")
        if not isinstance(model_id, str):
            return _error(400, "model is required")
        if not isinstance(messages, list):
            return _error(400, "messages is required")
        model = parse_model_id(model_id)
        if model is None:
            return _error(422, f"Model not found: {model_id}")
        created = int(time.time())
        return plan_chat(
            model,
            model_id,
            messages,
            stream=body.get("stream") is True,
            completion_id=_completion_id(created),
            created=created,
        )

    async def _inspect(self, scope: Scope, receive: Receive, send: Sender) -> None:
        if scope["path"] != RECORDS_PATH:
            await _send_plain(send, _error(404, "Not found"))
        elif scope["method"] == "DELETE":
            self.recorder.clear()
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif scope["method"] == "GET":
            query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
            try:
                wait = min(float(query.get("wait", ["0"])[0]), MAX_WAIT_SECONDS)
            except ValueError:
                await _send_plain(send, _error(400, "wait must be a number of seconds"))
                return
            if wait > 0:
                await self.recorder.wait_idle(wait)
            records = [record.as_json() for record in self.recorder.records]
            await _send_plain(send, json_steps(200, records))
        else:
            await _send_plain(send, _error(405, "Method not allowed"))


def create_simulator_app(
    key: str = "sim-key", *, max_records: int = DEFAULT_MAX_RECORDS
) -> SimulatorApp:
    """
    Build the Straico simulator (contract §12) answering to ``Authorization: Bearer <key>``.

    Args:
        max_records: how many of the newest requests ``/_sim/requests`` keeps.

    Raises:
        ValueError: *key* is empty.
    """
    return SimulatorApp(key, max_records=max_records)
