"""
PNG plots of a benchmark result, with matplotlib.

matplotlib is not a dependency of the gateway: ``make bench-peers`` installs it into
``.bench-peers/tools`` and ``make bench`` runs this module with that interpreter:
``.bench-peers/tools/bin/python bench/plots.py bench/results/latest.json bench/results``.

Each bar is the median over rounds; the dots are the rounds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import derive_round

TARGETS = ("floor", "gateway", "gateway_asyncio", "litellm")
COLOURS = {
    "direct": "#888888",
    "floor": "#4c72b0",
    "gateway": "#55a868",
    "gateway_asyncio": "#8dd3a0",
    "litellm": "#c44e52",
}


def _series(results: dict[str, Any], key: str, names: tuple[str, ...]) -> dict[str, list[float]]:
    rounds = [derive_round(rnd) for rnd in results["rounds"]]
    out: dict[str, list[float]] = {}
    for name in names:
        values = [v for r in rounds if (v := r.get(name, {}).get(key)) is not None]
        if values:
            out[name] = values
    return out


def _bars(
    ax: Any, series: dict[str, list[float]], title: str, unit: str, log: bool = False
) -> None:
    import statistics

    names = list(series)
    medians = [statistics.median(series[n]) for n in names]
    ax.bar(names, medians, color=[COLOURS.get(n, "#999999") for n in names])
    for i, name in enumerate(names):
        ax.scatter([i] * len(series[name]), series[name], color="black", s=10, zorder=3)
        ax.annotate(
            f"{medians[i]:,.3g}",
            (i, medians[i]),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    if log:
        ax.set_yscale("log")
    ax.tick_params(axis="x", labelsize=8)


def plot(results_path: Path, out_dir: Path) -> list[Path]:
    import matplotlib  # type: ignore[import-not-found]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found]

    results = json.loads(results_path.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    _bars(
        axes[0][0],
        _series(results, "added_ttfc_ms", TARGETS),
        "Added time to first content chunk, p50 (sequential)",
        "ms",
        log=True,
    )
    _bars(
        axes[0][1],
        _series(results, "added_per_chunk_us", TARGETS),
        "Added cost per relayed chunk, chunks 2-100",
        "µs",
        log=True,
    )
    _bars(
        axes[1][0],
        _series(results, "chunks_per_s", TARGETS),
        "Chunks/s, 50 keep-alive connections",
        "chunks/s",
        log=True,
    )
    _bars(
        axes[1][1],
        _series(results, "added_json_ms", TARGETS),
        "Added total time, non-streaming, p50",
        "ms",
        log=True,
    )
    fig.suptitle("Pass-through against the same fake upstream (medians of rounds; dots: rounds)")
    fig.tight_layout()
    path = out_dir / "passthrough.png"
    fig.savefig(path, dpi=110)
    written.append(path)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    memory = ("floor", "gateway", "litellm")
    _bars(axes[0], _series(results, "idle_rss_mib", memory), "Idle RSS, process tree", "MiB")
    _bars(axes[1], _series(results, "idle_pss_mib", memory), "Idle PSS, process tree", "MiB")
    _bars(
        axes[2],
        _series(results, "rss_per_stream_kib", memory),
        "RSS per stream waiting 30 s",
        "KiB",
    )
    fig.tight_layout()
    path = out_dir / "memory.png"
    fig.savefig(path, dpi=110)
    written.append(path)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    results = Path(args[0]) if args else Path("bench/results/latest.json")
    out_dir = Path(args[1]) if len(args) > 1 else results.parent
    for path in plot(results, out_dir):
        print(path)


if __name__ == "__main__":
    main()
