"""
The ``finish_reason`` table (contract §5): an upstream's value, case-insensitive, to OpenAI's.

Missing (``None``), unknown values and values that are not strings all map to ``stop``; the
caller keeps the original for the log line (``upstream_finish_reason``, contract §11).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["FINISH_REASONS", "map_finish_reason"]

_TABLE: dict[str, tuple[str, ...]] = {
    "stop": ("stop", "end_turn", "stop_sequence", "eos", "complete"),
    "length": ("length", "max_tokens", "max_output_tokens", "model_length"),
    "tool_calls": ("tool_calls", "tool_use", "function_call"),
    "content_filter": (
        "content_filter",
        "safety",
        "recitation",
        "blocklist",
        "prohibited_content",
    ),
}

#: Every known upstream value (lower case) and the OpenAI value it maps to.
FINISH_REASONS: Mapping[str, str] = MappingProxyType(
    {upstream: openai for openai, values in _TABLE.items() for upstream in values}
)


def map_finish_reason(value: object) -> str:
    """The OpenAI ``finish_reason`` for the upstream's *value*; ``stop`` when unknown."""
    if isinstance(value, str):
        return FINISH_REASONS.get(value.lower(), "stop")
    return "stop"
