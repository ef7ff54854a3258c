"""The finish_reason table of contract §5 (engine.finish)."""

from __future__ import annotations

import pytest

from engine.finish import FINISH_REASONS, map_finish_reason

# A literal copy of contract §5: upstream value -> OpenAI value.
CONTRACT_TABLE = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "eos": "stop",
    "complete": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "recitation": "content_filter",
    "blocklist": "content_filter",
    "prohibited_content": "content_filter",
}


@pytest.mark.parametrize(("upstream", "expected"), sorted(CONTRACT_TABLE.items()))
def test_map_finish_reason_contract_value(upstream: str, expected: str) -> None:
    assert map_finish_reason(upstream) == expected


@pytest.mark.parametrize(("upstream", "expected"), sorted(CONTRACT_TABLE.items()))
def test_map_finish_reason_upper_case_value(upstream: str, expected: str) -> None:
    assert map_finish_reason(upstream.upper()) == expected


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ("End_Turn", "stop"),
        ("MAX_tokens", "length"),
        ("Tool_Use", "tool_calls"),
        ("SAFETY", "content_filter"),
    ],
)
def test_map_finish_reason_mixed_case_value(upstream: str, expected: str) -> None:
    assert map_finish_reason(upstream) == expected


@pytest.mark.parametrize(
    "upstream",
    [None, "", "banana", "stop ", "FINISH_REASON_UNSPECIFIED", 3, ["stop"], {"reason": "length"}],
    ids=["none", "empty", "unknown", "trailing-space", "gemini-unspecified", "int", "list", "dict"],
)
def test_map_finish_reason_missing_or_unknown_is_stop(upstream: object) -> None:
    assert map_finish_reason(upstream) == "stop"


def test_finish_reasons_table_equals_contract() -> None:
    assert dict(FINISH_REASONS) == CONTRACT_TABLE
