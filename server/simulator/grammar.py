"""
The simulator's model-id grammar (contract §12): ``sim/<kind>(:<key>=<value>)*``.

Rules:

1. The id is split at ``:``; the first part is ``sim/<kind>``, every other part is split at its
   first ``=`` into a key and a value.
2. Kinds: ``stream`` (SSE when asked to stream, JSON otherwise), ``json`` (JSON whatever is
   asked), ``reject`` (400 "stream is not supported" to ``stream: true``, JSON otherwise).
3. A ``sim/`` id with an unknown kind, an unknown or repeated key, a part without ``=`` or a bad
   value is not a model: :func:`parse_model_id` returns ``None`` and the simulator answers 422
   "Model not found". The two ordinary catalogue ids behave like ``sim/json``; every other id is
   unknown.
4. Numbers are plain decimal digits (no sign, no spaces), within the bounds below, so a typo
   such as ``words=1e9`` is refused instead of hanging a test.
5. Event points: ``drop``, ``stall``, ``badsse`` and ``errevent`` take K, the number of content
   chunks sent before the event. K < chunks: after K content chunks; K >= chunks: after the
   finish chunk (the contract fixes this for ``drop``; the simulator applies it to all four so
   each can also be tried after the finish chunk, contract §5 rule R3).
6. ``text=B64``, ``text2=B64``, ...: URL-safe base64 of UTF-8 text, padding optional. They must
   be numbered without holes (``text3`` needs ``text2`` and ``text``); ``text1`` is not a key.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

import attrs

__all__ = ["ORDINARY_MODEL_IDS", "SimKind", "SimModel", "parse_model_id"]

SimKind = Literal["stream", "json", "reject"]

ORDINARY_MODEL_IDS = ("openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet")
"""Catalogue ids that are not of the grammar; they behave like ``sim/json``."""

SIM_PREFIX = "sim/"
KINDS: tuple[SimKind, ...] = ("stream", "json", "reject")

MAX_WORDS = 100_000
MAX_CHUNKS = 100_000
MAX_MILLISECONDS = 600_000
MAX_RETRY_SECONDS = 86_400
MIN_STATUS, MAX_STATUS = 300, 599  # 3xx too: the gateway maps an upstream 3xx (contract §7)

_DIGITS = re.compile(r"[0-9]{1,9}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_TEXT_KEY = re.compile(r"text([2-9]|[1-9][0-9]+)?")


@attrs.frozen(kw_only=True)
class SimModel:
    """What a simulated model does, as its id spells it (field names follow the grammar's keys)."""

    kind: SimKind
    words: int = 12
    chunks: int = 4
    delay_ms: int = 0
    gap_ms: int = 0
    status: int | None = None
    retry: int | None = None
    drop: int | None = None
    stall: int | None = None
    badjson: bool = False
    badsse: int | None = None
    errevent: int | None = None
    finish: str = "stop"
    errobj: bool = False
    texts: tuple[str, ...] = ()


class _BadValue(ValueError):
    """A key or value outside the grammar (the id is then an unknown model)."""


def _kind(name: str) -> SimKind:
    for kind in KINDS:
        if kind == name:
            return kind
    raise _BadValue(name)


def _number(value: str, low: int, high: int) -> int:
    if not _DIGITS.fullmatch(value):
        raise _BadValue(value)
    number = int(value)
    if not low <= number <= high:
        raise _BadValue(value)
    return number


def _flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise _BadValue(value)
    return value == "1"


def _finish(value: str) -> str:
    if not value:
        raise _BadValue(value)
    return value


def _text(value: str) -> str:
    bare = value.rstrip("=")
    padding_wrong = bare != value and len(value) % 4 != 0  # padding is optional, not partial
    if not _BASE64URL.fullmatch(value) or len(bare) % 4 == 1 or padding_wrong:
        raise _BadValue(value)
    padded = bare + "=" * (-len(bare) % 4)
    try:
        return base64.urlsafe_b64decode(padded).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _BadValue(value) from exc


def _field_value(key: str, value: str) -> tuple[str, Any]:
    """The SimModel field and value for one ``key=value`` part (text keys excluded)."""
    match key:
        case "words":
            return "words", _number(value, 0, MAX_WORDS)
        case "chunks":
            return "chunks", _number(value, 1, MAX_CHUNKS)
        case "delay":
            return "delay_ms", _number(value, 0, MAX_MILLISECONDS)
        case "gap":
            return "gap_ms", _number(value, 0, MAX_MILLISECONDS)
        case "status":
            return "status", _number(value, MIN_STATUS, MAX_STATUS)
        case "retry":
            return "retry", _number(value, 0, MAX_RETRY_SECONDS)
        case "drop" | "stall" | "badsse" | "errevent":
            return key, _number(value, 0, MAX_CHUNKS)
        case "badjson" | "errobj":
            return key, _flag(value)
        case "finish":
            return "finish", _finish(value)
    raise _BadValue(key)


def _texts(numbered: dict[int, str]) -> tuple[str, ...]:
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise _BadValue("text keys must be text, text2, text3, ... without holes")
    return tuple(numbered[index] for index in range(1, len(numbered) + 1))


def _parse_sim(model_id: str) -> SimModel:
    head, *parts = model_id.split(":")
    kind = _kind(head.removeprefix(SIM_PREFIX))
    fields: dict[str, Any] = {}  # each value typed by _field_value for its field
    numbered_texts: dict[int, str] = {}
    seen: set[str] = set()
    for part in parts:
        key, equals, value = part.partition("=")
        if not equals or key in seen:
            raise _BadValue(part)
        seen.add(key)
        if text_key := _TEXT_KEY.fullmatch(key):
            numbered_texts[int(text_key.group(1) or 1)] = _text(value)
        else:
            name, parsed = _field_value(key, value)
            fields[name] = parsed
    return attrs.evolve(SimModel(kind=kind, texts=_texts(numbered_texts)), **fields)


def parse_model_id(model_id: str) -> SimModel | None:
    """
    Read a model id as the simulator understands it.

    Returns:
        The simulated behaviour, or ``None`` when the id is not a model (rule 3).
    """
    if model_id in ORDINARY_MODEL_IDS:
        return SimModel(kind="json")
    if not model_id.startswith(SIM_PREFIX):
        return None
    try:
        return _parse_sim(model_id)
    except _BadValue:
        return None
