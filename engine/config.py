"""The engine's configuration: the seed's ``StreamingConfig`` with the defaults of contract §3."""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = ["SECONDS", "HeartbeatStyle", "StreamingConfig"]

SECONDS = 1.0

HeartbeatStyle = Literal["comment", "chunk"]


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


@attrs.frozen(kw_only=True)
class StreamingConfig:
    """How the engine streams, detects, falls back and keeps clients alive."""

    #: None: detect and cache; True: always ask the upstream to stream; False: never ask.
    force_streaming: bool | None = None
    #: How long a learned capability is trusted; 0 caches nothing.
    detection_cache_duration: float = attrs.field(default=600 * SECONDS, validator=_non_negative)
    #: Replay a whole answer as a stream (True) or fail with ``streaming_unsupported`` (False).
    enable_fallback: bool = True
    #: The longest silence allowed from an upstream stream.
    streaming_timeout: float = attrs.field(default=120 * SECONDS, validator=_positive)
    #: The longest wait for one upstream call's head, and for a whole body to its last byte.
    answer_timeout: float = attrs.field(default=300 * SECONDS, validator=_positive)
    #: Seconds of silence toward a waiting streaming client between ticks; 0 means none.
    heartbeat_interval: float = attrs.field(default=10 * SECONDS, validator=_non_negative)
    heartbeat_style: HeartbeatStyle = "comment"
    #: The replay splits an answer at whitespace into deltas of at most this many characters.
    replay_chunk_chars: int = attrs.field(default=24, validator=_positive)
