"""
The upstreams the gateway calls, behind one narrow seam.

An :class:`Upstream` turns a validated request into a :class:`Prepared` call (raising
``unsupported_parameter`` for what it cannot honour) and each call of that into an
``httpx.Request``; the driver sends it over the one shared ``httpx.AsyncClient``.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol
from urllib.parse import quote

import attrs
import httpx

from engine.answer import Answer
from engine.config import StreamingConfig
from engine.request import ChatRequest
from engine.session import AnswerTransform

from .straico_request import StraicoPlan, apply_stop, plan_straico_request, straico_payload
from .tools import tool_transform

__all__ = [
    "OpenAIUpstream",
    "Prepared",
    "StraicoUpstream",
    "Upstream",
    "UpstreamKind",
    "make_client",
]

UpstreamKind = Literal["straico", "openai"]
DEFAULT_STRAICO_URL = "https://api.straico.com"
#: Below Hypercorn's 5 s idle close, so a pooled connection is never reused as it dies (§6).
KEEPALIVE_EXPIRY = 4.0


def make_client(
    config: StreamingConfig, *, connect_timeout: float, max_connections: int
) -> httpx.AsyncClient:
    """The shared client of one upstream: no read timeout (the session keeps the deadlines)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=connect_timeout,
            read=None,
            write=config.answer_timeout,
            pool=config.answer_timeout,
        ),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        ),
        follow_redirects=False,
        trust_env=False,
    )


@attrs.frozen(kw_only=True)
class Prepared:
    """A request made ready for one upstream."""

    request: ChatRequest
    #: The gateway must see the answer whole (D1): sent with ``stream: false``.
    needs_whole: bool = False
    #: Fields accepted but not sent upstream (log line's ``ignored_fields``).
    ignored_fields: tuple[str, ...] = ()
    transform: AnswerTransform | None = None


class Upstream(Protocol):
    """What the driver and the server need from an upstream."""

    kind: UpstreamKind
    base_url: str

    @property
    def cache_prefix(self) -> str: ...

    def prepare(self, request: ChatRequest) -> Prepared: ...

    def chat_request(
        self, prepared: Prepared, *, stream: bool, key: str | None
    ) -> httpx.Request: ...

    def models_request(self, key: str | None) -> httpx.Request: ...

    def model_request(self, model_id: str, key: str | None) -> httpx.Request: ...

    def models_from(self, body: Any) -> dict[str, Any]: ...

    def model_from(self, body: Any) -> dict[str, Any] | None: ...


def _encode(body: dict[str, Any]) -> bytes:
    """
    The JSON bytes of an upstream body.

    ASCII escapes keep it valid even for a lone surrogate (``"\\ud800"``), which is legal JSON
    from a client but cannot be encoded as UTF-8.
    """
    return json.dumps(body, separators=(",", ":")).encode()


def _headers(key: str | None, *, sse: bool = False) -> dict[str, str]:
    headers = {"Accept-Encoding": "identity"}
    if sse:
        headers["Accept"] = "text/event-stream, application/json"
    else:
        headers["Accept"] = "application/json"
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _model_entry(item: dict[str, Any]) -> dict[str, Any]:
    created = item.get("created")
    return {
        "id": item.get("id") or item.get("model"),
        "object": "model",
        "created": created if isinstance(created, int) else 0,
        "owned_by": item.get("owned_by") or str(item.get("id", "")).split("/", 1)[0] or "straico",
    }


@attrs.define
class StraicoUpstream:
    """Straico's ``/v2`` API (straico-api.md): JSON answers today, streaming if it ever comes."""

    base_url: str = DEFAULT_STRAICO_URL
    kind: UpstreamKind = "straico"

    @property
    def cache_prefix(self) -> str:
        return f"straico {self.base_url}"

    def prepare(self, request: ChatRequest) -> Prepared:
        plan = plan_straico_request(request)
        return Prepared(
            request=request,
            needs_whole=plan.needs_whole,
            ignored_fields=plan.ignored_fields,
            transform=_straico_transform(request, plan),
        )

    def chat_request(self, prepared: Prepared, *, stream: bool, key: str | None) -> httpx.Request:
        body = straico_payload(prepared.request, stream=stream)
        return httpx.Request(
            "POST",
            f"{self.base_url}/v2/chat/completions",
            headers={**_headers(key, sse=stream), "Content-Type": "application/json"},
            content=_encode(body),
        )

    def models_request(self, key: str | None) -> httpx.Request:
        return httpx.Request("GET", f"{self.base_url}/v2/models", headers=_headers(key))

    def model_request(self, model_id: str, key: str | None) -> httpx.Request:
        # Straico takes everything after models/ as the id, slashes included.
        path = quote(model_id, safe="/")
        return httpx.Request("GET", f"{self.base_url}/v2/models/{path}", headers=_headers(key))

    def models_from(self, body: Any) -> dict[str, Any]:
        items = body.get("data") if isinstance(body, dict) else None
        if isinstance(items, dict):  # the v1 catalogue groups by type
            items = items.get("chat")
        chat = [
            _model_entry(item)
            for item in items or ()
            if isinstance(item, dict) and item.get("model_type", "chat") == "chat"
        ]
        return {"object": "list", "data": chat}

    def model_from(self, body: Any) -> dict[str, Any] | None:
        item = body.get("data") if isinstance(body, dict) else None
        return _model_entry(item) if isinstance(item, dict) else None


def _straico_transform(request: ChatRequest, plan: StraicoPlan) -> AnswerTransform | None:
    """
    What the gateway does to a whole Straico answer: ``stop``, then the tool calls (§8, §13).

    ``stop`` comes first: text after a stop sequence was never meant to be generated, so a tool
    call written there is not made.
    """
    steps: list[AnswerTransform] = []
    if request.stop:
        steps.append(_stop_transform(request.stop))
    if plan.tools.offered:
        steps.append(tool_transform(plan.tools))
    if len(steps) < 2:
        return steps[0] if steps else None

    def transform(answer: Answer) -> Answer:
        for step in steps:
            answer = step(answer)
        return answer

    return transform


@attrs.define
class OpenAIUpstream:
    """Any OpenAI-compatible server; ``base_url`` includes its ``/v1``."""

    base_url: str
    kind: UpstreamKind = "openai"

    @property
    def cache_prefix(self) -> str:
        return f"openai {self.base_url}"

    def prepare(self, request: ChatRequest) -> Prepared:
        return Prepared(request=request)

    def chat_request(self, prepared: Prepared, *, stream: bool, key: str | None) -> httpx.Request:
        # §6: the body as received; only stream and stream_options are set by the gateway.
        body = dict(prepared.request.raw)
        body["stream"] = stream
        if not stream:
            body.pop("stream_options", None)
        return httpx.Request(
            "POST",
            f"{self.base_url}/chat/completions",
            headers={**_headers(key, sse=stream), "Content-Type": "application/json"},
            content=_encode(body),
        )

    def models_request(self, key: str | None) -> httpx.Request:
        return httpx.Request("GET", f"{self.base_url}/models", headers=_headers(key))

    def model_request(self, model_id: str, key: str | None) -> httpx.Request:
        path = quote(model_id, safe="")
        return httpx.Request("GET", f"{self.base_url}/models/{path}", headers=_headers(key))

    def models_from(self, body: Any) -> dict[str, Any]:
        items = body.get("data") if isinstance(body, dict) else None
        data = [_model_entry(i) for i in items or () if isinstance(i, dict)]
        return {"object": "list", "data": data}

    def model_from(self, body: Any) -> dict[str, Any] | None:
        return _model_entry(body) if isinstance(body, dict) and body.get("id") else None


def _stop_transform(stops: tuple[str, ...]) -> AnswerTransform:
    """Honour ``stop`` on the whole answer (contract §8): cut before the earliest sequence."""

    def transform(answer: Answer) -> Answer:
        text, cut = apply_stop(answer.content, stops)
        if cut:
            answer.content = text
            answer.finish_reason = "stop"
        return answer

    return transform
