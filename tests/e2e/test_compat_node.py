"""
The official openai Node SDK (npm ``openai``) against the gateway, run with the machine's node.

One node process (``node/openai_client.mjs``) makes every call of this module, one after the
other, and prints what the SDK gave for each; the tests below then check one call each:

- in every detection case, streaming (with and without ``include_usage``) and not: the content
  equals the simulator's answer, one id, role first, one ``stop``, usage only when asked, and
  the raw bytes the SDK parsed (recorded by a teeing ``fetch``) pass the SSE checker;
- errors arrive as the SDK's classes: ``AuthenticationError``, ``PermissionDeniedError``,
  ``NotFoundError``, ``RateLimitError``, ``BadRequestError``, ``InternalServerError``, and
  ``APIError`` for an error event mid-stream;
- ``x-should-retry: false`` stops the Node SDK's retries too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import SIM_KEY, LogCapture, Simulator, reference_answer, start_gateway

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "openai_client.mjs"
NODE_RUN_SECONDS = 120.0

DETECTION_CASES = {
    "upstream-streams": ("sim/stream:words=30:chunks=5", "stream"),
    "upstream-answers-json": ("sim/json:words=30", "fallback"),
    "upstream-rejects-stream": ("sim/reject:words=30", "fallback"),
}
ANSWER_SHAPES = {"stream-usage": (True, True), "stream": (True, False), "json": (False, False)}
ANSWER_CALLS = [
    (f"answer-{case}-{shape}", model, stream, usage)
    for case, (model, _) in DETECTION_CASES.items()
    for shape, (stream, usage) in ANSWER_SHAPES.items()
]


@attrs.frozen(kw_only=True)
class NodeError:
    """A §7 row as the Node SDK raises it."""

    id: str
    suffix: str
    name: str
    status: int
    code: str
    gateway: str = "server_key"
    api_key: str = "unused"
    retry_after: str | None = None


NODE_ERRORS = [
    NodeError(
        id="bad-key-per-request",
        suffix="",
        name="AuthenticationError",
        status=401,
        code="invalid_api_key",
        gateway="per_request",
        api_key="not-the-upstream-key",
    ),
    NodeError(
        id="forbidden-per-request",
        suffix=":status=403",
        name="PermissionDeniedError",
        status=403,
        code="permission_denied",
        gateway="per_request",
        api_key=SIM_KEY,
    ),
    NodeError(
        id="unknown-model",
        suffix=":bogus=1",
        name="NotFoundError",
        status=404,
        code="model_not_found",
    ),
    NodeError(
        id="rate-limited",
        suffix=":status=429:retry=3",
        name="RateLimitError",
        status=429,
        code="rate_limit_exceeded",
        retry_after="3",
    ),
    NodeError(
        id="upstream-rejected",
        suffix=":status=400",
        name="BadRequestError",
        status=400,
        code="upstream_rejected_request",
    ),
    NodeError(
        id="upstream-500",
        suffix=":status=500",
        name="InternalServerError",
        status=502,
        code="upstream_error",
    ),
    NodeError(
        id="upstream-503",
        suffix=":status=503",
        name="InternalServerError",
        status=503,
        code="upstream_unavailable",
    ),
]
ERROR_CALLS = [
    (f"error-{error.id}-{case}-{'stream' if stream else 'json'}", error, model, stream)
    for error in NODE_ERRORS
    for case, (model, _) in DETECTION_CASES.items()
    for stream in (True, False)
]
MID_STREAM_CALLS = {
    "mid-stream-upstream-streams": ("sim/stream:chunks=4:errevent=2", "server_key"),
    "mid-stream-upstream-answers-json": ("sim/json:delay=400:status=500", "heartbeats"),
    "mid-stream-upstream-rejects-stream": ("sim/reject:delay=300:status=500", "heartbeats"),
}
NO_RETRY_MODEL = "sim/json:status=401:words=9"


@attrs.frozen
class NodeRun:
    results: dict[str, dict[str, Any]]
    references: dict[str, str]
    records: list[dict[str, Any]]


def _call(call_id: str, gateway: ServerThread, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "baseURL": f"{gateway.url}/v1",
        "apiKey": "unused",
        "model": model,
        "stream": False,
        "includeUsage": False,
        "maxRetries": 0,
        **extra,
    }


@pytest.fixture(name="node_run", scope="module")
def _node_run(simulator: ServerThread, log_capture: LogCapture) -> Iterator[NodeRun]:
    node = shutil.which("node")
    assert node is not None, "node is needed for the Node SDK tests"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), (
        "npm openai is missing: run `make node-deps` (npm ci --prefix tests/e2e/node)"
    )
    gateways = {
        "server_key": start_gateway(simulator.url, detection_cache_ttl=0),
        "heartbeats": start_gateway(simulator.url, detection_cache_ttl=0, heartbeat_interval=0.1),
        "per_request": start_gateway(simulator.url, detection_cache_ttl=0, upstream_key=None),
    }
    try:
        server_key = gateways["server_key"]
        calls = [
            _call(cid, server_key, model, stream=stream, includeUsage=usage)
            for cid, model, stream, usage in ANSWER_CALLS
        ]
        calls += [
            _call(cid, gateways[e.gateway], model + e.suffix, stream=stream, apiKey=e.api_key)
            for cid, e, model, stream in ERROR_CALLS
        ]
        calls += [
            _call(cid, gateways[name], model, stream=True)
            for cid, (model, name) in MID_STREAM_CALLS.items()
        ]
        calls.append(_call("no-retry", server_key, NO_RETRY_MODEL, maxRetries=2))
        sim = Simulator(simulator.url)
        sim.clear()
        completed = subprocess.run(
            [node, str(SCRIPT), json.dumps({"calls": calls})],
            cwd=NODE_DIR,
            capture_output=True,
            timeout=NODE_RUN_SECONDS,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-3000:]
        records = sim.requests()
        results = {r["id"]: r for r in json.loads(completed.stdout)["results"]}
        references = {
            model: reference_answer(server_key, model) for model, _ in DETECTION_CASES.values()
        }
        yield NodeRun(results, references, records)
    finally:
        for gateway in gateways.values():
            gateway.stop()


@pytest.mark.parametrize(
    ("call_id", "model", "stream", "usage"), ANSWER_CALLS, ids=[c[0] for c in ANSWER_CALLS]
)
def test_compat_node_answers_in_every_detection_case(
    node_run: NodeRun, call_id: str, model: str, stream: bool, usage: bool
) -> None:
    result = node_run.results[call_id]
    assert result["error"] is None and result["ok"] is True
    expected = node_run.references[model]
    assert result["content"] == expected
    assert result["roles"] == ["assistant"]
    assert result["finishReasons"] == ["stop"]
    assert len(set(result["ids"])) == 1 and result["ids"][0].startswith("chatcmpl-")
    if not stream:
        assert result["object"] == "chat.completion"
        assert result["usage"]["total_tokens"] > 0
        return
    assert result["object"] == "chat.completion.chunk"
    assert (result["usage"] is not None) is usage
    report = check_stream(result["raw"].encode(), include_usage=usage)
    assert (report.done, report.content) == (True, expected)


@pytest.mark.parametrize(
    ("call_id", "error", "model", "stream"), ERROR_CALLS, ids=[c[0] for c in ERROR_CALLS]
)
def test_compat_node_errors_raise_the_sdk_class(
    node_run: NodeRun, call_id: str, error: NodeError, model: str, stream: bool
) -> None:
    raised = node_run.results[call_id]["error"]
    assert raised is not None
    assert (raised["name"], raised["status"], raised["code"]) == (
        error.name,
        error.status,
        error.code,
    )
    assert raised["isAPIError"] is True
    assert raised["retryAfter"] == error.retry_after
    assert SIM_KEY not in raised["message"]


@pytest.mark.parametrize("call_id", MID_STREAM_CALLS)
def test_compat_node_error_event_mid_stream_raises_api_error(
    node_run: NodeRun, call_id: str
) -> None:
    result = node_run.results[call_id]
    raised = result["error"]
    assert raised is not None
    assert (raised["name"], raised["isAPIError"], raised["status"]) == ("APIError", True, None)
    report = check_stream(result["raw"].encode())
    assert report.error is not None and report.error["code"] == "upstream_error"


def test_compat_node_should_retry_false_stops_the_sdk_retrying(node_run: NodeRun) -> None:
    raised = node_run.results["no-retry"]["error"]
    assert (raised["name"], raised["status"]) == ("InternalServerError", 502)
    calls = [r for r in node_run.records if r["model"] == NO_RETRY_MODEL]
    assert len(calls) == 1
