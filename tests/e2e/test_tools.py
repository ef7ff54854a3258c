"""
Tool calls on the Straico upstream, end to end (contract §13): the openai SDK against a real
gateway and the simulator, whose scripted replies (``text=``) play the model.

What the simulator received shows the rendering (instruction, history); what the client got
shows the parsing (``tool_calls`` whole and as deltas, or the reply as plain content).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import openai
import pytest

from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import (
    CLIENT_TIMEOUT,
    LogCapture,
    Simulator,
    new_request_id,
    wait_log_line,
)

CALL_ID = re.compile(r"call_[A-Za-z0-9]{24}")
QUESTION = {"role": "user", "content": "What is the weather in Paris and in Oslo?"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {}}},
}
TWO_CALLS = (
    "I will look both up.\n<tool_calls>\n"
    '[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
    '{"name": "get_weather", "arguments": {"city": "Oslo"}}]\n</tool_calls>'
)
EXPECTED_CALLS = [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]


def scripted(*replies: str, kind: str = "json") -> str:
    """A simulator model that answers *replies* in turn (the k-th after k-1 assistant turns)."""
    keys = ["text" if turn == 0 else f"text{turn + 1}" for turn in range(len(replies))]
    encoded = (base64.urlsafe_b64encode(r.encode()).decode().rstrip("=") for r in replies)
    return f"sim/{kind}:" + ":".join(
        f"{key}={value}" for key, value in zip(keys, encoded, strict=True)
    )


def client_for(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=10)


def post(gateway: ServerThread, body: dict[str, Any], rid: str | None = None) -> httpx.Response:
    headers = {"X-Request-ID": rid} if rid else {}
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        return http.post("/v1/chat/completions", json=body, headers=headers)


def body(model: str, *, stream: bool = False, **fields: Any) -> dict[str, Any]:
    sent: dict[str, Any] = {"model": model, "messages": [QUESTION], "tools": [WEATHER, SEARCH]}
    if stream:
        sent["stream"] = True
    sent.update(fields)
    return sent


def sent_system_text(sim: Simulator) -> str:
    """The system text of the last call the simulator received."""
    messages = sim.chat_requests()[-1]["body"]["messages"]
    return "\n".join(m["content"] for m in messages if m["role"] == "system")


def calls_of(tool_calls: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in tool_calls]


# --- the openai SDK, whole and streamed -------------------------------------------------------


def test_tools_non_streaming_client_gets_tool_calls(gateway: ServerThread, sim: Simulator) -> None:
    reply = client_for(gateway).chat.completions.create(
        model=scripted(TWO_CALLS), messages=[QUESTION], tools=[WEATHER, SEARCH]
    )
    choice = reply.choices[0]
    calls = choice.message.tool_calls or []
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", "I will look both up.")
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == EXPECTED_CALLS
    assert [(bool(CALL_ID.fullmatch(c.id)), c.type) for c in calls] == [(True, "function")] * 2
    sent = sim.chat_requests()
    assert [r["stream"] for r in sent] == [False]
    system = sent_system_text(sim)
    assert json.dumps({"name": "get_weather", **WEATHER["function"]}) in system
    assert "<tool_calls>" in system


def test_tools_only_calls_give_null_content(gateway: ServerThread) -> None:
    only_calls = '<tool_calls>[{"name": "search", "arguments": {}}]</tool_calls>'
    response = post(gateway, body(scripted(only_calls)))
    message = response.json()["choices"][0]["message"]
    assert (message["content"], calls_of(message["tool_calls"])) == (None, [("search", {})])


def test_tools_streamed_calls_equal_the_whole_ones(gateway: ServerThread, sim: Simulator) -> None:
    model = scripted(TWO_CALLS, kind="stream")  # an upstream that could stream: D1 still says no
    client = client_for(gateway)
    whole = client.chat.completions.create(model=model, messages=[QUESTION], tools=[WEATHER])
    stream = client.chat.completions.create(
        model=model, messages=[QUESTION], tools=[WEATHER], stream=True
    )
    assembled: dict[int, dict[str, Any]] = {}
    content = ""
    finish = []
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            merged = assembled.setdefault(call.index, {"id": call.id, "name": "", "arguments": ""})
            merged["name"] += (call.function and call.function.name) or ""
            merged["arguments"] += (call.function and call.function.arguments) or ""
        if chunk.choices[0].finish_reason:
            finish.append(chunk.choices[0].finish_reason)
    whole_calls = whole.choices[0].message.tool_calls or []
    assert [(a["name"], a["arguments"]) for a in assembled.values()] == [
        (c.function.name, c.function.arguments) for c in whole_calls
    ]
    assert (content, finish) == (whole.choices[0].message.content, ["tool_calls"])
    assert all(CALL_ID.fullmatch(a["id"]) for a in assembled.values())
    assert [r["stream"] for r in sim.chat_requests()] == [False, False]


def test_tools_stream_conforms_and_each_call_opens_with_its_identity(
    gateway: ServerThread, sim: Simulator, log_capture: LogCapture
) -> None:
    rid = new_request_id("tools")
    model = scripted(TWO_CALLS, kind="stream")
    response = post(gateway, body(model, stream=True, stream_options={"include_usage": True}), rid)
    report = check_stream(response.content, include_usage=True)
    assert (report.content, report.finish_reason) == ("I will look both up.", "tool_calls")
    assert calls_of(report.calls()) == EXPECTED_CALLS
    deltas = [
        call
        for event in report.events
        for choice in event["choices"]
        for call in choice["delta"].get("tool_calls", ())
    ]
    openers = [d for d in deltas if "id" in d]
    assert [(d["index"], d["type"], d["function"]["name"]) for d in openers] == [
        (0, "function", "get_weather"),
        (1, "function", "get_weather"),
    ]
    assert all(set(d) == {"index", "function"} for d in deltas if "id" not in d)
    line = wait_log_line(log_capture, rid)
    assert [entry["event"] for entry in line["trace"]] == [
        "stream_declined",
        "answer_received",
        "drained",
    ]
    assert (line["finish_reason"], line["upstream_calls"]) == ("tool_calls", 1)
    assert [r["stream"] for r in sim.chat_requests()] == [False]


# --- tool_choice -----------------------------------------------------------------------------


def test_tools_choice_none_sends_no_tool_list(gateway: ServerThread, sim: Simulator) -> None:
    response = post(gateway, body(scripted(TWO_CALLS), tool_choice="none"))
    choice = response.json()["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == ("stop", TWO_CALLS)
    assert "tool_calls" not in choice["message"]
    sent = sim.chat_requests()[-1]["body"]
    assert sent["messages"] == [QUESTION]
    assert (sent["stream"], "tools" in sent) == (False, False)


def test_tools_choice_auto_plain_reply_is_content(gateway: ServerThread, sim: Simulator) -> None:
    response = post(gateway, body(scripted("It is sunny in both."), tool_choice="auto"))
    choice = response.json()["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == (
        "stop",
        "It is sunny in both.",
    )
    assert "answer in plain text with no <tool_calls> block" in sent_system_text(sim)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tools_choice_required_is_demanded_and_a_plain_reply_stays_text(
    gateway: ServerThread, sim: Simulator, stream: bool
) -> None:
    response = post(
        gateway, body(scripted("No tool needed."), stream=stream, tool_choice="required")
    )
    if stream:
        report = check_stream(response.content)
        got = (report.finish_reason, report.content, report.calls())
    else:
        choice = response.json()["choices"][0]
        got = (choice["finish_reason"], choice["message"]["content"], [])
    assert got == ("stop", "No tool needed.", [])
    assert "You must call at least one tool in this reply." in sent_system_text(sim)


def test_tools_choice_named_is_demanded_and_obeyed(gateway: ServerThread, sim: Simulator) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    response = post(gateway, body(scripted(TWO_CALLS), tool_choice=named))
    message = response.json()["choices"][0]["message"]
    assert calls_of(message["tool_calls"]) == EXPECTED_CALLS
    assert 'You must call the tool "get_weather"' in sent_system_text(sim)


def test_tools_choice_named_another_tool_called_stays_text(gateway: ServerThread) -> None:
    named = {"type": "function", "function": {"name": "search"}}
    response = post(gateway, body(scripted(TWO_CALLS), tool_choice=named))
    choice = response.json()["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == ("stop", TWO_CALLS)


def test_tools_parallel_false_keeps_the_first_call(gateway: ServerThread, sim: Simulator) -> None:
    response = post(gateway, body(scripted(TWO_CALLS), parallel_tool_calls=False))
    message = response.json()["choices"][0]["message"]
    assert calls_of(message["tool_calls"]) == EXPECTED_CALLS[:1]
    assert message["content"] == (
        'I will look both up.\n\n<tool_calls>\n[{"name": "get_weather", "arguments": '
        '{"city": "Oslo"}}]\n</tool_calls>'
    )
    assert "Call at most one tool per reply" in sent_system_text(sim)


# --- replies that are not valid calls --------------------------------------------------------

MALFORMED = {
    "unknown-tool": '<tool_calls>[{"name": "get_time", "arguments": {}}]</tool_calls>',
    "bad-json": '<tool_calls>[{"name": "get_weather", "arguments": {city: Paris}}]</tool_calls>',
    "arguments-not-object": '<tool_calls>[{"name": "search", "arguments": "[1, 2]"}]</tool_calls>',
    "one-bad-among-good": 'Both:\n<tool_calls>[{"name": "search"}, {"name": "nope"}]</tool_calls>',
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED)
def test_tools_malformed_reply_comes_back_as_content(
    gateway: ServerThread, reply: str, stream: bool
) -> None:
    response = post(gateway, body(scripted(reply), stream=stream))
    if stream:
        report = check_stream(response.content)
        got = (report.finish_reason, report.content, report.calls())
    else:
        message = response.json()["choices"][0]["message"]
        got = (response.json()["choices"][0]["finish_reason"], message["content"], [])
        assert "tool_calls" not in message
    assert got == ("stop", reply, [])


# --- legacy functions ------------------------------------------------------------------------


def test_tools_legacy_functions_answer_with_function_call(
    gateway: ServerThread, sim: Simulator
) -> None:
    reply = '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>'
    sent = {"model": scripted(reply), "messages": [QUESTION], "functions": [WEATHER["function"]]}
    choice = post(gateway, sent).json()["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert "tool_calls" not in choice["message"]
    assert "Call at most one tool per reply" in sent_system_text(sim)


def test_tools_legacy_functions_stream_a_function_call_delta(gateway: ServerThread) -> None:
    reply = '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>'
    sent = {
        "model": scripted(reply),
        "messages": [QUESTION],
        "functions": [WEATHER["function"]],
        "stream": True,
    }
    report = check_stream(post(gateway, sent).content)
    streamed = [
        choice["delta"]["function_call"]
        for event in report.events
        for choice in event["choices"]
        if "function_call" in choice["delta"]
    ]
    assert report.finish_reason == "function_call"
    assert "".join(part.get("arguments", "") for part in streamed) == '{"city":"Paris"}'


# --- the second turn -------------------------------------------------------------------------


def test_tools_second_turn_sends_the_history_as_text(gateway: ServerThread, sim: Simulator) -> None:
    model = scripted(TWO_CALLS, "Paris 21 °C, Oslo 9 °C.")
    client = client_for(gateway)
    first = client.chat.completions.create(model=model, messages=[QUESTION], tools=[WEATHER])
    message = first.choices[0].message
    calls = message.tool_calls or []
    history: list[Any] = [
        QUESTION,
        message.model_dump(exclude_none=True),
        *(
            {"role": "tool", "tool_call_id": call.id, "content": f'{{"temp": {temp}}}'}
            for call, temp in zip(calls, (21, 9), strict=True)
        ),
    ]
    second = client.chat.completions.create(model=model, messages=history, tools=[WEATHER])
    assert (second.choices[0].message.content, second.choices[0].finish_reason) == (
        "Paris 21 °C, Oslo 9 °C.",
        "stop",
    )
    sent = sim.chat_requests()[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2]["content"] == (
        "I will look both up.\n\n<tool_calls>\n"
        f'[{{"id": "{calls[0].id}", "name": "get_weather", "arguments": {{"city": "Paris"}}}}, '
        f'{{"id": "{calls[1].id}", "name": "get_weather", "arguments": {{"city": "Oslo"}}}}]'
        "\n</tool_calls>"
    )
    assert sent[3]["content"] == (
        f'<tool_result call_id="{calls[0].id}" name="get_weather">\n{{"temp": 21}}\n'
        "</tool_result>\n\n"
        f'<tool_result call_id="{calls[1].id}" name="get_weather">\n{{"temp": 9}}\n'
        "</tool_result>"
    )
