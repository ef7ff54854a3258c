"""
Agent clients in a two-turn tool loop against the gateway on the simulator (contract §13).

LangChain (``ChatOpenAI(...).bind_tools``) and the Vercel AI SDK (``streamText`` with tools,
through its OpenAI-compatible provider, run by the machine's ``node``) each call a tool, feed
its result back and get the final answer; the simulator's scripted replies play the model.
The second call the simulator received shows the history rendered as text.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.support.servers import ServerThread

from .conftest import Simulator

NODE_DIR = Path(__file__).parent / "node"
NODE_SCRIPT_TIMEOUT = 60.0
CALL_ID = re.compile(r"call_[A-Za-z0-9]{24}")
CALL = '<tool_calls>\n[{"name": "get_weather", "arguments": {"city": "Paris"}}]\n</tool_calls>'
FINAL = "It is 21 °C and sunny in Paris."


def scripted(*replies: str) -> str:
    """A simulator model answering *replies* in turn (the k-th after k-1 assistant turns)."""
    keys = ["text" if turn == 0 else f"text{turn + 1}" for turn in range(len(replies))]
    encoded = (base64.urlsafe_b64encode(r.encode()).decode().rstrip("=") for r in replies)
    return "sim/json:" + ":".join(f"{k}={v}" for k, v in zip(keys, encoded, strict=True))


def second_turn(sim: Simulator) -> list[dict[str, Any]]:
    """The messages of the second call the simulator received."""
    calls = sim.chat_requests()
    assert len(calls) == 2, calls
    messages: list[dict[str, Any]] = calls[1]["body"]["messages"]
    return messages


def assert_history_rendered(messages: list[dict[str, Any]], call_id: str, result: str) -> None:
    """The call and its result reached Straico as text: no tool role, nothing lost."""
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == (
        f'<tool_calls>\n[{{"id": "{call_id}", "name": "get_weather", '
        '"arguments": {"city": "Paris"}}]\n</tool_calls>'
    )
    assert messages[3]["content"] == (
        f'<tool_result call_id="{call_id}" name="get_weather">\n{result}\n</tool_result>'
    )


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return json.dumps({"city": city, "temperature": 21, "sky": "sunny"})


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
def test_tools_langchain_two_turn_agent_loop(
    gateway: ServerThread, sim: Simulator, streaming: bool
) -> None:
    llm = ChatOpenAI(
        model=scripted(CALL, FINAL),
        base_url=f"{gateway.url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        max_retries=0,
        timeout=10,
        streaming=streaming,
    ).bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage("What is the weather in Paris?")]
    asked = llm.invoke(messages)
    assert isinstance(asked, AIMessage)
    assert [(c["name"], c["args"]) for c in asked.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    call_id = asked.tool_calls[0]["id"]
    assert call_id is not None and CALL_ID.fullmatch(call_id)
    messages.append(asked)
    messages.extend(get_weather.invoke(call) for call in asked.tool_calls)
    answered = llm.invoke(messages)
    assert (answered.content, answered.tool_calls) == (FINAL, [])
    assert_history_rendered(second_turn(sim), call_id, get_weather.invoke({"city": "Paris"}))


def run_node(script: str, *args: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.skip("needs node and `npm ci --prefix tests/e2e/node` (make test runs it)")
    completed = subprocess.run(
        [node, str(NODE_DIR / script), *args],
        cwd=NODE_DIR,
        capture_output=True,
        timeout=NODE_SCRIPT_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    printed: dict[str, Any] = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    return printed


def test_tools_vercel_ai_sdk_two_step_stream_text_loop(
    gateway: ServerThread, sim: Simulator
) -> None:
    result = run_node("ai_sdk_tool_loop.mjs", f"{gateway.url}/v1", scripted(CALL, FINAL))
    assert (result["errors"], result["executed"], result["text"]) == ([], ["Paris"], FINAL)
    first, last = result["steps"]
    assert first["finishReason"] == "tool-calls"
    assert [(c["name"], c["input"]) for c in first["toolCalls"]] == [
        ("get_weather", {"city": "Paris"})
    ]
    call_id = first["toolCalls"][0]["id"]
    assert CALL_ID.fullmatch(call_id)
    assert [(r["id"], r["output"]) for r in first["toolResults"]] == [
        (call_id, {"city": "Paris", "temperature": 21, "sky": "sunny"})
    ]
    assert (last["finishReason"], last["text"], last["toolCalls"]) == ("stop", FINAL, [])
    assert {"tool-call", "tool-result", "text-delta"} <= set(result["partTypes"])
    assert [r["stream"] for r in sim.chat_requests()] == [False, False]
    assert_history_rendered(
        second_turn(sim), call_id, '{"city":"Paris","temperature":21,"sky":"sunny"}'
    )
