"""The simulator's model-id grammar (contract §12), parsed without any server."""

from __future__ import annotations

import base64

import pytest

from server.simulator.grammar import SimModel, parse_model_id


def b64(text: str, *, padded: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(text.encode()).decode()
    return encoded if padded else encoded.rstrip("=")


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        pytest.param("sim/stream", SimModel(kind="stream"), id="stream"),
        pytest.param("sim/json", SimModel(kind="json"), id="json"),
        pytest.param("sim/reject", SimModel(kind="reject"), id="reject"),
        pytest.param("openai/gpt-4o-mini", SimModel(kind="json"), id="ordinary-openai"),
        pytest.param("anthropic/claude-3.5-sonnet", SimModel(kind="json"), id="ordinary-claude"),
        pytest.param(
            "sim/stream:words=3:chunks=2", SimModel(kind="stream", words=3, chunks=2), id="sizes"
        ),
        pytest.param(
            "sim/json:delay=250:gap=40", SimModel(kind="json", delay_ms=250, gap_ms=40), id="times"
        ),
        pytest.param(
            "sim/json:status=429:retry=7", SimModel(kind="json", status=429, retry=7), id="status"
        ),
        pytest.param(
            "sim/stream:drop=2:stall=3:badsse=1:errevent=0",
            SimModel(kind="stream", drop=2, stall=3, badsse=1, errevent=0),
            id="event-points",
        ),
        pytest.param(
            "sim/json:badjson=1:errobj=1",
            SimModel(kind="json", badjson=True, errobj=True),
            id="flags-on",
        ),
        pytest.param("sim/json:badjson=0", SimModel(kind="json"), id="flag-off"),
        pytest.param(
            "sim/stream:finish=end_turn", SimModel(kind="stream", finish="end_turn"), id="finish"
        ),
        pytest.param("sim/json:words=0", SimModel(kind="json", words=0), id="no-words"),
    ],
)
def test_parse_model_id_valid_id_gives_its_behaviour(model_id: str, expected: SimModel) -> None:
    assert parse_model_id(model_id) == expected


def test_parse_model_id_texts_are_decoded_in_order_with_or_without_padding() -> None:
    model_id = f"sim/json:text={b64('first')}:text3={b64('thïrd ✓', padded=True)}:text2={b64('2')}"

    assert parse_model_id(model_id) == SimModel(kind="json", texts=("first", "2", "thïrd ✓"))


def test_parse_model_id_empty_text_is_an_empty_answer() -> None:
    assert parse_model_id("sim/json:text=") == SimModel(kind="json", texts=("",))


@pytest.mark.parametrize(
    "model_id",
    [
        pytest.param("sim/image", id="unknown-kind"),
        pytest.param("sim/", id="no-kind"),
        pytest.param("sim/STREAM", id="kind-case"),
        pytest.param("sim/json:colour=red", id="unknown-key"),
        pytest.param("sim/json:words", id="no-equals"),
        pytest.param("sim/json:", id="empty-part"),
        pytest.param("sim/json:words=3:words=4", id="repeated-key"),
        pytest.param("sim/json:words=-1", id="negative"),
        pytest.param("sim/json:words=+3", id="signed"),
        pytest.param("sim/json:words=1e3", id="not-digits"),
        pytest.param("sim/json:words=", id="empty-number"),
        pytest.param("sim/json:chunks=0", id="no-chunks"),
        pytest.param("sim/json:status=200", id="status-not-an-error"),
        pytest.param("sim/json:status=600", id="status-too-big"),
        pytest.param("sim/json:badjson=2", id="flag-not-0-or-1"),
        pytest.param("sim/json:finish=", id="empty-finish"),
        pytest.param("sim/json:text=a+b/", id="not-url-safe"),
        pytest.param("sim/json:text=abcde", id="impossible-length"),
        pytest.param("sim/json:text=eA=", id="partial-padding"),
        pytest.param("sim/json:text=eHk==", id="too-much-padding"),
        pytest.param("sim/json:text=__8", id="not-utf8"),
        pytest.param(f"sim/json:text2={b64('x')}", id="text2-without-text"),
        pytest.param(f"sim/json:text={b64('x')}:text3={b64('y')}", id="text-hole"),
        pytest.param(f"sim/json:text1={b64('x')}", id="text1"),
        pytest.param("openai/gpt-4o", id="other-ordinary-id"),
        pytest.param("sim/json ", id="trailing-space"),
    ],
)
def test_parse_model_id_outside_the_grammar_is_unknown(model_id: str) -> None:
    assert parse_model_id(model_id) is None
