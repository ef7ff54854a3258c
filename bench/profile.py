"""
Where the time goes: py-spy samples of a target under the concurrent streaming load.

``python -m bench.profile [--target gateway|floor] [--seconds 10]`` starts the fake upstream
and the target (pinned as in ``make bench``), drives 50 keep-alive connections of 100-chunk
streams through it, records it with py-spy (installed by ``make bench-peers``) in
non-blocking mode, and writes ``bench/results/profile-<target>.txt``: the share of samples per
layer (inclusive: a sample counts for every layer on its stack) and the functions with the most
samples at the top of the stack (self time).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import subprocess
import sys
from pathlib import Path

from . import procs
from .fake_upstream import install_uvloop, raise_open_files_limit, stream_text, whole_text
from .loadgen import Expect, RequestSpec, chat_body, run_concurrent
from .run import LOGS, PEERS, RESULTS, _floor, _gateway

__all__ = ["main", "summarize_stacks"]

PY_SPY = PEERS / "tools" / "bin" / "py-spy"
#: Layers, matched against a frame's file path, first match wins.
LAYERS = (
    ("engine (sans-IO session, SSE, chunks)", "/engine/"),
    ("adapters (driver, upstream)", "/adapters/"),
    ("server (routes, app, logging)", "/server/"),
    ("bench floor app", "/bench/floor_app"),
    ("quart / werkzeug", "/quart/"),
    ("quart / werkzeug", "/werkzeug/"),
    ("hypercorn", "/hypercorn/"),
    ("h11", "/h11/"),
    ("httpx / httpcore", "/httpx/"),
    ("httpx / httpcore", "/httpcore/"),
    ("anyio", "/anyio/"),
    ("structlog", "/structlog/"),
    ("prometheus_client", "/prometheus_client/"),
    ("json", "/json/"),
    ("asyncio", "/asyncio/"),
)


_LINE = re.compile(r":\d+\)$")
#: Our own code, listed by inclusive samples (per function, all its lines together).
OWN_CODE = ("/engine/", "/adapters/", "/server/", "/bench/floor_app")


def _short_paths(text: str) -> str:
    """Paths relative to the project, the standard library and site-packages."""
    text = text.replace(f"{procs.ROOT}/.venv/lib/", "<venv>/").replace(f"{procs.ROOT}/", "")
    return re.sub(r"/\S+/lib/python3\.\d+/", "<stdlib>/", text)


def _layer(frame: str) -> str | None:
    for name, needle in LAYERS:
        if needle in frame:
            return name
    return None


def summarize_stacks(raw: str, *, top: int = 25) -> str:
    """A text report of py-spy's ``--format raw`` output (collapsed stacks with counts)."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        layers = {layer for frame in frames if (layer := _layer(frame)) is not None}
        for layer in layers:
            inclusive[layer] += count
        leaves[frames[-1]] += count
        for function in {_LINE.sub(")", frame) for frame in frames}:
            if any(part in function for part in OWN_CODE):
                own[function] += count
    if not total:
        return "no samples\n"
    lines = [f"samples: {total}", "", "share of samples by layer (inclusive):"]
    for layer, count in inclusive.most_common():
        lines.append(f"  {count / total:6.1%}  {layer}")
    lines += ["", f"top {top} functions by self samples:"]
    for frame, count in leaves.most_common(top):
        lines.append(f"  {count / total:6.1%}  {frame}")
    if own:
        lines += ["", f"top {top} functions of our own code by inclusive samples:"]
        for frame, count in own.most_common(top):
            lines.append(f"  {count / total:6.1%}  {frame}")
    return "\n".join(lines) + "\n"


async def _load(port: int, seconds: float, body: str) -> int:
    spec = (
        RequestSpec(
            "/v1/chat/completions",
            chat_body("stream:chunks=100", stream=True),
            Expect("".join(stream_text(100)), stream=True, chunks=100),
        )
        if body == "stream"
        else RequestSpec(
            "/v1/chat/completions",
            chat_body("stream:chunks=100", stream=False),
            Expect(whole_text(100), stream=False),
        )
    )
    outcome = await run_concurrent(port, spec, connections=50, duration=seconds, warmup=1.0)
    return sum(1 for r in outcome.results if r.ok)


def profile(target_name: str, seconds: float, body: str = "stream") -> Path:
    LOGS.mkdir(parents=True, exist_ok=True)
    raise_open_files_limit()
    upstream = subprocess.Popen(
        procs.pinned([sys.executable, "-m", "bench.fake_upstream", "--port", "0"], procs.LOAD_CORE),
        cwd=procs.ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upstream.stdout is not None
    url = f"http://127.0.0.1:{int(upstream.stdout.readline().split()[1])}"
    target = _gateway("gateway", url) if target_name == "gateway" else _floor(url)
    name = target_name if body == "stream" else f"{target_name}-{body}"
    raw_path = LOGS / f"profile-{name}.raw"
    try:
        if not target.start():
            raise SystemExit(f"{target_name} did not start: {target.failure}")
        assert target.proc is not None
        spy = subprocess.Popen(
            [
                str(PY_SPY),
                "record",
                "--pid",
                str(target.proc.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "250",
                "--nonblocking",
                "--full-filenames",
                "--format",
                "raw",
                "--output",
                str(raw_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ok = asyncio.run(_load(target.port, seconds, body))
        spy.wait(seconds + 30)
    finally:
        target.stop()
        upstream.terminate()
        upstream.wait(10)
    report = summarize_stacks(raw_path.read_text())
    out = RESULTS / f"profile-{name}.txt"
    what = "100-chunk streams" if body == "stream" else "non-streaming requests"
    header = f"py-spy, {target_name}, 50 connections of {what}, {ok} valid responses\n"
    out.write_text(header + _short_paths(report))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Profile a target under streaming load.")
    parser.add_argument("--target", choices=("gateway", "floor"), default="gateway")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--body", choices=("stream", "json"), default="stream")
    args = parser.parse_args(argv)
    if not PY_SPY.exists():
        raise SystemExit("py-spy is not installed: run `make bench-peers`")
    install_uvloop()
    print(profile(args.target, args.seconds, args.body).read_text())


if __name__ == "__main__":
    main()
