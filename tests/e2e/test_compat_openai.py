"""
The official openai Python SDK, sync and async, in every detection case: what
``test_openai_sdk.py`` does not already show.

- Streams: async with ``stream_options.include_usage``, sync without it (no usage chunk); the
  raw bytes the SDK parsed (recorded by the client's transport) pass the SSE checker.
- Non-streaming async answers.
- Errors arrive as the SDK's exception classes, for every §7 row a client can meet, sync and
  async, streaming and not: ``AuthenticationError``, ``PermissionDeniedError``,
  ``NotFoundError``, ``RateLimitError`` (rate limit and out of credit), ``BadRequestError``,
  ``InternalServerError`` for 502/503/504, and ``APIError`` for an error event mid-stream.
- ``x-should-retry: false`` stops the SDK's retries; ``curl`` gets a plain JSON completion.

Every gateway here runs with ``--detection-cache-ttl 0``: each request probes, so the rejecting
upstream goes through D4 every time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import attrs
import httpx2
import openai
import pytest

from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import (
    CLIENT_TIMEOUT,
    SIM_KEY,
    AsyncRecordingTransport,
    LogCapture,
    RecordingTransport,
    Simulator,
    chat_body,
    reference_answer,
    start_gateway,
)

DETECTION_CASES = {
    "upstream-streams": ("sim/stream:words=30:chunks=5", "stream"),
    "upstream-answers-json": ("sim/json:words=30", "fallback"),
    "upstream-rejects-stream": ("sim/reject:words=30", "fallback"),
}
CASES = [pytest.param(model, mode, id=name) for name, (model, mode) in DETECTION_CASES.items()]
MESSAGES: list[Any] = [{"role": "user", "content": "tell me"}]
CLIENT_KEY = "compat-client-key-3e9a51"
SDK_TIMEOUT = 10.0


@pytest.fixture(name="gateways", scope="module")
def _gateways(
    simulator: ServerThread, log_capture: LogCapture
) -> Iterator[dict[str, ServerThread]]:
    started = {
        "server_key": start_gateway(simulator.url, detection_cache_ttl=0),
        "heartbeats": start_gateway(simulator.url, detection_cache_ttl=0, heartbeat_interval=0.1),
        "per_request": start_gateway(simulator.url, detection_cache_ttl=0, upstream_key=None),
        "client_keys": start_gateway(
            simulator.url, detection_cache_ttl=0, client_keys=(CLIENT_KEY,)
        ),
    }
    yield started
    for gateway in started.values():
        gateway.stop()


def sync_client(
    gateway: ServerThread, *, api_key: str = "unused", max_retries: int = 0
) -> tuple[openai.OpenAI, RecordingTransport]:
    transport = RecordingTransport()
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=api_key,
        max_retries=max_retries,
        timeout=SDK_TIMEOUT,
        http_client=httpx2.Client(transport=transport),
    )
    return client, transport


def async_client(
    gateway: ServerThread, *, api_key: str = "unused"
) -> tuple[openai.AsyncOpenAI, AsyncRecordingTransport]:
    transport = AsyncRecordingTransport()
    client = openai.AsyncOpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=SDK_TIMEOUT,
        http_client=httpx2.AsyncClient(transport=transport),
    )
    return client, transport


# --- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "mode"), CASES)
async def test_compat_openai_async_stream_with_include_usage(
    gateways: dict[str, ServerThread], model: str, mode: str
) -> None:
    gateway = gateways["server_key"]
    expected = reference_answer(gateway, model)
    client, transport = async_client(gateway)
    async with (
        client,
        client.chat.completions.with_streaming_response.create(
            model=model,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        ) as response,
    ):
        assert response.headers["x-gateway-stream-mode"] == mode
        chunks = [chunk async for chunk in await response.parse()]

    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == expected
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert [c for c in chunks[:-1] if c.usage is not None] == []
    report = check_stream(bytes(transport.bodies[-1]), include_usage=True)
    assert report.usage == chunks[-1].usage.model_dump(exclude_none=True)
    assert (report.content, report.finish_reason) == (expected, "stop")


@pytest.mark.parametrize(("model", "mode"), CASES)
def test_compat_openai_sync_stream_without_include_usage_has_no_usage_chunk(
    gateways: dict[str, ServerThread], model: str, mode: str
) -> None:
    gateway = gateways["server_key"]
    expected = reference_answer(gateway, model)
    client, transport = sync_client(gateway)
    with client:
        chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c for c in chunks if c.usage is not None or not c.choices] == []
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
    report = check_stream(bytes(transport.bodies[-1]), include_usage=False)
    assert (report.content, report.usage, report.saw_usage_chunk) == (expected, None, False)


@pytest.mark.parametrize(("model", "mode"), CASES)
async def test_compat_openai_async_non_streaming(
    gateways: dict[str, ServerThread], model: str, mode: str
) -> None:
    gateway = gateways["server_key"]
    expected = reference_answer(gateway, model)
    client, _ = async_client(gateway)
    async with client:
        reply = await client.chat.completions.create(model=model, messages=MESSAGES)

    assert (reply.object, reply.model) == ("chat.completion", model)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens > 0
    assert reply._request_id is not None  # the SDK reads the gateway's X-Request-ID


# --- errors -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SdkError:
    """A §7 row as the SDK raises it; the model is the detection case's id plus ``suffix``."""

    id: str
    suffix: str
    exception: type[openai.APIStatusError]
    status: int
    code: str
    gateway: str = "server_key"
    api_key: str = "unused"
    retry_after: str | None = None


SDK_ERRORS = [
    SdkError(
        id="bad-key-per-request",
        suffix="",
        exception=openai.AuthenticationError,
        status=401,
        code="invalid_api_key",
        gateway="per_request",
        api_key="not-the-upstream-key",
    ),
    SdkError(
        id="forbidden-per-request",
        suffix=":status=403",
        exception=openai.PermissionDeniedError,
        status=403,
        code="permission_denied",
        gateway="per_request",
        api_key=SIM_KEY,
    ),
    SdkError(
        id="wrong-client-key",
        suffix="",
        exception=openai.AuthenticationError,
        status=401,
        code="invalid_api_key",
        gateway="client_keys",
        api_key="not-a-client-key",
    ),
    SdkError(
        id="unknown-model",
        suffix=":bogus=1",  # a key outside the grammar: the simulator knows no such model
        exception=openai.NotFoundError,
        status=404,
        code="model_not_found",
    ),
    SdkError(
        id="rate-limited",
        suffix=":status=429:retry=3",
        exception=openai.RateLimitError,
        status=429,
        code="rate_limit_exceeded",
        retry_after="3",
    ),
    SdkError(
        id="out-of-credit",
        suffix=":status=402",
        exception=openai.RateLimitError,
        status=429,
        code="insufficient_quota",
    ),
    SdkError(
        id="upstream-rejected",
        suffix=":status=400",
        exception=openai.BadRequestError,
        status=400,
        code="upstream_rejected_request",
    ),
    SdkError(
        id="upstream-500",
        suffix=":status=500",
        exception=openai.InternalServerError,
        status=502,
        code="upstream_error",
    ),
    SdkError(
        id="upstream-503",
        suffix=":status=503",
        exception=openai.InternalServerError,
        status=503,
        code="upstream_unavailable",
    ),
    SdkError(
        id="upstream-504",
        suffix=":status=504",
        exception=openai.InternalServerError,
        status=504,
        code="upstream_timeout",
    ),
    SdkError(
        id="server-key-refused",
        suffix=":status=401",
        exception=openai.InternalServerError,
        status=502,
        code="upstream_auth_failed",
    ),
]
ERROR_CASES = [
    pytest.param(error, model, stream, id=f"{error.id}-{name}-{'stream' if stream else 'json'}")
    for error in SDK_ERRORS
    for name, (model, _) in DETECTION_CASES.items()
    for stream in (True, False)
]


def _check_raised(caught: openai.APIStatusError, error: SdkError) -> None:
    assert type(caught) is error.exception
    assert caught.status_code == error.status
    assert caught.code == error.code
    assert caught.response.headers.get("retry-after") == error.retry_after
    assert SIM_KEY not in str(caught) and CLIENT_KEY not in str(caught)


@pytest.mark.parametrize(("error", "model", "stream"), ERROR_CASES)
def test_compat_openai_sync_errors_raise_the_sdk_exception_class(
    gateways: dict[str, ServerThread], error: SdkError, model: str, stream: bool
) -> None:
    client, _ = sync_client(gateways[error.gateway], api_key=error.api_key)
    with client, pytest.raises(openai.APIStatusError) as caught:
        reply = client.chat.completions.create(
            model=model + error.suffix, messages=MESSAGES, stream=stream
        )
        if stream:
            list(reply)
    _check_raised(caught.value, error)


@pytest.mark.parametrize(("error", "model", "stream"), ERROR_CASES)
async def test_compat_openai_async_errors_raise_the_sdk_exception_class(
    gateways: dict[str, ServerThread], error: SdkError, model: str, stream: bool
) -> None:
    client, _ = async_client(gateways[error.gateway], api_key=error.api_key)
    async with client:
        with pytest.raises(openai.APIStatusError) as caught:
            reply = await client.chat.completions.create(
                model=model + error.suffix, messages=MESSAGES, stream=stream
            )
            if stream:
                [chunk async for chunk in reply]  # type: ignore[union-attr]
    _check_raised(caught.value, error)


#: An upstream failure after the commit, per detection case: heartbeats 0.1 s apart commit
#: the stream before a slow upstream fails; a relayed stream commits with its first content.
MID_STREAM = {
    "upstream-streams": ("sim/stream:chunks=4:errevent=2", "server_key", True),
    "upstream-answers-json": ("sim/json:delay=400:status=500", "heartbeats", False),
    "upstream-rejects-stream": ("sim/reject:delay=300:status=500", "heartbeats", False),
}
MID_STREAM_CASES = [pytest.param(*case, id=name) for name, case in MID_STREAM.items()]


@pytest.mark.parametrize(("model", "gateway_name", "has_content"), MID_STREAM_CASES)
def test_compat_openai_sync_error_event_mid_stream_raises_api_error(
    gateways: dict[str, ServerThread], model: str, gateway_name: str, has_content: bool
) -> None:
    client, transport = sync_client(gateways[gateway_name])
    received: list[str] = []
    with client, pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(caught.value, openai.APIStatusError)  # the status was 200
    assert bool("".join(received)) is has_content
    report = check_stream(bytes(transport.bodies[-1]))
    assert report.error is not None and report.error["code"] == "upstream_error"


@pytest.mark.parametrize(("model", "gateway_name", "has_content"), MID_STREAM_CASES)
async def test_compat_openai_async_error_event_mid_stream_raises_api_error(
    gateways: dict[str, ServerThread], model: str, gateway_name: str, has_content: bool
) -> None:
    client, transport = async_client(gateways[gateway_name])
    received: list[str] = []
    async with client:
        stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(caught.value, openai.APIStatusError)
    assert bool("".join(received)) is has_content
    report = check_stream(bytes(transport.bodies[-1]))
    assert report.error is not None and report.error["code"] == "upstream_error"


def test_compat_openai_should_retry_false_stops_the_sdk_retrying(
    gateways: dict[str, ServerThread], sim: Simulator
) -> None:
    model = "sim/json:status=401:words=7"
    client, _ = sync_client(gateways["server_key"], max_retries=2)
    with client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=model, messages=MESSAGES)

    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(sim.chat_requests(model)) == 1  # a 502 is retried unless the server says not to


# --- curl ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "mode"), CASES)
def test_compat_curl_non_streaming_gets_a_json_completion(
    gateways: dict[str, ServerThread], model: str, mode: str
) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed for this test"
    gateway = gateways["server_key"]
    result = subprocess.run(
        [
            curl,
            "-sS",
            "--max-time",
            str(CLIENT_TIMEOUT),
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(chat_body(model)),
            "-w",
            "\n%{http_code} %{content_type}",
            f"{gateway.url}/v1/chat/completions",
        ],
        capture_output=True,
        check=True,
        timeout=CLIENT_TIMEOUT + 5,
    )
    body, _, status_line = result.stdout.rpartition(b"\n")
    assert status_line == b"200 application/json"
    completion = json.loads(body)
    assert (completion["object"], completion["model"]) == ("chat.completion", model)
    assert completion["choices"][0]["message"]["content"] == reference_answer(gateway, model)
