"""The simulator's answers as data: text, chunks, bodies and plans, without any server."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.simulator.answers import (
    SSE_BROKEN_EVENT,
    SSE_DONE,
    SSE_ERROR_EVENT,
    Drop,
    Head,
    Pause,
    Send,
    Stall,
    Step,
    answer_text,
    completion_body,
    error_body,
    last_user_text,
    make_answer,
    plan_chat,
    split_into_chunks,
    stream_events,
    to_json_bytes,
)
from server.simulator.grammar import SimModel, parse_model_id


def user(text: str) -> dict[str, object]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, object]:
    return {"role": "assistant", "content": text}


def model(model_id: str) -> SimModel:
    parsed = parse_model_id(model_id)
    assert parsed is not None
    return parsed


def plan(model_id: str, *, stream: bool, messages: list[object] | None = None) -> tuple[Step, ...]:
    return plan_chat(
        model(model_id),
        model_id,
        messages if messages is not None else [user("hello")],
        stream=stream,
        completion_id="gen-1-test",
        created=1,
    )


def sent_events(steps: tuple[Step, ...]) -> list[bytes]:
    return [step.data for step in steps if isinstance(step, Send)]


def content_of(event: bytes) -> str | None:
    """The delta content of a chunk event; None for other events (role, finish, usage, faults)."""
    try:
        chunk = json.loads(event.removeprefix(b"data: "))
    except json.JSONDecodeError:
        return None
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    return choices[0]["delta"].get("content") if choices else None


def whole_body(model_id: str) -> bytes:
    """The JSON body a plan of *model_id* would send, built straight from the answer."""
    answer = make_answer(
        model(model_id), model_id, [user("hello")], completion_id="gen-1-test", created=1
    )
    return to_json_bytes(completion_body(answer))


# --- text -----------------------------------------------------------------------------------


def test_answer_text_same_model_and_message_gives_same_text() -> None:
    first = answer_text(model("sim/json"), "sim/json", [user("hi")])
    second = answer_text(model("sim/json"), "sim/json", [user("other"), assistant("x"), user("hi")])

    assert first == second


def test_answer_text_other_last_user_message_gives_other_text() -> None:
    assert answer_text(model("sim/json"), "sim/json", [user("hi")]) != answer_text(
        model("sim/json"), "sim/json", [user("bye")]
    )


def test_answer_text_other_model_id_gives_other_text() -> None:
    assert answer_text(model("sim/json"), "sim/json", [user("hi")]) != answer_text(
        model("sim/stream"), "sim/stream", [user("hi")]
    )


@pytest.mark.parametrize("words", [0, 1, 12, 33, 100])
def test_answer_text_has_the_asked_number_of_words(words: int) -> None:
    text = answer_text(model(f"sim/json:words={words}"), "sim/json", [user("hi")])

    assert len(text.split()) == words


def test_answer_text_is_a_sentence() -> None:
    text = answer_text(model("sim/json:words=5"), "sim/json", [user("hi")])

    assert (text[0].isupper(), text[-1]) == (True, ".")


@pytest.mark.parametrize(
    ("assistant_turns", "expected"),
    [(0, "one"), (1, "two"), (2, "three"), (5, "three")],
)
def test_answer_text_scripted_texts_follow_assistant_turns(
    assistant_turns: int, expected: str
) -> None:
    scripted = SimModel(kind="json", texts=("one", "two", "three"))
    messages: list[object] = [user("q")]
    for turn in range(assistant_turns):
        messages += [assistant(f"a{turn}"), user(f"q{turn}")]

    assert answer_text(scripted, "sim/json", messages) == expected


def test_last_user_text_joins_text_parts_and_skips_images() -> None:
    parts = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "this"},
    ]

    assert last_user_text([user("old"), {"role": "user", "content": parts}]) == "look at this"


def test_last_user_text_without_user_message_is_empty() -> None:
    assert last_user_text([{"role": "system", "content": "be brief"}, "not a message"]) == ""


@given(text=st.text(), chunks=st.integers(min_value=1, max_value=40))
def test_split_into_chunks_concatenation_is_the_text(text: str, chunks: int) -> None:
    pieces = split_into_chunks(text, chunks)

    assert ("".join(pieces), len(pieces)) == (text, chunks)


def test_split_into_chunks_are_even() -> None:
    assert split_into_chunks("abcdefghij", 4) == ["ab", "cde", "fg", "hij"]


# --- bodies ---------------------------------------------------------------------------------


def test_completion_body_has_straico_top_level_shape() -> None:
    answer = make_answer(
        model("sim/json:words=6:finish=length"),
        "sim/json:words=6:finish=length",
        [{"role": "system", "content": "be kind"}, user("say hi")],
        completion_id="gen-7-abc",
        created=7,
    )

    body = completion_body(answer)

    assert body == {
        "id": "gen-7-abc",
        "provider": "Simulator",
        "model": "sim/json:words=6:finish=length",
        "object": "chat.completion",
        "created": 7,
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": "length",
                "native_finish_reason": "length",
                "message": {
                    "role": "assistant",
                    "content": answer.text,
                    "refusal": None,
                    "reasoning": None,
                },
            }
        ],
        "usage": {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14},
        "price": {"input": 0.008, "output": 0.012, "total": 0.02},
        "words": {"input": 4, "output": 6, "total": 10},
    }


def test_error_body_plain_is_a_string() -> None:
    assert error_body("Too many requests", model_id="sim/json", errobj=False) == {
        "error": "Too many requests",
        "success": False,
    }


def test_error_body_errobj_is_straico_v1_per_model_object() -> None:
    zero = {"input": 0, "output": 0, "total": 0}

    assert error_body("Insufficient coins", model_id="sim/json", errobj=True) == {
        "error": {
            "overall_price": zero,
            "overall_words": zero,
            "completions": {
                "sim/json": {
                    "completion": {"error": "Insufficient coins"},
                    "price": zero,
                    "words": zero,
                }
            },
        },
        "success": False,
    }


def test_stream_events_are_role_contents_finish_usage_done() -> None:
    answer = make_answer(
        model("sim/stream"), "sim/stream", [user("hi")], completion_id="gen-1-x", created=1
    )

    role, *contents, finish, usage, done = stream_events(answer, 4)
    role_chunk, finish_chunk, usage_chunk = (
        json.loads(event.removeprefix(b"data: ")) for event in (role, finish, usage)
    )

    assert role_chunk["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(str(content_of(event)) for event in contents) == answer.text
    assert len(contents) == 4
    assert (finish_chunk["choices"][0]["delta"], finish_chunk["choices"][0]["finish_reason"]) == (
        {},
        "stop",
    )
    assert (usage_chunk["choices"], usage_chunk["usage"]) == ([], answer.usage())
    assert done == SSE_DONE


# --- plans ----------------------------------------------------------------------------------

SSE_HEAD = Head(
    200, (("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"))
)


def test_plan_chat_stream_with_gap_pauses_before_every_event_after_the_role() -> None:
    steps = plan("sim/stream:chunks=2:gap=30", stream=True)

    kinds = [type(step).__name__ for step in steps]

    assert kinds == ["Head", "Send", *["Pause", "Send"] * 5]
    assert steps[0] == SSE_HEAD
    assert {step for step in steps if isinstance(step, Pause)} == {Pause(0.03)}


def test_plan_chat_delay_comes_before_the_head() -> None:
    steps = plan("sim/json:delay=250", stream=False)

    assert [type(step) for step in steps] == [Pause, Head, Send]
    assert steps[0] == Pause(0.25)


@pytest.mark.parametrize(
    ("model_id", "expected_tail", "contents_sent"),
    [
        pytest.param("sim/stream:drop=2", Drop(), 2, id="drop"),
        pytest.param("sim/stream:stall=0", Stall(), 0, id="stall"),
        pytest.param("sim/stream:errevent=3", Send(SSE_ERROR_EVENT), 3, id="errevent"),
        pytest.param("sim/stream:badsse=1", Send(SSE_BROKEN_EVENT), 1, id="badsse"),
        pytest.param("sim/stream:drop=3:errevent=1", Send(SSE_ERROR_EVENT), 1, id="earliest-wins"),
        pytest.param("sim/stream:badsse=2:stall=2", Stall(), 2, id="stall-before-badsse"),
    ],
)
def test_plan_chat_stream_event_point_after_k_contents(
    model_id: str, expected_tail: Step, contents_sent: int
) -> None:
    steps = plan(model_id, stream=True)
    contents = [event for event in sent_events(steps)[1:] if content_of(event) is not None]

    assert (steps[-1], len(contents)) == (expected_tail, contents_sent)


def test_plan_chat_stream_event_point_past_chunks_comes_after_the_finish_chunk() -> None:
    steps = plan("sim/stream:chunks=2:drop=9", stream=True)
    finish = json.loads(sent_events(steps)[-1].removeprefix(b"data: "))

    assert (steps[-1], finish["choices"][0]["finish_reason"]) == (Drop(), "stop")


def test_plan_chat_json_drop_sends_half_the_announced_body() -> None:
    data = whole_body("sim/json:drop=0")

    assert plan("sim/json:drop=0", stream=False) == (
        Head(200, (("content-type", "application/json"), ("content-length", str(len(data))))),
        Send(data[: len(data) // 2]),
        Drop(),
    )


def test_plan_chat_json_stall_stops_after_the_head() -> None:
    steps = plan("sim/stream:stall=2", stream=False)

    assert [type(step) for step in steps] == [Head, Stall]


def test_plan_chat_json_badjson_sends_half_the_body_with_its_length() -> None:
    data = whole_body("sim/json:badjson=1")
    half = data[: len(data) // 2]

    assert plan("sim/json:badjson=1", stream=False) == (
        Head(200, (("content-type", "application/json"), ("content-length", str(len(half))))),
        Send(half),
    )


def test_plan_chat_reject_with_stream_wins_over_status() -> None:
    steps = plan("sim/reject:status=503:retry=4", stream=True)

    assert steps == (
        Head(400, (("content-type", "application/json"), ("content-length", "51"))),
        Send(b'{"error":"stream is not supported","success":false}'),
    )


def test_plan_chat_status_with_retry_adds_retry_after() -> None:
    steps = plan("sim/reject:status=429:retry=4", stream=False)

    assert steps == (
        Head(
            429,
            (
                ("content-type", "application/json"),
                ("content-length", "45"),
                ("retry-after", "4"),
            ),
        ),
        Send(b'{"error":"Too many requests","success":false}'),
    )
