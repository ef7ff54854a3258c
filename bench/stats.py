"""Small statistics helpers: percentiles in milliseconds or microseconds, rounded for JSON."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["median", "percentiles"]


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def percentiles(values: Sequence[float], *, scale: float = 1e3) -> dict[str, float] | None:
    """p50, p90, p99, min and max of *values* (seconds) times *scale* (ms by default)."""
    if not values:
        return None
    return {
        "p50": round(_quantile(values, 0.5) * scale, 4),
        "p90": round(_quantile(values, 0.9) * scale, 4),
        "p99": round(_quantile(values, 0.99) * scale, 4),
        "min": round(min(values) * scale, 4),
        "max": round(max(values) * scale, 4),
        "n": len(values),
    }


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None
