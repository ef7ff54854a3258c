"""
LangChain's ``ChatOpenAI`` (``langchain-openai``) against the gateway, in every detection case.

``invoke`` and ``stream`` (with and without usage) give the simulator's answer, the streamed
bytes LangChain parsed pass the SSE checker, and upstream failures reach LangChain's caller as
the openai SDK's exceptions (LangChain does not wrap them).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI

from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import LogCapture, RecordingTransport, reference_answer, start_gateway

DETECTION_CASES = {
    "upstream-streams": "sim/stream:words=30:chunks=5",
    "upstream-answers-json": "sim/json:words=30",
    "upstream-rejects-stream": "sim/reject:words=30",
}
CASES = [pytest.param(model, id=name) for name, model in DETECTION_CASES.items()]
PROMPT = "tell me"  # LangChain sends it as one user message, as chat_body does


@pytest.fixture(name="gateways", scope="module")
def _gateways(
    simulator: ServerThread, log_capture: LogCapture
) -> Iterator[dict[str, ServerThread]]:
    started = {
        "server_key": start_gateway(simulator.url, detection_cache_ttl=0),
        "heartbeats": start_gateway(simulator.url, detection_cache_ttl=0, heartbeat_interval=0.1),
    }
    yield started
    for gateway in started.values():
        gateway.stop()


def chat_model(
    gateway: ServerThread, model: str, *, stream_usage: bool = False
) -> tuple[ChatOpenAI, RecordingTransport]:
    transport = RecordingTransport()
    llm = ChatOpenAI(
        model=model,
        base_url=f"{gateway.url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        max_retries=0,
        timeout=10,
        stream_usage=stream_usage,
        http_client=httpx2.Client(transport=transport),
    )
    return llm, transport


@pytest.mark.parametrize("model", CASES)
def test_compat_langchain_invoke_in_every_detection_case(
    gateways: dict[str, ServerThread], model: str
) -> None:
    gateway = gateways["server_key"]
    llm, _ = chat_model(gateway, model)
    message = llm.invoke(PROMPT)

    assert message.content == reference_answer(gateway, model)
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["model_name"] == model
    assert message.usage_metadata is not None and message.usage_metadata["total_tokens"] > 0


@pytest.mark.parametrize("stream_usage", [True, False], ids=["with-usage", "without-usage"])
@pytest.mark.parametrize("model", CASES)
def test_compat_langchain_stream_in_every_detection_case(
    gateways: dict[str, ServerThread], model: str, stream_usage: bool
) -> None:
    gateway = gateways["server_key"]
    llm, transport = chat_model(gateway, model, stream_usage=stream_usage)
    chunks = list(llm.stream(PROMPT))

    expected = reference_answer(gateway, model)
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert "".join(str(chunk.content) for chunk in chunks) == expected
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.response_metadata["finish_reason"] == "stop"
    assert (merged.usage_metadata is not None) is stream_usage
    report = check_stream(bytes(transport.bodies[-1]), include_usage=stream_usage)
    assert (report.done, report.content) == (True, expected)


def test_compat_langchain_invoke_upstream_rate_limit_raises_the_sdk_error(
    gateways: dict[str, ServerThread],
) -> None:
    llm, _ = chat_model(gateways["server_key"], "sim/json:status=429:retry=3")
    with pytest.raises(openai.RateLimitError) as caught:
        llm.invoke(PROMPT)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    ("model", "gateway_name"),
    [
        pytest.param("sim/stream:chunks=4:errevent=2", "server_key", id="upstream-streams"),
        pytest.param("sim/json:delay=400:status=500", "heartbeats", id="upstream-answers-json"),
    ],
)
def test_compat_langchain_stream_error_after_the_commit_raises_api_error(
    gateways: dict[str, ServerThread], model: str, gateway_name: str
) -> None:
    llm, transport = chat_model(gateways[gateway_name], model)
    with pytest.raises(openai.APIError) as caught:
        list(llm.stream(PROMPT))
    assert not isinstance(caught.value, openai.APIStatusError)
    report = check_stream(bytes(transport.bodies[-1]))
    assert report.error is not None and report.error["code"] == "upstream_error"
