"""
Derived figures and the targets table of a benchmark result.

Rule: every "added" figure is a target's figure minus the direct run's figure of the same
round; every ratio is taken per round; the reported value is the median over rounds.

``python -m bench.report bench/results/latest.json`` prints the Markdown tables used in
``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["derive_round", "markdown", "summarize"]

Round = dict[str, Any]


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data or data[key] is None:
            return None
        data = data[key]
    return data


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def derive_round(rnd: Round) -> dict[str, dict[str, float | None]]:
    """Per target: the figures of one round, "added" ones against that round's direct run."""
    seq = rnd.get("sequential", {})
    conc = rnd.get("concurrent", {})
    mem = rnd.get("memory", {})
    direct_ttfc = _get(seq, "direct", "stream", "ttfc_ms", "p50")
    direct_chunk = _get(seq, "direct", "stream", "per_chunk_us", "p50")
    direct_json = _get(seq, "direct", "json", "total_ms", "p50")
    direct_total = _get(seq, "direct", "stream", "total_ms", "p50")
    out: dict[str, dict[str, float | None]] = {}
    for name in {*seq, *conc, *mem}:
        out[name] = {
            "added_ttfc_ms": _sub(_get(seq, name, "stream", "ttfc_ms", "p50"), direct_ttfc),
            "added_per_chunk_us": _sub(
                _get(seq, name, "stream", "per_chunk_us", "p50"), direct_chunk
            ),
            "added_stream_total_ms": _sub(
                _get(seq, name, "stream", "total_ms", "p50"), direct_total
            ),
            "added_json_ms": _sub(_get(seq, name, "json", "total_ms", "p50"), direct_json),
            "cpu_us_per_stream": _get(seq, name, "stream", "cpu_us_per_request"),
            "cpu_us_per_json": _get(seq, name, "json", "cpu_us_per_request"),
            "chunks_per_s": _get(conc, name, "stream", "chunks_per_s"),
            "json_requests_per_s": _get(conc, name, "json", "requests_per_s"),
            "idle_rss_mib": _div(_get(mem, name, "idle", "rss_kib"), 1024),
            "idle_pss_mib": _div(_get(mem, name, "idle", "pss_kib"), 1024),
            "rss_per_stream_kib": _get(mem, name, "rss_per_stream_kib"),
            "pss_per_stream_kib": _get(mem, name, "pss_per_stream_kib"),
        }
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _per_round(
    results: dict[str, Any], figure: Callable[[Round, dict[str, dict[str, Any]]], float | None]
) -> list[float | None]:
    return [figure(rnd, derive_round(rnd)) for rnd in results.get("rounds", [])]


def _target(
    name: str,
    values: list[float | None],
    limit: float,
    *,
    unit: str,
    higher_is_better: bool = False,
    note: str = "",
) -> dict[str, Any]:
    measured = _median(values)
    met = None
    if measured is not None:
        met = measured >= limit if higher_is_better else measured <= limit
    return {
        "target": name,
        "measured": None if measured is None else round(measured, 4),
        "per_round": [None if v is None else round(v, 4) for v in values],
        "limit": limit,
        "unit": unit,
        "direction": ">=" if higher_is_better else "<=",
        "met": met,
        "note": note,
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Medians over rounds per target, and the targets of issue 11 / contract §14."""
    rounds = results.get("rounds", [])
    derived = [derive_round(rnd) for rnd in rounds]
    names = sorted({name for d in derived for name in d})
    figures = sorted({key for d in derived for per in d.values() for key in per})
    medians = {
        name: {
            key: (
                None
                if (m := _median([d.get(name, {}).get(key) for d in derived])) is None
                else round(m, 4)
            )
            for key in figures
        }
        for name in names
    }
    heartbeat = _get(results, "meta", "scale", "heartbeat") or 0.5

    def gw(key: str, other: str, op: Callable[[float | None, float | None], float | None]) -> Any:
        return _per_round(results, lambda _r, d: op(_fig(d, "gateway", key), _fig(d, other, key)))

    fb = "gateway_fallback"
    targets = [
        _target(
            "pass-through, sequential: added time to first content chunk (p50) minus the floor's",
            gw("added_ttfc_ms", "floor", _sub),
            0.3,
            unit="ms",
        ),
        _target(
            "per relayed chunk (chunks 2-N): gateway's added cost / floor's",
            gw("added_per_chunk_us", "floor", _div),
            1.25,
            unit="x",
        ),
        _target(
            "concurrent pass-through, 50 connections: gateway's chunks/s / floor's",
            gw("chunks_per_s", "floor", _div),
            0.85,
            unit="x",
            higher_is_better=True,
        ),
        _target(
            "engine: pass-through session, CPU per request (per-chunk relay excluded)",
            _per_round(results, lambda r, _d: _get(r, "engine", "passthrough_us")),
            50.0,
            unit="us",
        ),
        _target(
            "engine: 200-word replay session, CPU per request (all deltas)",
            _per_round(results, lambda r, _d: _get(r, "engine", "replay_200_words_us")),
            50.0,
            unit="us",
        ),
        _target(
            "fallback: whole answer arrives -> first content delta (p50)",
            _per_round(
                results, lambda r, _d: _get(r, "fallback", fb, "answer_to_first_delta_ms", "p50")
            ),
            2.0,
            unit="ms",
        ),
        _target(
            "fallback: first byte after the request, minus heartbeat_interval (worst request)",
            _per_round(
                results,
                lambda r, _d: _sub(_get(r, "fallback", fb, "ttfb_ms", "max"), heartbeat * 1000),
            ),
            5.0,
            unit="ms",
        ),
        _target(
            "fallback: heartbeat spacing, worst deviation from the interval",
            _per_round(results, lambda r, _d: _get(r, "fallback", fb, "heartbeat_worst_deviation")),
            0.10,
            unit="fraction",
        ),
        _target(
            "memory: RSS per waiting stream, gateway / floor",
            gw("rss_per_stream_kib", "floor", _div),
            1.25,
            unit="x",
        ),
        _target(
            "memory: idle PSS, gateway / floor",
            gw("idle_pss_mib", "floor", _div),
            1.5,
            unit="x",
        ),
    ]
    for mode in ("sequential", "concurrent"):
        case = f"json_{mode}"
        extra = [_get(r, "detection", "gateway", case, "extra_calls") for r in rounds]
        targets.append(
            _target(
                f"detection: extra upstream calls, JSON upstream, {mode}", extra, 0, unit="calls"
            )
        )
    targets.append(
        _target(
            "detection: rejecting upstream, one at a time: extra calls per model (per TTL)",
            _per_round(
                results,
                lambda r, _d: _div(
                    _get(r, "detection", "gateway", "reject_sequential", "extra_calls"),
                    _get(r, "detection", "gateway", "reject_sequential", "models"),
                ),
            ),
            1.0,
            unit="calls",
        )
    )
    targets.append(
        _target(
            "detection: rejecting upstream, 50 at a time: extra calls beyond the D8 bound",
            _per_round(
                results,
                lambda r, _d: _sub(
                    _get(r, "detection", "gateway", "reject_concurrent", "extra_calls"),
                    _get(
                        r,
                        "detection",
                        "gateway",
                        "reject_concurrent",
                        "started_before_rejection_learned",
                    ),
                ),
            ),
            0,
            unit="calls",
            note="bound: requests started before the model's first rejection was sent + 5 ms",
        )
    )
    targets.append(
        _target(
            "ahead of LiteLLM: LiteLLM's added time to first content / gateway's",
            _per_round(
                results,
                lambda _r, d: _div(
                    _fig(d, "litellm", "added_ttfc_ms"), _fig(d, "gateway", "added_ttfc_ms")
                ),
            ),
            5.0,
            unit="x",
            higher_is_better=True,
        )
    )
    targets.append(
        _target(
            "ahead of LiteLLM: gateway's chunks/s / LiteLLM's (50 connections)",
            gw("chunks_per_s", "litellm", _div),
            5.0,
            unit="x",
            higher_is_better=True,
        )
    )
    return {"medians": medians, "targets": targets}


def _fig(derived: dict[str, dict[str, Any]], name: str, key: str) -> float | None:
    value = derived.get(name, {}).get(key)
    return None if value is None else float(value)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    """The tables of ``docs/performance.md``."""
    summary = results.get("summary") or summarize(results)
    lines = [
        "### Targets",
        "",
        "| target | measured | limit | per round | met |",
        "|---|---|---|---|---|",
    ]
    for t in summary["targets"]:
        met = "-" if t["met"] is None else ("met" if t["met"] else "**missed**")
        per_round = ", ".join(_fmt(v) for v in t["per_round"])
        limit = f"{t['direction']} {_fmt(t['limit'])} {t['unit']}"
        lines.append(
            f"| {t['target']} | {_fmt(t['measured'])} {t['unit']} | {limit} | {per_round} | {met} |"
        )
    columns = [
        ("added_ttfc_ms", "added TTFC p50 (ms)"),
        ("added_per_chunk_us", "added per chunk (µs)"),
        ("added_stream_total_ms", "added stream total p50 (ms)"),
        ("added_json_ms", "added JSON total p50 (ms)"),
        ("cpu_us_per_stream", "CPU per stream (µs)"),
        ("cpu_us_per_json", "CPU per JSON request (µs)"),
        ("chunks_per_s", "chunks/s, 50 conns"),
        ("json_requests_per_s", "JSON req/s, 50 conns"),
        ("idle_rss_mib", "idle RSS (MiB)"),
        ("idle_pss_mib", "idle PSS (MiB)"),
        ("rss_per_stream_kib", "RSS per waiting stream (KiB)"),
    ]
    medians = summary["medians"]
    order = [
        n for n in ("direct", "floor", "gateway", "gateway_asyncio", "litellm") if n in medians
    ]
    lines += [
        "",
        "### Per target (medians of the rounds; added = minus the direct run of the same round)",
        "",
    ]
    lines.append("| figure | " + " | ".join(order) + " |")
    lines.append("|---|" + "---|" * len(order))
    for key, label in columns:
        lines.append(f"| {label} | " + " | ".join(_fmt(medians[n].get(key)) for n in order) + " |")
    unavailable = _get(results, "meta", "unavailable") or {}
    if unavailable:
        lines += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the tables of a benchmark result.")
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    results["summary"] = summarize(results)
    print(markdown(results))


if __name__ == "__main__":
    main()
