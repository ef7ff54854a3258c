"""
The benchmark run (``make bench``): every scenario, every target, three interleaved rounds.

Method (issue 11):

1. This process (the load generator) and the fake upstream run on one core, the process under
   test on the other (:mod:`bench.procs`).
2. Each round starts the targets, then runs each scenario over every target in a rotated order
   (interleaved, so drift in the machine hits every target alike), then stops them. Memory is
   measured on fresh processes. Before each measurement the run waits for a quiet machine and
   records what the other processes used.
3. Every derived figure is computed per round against the direct run of that round, then the
   median over rounds is taken (:mod:`bench.report`).

Targets: ``direct`` (the fake upstream itself), ``gateway`` (``straico-gateway serve``, openai
kind, default loop), ``gateway_asyncio`` (the same with ``--loop asyncio``), ``floor``
(:mod:`bench.floor_app`), ``litellm`` (LiteLLM's proxy from ``make bench-peers``; skipped, and
said so, when it is not installed or does not start). The fallback scenario runs against
``gateway_fallback`` (straico kind, ``--heartbeat-interval 0.5``); detection against ``gateway``.

``python -m bench.run [--rounds 3] [--out bench/results/latest.json] [--smoke]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import attrs

from . import procs, report
from .fake_upstream import install_uvloop, raise_open_files_limit
from .scenarios import Bench, Scale, engine_micro

__all__ = ["main", "run_benchmark"]

RESULTS = procs.ROOT / "bench" / "results"
LOGS = RESULTS / "tmp"
PEERS = procs.ROOT / ".bench-peers"
LITELLM_BIN = PEERS / "litellm" / "bin" / "litellm"
LITELLM_CONFIG = procs.ROOT / "bench" / "peers" / "litellm_config.yaml"
LOOP_TARGETS = ("direct", "gateway", "gateway_asyncio", "floor", "litellm")
MEMORY_TARGETS = ("gateway", "floor", "litellm")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _gateway(name: str, upstream: str, *extra: str, kind: str = "openai") -> procs.Target:
    port = procs.free_port()
    url = f"{upstream}/v1" if kind == "openai" else upstream
    argv = [
        str(procs.VENV_BIN / "straico-gateway"),
        "serve",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--upstream-kind={kind}",
        f"--upstream-url={url}",
        "--upstream-key=x",
        "--log-level=warning",
        *extra,
    ]
    return procs.Target(name, argv, port, "/healthz", log_path=LOGS / f"{name}.log")


def _floor(upstream: str) -> procs.Target:
    port = procs.free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.floor_app",
        f"--upstream-url={upstream}/v1",
        f"--port={port}",
    ]
    return procs.Target("floor", argv, port, log_path=LOGS / "floor.log")


def _litellm(upstream: str) -> procs.Target | str:
    """The LiteLLM target, or why there is none."""
    if not LITELLM_BIN.exists():
        return "not installed (run `make bench-peers`)"
    port = procs.free_port()
    config = LOGS / "litellm_config.yaml"
    config.write_text(LITELLM_CONFIG.read_text().replace("{upstream_url}", f"{upstream}/v1"))
    argv = [
        str(LITELLM_BIN),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {"LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION", "NO_DOCS": "True"}
    return procs.Target(
        "litellm",
        argv,
        port,
        "/health/liveliness",
        env=env,
        cwd=LOGS,
        log_path=LOGS / "litellm.log",
    )


def _versions() -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, Any] = {"python": platform.python_version()}
    for name in ("quart", "hypercorn", "httpx", "uvloop", "h11"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if LITELLM_BIN.exists():
        pip = PEERS / "litellm" / "bin" / "python"
        completed = subprocess.run(
            [str(pip), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        versions["litellm"] = completed.stdout.strip() or None
    return versions


def _commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=procs.ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except OSError:
        return None
    return completed.stdout.strip() or None


def _dirty() -> bool | None:
    """Whether tracked files differ from the commit (the run measures the working tree)."""
    try:
        completed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=procs.ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except OSError:
        return None
    return bool(completed.stdout.strip())


class Run:
    """One benchmark run: the upstream, the targets of the current round, the results."""

    def __init__(self, scale: Scale, *, peers: bool) -> None:
        self.scale = scale
        self.peers = peers
        self.upstream: subprocess.Popen[str] | None = None
        self.upstream_port = 0
        self.targets: dict[str, procs.Target] = {}
        self.unavailable: dict[str, str] = {}

    def own_pids(self) -> set[int]:
        pids = {os.getpid()}
        if self.upstream is not None:
            pids.update(procs.process_tree(self.upstream.pid))
        for target in self.targets.values():
            pids.update(target.pids())
        return pids

    def start_upstream(self) -> None:
        argv = [sys.executable, "-m", "bench.fake_upstream", "--port", "0"]
        self.upstream = subprocess.Popen(
            procs.pinned(argv, procs.LOAD_CORE),
            cwd=procs.ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.upstream.stdout is not None
        line = self.upstream.stdout.readline()
        self.upstream_port = int(line.split()[1])

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    def make_target(self, name: str) -> procs.Target | None:
        upstream = self.upstream_url
        if name == "direct":
            return procs.Target("direct", [], self.upstream_port)
        if name == "gateway":
            return _gateway("gateway", upstream)
        if name == "gateway_asyncio":
            return _gateway("gateway_asyncio", upstream, "--loop=asyncio")
        if name == "gateway_fallback":
            hb = f"--heartbeat-interval={self.scale.heartbeat:g}"
            return _gateway("gateway_fallback", upstream, hb, kind="straico")
        if name == "floor":
            return _floor(upstream)
        if name == "litellm":
            if not self.peers:
                self.unavailable["litellm"] = "not requested"
                return None
            made = _litellm(upstream)
            if isinstance(made, str):
                self.unavailable["litellm"] = made
                return None
            return made
        raise ValueError(name)

    def start(self, name: str) -> procs.Target | None:
        if name in self.unavailable:
            return None
        target = self.make_target(name)
        if target is None:
            return None
        _log(f"starting {name}")
        if not target.start():
            self.unavailable[name] = f"did not start: {target.failure}"
            _log(f"{name} {self.unavailable[name]}")
            return None
        self.targets[name] = target
        return target

    def stop(self, name: str) -> None:
        target = self.targets.pop(name, None)
        if target is not None:
            target.stop()

    def stop_all(self) -> None:
        for name in list(self.targets):
            self.stop(name)
        if self.upstream is not None and self.upstream.poll() is None:
            self.upstream.terminate()
            self.upstream.wait(10)


async def _guarded(what: str, step: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A failing measurement is recorded as such; the run goes on."""
    try:
        return await step
    except Exception as exc:
        _log(f"{what} failed: {exc!r}")
        return {"failed": repr(exc)}


async def _round(run: Run, bench: Bench, number: int, scale: Scale) -> dict[str, Any]:
    shift = number - 1
    order = [*LOOP_TARGETS[shift:], *LOOP_TARGETS[:shift]]
    out: dict[str, Any] = {"round": number, "order": order, "started": time.time()}
    for name in (*order, "gateway_fallback"):
        run.start(name)
    running = [name for name in order if name in run.targets]
    out["start_seconds"] = {name: run.targets[name].start_seconds for name in run.targets}

    out["sequential"] = {}
    for name in running:
        _log(f"round {number}: sequential {name}")
        out["sequential"][name] = await _guarded(
            f"sequential {name}", bench.sequential(run.targets[name])
        )
    out["concurrent"] = {}
    for name in running:
        _log(f"round {number}: concurrent {name}")
        out["concurrent"][name] = await _guarded(
            f"concurrent {name}", bench.concurrent(run.targets[name])
        )
    out["fallback"] = {}
    for name in ("direct", "gateway_fallback"):
        if name in run.targets:
            _log(f"round {number}: fallback {name}")
            out["fallback"][name] = await _guarded(
                f"fallback {name}", bench.fallback(run.targets[name], tag=f"r{number}{name}")
            )
    if "gateway" in run.targets:
        _log(f"round {number}: detection")
        out["detection"] = {
            "gateway": await _guarded(
                "detection", bench.detection(run.targets["gateway"], tag=f"r{number}")
            )
        }
    for name in list(run.targets):
        if name != "direct":
            run.stop(name)

    out["memory"] = {}
    for name in [n for n in order if n in MEMORY_TARGETS]:
        target = run.start(name)
        if target is None:
            continue
        _log(f"round {number}: memory {name}")
        try:
            out["memory"][name] = await _guarded(
                f"memory {name}", bench.memory(target, tag=f"r{number}{name}")
            )
        finally:
            run.stop(name)
    _log(f"round {number}: engine")
    try:
        out["engine"] = engine_micro(scale.engine_iterations)
    except (subprocess.SubprocessError, ValueError) as exc:
        _log(f"engine failed: {exc!r}")
        out["engine"] = {"failed": repr(exc)}
    return out


async def run_benchmark(
    *, rounds: int, scale: Scale, peers: bool, out: Path | None = None
) -> dict[str, Any]:
    """Run everything; return (and write to *out*) the results."""
    LOGS.mkdir(parents=True, exist_ok=True)
    raise_open_files_limit()
    if procs.cores() >= 2:
        os.sched_setaffinity(0, {procs.LOAD_CORE})
    run = Run(scale, peers=peers)
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "worktree_dirty": _dirty(),
            "versions": _versions(),
            "cpus": os.cpu_count(),
            "pinning": {"target_core": procs.TARGET_CORE, "load_core": procs.LOAD_CORE}
            if procs.cores() >= 2
            else None,
            "scale": attrs.asdict(scale),
        },
        "rounds": [],
    }
    try:
        run.start_upstream()
        run.targets["direct"] = procs.Target("direct", [], run.upstream_port)
        bench = Bench(run.upstream_port, scale, run.own_pids)
        for number in range(1, rounds + 1):
            results["rounds"].append(await _round(run, bench, number, scale))
            run.targets["direct"] = procs.Target("direct", [], run.upstream_port)
            if out is not None:  # a partial result survives a later failure
                _write(out, results)
    finally:
        run.stop_all()
    results["meta"]["unavailable"] = run.unavailable
    results["summary"] = report.summarize(results)
    if out is not None:
        _write(out, results)
    return results


def _write(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the benchmark of issue 11.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds long")
    parser.add_argument("--no-peers", action="store_true", help="skip LiteLLM")
    args = parser.parse_args(argv)
    install_uvloop()
    scale = Scale.smoke() if args.smoke else Scale()
    results = asyncio.run(
        run_benchmark(rounds=args.rounds, scale=scale, peers=not args.no_peers, out=args.out)
    )
    print(report.markdown(results))


if __name__ == "__main__":
    main()
