"""
The simulator over real loopback HTTP: auth, catalogue, the three kinds, status answers,
scripted texts and determinism (contract §12).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from server.simulator import create_simulator_app
from tests.support.servers import ServerThread

KEY = "test-key"
MESSAGES = [{"role": "user", "content": "What is a simulator?"}]


@pytest.fixture(name="simulator", scope="module")
def _simulator() -> Iterator[ServerThread]:
    with ServerThread(create_simulator_app(KEY)) as server:
        yield server


@pytest.fixture(name="client", scope="module")
def _client(simulator: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=simulator.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    ) as client:
        yield client


@pytest.fixture(name="anonymous", scope="module")
def _anonymous(simulator: ServerThread) -> Iterator[httpx.Client]:
    """A client that sends no key unless a test gives one."""
    with httpx.Client(base_url=simulator.url, timeout=5) as client:
        yield client


def chat(
    client: httpx.Client,
    model: str,
    *,
    stream: bool | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": messages or MESSAGES}
    if stream is not None:
        body["stream"] = stream
    return client.post("/v2/chat/completions", json=body)


def sse_payloads(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.split("\n") if line.startswith("data: ")]


def streamed_content(text: str) -> str:
    chunks = [json.loads(payload) for payload in sse_payloads(text)[:-1]]
    return "".join(
        chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"]
    )


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected_message"),
    [
        pytest.param({}, "Missing API key", id="missing"),
        pytest.param({"Authorization": "Bearer wrong-key"}, "Invalid API key", id="wrong"),
        pytest.param({"Authorization": f"Basic {KEY}"}, "Invalid API key", id="not-bearer"),
    ],
)
@pytest.mark.parametrize("path", ["/v2/models", "/v2/chat/completions", "/v2/nowhere"])
def test_simulator_v2_without_the_key_answers_401(
    anonymous: httpx.Client, path: str, headers: dict[str, str], expected_message: str
) -> None:
    response = anonymous.post(path, json={"model": "sim/json"}, headers=headers)

    assert (response.status_code, response.json()) == (
        401,
        {"error": expected_message, "success": False},
    )


def test_simulator_bearer_scheme_is_case_insensitive(anonymous: httpx.Client) -> None:
    response = anonymous.get("/v2/models", headers={"Authorization": f"bearer {KEY}"})

    assert response.status_code == 200


def test_simulator_inspection_needs_no_key(anonymous: httpx.Client) -> None:
    assert anonymous.get("/_sim/requests").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/v2/nowhere", (404, "Not found"), id="unknown-v2-path"),
        pytest.param("GET", "/v1/models", (404, "Not found"), id="outside-v2"),
        pytest.param("GET", "/_sim/nowhere", (404, "Not found"), id="unknown-sim-path"),
        pytest.param("GET", "/v2/chat/completions", (405, "Method not allowed"), id="get-chat"),
        pytest.param("POST", "/v2/models", (405, "Method not allowed"), id="post-models"),
        pytest.param("PUT", "/_sim/requests", (405, "Method not allowed"), id="put-records"),
    ],
)
def test_simulator_unknown_route_answers_in_the_error_envelope(
    client: httpx.Client, method: str, path: str, expected: tuple[int, str]
) -> None:
    response = client.request(method, path)

    assert (response.status_code, response.json()) == (
        expected[0],
        {"error": expected[1], "success": False},
    )


# --- catalogue ------------------------------------------------------------------------------


def test_simulator_models_lists_the_catalogue(client: httpx.Client) -> None:
    response = client.get("/v2/models")
    body = response.json()

    assert (response.status_code, body["success"]) == (200, True)
    assert [(model["id"], model["model_type"]) for model in body["data"]] == [
        ("sim/stream", "chat"),
        ("sim/json", "chat"),
        ("sim/reject", "chat"),
        ("openai/gpt-4o-mini", "chat"),
        ("anthropic/claude-3.5-sonnet", "chat"),
        ("openai/dall-e-3", "image"),
    ]


def test_simulator_models_chat_entry_has_the_list_shape(client: httpx.Client) -> None:
    entry = client.get("/v2/models").json()["data"][0]

    assert sorted(entry) == sorted(
        [
            "id",
            "name",
            "object",
            "created",
            "owned_by",
            "model_type",
            "pricing",
            "word_limit",
            "max_output",
            "metadata",
        ]
    )
    assert (entry["object"], entry["owned_by"], entry["pricing"]) == (
        "model",
        "sim",
        {"coins": 0.2, "words": 100},
    )


@pytest.mark.parametrize(
    ("path", "expected_id", "expected_type"),
    [
        pytest.param("/v2/models/sim/stream", "sim/stream", "chat", id="listed"),
        pytest.param("/v2/models/sim%2Fjson", "sim/json", "chat", id="percent-encoded"),
        pytest.param(
            "/v2/models/anthropic/claude-3.5-sonnet",
            "anthropic/claude-3.5-sonnet",
            "chat",
            id="ordinary",
        ),
        pytest.param(
            "/v2/models/sim/stream:words=3:gap=10",
            "sim/stream:words=3:gap=10",
            "chat",
            id="grammar",
        ),
        pytest.param("/v2/models/openai/dall-e-3", "openai/dall-e-3", "image", id="image"),
    ],
)
def test_simulator_single_model_has_the_flat_shape(
    client: httpx.Client, path: str, expected_id: str, expected_type: str
) -> None:
    response = client.get(path)
    data = response.json()["data"]

    assert (response.status_code, data["id"], data["api_model"], data["model_type"]) == (
        200,
        expected_id,
        expected_id,
        expected_type,
    )
    assert {"words_text", "model_features", "editors_choice_level"} <= set(data)
    assert "word_limit" not in data


@pytest.mark.parametrize("model_id", ["nope/model", "sim/image", "sim/json:words=x"])
def test_simulator_single_model_unknown_id_is_404(client: httpx.Client, model_id: str) -> None:
    response = client.get(f"/v2/models/{model_id}")

    assert (response.status_code, response.json()) == (
        404,
        {"error": f"Model not found: {model_id}", "success": False},
    )


# --- the kinds ------------------------------------------------------------------------------

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"


@pytest.mark.parametrize(
    ("model", "stream", "expected_status", "expected_type"),
    [
        pytest.param("sim/stream", True, 200, SSE_TYPE, id="stream-true"),
        pytest.param("sim/stream", False, 200, JSON_TYPE, id="stream-false"),
        pytest.param("sim/stream", None, 200, JSON_TYPE, id="stream-absent"),
        pytest.param("sim/json", True, 200, JSON_TYPE, id="json-true"),
        pytest.param("sim/json", False, 200, JSON_TYPE, id="json-false"),
        pytest.param("sim/json", None, 200, JSON_TYPE, id="json-absent"),
        pytest.param("sim/reject", True, 400, JSON_TYPE, id="reject-true"),
        pytest.param("sim/reject", False, 200, JSON_TYPE, id="reject-false"),
        pytest.param("sim/reject", None, 200, JSON_TYPE, id="reject-absent"),
        pytest.param("openai/gpt-4o-mini", True, 200, JSON_TYPE, id="ordinary-true"),
        pytest.param("anthropic/claude-3.5-sonnet", None, 200, JSON_TYPE, id="ordinary-absent"),
    ],
)
def test_simulator_chat_kind_and_stream_flag_choose_the_answer_form(
    client: httpx.Client,
    model: str,
    stream: bool | None,
    expected_status: int,
    expected_type: str,
) -> None:
    response = chat(client, model, stream=stream)

    assert (response.status_code, response.headers["content-type"]) == (
        expected_status,
        expected_type,
    )


def test_simulator_chat_string_stream_flag_is_not_a_stream_request(client: httpx.Client) -> None:
    response = client.post(
        "/v2/chat/completions", json={"model": "sim/reject", "messages": MESSAGES, "stream": "true"}
    )

    assert response.status_code == 200


def test_simulator_chat_reject_with_stream_says_stream_is_not_supported(
    client: httpx.Client,
) -> None:
    response = chat(client, "sim/reject", stream=True)

    assert response.json() == {"error": "stream is not supported", "success": False}


def test_simulator_chat_json_answer_has_the_straico_body(client: httpx.Client) -> None:
    body = chat(client, "sim/json").json()
    choice = body["choices"][0]

    assert (body["id"][:4], body["model"], body["object"], body["provider"]) == (
        "gen-",
        "sim/json",
        "chat.completion",
        "Simulator",
    )
    assert (choice["index"], choice["finish_reason"], choice["message"]["role"]) == (
        0,
        "stop",
        "assistant",
    )
    assert len(choice["message"]["content"].split()) == 12
    assert body["words"] == {"input": 4, "output": 12, "total": 16}
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 16, "total_tokens": 22}
    assert body["price"]["total"] == pytest.approx(0.032)


def test_simulator_chat_stream_is_role_contents_finish_usage_done(client: httpx.Client) -> None:
    response = chat(client, "sim/stream:chunks=3", stream=True)
    payloads = sse_payloads(response.text)
    chunks = [json.loads(payload) for payload in payloads[:-1]]

    assert payloads[-1] == "[DONE]"
    assert [chunk["choices"][0]["delta"] for chunk in chunks[:1]] == [
        {"role": "assistant", "content": ""}
    ]
    assert [list(chunk["choices"][0]["delta"]) for chunk in chunks[1:4]] == [["content"]] * 3
    assert (chunks[4]["choices"][0]["delta"], chunks[4]["choices"][0]["finish_reason"]) == (
        {},
        "stop",
    )
    assert (chunks[5]["choices"], sorted(chunks[5]["usage"])) == (
        [],
        ["completion_tokens", "prompt_tokens", "total_tokens"],
    )
    assert len(chunks) == 6
    assert {chunk["id"] for chunk in chunks} == {chunks[0]["id"]}
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}


def test_simulator_chat_words_and_chunks_shape_the_stream(client: httpx.Client) -> None:
    response = chat(client, "sim/stream:words=30:chunks=7", stream=True)
    payloads = sse_payloads(response.text)

    assert (len(payloads), len(streamed_content(response.text).split())) == (1 + 7 + 3, 30)


@pytest.mark.parametrize(
    "model",
    ["sim/image", "vendor/unknown", "sim/stream:words=many", "sim/json:colour=red"],
)
def test_simulator_chat_unknown_model_is_422(client: httpx.Client, model: str) -> None:
    response = chat(client, model, stream=True)

    assert (response.status_code, response.json()) == (
        422,
        {"error": f"Model not found: {model}", "success": False},
    )


@pytest.mark.parametrize(
    ("content", "expected_message"),
    [
        pytest.param(b"{not json", "Invalid JSON body: send a JSON object", id="not-json"),
        pytest.param(b"[1, 2]", "Invalid JSON body: send a JSON object", id="not-an-object"),
        pytest.param(b'{"messages": []}', "model is required", id="no-model"),
        pytest.param(b'{"model": "sim/json"}', "messages is required", id="no-messages"),
    ],
)
def test_simulator_chat_bad_body_is_400(
    client: httpx.Client, content: bytes, expected_message: str
) -> None:
    response = client.post(
        "/v2/chat/completions", content=content, headers={"Content-Type": "application/json"}
    )

    assert (response.status_code, response.json()) == (
        400,
        {"error": expected_message, "success": False},
    )


# --- status answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected_message"),
    [
        (401, "Invalid API key"),
        (402, "Insufficient coins"),
        (403, "Forbidden"),
        (404, "Not found"),
        (422, "Unprocessable request"),
        (429, "Too many requests"),
        (500, "Internal server error"),
        (502, "Bad gateway"),
        (503, "Service unavailable"),
        (504, "Gateway timeout"),
        (418, "Simulated error"),
        (302, "Simulated error"),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_simulator_chat_status_answers_with_a_fixed_message(
    client: httpx.Client, status: int, expected_message: str, stream: bool
) -> None:
    response = chat(client, f"sim/stream:status={status}", stream=stream)

    assert (response.status_code, response.json(), response.headers.get("retry-after")) == (
        status,
        {"error": expected_message, "success": False},
        None,
    )


def test_simulator_chat_status_with_retry_sends_retry_after(client: httpx.Client) -> None:
    response = chat(client, "sim/json:status=429:retry=7")

    assert (response.status_code, response.headers.get("retry-after")) == (429, "7")


def test_simulator_chat_reject_rejection_wins_over_status(client: httpx.Client) -> None:
    rejected = chat(client, "sim/reject:status=503", stream=True)
    whole = chat(client, "sim/reject:status=503", stream=False)

    assert (rejected.status_code, whole.status_code) == (400, 503)


@pytest.mark.parametrize(
    ("model", "stream", "expected_status", "expected_message"),
    [
        pytest.param("sim/json:status=402:errobj=1", False, 402, "Insufficient coins", id="status"),
        pytest.param("sim/reject:errobj=1", True, 400, "stream is not supported", id="rejection"),
    ],
)
def test_simulator_chat_errobj_sends_straico_v1_error_object(
    client: httpx.Client, model: str, stream: bool, expected_status: int, expected_message: str
) -> None:
    response = chat(client, model, stream=stream)
    error = response.json()["error"]

    assert (response.status_code, response.json()["success"]) == (expected_status, False)
    assert error["completions"][model]["completion"] == {"error": expected_message}
    assert sorted(error) == ["completions", "overall_price", "overall_words"]


# --- scripted texts and determinism ---------------------------------------------------------


def test_simulator_chat_text_keys_follow_the_assistant_turns(client: httpx.Client) -> None:
    model = f"sim/stream:text={b64('first answer')}:text2={b64('second ✓')}"
    first_turn = [{"role": "user", "content": "q1"}]
    second_turn = [
        *first_turn,
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"},
    ]
    third_turn = [
        *second_turn,
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "q3"},
    ]

    contents = [
        chat(client, model, messages=first_turn).json()["choices"][0]["message"]["content"],
        streamed_content(chat(client, model, stream=True, messages=second_turn).text),
        chat(client, model, messages=third_turn).json()["choices"][0]["message"]["content"],
    ]

    assert contents == ["first answer", "second ✓", "second ✓"]


@pytest.mark.parametrize("model", ["sim/stream", "sim/stream:words=50:chunks=9:gap=1"])
def test_simulator_chat_streamed_content_equals_the_json_content(
    client: httpx.Client, model: str
) -> None:
    streamed = streamed_content(chat(client, model, stream=True).text)
    whole = chat(client, model, stream=False).json()["choices"][0]["message"]["content"]

    assert streamed == whole


def test_simulator_chat_same_question_same_answer_other_question_other_answer(
    client: httpx.Client,
) -> None:
    def answer(question: str) -> str:
        messages = [{"role": "user", "content": question}]
        return str(chat(client, "sim/json", messages=messages).json()["choices"][0]["message"])

    assert (answer("one") == answer("one"), answer("one") == answer("two")) == (True, False)
