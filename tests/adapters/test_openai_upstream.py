"""
``OpenAIUpstream`` through the driver against the OpenAI-style test server over loopback:
pass-through, tool-call deltas, D3/D4 with OpenAI's error shape, what is forwarded (contract §6),
and the model list and lookup.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from adapters.upstream import OpenAIUpstream
from engine.capability import CapabilityCache
from tests.support.openai_server import (
    MODES,
    SLASHED_MODEL_ID,
    TOOL_CALLS,
    OpenAITestServer,
    answer_text,
)

from .conftest import OPENAI_KEY, Outcome, chat_body, run_exchange

MESSAGES = [{"role": "user", "content": "hello"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


async def run(
    upstream: OpenAIUpstream,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    cache: CapabilityCache | None = None,
) -> Outcome:
    return await run_exchange(upstream, client, body, key=OPENAI_KEY, cache=cache)


def cached(cache: CapabilityCache, upstream: OpenAIUpstream, model: str) -> str | None:
    capability, _ = cache.lookup((upstream.cache_prefix, model), asyncio.get_running_loop().time())
    return capability


def expected_usage(text: str) -> dict[str, int]:
    prompt = len(json.dumps(MESSAGES).split())
    completion = len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# --- pass-through and whole answers ---------------------------------------------------------


async def test_openai_upstream_stream_passes_through(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient, openai_app: OpenAITestServer
) -> None:
    model = "oa/stream"
    cache = CapabilityCache(ttl=600)
    body = chat_body(model, stream=True, stream_options={"include_usage": True})

    outcome = await run(openai_upstream, client, body, cache)

    assert outcome.headers["x-gateway-stream-mode"] == "stream"
    report = outcome.stream(include_usage=True)
    assert report.content == answer_text(model, MESSAGES)
    assert report.usage == expected_usage(report.content)
    assert report.model == model
    assert report.id == outcome.session.identity.id
    assert outcome.session.upstream_model == "oa/stream-2025"
    assert outcome.path() == ["upstream_streamed", "upstream_finished", "drained"]
    assert cached(cache, openai_upstream, model) == "streams"
    (sent,) = openai_app.chat_bodies(model)
    assert sent == {**body, "stream": True}


async def test_openai_upstream_json_client_gets_the_whole_answer(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient, openai_app: OpenAITestServer
) -> None:
    model = "oa/stream"

    outcome = await run(openai_upstream, client, chat_body(model, stream=False))

    answer = outcome.json()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == model
    assert answer["choices"][0]["message"]["content"] == answer_text(model, MESSAGES)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == expected_usage(answer_text(model, MESSAGES))
    assert [b["stream"] for b in openai_app.chat_bodies(model)] == [False]


async def test_openai_upstream_json_answer_to_a_stream_is_replayed(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient, openai_app: OpenAITestServer
) -> None:
    model = "oa/json"
    cache = CapabilityCache(ttl=600)

    outcome = await run(openai_upstream, client, chat_body(model, stream=True), cache)

    assert outcome.headers["x-gateway-stream-mode"] == "fallback"
    assert outcome.stream().content == answer_text(model, MESSAGES)
    assert outcome.path() == ["upstream_answered_whole", "answer_received", "drained"]
    assert [b["stream"] for b in openai_app.chat_bodies(model)] == [True]  # D3: no second call
    assert cached(cache, openai_upstream, model) == "answers_whole"


@pytest.mark.parametrize("model", ["oa/reject", "oa/reject-param"])
async def test_openai_upstream_stream_rejection_is_repeated_without_stream(
    openai_upstream: OpenAIUpstream,
    client: httpx.AsyncClient,
    openai_app: OpenAITestServer,
    model: str,
) -> None:
    cache = CapabilityCache(ttl=600)
    body = chat_body(model, stream=True, stream_options={"include_usage": True})

    outcome = await run(openai_upstream, client, body, cache)

    report = outcome.stream(include_usage=True)
    assert report.content == answer_text(model, MESSAGES)
    assert outcome.path() == ["stream_rejected", "answer_received", "drained"]
    first, repeat = openai_app.chat_bodies(model)
    assert first == {**body, "stream": True}
    without_options = {k: v for k, v in body.items() if k != "stream_options"}
    assert repeat == {**without_options, "stream": False}  # stream_options only with true
    assert cached(cache, openai_upstream, model) == "rejects_stream"

    again = await run(openai_upstream, client, body, cache)

    assert again.path() == ["stream_declined", "answer_received", "drained"]
    assert [b["stream"] for b in openai_app.chat_bodies(model)] == [True, False, False]


async def test_openai_upstream_server_error_is_upstream_error(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient
) -> None:
    outcome = await run(openai_upstream, client, chat_body("oa/error", stream=True))

    assert outcome.status == 502
    error = outcome.error()
    assert error["code"] == "upstream_error"
    assert "The server had an error while processing your request." in error["message"]


async def test_openai_upstream_unknown_model_is_model_not_found(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient
) -> None:
    outcome = await run(openai_upstream, client, chat_body("oa/nothing", stream=True))

    assert outcome.status == 404
    assert outcome.error()["code"] == "model_not_found"


# --- tool calls -------------------------------------------------------------------------------


async def test_openai_upstream_tool_call_deltas_are_relayed_with_their_index(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient
) -> None:
    model = "oa/tools"

    outcome = await run(openai_upstream, client, chat_body(model, stream=True, tools=TOOLS))

    report = outcome.stream()
    assert report.finish_reason == "tool_calls"
    assert report.calls() == list(TOOL_CALLS)
    deltas = [
        call
        for event in report.events
        for call in event["choices"][0]["delta"].get("tool_calls") or ()
    ]
    # Every upstream delta came through on its own, in order, keeping its index.
    assert [d["index"] for d in deltas] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [d.get("id") for d in deltas if "id" in d] == [c["id"] for c in TOOL_CALLS]


async def test_openai_upstream_tool_calls_streamed_equal_the_whole_answer(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient
) -> None:
    model = "oa/tools"

    streamed = await run(openai_upstream, client, chat_body(model, stream=True, tools=TOOLS))
    whole = await run(openai_upstream, client, chat_body(model, stream=False, tools=TOOLS))

    message = whole.json()["choices"][0]["message"]
    assert whole.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == list(TOOL_CALLS)
    assert streamed.stream().calls() == message["tool_calls"]


# --- what is forwarded (contract §6) ----------------------------------------------------------


@pytest.mark.parametrize("client_stream", [True, False], ids=["stream-client", "json-client"])
async def test_openai_upstream_forwards_the_body_as_received(
    openai_upstream: OpenAIUpstream,
    client: httpx.AsyncClient,
    openai_app: OpenAITestServer,
    client_stream: bool,
) -> None:
    body = chat_body(
        "oa/json",
        stream=client_stream,
        tools=TOOLS,
        tool_choice="auto",
        response_format={"type": "json_object"},
        temperature=0.2,
        top_p=0.9,
        seed=7,
        x_vendor_extension={"nested": [1, "two", None]},
        stream_options={"include_usage": True},
    )

    outcome = await run(openai_upstream, client, body)

    assert outcome.status == 200
    (sent,) = openai_app.chat_bodies("oa/json")
    if client_stream:
        assert sent == body
    else:
        assert sent == {k: v for k, v in body.items() if k != "stream_options"}
    assert openai_app.records[-1].token == OPENAI_KEY


async def test_openai_upstream_never_adds_stream_options(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient, openai_app: OpenAITestServer
) -> None:
    await run(openai_upstream, client, chat_body("oa/stream", stream=True))

    (sent,) = openai_app.chat_bodies("oa/stream")
    assert "stream_options" not in sent


# --- models -----------------------------------------------------------------------------------


async def test_openai_upstream_models_list(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient
) -> None:
    response = await client.send(openai_upstream.models_request(OPENAI_KEY))
    assert response.status_code == 200

    models = openai_upstream.models_from(response.json())

    assert models == {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": 1_735_689_600, "owned_by": "test-org"}
            for model_id in (*MODES, SLASHED_MODEL_ID)
        ],
    }


@pytest.mark.parametrize("model_id", ["oa/stream", SLASHED_MODEL_ID])
async def test_openai_upstream_model_lookup_sends_the_id_as_one_segment(
    openai_upstream: OpenAIUpstream,
    client: httpx.AsyncClient,
    openai_app: OpenAITestServer,
    model_id: str,
) -> None:
    response = await client.send(openai_upstream.model_request(model_id, OPENAI_KEY))
    assert response.status_code == 200, response.text

    model = openai_upstream.model_from(response.json())

    assert model == {
        "id": model_id,
        "object": "model",
        "created": 1_735_689_600,
        "owned_by": "test-org",
    }
    assert openai_app.records[-1].path == "/v1/models/" + model_id.replace("/", "%2F")


async def test_openai_upstream_model_lookup_unknown_id_is_404(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient
) -> None:
    response = await client.send(openai_upstream.model_request("oa/none", OPENAI_KEY))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


# --- SSE to a stream: false request (D11) ---------------------------------------------------


async def test_openai_upstream_sse_to_a_json_client_is_assembled(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient, openai_app: OpenAITestServer
) -> None:
    model = "oa/sse-always"
    cache = CapabilityCache(ttl=600)

    outcome = await run(openai_upstream, client, chat_body(model, stream=False), cache)

    answer = outcome.json()
    assert answer["choices"][0]["message"]["content"] == answer_text(model, MESSAGES)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert outcome.path() == ["stream_declined", "answer_received", "drained"]
    assert [b["stream"] for b in openai_app.chat_bodies(model)] == [False]
    assert len(cache) == 0


async def test_openai_upstream_sse_to_a_declined_stream_is_assembled_then_replayed(
    openai_upstream: OpenAIUpstream, client: httpx.AsyncClient, openai_app: OpenAITestServer
) -> None:
    model = "oa/sse-always"
    cache = CapabilityCache(ttl=600)
    cache.learn(
        (openai_upstream.cache_prefix, model),
        "rejects_stream",
        asyncio.get_running_loop().time(),
    )

    outcome = await run(openai_upstream, client, chat_body(model, stream=True), cache)

    assert outcome.headers["x-gateway-stream-mode"] == "fallback"
    assert outcome.stream().content == answer_text(model, MESSAGES)
    assert outcome.path() == ["stream_declined", "answer_received", "drained"]
    assert [b["stream"] for b in openai_app.chat_bodies(model)] == [False]
    assert cached(cache, openai_upstream, model) == "rejects_stream"  # D11 teaches nothing
