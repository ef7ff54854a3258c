"""
What the gateway has learned about each (upstream, model): the detection cache of contract §4.

Rules: entries are trusted for ``ttl`` seconds from when they were learned (D7); the newest
observation replaces the entry (D6); ``ttl == 0`` caches nothing. Time is passed in. Lookups
never wait (D8): concurrent first requests each probe for themselves.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import attrs

from .config import StreamingConfig
from .errors import StreamingUnsupported

__all__ = [
    "CacheKey",
    "CallPlan",
    "Capability",
    "CapabilityCache",
    "plan_call",
]

Capability = Literal["streams", "answers_whole", "rejects_stream"]
CacheKey = tuple[str, str]
LookupResult = Literal["hit", "miss", "expired"]

#: Bounds memory against clients inventing model ids; the oldest entry makes room.
MAX_ENTRIES = 10_000


@attrs.define
class CapabilityCache:
    """Per-process capability entries keyed by (upstream kind + URL, model id)."""

    ttl: float
    max_entries: int = MAX_ENTRIES
    _entries: OrderedDict[CacheKey, tuple[Capability, float]] = attrs.Factory(OrderedDict)

    def lookup(self, key: CacheKey, now: float) -> tuple[Capability | None, LookupResult]:
        entry = self._entries.get(key)
        if entry is None:
            return None, "miss"
        capability, learned_at = entry
        if now - learned_at >= self.ttl:
            del self._entries[key]
            return None, "expired"
        return capability, "hit"

    def learn(self, key: CacheKey, capability: Capability, now: float) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(key, None)
        self._entries[key] = (capability, now)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@attrs.frozen
class CallPlan:
    """What the first upstream call sends, and what the cache said (for the log and metrics)."""

    #: ``stream`` flag of the first call.
    stream: bool
    #: The entry consulted: unknown, streams, answers_whole, rejects_stream or forced.
    capability: str
    #: hit / miss / expired when the cache was consulted, else None.
    cache_result: LookupResult | None
    #: Set when the request must fail before any call (D10).
    failure: StreamingUnsupported | None = None


def plan_call(
    config: StreamingConfig,
    cache: CapabilityCache,
    key: CacheKey,
    *,
    client_stream: bool,
    needs_whole: bool,
    now: float,
) -> CallPlan:
    """Apply D1, D9 and D10 to decide the first call."""
    if not client_stream:
        return CallPlan(stream=False, capability="unknown", cache_result=None)
    if needs_whole:
        failure = None if config.enable_fallback else StreamingUnsupported()
        return CallPlan(stream=False, capability="unknown", cache_result=None, failure=failure)
    if config.force_streaming is not None:
        return CallPlan(stream=config.force_streaming, capability="forced", cache_result=None)
    capability, result = cache.lookup(key, now)
    if not config.enable_fallback and capability in ("rejects_stream", "answers_whole"):
        return CallPlan(
            stream=True,
            capability=capability,
            cache_result=result,
            failure=StreamingUnsupported(),
        )
    return CallPlan(
        stream=capability != "rejects_stream",
        capability=capability or "unknown",
        cache_result=result,
    )
