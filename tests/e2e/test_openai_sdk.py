"""The official openai SDK against the gateway, in every detection case, streaming and not."""

from __future__ import annotations

import openai
import pytest

from tests.support.servers import ServerThread

from .conftest import GatewayFactory, Simulator

DETECTION_CASES = {
    "upstream-streams": ("sim/stream:words=40:chunks=6", "stream", 1),
    "upstream-answers-json": ("sim/json:words=40", "fallback", 1),
    "upstream-rejects-stream": ("sim/reject:words=40", "fallback", 2),
}


def client_for(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=10)


def reference_answer(gateway: ServerThread, model: str) -> str:
    reply = client_for(gateway).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "tell me"}]
    )
    return reply.choices[0].message.content or ""


@pytest.mark.parametrize(("model", "mode", "calls"), DETECTION_CASES.values(), ids=DETECTION_CASES)
def test_openai_sdk_streams_in_every_detection_case(
    gateway: ServerThread, sim: Simulator, model: str, mode: str, calls: int
) -> None:
    expected = reference_answer(gateway, model)
    sim.clear()
    client = client_for(gateway)
    with client.chat.completions.with_streaming_response.create(
        model=model,
        messages=[{"role": "user", "content": "tell me"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["x-gateway-stream-mode"] == mode
        chunks = list(response.parse())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == expected
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert len(sim.chat_requests(model)) == calls


@pytest.mark.parametrize(("model", "mode", "calls"), DETECTION_CASES.values(), ids=DETECTION_CASES)
def test_openai_sdk_non_streaming_in_every_detection_case(
    gateway: ServerThread, sim: Simulator, model: str, mode: str, calls: int
) -> None:
    reply = client_for(gateway).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "tell me"}]
    )
    assert reply.object == "chat.completion"
    assert reply.model == model
    assert reply.id.startswith("chatcmpl-")
    assert reply.choices[0].finish_reason == "stop"
    assert len((reply.choices[0].message.content or "").split()) == 40
    assert reply.usage is not None and reply.usage.total_tokens > 0
    sent = sim.chat_requests(model)
    assert [r["stream"] for r in sent] == [False]  # a non-streaming client never probes


@pytest.mark.asyncio
async def test_openai_async_sdk_streams(gateway: ServerThread) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model="sim/stream", messages=[{"role": "user", "content": "tell me"}], stream=True
    )
    content = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert content == reference_answer(gateway, "sim/stream")
    await client.close()


def test_openai_sdk_rejecting_upstream_costs_one_extra_call_per_ttl(
    gateway_factory: GatewayFactory, sim: Simulator
) -> None:
    gateway = gateway_factory()
    client = client_for(gateway)
    model = "sim/reject:words=5"
    for _ in range(3):
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert [r["stream"] for r in sim.chat_requests(model)] == [True, False, False, False]


def test_openai_sdk_quick_upstream_error_keeps_its_status(gateway: ServerThread) -> None:
    client = client_for(gateway)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="sim/json:status=429:retry=3",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"


def test_openai_sdk_slow_upstream_error_arrives_as_an_error_event(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(heartbeat_interval=0.1)
    client = client_for(gateway)
    stream = client.chat.completions.create(
        model="sim/json:delay=400:status=500",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
    )
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "upstream" in str(caught.value).lower()
