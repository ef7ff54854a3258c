"""Parsing and validating chat requests (contract §8, error order of §7)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidJSON, InvalidValue, UnsupportedParameter
from engine.request import ChatRequest, Message, parse_chat_request

MODEL = "openai/gpt-4o-mini"
HELLO = {"role": "user", "content": "Hello"}


def body(**fields: Any) -> dict[str, Any]:
    """A valid minimal body with *fields* added or replaced."""
    return {"model": MODEL, "messages": [HELLO], **fields}


def parse(value: dict[str, Any]) -> ChatRequest:
    """Parse *value* as the bytes a client sends."""
    return parse_chat_request(json.dumps(value).encode())


# --- valid bodies: every accepted field of §8 --------------------------------------------------

VALID_FIELDS = [
    pytest.param(body(), "stream", False, id="minimal-not-streaming"),
    pytest.param(body(stream=True), "stream", True, id="stream"),
    pytest.param(body(stream=None), "stream", False, id="stream-null-is-absent"),
    pytest.param(
        body(stream=True, stream_options={"include_usage": True}),
        "include_usage",
        True,
        id="include-usage",
    ),
    pytest.param(body(stream=True, stream_options={}), "include_usage", False, id="options-empty"),
    pytest.param(body(stream_options=None), "include_usage", False, id="options-null"),
    pytest.param(
        body(stream_options={"include_usage": None}), "include_usage", False, id="usage-null"
    ),
    pytest.param(body(max_tokens=5), "max_tokens", 5, id="max-tokens"),
    pytest.param(body(max_completion_tokens=7), "max_tokens", 7, id="max-completion-tokens"),
    pytest.param(
        body(max_tokens=5, max_completion_tokens=7),
        "max_tokens",
        7,
        id="max-completion-tokens-wins",
    ),
    pytest.param(
        body(max_tokens=5, max_completion_tokens=None), "max_tokens", 5, id="null-does-not-win"
    ),
    pytest.param(body(temperature=0), "temperature", 0.0, id="temperature-0"),
    pytest.param(body(temperature=2), "temperature", 2.0, id="temperature-2"),
    pytest.param(body(temperature=0.7), "temperature", 0.7, id="temperature-float"),
    pytest.param(body(top_p=0), "top_p", 0.0, id="top-p-0"),
    pytest.param(body(top_p=1), "top_p", 1.0, id="top-p-1"),
    pytest.param(body(stop="END"), "stop", ("END",), id="stop-string"),
    pytest.param(body(stop=["a", "b", "c", "d"]), "stop", ("a", "b", "c", "d"), id="stop-four"),
    pytest.param(body(stop=[]), "stop", (), id="stop-empty-list"),
    pytest.param(body(stop=None), "stop", (), id="stop-null"),
    pytest.param(body(stop=["", "x"]), "stop", ("x",), id="stop-empty-string-dropped"),
    pytest.param(body(stop=""), "stop", (), id="stop-empty-string"),
    pytest.param(body(presence_penalty=-2), "presence_penalty", -2.0, id="presence-penalty"),
    pytest.param(body(frequency_penalty=2), "frequency_penalty", 2.0, id="frequency-penalty"),
    pytest.param(body(seed=42), "seed", 42, id="seed"),
    pytest.param(body(user="user-1"), "user", "user-1", id="user"),
    pytest.param(body(metadata={"k": "v"}), "metadata", {"k": "v"}, id="metadata"),
    pytest.param(body(store=True), "store", True, id="store"),
    pytest.param(body(n=1), "n", 1, id="n-1"),
    pytest.param(body(n=3), "n", 3, id="n-3-not-streaming"),
    pytest.param(body(n=1, stream=True), "n", 1, id="n-1-streaming"),
    pytest.param(body(logprobs=True), "logprobs", True, id="logprobs"),
    pytest.param(body(top_logprobs=0), "top_logprobs", 0, id="top-logprobs-0"),
    pytest.param(body(top_logprobs=20), "top_logprobs", 20, id="top-logprobs-20"),
    pytest.param(
        body(parallel_tool_calls=False), "parallel_tool_calls", False, id="parallel-tool-calls"
    ),
    pytest.param(
        body(tools=[{"type": "function", "function": {"name": "f"}}]),
        "tools",
        ({"type": "function", "function": {"name": "f"}},),
        id="tools",
    ),
    pytest.param(body(tools=[]), "tools", (), id="tools-empty"),
    pytest.param(body(tool_choice="required"), "tool_choice", "required", id="tool-choice-str"),
    pytest.param(
        body(tool_choice={"type": "function", "function": {"name": "f"}}),
        "tool_choice",
        {"type": "function", "function": {"name": "f"}},
        id="tool-choice-object",
    ),
    pytest.param(
        body(functions=[{"name": "f", "parameters": {}}]),
        "functions",
        ({"name": "f", "parameters": {}},),
        id="functions",
    ),
    pytest.param(body(function_call="auto"), "function_call", "auto", id="function-call-str"),
    pytest.param(
        body(function_call={"name": "f"}), "function_call", {"name": "f"}, id="function-call-obj"
    ),
    pytest.param(
        body(response_format={"type": "json_object"}),
        "response_format",
        {"type": "json_object"},
        id="response-format",
    ),
    pytest.param(
        body(foo={"bar": [1, None]}, logit_bias={"50256": -100}, audio=None),
        "model",
        MODEL,
        id="unknown-fields-tolerated",
    ),
]


@pytest.mark.parametrize(("value", "attribute", "expected"), VALID_FIELDS)
def test_parse_chat_request_accepts_field(
    value: dict[str, Any], attribute: str, expected: Any
) -> None:
    assert getattr(parse(value), attribute) == expected


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

VALID_MESSAGES = [
    pytest.param(
        {"role": "system", "content": "Be brief."},
        Message(role="system", content="Be brief."),
        id="system",
    ),
    pytest.param(
        {"role": "developer", "content": "Be brief."},
        Message(role="developer", content="Be brief."),
        id="developer",
    ),
    pytest.param(
        {"role": "user", "content": "Hi", "name": "ann"},
        Message(role="user", content="Hi", name="ann"),
        id="user-with-name",
    ),
    pytest.param(
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]},
        Message(role="user", content=({"type": "text", "text": "What is this?"}, IMAGE)),
        id="text-and-image-parts",
    ),
    pytest.param(
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
        Message(role="user", content=({"type": "input_audio", "input_audio": {}},)),
        id="audio-part-known",
    ),
    pytest.param(
        {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]},
        Message(role="user", content=({"type": "file", "file": {"file_id": "f"}},)),
        id="file-part-known",
    ),
    pytest.param(
        {"role": "user", "content": []},
        Message(role="user", content=()),
        id="empty-parts",
    ),
    pytest.param(
        {"role": "assistant", "content": "Sure."},
        Message(role="assistant", content="Sure."),
        id="assistant",
    ),
    pytest.param(
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        Message(role="assistant", content=None, tool_calls=(TOOL_CALL,)),
        id="assistant-tool-calls-null-content",
    ),
    pytest.param(
        {"role": "assistant", "tool_calls": [TOOL_CALL]},
        Message(role="assistant", tool_calls=(TOOL_CALL,)),
        id="assistant-tool-calls-no-content",
    ),
    pytest.param(
        {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        Message(role="assistant", function_call={"name": "f", "arguments": "{}"}),
        id="assistant-function-call",
    ),
    pytest.param(
        {"role": "assistant", "content": None, "refusal": "I can't."},
        Message(role="assistant", refusal="I can't."),
        id="assistant-refusal",
    ),
    pytest.param(
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        Message(role="assistant", content=({"type": "refusal", "refusal": "No."},)),
        id="assistant-refusal-part",
    ),
    pytest.param(
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        Message(role="tool", content="42", tool_call_id="call_1"),
        id="tool",
    ),
    pytest.param(
        {"role": "user", "content": "Hi", "name": None, "x_unknown": {"deep": [1]}},
        Message(role="user", content="Hi"),
        id="unknown-message-field",
    ),
]


@pytest.mark.parametrize(("message", "expected"), VALID_MESSAGES)
def test_parse_chat_request_accepts_message(message: dict[str, Any], expected: Message) -> None:
    assert parse(body(messages=[message])).messages == (expected,)


def test_parse_chat_request_keeps_raw_body_as_received() -> None:
    value = body(stream=True, foo=[1, {"bar": None}])
    assert parse_chat_request(value).raw is value
    assert parse(value).raw == value


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param(json.dumps(body()).encode(), id="bytes"),
        pytest.param(json.dumps(body()), id="str"),
        pytest.param(body(), id="decoded-object"),
        pytest.param(bytearray(json.dumps(body()).encode()), id="bytearray"),
    ],
)
def test_parse_chat_request_takes_every_body_form(encoded: object) -> None:
    assert parse_chat_request(encoded).messages == (Message(role="user", content="Hello"),)


# --- invalid bodies: error class, code and param -----------------------------------------------

INVALID_JSON = [
    pytest.param(b"", id="empty"),
    pytest.param(b"{", id="truncated"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b'{"model": "m", "temperature": NaN}', id="nan-is-not-json"),
    pytest.param(b"Infinity", id="infinity"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b"42", id="number"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="too-deep"),
    pytest.param("not json", id="text-not-json"),
    pytest.param([body()], id="decoded-array"),
    pytest.param(None, id="decoded-none"),
]


@pytest.mark.parametrize("raw", INVALID_JSON)
def test_parse_chat_request_rejects_body_that_is_not_a_json_object(raw: object) -> None:
    with pytest.raises(InvalidJSON) as caught:
        parse_chat_request(raw)
    assert (caught.value.code, caught.value.status, caught.value.param) == (
        "invalid_json",
        400,
        None,
    )


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


INVALID_VALUES = [
    pytest.param({"messages": [HELLO]}, "model", id="model-missing"),
    pytest.param(body(model=5), "model", id="model-number"),
    pytest.param(body(model=""), "model", id="model-empty"),
    pytest.param(body(model=None), "model", id="model-null"),
    pytest.param({"model": MODEL}, "messages", id="messages-missing"),
    pytest.param(body(messages=[]), "messages", id="messages-empty"),
    pytest.param(body(messages="Hello"), "messages", id="messages-string"),
    pytest.param(body(messages={"role": "user"}), "messages", id="messages-object"),
    pytest.param(body(messages=[HELLO, "Hello"]), "messages[1]", id="message-not-object"),
    pytest.param(body(messages=[{"content": "x"}]), "messages[0].role", id="role-missing"),
    pytest.param(
        body(messages=[HELLO, {"role": "robot", "content": "x"}]),
        "messages[1].role",
        id="role-unknown",
    ),
    pytest.param(
        body(messages=[{"role": "function", "content": "x"}]), "messages[0].role", id="role-legacy"
    ),
    pytest.param(body(messages=[{"role": 1, "content": "x"}]), "messages[0].role", id="role-int"),
    pytest.param(body(messages=[user(5)]), "messages[0].content", id="content-number"),
    pytest.param(body(messages=[user({"text": "x"})]), "messages[0].content", id="content-obj"),
    pytest.param(body(messages=[user(None)]), "messages[0].content", id="user-content-null"),
    pytest.param(body(messages=[{"role": "user"}]), "messages[0].content", id="content-missing"),
    pytest.param(
        body(messages=[{"role": "assistant", "content": None}]),
        "messages[0].content",
        id="assistant-null-content-without-tool-calls",
    ),
    pytest.param(
        body(messages=[{"role": "tool", "content": "42"}]),
        "messages[0].tool_call_id",
        id="tool-without-tool-call-id",
    ),
    pytest.param(
        body(messages=[{"role": "tool", "content": "42", "tool_call_id": 7}]),
        "messages[0].tool_call_id",
        id="tool-call-id-number",
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": "x", "name": 5}]),
        "messages[0].name",
        id="name-number",
    ),
    pytest.param(
        body(messages=[{"role": "assistant", "tool_calls": "call"}]),
        "messages[0].tool_calls",
        id="tool-calls-string",
    ),
    pytest.param(
        body(messages=[{"role": "assistant", "tool_calls": [TOOL_CALL, 3]}]),
        "messages[0].tool_calls[1]",
        id="tool-call-not-object",
    ),
    pytest.param(body(messages=[user(["Hi"])]), "messages[0].content[0]", id="part-not-object"),
    pytest.param(
        body(messages=[user([{"type": "text", "text": "a"}, {"type": "video"}])]),
        "messages[0].content[1].type",
        id="part-type-unknown",
    ),
    pytest.param(
        body(messages=[user([{"text": "a"}])]), "messages[0].content[0].type", id="part-no-type"
    ),
    pytest.param(
        body(messages=[user([{"type": "text"}])]),
        "messages[0].content[0].text",
        id="text-part-without-text",
    ),
    pytest.param(
        body(messages=[user([{"type": "text", "text": 1}])]),
        "messages[0].content[0].text",
        id="text-part-number",
    ),
    pytest.param(
        body(messages=[user([{"type": "image_url", "image_url": "https://x"}])]),
        "messages[0].content[0].image_url",
        id="image-url-string",
    ),
    pytest.param(
        body(messages=[user([{"type": "image_url", "image_url": {}}])]),
        "messages[0].content[0].image_url.url",
        id="image-url-without-url",
    ),
    pytest.param(body(stream="false"), "stream", id="stream-string-false"),
    pytest.param(body(stream=1), "stream", id="stream-int"),
    pytest.param(body(stream_options=True), "stream_options", id="stream-options-bool"),
    pytest.param(body(stream_options=[]), "stream_options", id="stream-options-array"),
    pytest.param(
        body(stream_options={"include_usage": "true"}),
        "stream_options.include_usage",
        id="include-usage-string",
    ),
    pytest.param(
        body(stream_options={"include_usage": 1}),
        "stream_options.include_usage",
        id="include-usage-int",
    ),
    pytest.param(body(max_tokens=True), "max_tokens", id="max-tokens-bool"),
    pytest.param(body(max_tokens=0), "max_tokens", id="max-tokens-0"),
    pytest.param(body(max_tokens=1.5), "max_tokens", id="max-tokens-float"),
    pytest.param(body(max_tokens="12"), "max_tokens", id="max-tokens-string"),
    pytest.param(body(max_completion_tokens=0), "max_completion_tokens", id="max-completion-0"),
    pytest.param(body(temperature=-0.1), "temperature", id="temperature-negative"),
    pytest.param(body(temperature=2.01), "temperature", id="temperature-above-2"),
    pytest.param(body(temperature=True), "temperature", id="temperature-bool"),
    pytest.param(body(temperature="0.5"), "temperature", id="temperature-string"),
    pytest.param(body(top_p=1.5), "top_p", id="top-p-above-1"),
    pytest.param(body(n=0), "n", id="n-0"),
    pytest.param(body(n=False), "n", id="n-bool"),
    pytest.param(body(presence_penalty=-2.5), "presence_penalty", id="presence-below"),
    pytest.param(body(frequency_penalty=3), "frequency_penalty", id="frequency-above"),
    pytest.param(body(top_logprobs=21), "top_logprobs", id="top-logprobs-21"),
    pytest.param(body(logprobs="yes"), "logprobs", id="logprobs-string"),
    pytest.param(body(stop=5), "stop", id="stop-number"),
    pytest.param(body(stop=["a", "b", "c", "d", "e"]), "stop", id="stop-five"),
    pytest.param(body(stop=["a", None]), "stop[1]", id="stop-item-null"),
    pytest.param(body(seed=1.5), "seed", id="seed-float"),
    pytest.param(body(seed=True), "seed", id="seed-bool"),
    pytest.param(body(user=5), "user", id="user-number"),
    pytest.param(body(metadata="m"), "metadata", id="metadata-string"),
    pytest.param(body(store="true"), "store", id="store-string"),
    pytest.param(body(parallel_tool_calls=0), "parallel_tool_calls", id="parallel-int"),
    pytest.param(body(tools={"type": "function"}), "tools", id="tools-object"),
    pytest.param(body(tools=["f"]), "tools[0]", id="tool-not-object"),
    pytest.param(body(tool_choice="always"), "tool_choice", id="tool-choice-unknown"),
    pytest.param(body(functions="f"), "functions", id="functions-string"),
    pytest.param(body(function_call="required"), "function_call", id="function-call-unknown"),
    pytest.param(body(response_format="json"), "response_format", id="response-format-string"),
    pytest.param(body(response_format={}), "response_format.type", id="response-format-no-type"),
    pytest.param(
        body(n=2, stream=True, temperature=9), "temperature", id="invalid-before-unsupported"
    ),
]


@pytest.mark.parametrize(("value", "param"), INVALID_VALUES)
def test_parse_chat_request_rejects_invalid_value(value: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse(value)
    assert (caught.value.code, caught.value.status, caught.value.param) == (
        "invalid_value",
        400,
        param,
    )
    assert caught.value.message.startswith(f"{param} ")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            body(messages=[HELLO, {"role": "robot", "content": "x"}]),
            'messages[1].role must be one of system, developer, user, assistant, tool, got "robot"',
            id="role",
        ),
        pytest.param(
            body(temperature=3),
            "temperature must be a number between 0 and 2, got 3",
            id="range",
        ),
        pytest.param(
            body(stream="false"), 'stream must be a boolean, got "false"', id="no-coercion"
        ),
        pytest.param(
            {"messages": [HELLO]},
            "model is required; it must be a non-empty string naming the model",
            id="missing",
        ),
        pytest.param(
            body(messages=[{"role": "tool", "content": "42"}]),
            "messages[0].tool_call_id is required on a tool message: "
            "the id of the tool call it answers",
            id="tool-call-id",
        ),
    ],
)
def test_parse_chat_request_message_says_what_is_expected(
    value: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse(value)
    assert caught.value.message == message


def test_parse_chat_request_number_overflowing_to_infinity_is_out_of_range() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 1e400}'
    with pytest.raises(InvalidValue) as caught:
        parse_chat_request(raw)
    assert caught.value.param == "temperature"


def test_parse_chat_request_reports_first_bad_field_in_order() -> None:
    with pytest.raises(InvalidValue) as caught:
        parse({"model": 1, "messages": [], "temperature": 9})
    assert caught.value.param == "model"


def test_parse_chat_request_n_above_1_with_stream_is_unsupported() -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        parse(body(n=2, stream=True))
    assert (caught.value.code, caught.value.status, caught.value.param) == (
        "unsupported_parameter",
        400,
        "n",
    )


# --- properties -------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "metadata",
    "store",
    "logprobs",
    "top_logprobs",
    "parallel_tool_calls",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
]
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool"])
parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "refusal", "file", "input_audio", "video"])},
    optional={
        "text": st.text(max_size=4) | json_values,
        "image_url": st.fixed_dictionaries({"url": st.text(max_size=4) | json_values})
        | json_values,
        "refusal": st.text(max_size=4) | json_values,
    },
)
messages = st.fixed_dictionaries(
    {"role": roles | roles | json_values},
    optional={
        "content": st.text(max_size=8) | st.lists(parts | json_values, max_size=3) | json_values,
        "name": st.text(max_size=4) | json_values,
        "tool_call_id": st.text(max_size=4) | json_values,
        "tool_calls": st.lists(st.dictionaries(st.text(max_size=4), json_values), max_size=2)
        | json_values,
        "refusal": st.text(max_size=4) | json_values,
    },
)
#: Mostly plausible values, so that checks past ``model`` and ``messages`` are reached.
field_values = (
    st.floats(min_value=-3, max_value=3)
    | st.integers(min_value=-2, max_value=30)
    | st.lists(st.text(max_size=3), max_size=5)
    | st.fixed_dictionaries({}, optional={"include_usage": json_values, "type": json_values})
    | json_values
)
optional_fields = st.fixed_dictionaries(
    {}, optional={field: field_values for field in FIELDS if field not in ("model", "messages")}
)
unknown_fields = st.dictionaries(st.text(max_size=8), json_values, max_size=2)
#: Either anything in ``model`` and ``messages``, or a valid core so later fields are reached.
bodies = st.builds(
    lambda unknown, core, known: {**unknown, **known, **core},
    unknown_fields,
    st.fixed_dictionaries(
        {
            "model": st.just(MODEL) | json_values,
            "messages": st.lists(messages, min_size=1, max_size=3) | json_values,
        }
    )
    | st.just({"model": MODEL, "messages": [HELLO]}),
    optional_fields,
)


@settings(deadline=None)
@given(value=json_values.filter(lambda value: not isinstance(value, dict)))
def test_parse_chat_request_any_non_object_is_invalid_json(value: Any) -> None:
    for form in (value, json.dumps(value).encode()):
        with pytest.raises(InvalidJSON):
            parse_chat_request(form)


@settings(deadline=None, max_examples=300)
@given(value=bodies)
def test_parse_chat_request_any_object_raises_only_client_errors(value: dict[str, Any]) -> None:
    try:
        request = parse(value)
    except InvalidValue as error:
        assert error.param is not None
        assert error.message.startswith(f"{error.param} ")
    except (InvalidJSON, UnsupportedParameter):
        pass
    else:
        assert request.raw == value


valid_messages = st.one_of(
    st.builds(
        lambda role, content: {"role": role, "content": content},
        st.sampled_from(["system", "developer", "user", "assistant"]),
        st.text() | st.lists(st.builds(lambda text: {"type": "text", "text": text}, st.text())),
    ),
    st.builds(
        lambda content, call_id: {"role": "tool", "content": content, "tool_call_id": call_id},
        st.text(),
        st.text(),
    ),
)


@settings(deadline=None)
@given(model=st.text(min_size=1), sent=st.lists(valid_messages, min_size=1, max_size=5))
def test_parse_chat_request_valid_request_keeps_model_and_messages(
    model: str, sent: list[dict[str, Any]]
) -> None:
    request = parse({"model": model, "messages": sent})
    received = [
        {"role": message.role, "content": message.content, "tool_call_id": message.tool_call_id}
        for message in request.messages
    ]
    expected = [
        {
            "role": message["role"],
            "content": (
                message["content"]
                if isinstance(message["content"], str)
                else tuple(message["content"])
            ),
            "tool_call_id": message.get("tool_call_id"),
        }
        for message in sent
    ]
    assert (request.model, received) == (model, expected)
