"""
Hypothesis-generated bad input against a real gateway (contract §7, §8).

Bodies: valid JSON of every wrong shape (and chat-like objects with wrong fields), invalid JSON,
wrong encodings (UTF-16/32, Latin-1, a BOM, lone surrogate escapes), huge and deeply nested
values; requests: odd content types, odd header values, odd methods and paths. For every answer:

1. never a 5xx (bad input is the client's fault, and no input may hang the gateway: its answer
   timeout is short here, so a request it forgot surfaces as a 504 instead of a client timeout);
2. never a traceback or an HTML page;
3. a 4xx is OpenAI's error shape with ``application/json``; a 200 is a real completion or a
   stream that passes the SSE checker.

The gateway is still healthy afterwards, and no request logged an unexpected error. Example
counts are bounded (the whole module runs in seconds); no example database is written, and
failures are not shrunk (a shrink would repeat slow examples).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import (
    CLIENT_TIMEOUT,
    LogCapture,
    chat_body,
    openai_error,
    reference_answer,
    start_gateway,
)
from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

MAX_BODY = 64 * 1024
#: Short, so a request the gateway never answers becomes a 504 well within the client timeout.
ANSWER_TIMEOUT = 1.0
CHAT = "/v1/chat/completions"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(name="fuzz_gateway", scope="module")
def _fuzz_gateway(simulator: ServerThread, log_capture: LogCapture) -> Iterator[ServerThread]:
    gateway = start_gateway(simulator.url, max_body_size=MAX_BODY, answer_timeout=ANSWER_TIMEOUT)
    yield gateway
    gateway.stop()


@pytest.fixture(name="http", scope="module")
def _http(fuzz_gateway: ServerThread) -> Iterator[httpx.Client]:
    # A new connection per request: one answer can never leave the next one a closed socket.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=fuzz_gateway.url, timeout=CLIENT_TIMEOUT, limits=limits) as client:
        yield client


def _include_usage(body: object) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("stream_options"), dict):
        return False
    return body["stream_options"].get("include_usage") is True


def check_answer(response: httpx.Response, sent: object = None) -> None:
    """Rules 1 to 3 of the module docstring."""
    content = response.content
    if response.status_code >= 500:
        # A gateway fault can leave failed tasks to the garbage collector. Finalise them now:
        # run inside pytest's failure report, their logging can make CPython 3.11's ast.parse
        # raise SystemError ("AST constructor recursion depth mismatch"), an INTERNALERROR.
        gc.collect()
    assert response.status_code < 500, content[:500]
    assert b"Traceback" not in content
    assert b"<html" not in content.lower() and b"<!doctype" not in content.lower()
    content_type = response.headers.get("content-type", "")
    if response.status_code >= 400:
        assert content_type.startswith("application/json"), content_type
        openai_error(response.json())
    elif content_type.startswith("text/event-stream"):
        assert response.status_code == 200
        check_stream(content, include_usage=_include_usage(sent))
    else:
        assert response.status_code == 200
        assert response.json()["object"] == "chat.completion"


# --- strategies -----------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", ""])
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "refusal"]
MESSAGES = st.dictionaries(st.sampled_from(MESSAGE_FIELDS), ROLES | JSON_VALUES, max_size=4)
OPTIONAL_FIELDS = [
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "n",
    "tools",
    "tool_choice",
    "functions",
    "response_format",
    "user",
    "seed",
    "logprobs",
    "presence_penalty",
]
CHAT_LIKE = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["sim/json", "sim/stream"]) | JSON_VALUES,
        "messages": st.lists(MESSAGES, max_size=3) | JSON_VALUES,
    },
    optional={name: JSON_VALUES | st.booleans() for name in OPTIONAL_FIELDS},
)


@fuzz_settings(200)
@given(body=JSON_VALUES | CHAT_LIKE)
@example(body=[chat_body("sim/json")])
@example(body={"model": "sim/json", "messages": []})
@example(body={"model": "sim/json", "messages": [{"role": "user"}], "stream": "true"})
def test_fuzz_valid_json_of_wrong_shapes_is_refused_cleanly(http: httpx.Client, body: Any) -> None:
    check_answer(http.post(CHAT, json=body), body)


VALID = json.dumps(chat_body("sim/json")).encode()


@st.composite
def broken_json(draw: st.DrawFn) -> bytes:
    """Valid JSON cut, with bytes inserted, or random bytes."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return VALID[: draw(st.integers(0, len(VALID) - 1))]
    at = draw(st.integers(0, len(VALID)))
    return VALID[:at] + draw(st.binary(min_size=1, max_size=8)) + VALID[at:]


@fuzz_settings(120)
@given(body=broken_json())
@example(body=b"")
@example(body=b"null")
@example(body=b'{"model": NaN, "messages": []}')
@example(body=b'{"model": "sim/json", "messages": [{"role": "user", "content": "x"}]} trailing')
def test_fuzz_invalid_json_is_refused_cleanly(http: httpx.Client, body: bytes) -> None:
    response = http.post(CHAT, content=body, headers={"Content-Type": "application/json"})
    check_answer(response)


LATIN_TEXT = st.text(st.characters(min_codepoint=0xA0, max_codepoint=0xFF), min_size=1, max_size=20)
ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252", "utf-8-sig"]
CHARSETS = ["", "; charset=utf-8", "; charset=utf-16", "; charset=latin-1", "; charset=bogus"]


@fuzz_settings(60)
@given(text=LATIN_TEXT, encoding=st.sampled_from(ENCODINGS), charset=st.sampled_from(CHARSETS))
def test_fuzz_wrong_encodings_are_refused_cleanly(
    http: httpx.Client, text: str, encoding: str, charset: str
) -> None:
    body = json.dumps(chat_body("sim/json", content=text), ensure_ascii=False).encode(encoding)
    headers = {"Content-Type": "application/json" + charset}
    check_answer(http.post(CHAT, content=body, headers=headers))


LONE_SURROGATES = ["\\ud800", "x\\udc00\\ud83d"]  # a high one alone; a low one, then a high one
SURROGATE_BODIES = {
    "content": '{{"model": "sim/json", "messages": [{{"role": "user", "content": "{}"}}]}}',
    "model": '{{"model": "sim/json{}", "messages": [{{"role": "user", "content": "x"}}]}}',
    "stop": '{{"model": "sim/json", "messages": [{{"role": "user", "content": "x"}}], '
    '"stop": "{}"}}',
}


@pytest.mark.parametrize("escape", LONE_SURROGATES)
@pytest.mark.parametrize("template", SURROGATE_BODIES.values(), ids=SURROGATE_BODIES)
def test_fuzz_lone_surrogate_escapes_are_answered_cleanly(
    http: httpx.Client, template: str, escape: str
) -> None:
    """Valid JSON syntax for text that is not Unicode (RFC 8259 §8.2): answered, never hung."""
    body = template.format(escape).encode()
    check_answer(http.post(CHAT, content=body, headers={"Content-Type": "application/json"}))


@st.composite
def huge_or_deep(draw: st.DrawFn) -> bytes:
    """Deep nesting, long numbers, long strings (under and over the size limit), many keys."""
    kind = draw(st.sampled_from(["deep-list", "deep-object", "deep-field", "long-number",
                                 "long-string", "many-keys", "long-array"]))  # fmt: skip
    if kind == "deep-list":
        depth = draw(st.integers(100, MAX_BODY // 2))
        return b"[" * depth + b"]" * depth
    if kind == "deep-object":
        depth = draw(st.integers(100, MAX_BODY // 8))
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "deep-field":
        depth = draw(st.integers(100, MAX_BODY // 4))
        field = draw(st.sampled_from(["messages", "model", "stop", "tools", "stream_options"]))
        nested = b"[" * depth + b"]" * depth
        return b'{"model":"sim/json","messages":[],"' + field.encode() + b'":' + nested + b"}"
    if kind == "long-number":
        digits = draw(st.integers(100, 20_000))
        field = draw(st.sampled_from(["max_tokens", "temperature", "n", "seed", "top_p"]))
        number = draw(st.sampled_from(["9", "-9", "0.9", "9e"])) + "9" * digits
        text = json.dumps(chat_body("sim/json"))[:-1] + f', "{field}": {number}}}'
        return text.encode()
    if kind == "long-string":
        size = draw(st.integers(1000, 2 * MAX_BODY))
        field = draw(st.sampled_from(["model", "content", "user", "stop"]))
        value = "x" * size
        body = chat_body(value if field == "model" else "sim/json", content=value)
        if field in ("user", "stop"):
            body = {**chat_body("sim/json"), field: value}
        return json.dumps(body).encode()
    if kind == "many-keys":
        count = draw(st.integers(100, 3000))
        extra = {f"k{i}": i for i in range(count)}
        return json.dumps({**chat_body("sim/json"), **extra}).encode()
    count = draw(st.integers(100, 5000))
    return json.dumps({"model": "sim/json", "messages": [{"role": "user"}] * count}).encode()


@fuzz_settings(60)
@given(body=huge_or_deep())
def test_fuzz_huge_and_deeply_nested_values_are_refused_cleanly(
    http: httpx.Client, body: bytes
) -> None:
    response = http.post(CHAT, content=body, headers={"Content-Type": "application/json"})
    check_answer(response)
    if len(body) > MAX_BODY:
        assert response.status_code == 413


CONTENT_TYPES = [
    "application/json",
    "APPLICATION/JSON",
    "application/json;",
    "application/json; charset=utf-8; boundary=x",
    "application/vnd.api+json",
    "application/+json",
    "application/jsonx",
    "text/json",
    "text/plain",
    "multipart/form-data; boundary=abc",
    "application/x-www-form-urlencoded",
    "*/*",
    ";;;",
    "",
]
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=60,
).map(str.strip)
ODD_HEADER_NAMES = [
    "X-Request-ID",
    "Accept",
    "Accept-Encoding",
    "Authorization",
    "Content-Encoding",
    "User-Agent",
    "X-Forwarded-For",
    "Cookie",
    "Origin",
]


@fuzz_settings(120)
@given(
    content_type=st.sampled_from(CONTENT_TYPES) | HEADER_TEXT,
    extra=st.dictionaries(st.sampled_from(ODD_HEADER_NAMES), HEADER_TEXT, max_size=4),
    body=st.sampled_from([VALID, b"{}", b"not json", b""]),
)
def test_fuzz_odd_headers_and_content_types_are_answered_cleanly(
    http: httpx.Client, content_type: str, extra: dict[str, str], body: bytes
) -> None:
    headers = {name.encode(): value.encode("latin-1") for name, value in extra.items()}
    headers[b"Content-Type"] = content_type.encode("latin-1")
    check_answer(http.post(CHAT, content=body, headers=headers))


PATH_TAILS = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="#?"), max_size=30
).map(lambda tail: "/v1/" + tail)


PATH_TAILS = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="#?"), max_size=30
).map(lambda tail: "/v1/" + tail)


@fuzz_settings(60)
@given(
    method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "POST", "OPTIONS"]),
    path=st.sampled_from([CHAT, "/v1/models", "/v1/models/sim%2Fjson", "/v1/"]) | PATH_TAILS,
)
def test_fuzz_odd_methods_and_paths_are_answered_cleanly(
    http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(
        method, path, content=VALID, headers={"Content-Type": "application/json"}
    )
    assert response.status_code < 500
    if response.status_code >= 400:
        openai_error(response.json())


def test_fuzz_gateway_stays_healthy_afterwards(
    http: httpx.Client, fuzz_gateway: ServerThread, log_capture: LogCapture
) -> None:
    assert http.get("/healthz").status_code == 200
    expected = reference_answer(fuzz_gateway, "sim/json")
    answer = http.post(CHAT, json=chat_body("sim/json", stream=True))
    assert check_stream(answer.content).content == expected
    bugs = [line for line in log_capture.lines if line.get("event") == "unexpected_error"]
    assert bugs == []
    server_errors = [line for line in log_capture.requests() if (line.get("status") or 0) >= 500]
    assert server_errors == []
