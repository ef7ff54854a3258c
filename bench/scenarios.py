"""
The fixed scenarios of issue 11, one coroutine each, returning plain JSON-able dicts.

Every measurement is wrapped by :func:`measured`: it waits for a quiet machine first and
records the CPU the target used and the CPU every other process used meanwhile. Figures are
raw here (per target); :mod:`bench.report` derives the ratios, always against the direct run
of the same round.

The sizes live in :class:`Scale`: ``Scale()`` is the full benchmark, ``Scale.smoke()`` the
seconds-long version that ``make test`` runs.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from . import procs
from .fake_upstream import stream_text, whole_text
from .loadgen import (
    Expect,
    RequestSpec,
    Result,
    chat_body,
    get_json,
    run_batch,
    run_concurrent,
    run_sequential,
)
from .stats import percentiles

__all__ = ["Bench", "Scale"]

OPENAI_PATH = "/v1/chat/completions"
STRAICO_PATH = "/v2/chat/completions"
STREAM_CHUNKS = 100
#: Extra time the gateway may take to read a rejection before later requests must see it.
LEARN_SLACK = 0.005


@attrs.frozen
class Scale:
    seq_count: int = 300
    seq_warmup: int = 30
    chunks: int = STREAM_CHUNKS
    conc_connections: int = 50
    conc_duration: float = 10.0
    conc_warmup: float = 3.0
    fallback_requests: int = 10
    fallback_concurrency: int = 1
    fallback_delay_ms: int = 2000
    heartbeat: float = 0.5
    replay_words: int = 200
    memory_streams: int = 1000
    memory_wait_s: float = 30.0
    detection_requests: int = 1000
    detection_models: int = 10
    detection_concurrency: int = 50
    engine_iterations: int = 5000
    quiet_max_wait: float = 10.0
    quiet_window: float = 0.5
    idle_settle_s: float = 1.0

    @classmethod
    def smoke(cls) -> Scale:
        return cls(
            seq_count=5,
            seq_warmup=2,
            chunks=10,
            conc_connections=3,
            conc_duration=0.3,
            conc_warmup=0.1,
            fallback_requests=2,
            fallback_concurrency=1,
            fallback_delay_ms=300,
            heartbeat=0.1,
            replay_words=30,
            memory_streams=5,
            memory_wait_s=1.0,
            detection_requests=12,
            detection_models=2,
            detection_concurrency=4,
            engine_iterations=20,
            quiet_max_wait=0.0,
            quiet_window=0.05,
            idle_settle_s=0.05,
        )


def _summary(results: list[Result]) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    errors = collections.Counter(r.error for r in results if not r.ok)
    return {
        "requests": len(results),
        "ok": len(ok),
        "errors": dict(errors),
        "ttfb_ms": percentiles([r.first_byte for r in ok if r.first_byte is not None]),
        "ttfc_ms": percentiles([r.first_content for r in ok if r.first_content is not None]),
        "total_ms": percentiles([r.total for r in ok if r.total is not None]),
    }


@attrs.define
class Bench:
    """What the scenarios share: the upstream's port, the targets, the scale."""

    upstream_port: int
    scale: Scale
    own_pids: Callable[[], set[int]]

    async def measured(
        self, target: procs.Target, run: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Run *run* on a quiet machine; add the CPU of the target and of everyone else."""
        quiet = self.wait_quiet()
        pids = target.pids()
        ours = self.own_pids()
        other_before = procs.cpu_snapshot(ours)
        cpu_before = procs.cpu_seconds(pids)
        started = time.perf_counter()
        out = await run()
        elapsed = time.perf_counter() - started
        cpu = procs.cpu_seconds(pids) - cpu_before
        other_after = procs.cpu_snapshot(ours)
        out["elapsed_s"] = round(elapsed, 3)
        out["target_cpu_s"] = round(cpu, 6)
        out["other_cpu_load"] = procs.other_load(other_before, other_after, elapsed)
        out["quiet"] = quiet
        return out

    def wait_quiet(self) -> dict[str, float]:
        scale = self.scale
        return procs.wait_quiet(
            self.own_pids(), window=scale.quiet_window, max_wait=scale.quiet_max_wait
        )

    def port(self, target: procs.Target) -> int:
        return self.upstream_port if target.external else target.port

    # --- sequential and concurrent pass-through ----------------------------------------

    def _bodies(self) -> list[tuple[str, RequestSpec]]:
        chunks = self.scale.chunks
        model = f"stream:chunks={chunks}"
        stream = RequestSpec(
            OPENAI_PATH,
            chat_body(model, stream=True),
            Expect("".join(stream_text(chunks)), stream=True, chunks=chunks),
        )
        whole = RequestSpec(
            OPENAI_PATH, chat_body(model, stream=False), Expect(whole_text(chunks), stream=False)
        )
        return [("stream", stream), ("json", whole)]

    async def sequential(self, target: procs.Target) -> dict[str, Any]:
        scale = self.scale
        port = self.port(target)
        out: dict[str, Any] = {}
        for name, spec in self._bodies():
            await run_sequential(port, spec, count=0, warmup=scale.seq_warmup)

            async def run(spec: RequestSpec = spec) -> dict[str, Any]:
                results = await run_sequential(port, spec, count=scale.seq_count, warmup=0)
                summary = _summary(results)
                if spec.expect.stream:
                    summary["per_chunk_us"] = percentiles(
                        [
                            (r.last_content - r.first_content) / (scale.chunks - 1)
                            for r in results
                            if r.ok and r.last_content is not None and r.first_content is not None
                        ],
                        scale=1e6,
                    )
                return summary

            result = await self.measured(target, run)
            if result["requests"]:
                result["cpu_us_per_request"] = round(
                    result["target_cpu_s"] / result["requests"] * 1e6, 1
                )
            out[name] = result
        return out

    async def concurrent(self, target: procs.Target) -> dict[str, Any]:
        scale = self.scale
        port = self.port(target)
        out: dict[str, Any] = {}
        for name, spec in self._bodies():

            async def run(spec: RequestSpec = spec) -> dict[str, Any]:
                outcome = await run_concurrent(
                    port,
                    spec,
                    connections=scale.conc_connections,
                    duration=scale.conc_duration,
                    warmup=scale.conc_warmup,
                )
                summary = _summary(outcome.results)
                ok = [r for r in outcome.results if r.ok]
                summary["requests_per_s"] = round(len(ok) / outcome.window, 1)
                summary["chunks_per_s"] = round(sum(r.chunks for r in ok) / outcome.window, 1)
                return summary

            result = await self.measured(target, run)
            result["target_cpu_util"] = round(result["target_cpu_s"] / result["elapsed_s"], 3)
            out[name] = result
        return out

    # --- fallback: a slow whole answer, heartbeats, the replay ------------------------

    async def fallback(self, target: procs.Target, *, tag: str) -> dict[str, Any]:
        scale = self.scale
        words = scale.replay_words
        specs = [
            RequestSpec(
                STRAICO_PATH if target.external else OPENAI_PATH,
                chat_body(
                    f"json:delay={scale.fallback_delay_ms}:words={words}:id={tag}-{i}",
                    stream=True,
                ),
                Expect(whole_text(words), stream=None),
            )
            for i in range(scale.fallback_requests)
        ]

        # Warm-up: a fresh process pays for its first requests (imports, first connection).
        warm_delay = int(scale.heartbeat * 1200)
        warm = [
            attrs.evolve(
                spec, body=chat_body(f"json:delay={warm_delay}:words={words}", stream=True)
            )
            for spec in specs[:3]
        ]
        await run_batch(self.port(target), warm, concurrency=1)

        async def run() -> dict[str, Any]:
            results = await run_batch(
                self.port(target), specs, concurrency=scale.fallback_concurrency
            )
            answered = (await get_json(self.upstream_port, "/_stats"))["answered_at"]
            summary = _summary(results)
            spacing: list[float] = []
            after_answer: list[float] = []
            for i, result in enumerate(results):
                if not result.ok:
                    continue
                if result.first_byte is not None and result.heartbeats:
                    marks = [result.first_byte, *result.heartbeats]
                    spacing.extend(b - a for a, b in itertools.pairwise(marks))
                answer_at = answered.get(f"{tag}-{i}")
                first = result.first_content_abs
                if answer_at is not None and first is not None:
                    after_answer.append(first - answer_at)
            summary["heartbeat_spacing_ms"] = percentiles(spacing)
            summary["heartbeat_worst_deviation"] = (
                round(max(abs(s - scale.heartbeat) for s in spacing) / scale.heartbeat, 4)
                if spacing
                else None
            )
            summary["answer_to_first_delta_ms"] = percentiles(after_answer)
            return summary

        return await self.measured(target, run)

    # --- memory: idle, then many streams waiting in fallback --------------------------

    async def memory(self, target: procs.Target, *, tag: str) -> dict[str, Any]:
        scale = self.scale
        port = target.port
        for _name, spec in self._bodies():
            await run_sequential(port, spec, count=0, warmup=10)
        await asyncio.sleep(scale.idle_settle_s)
        pids = target.pids()
        samples = []
        for _ in range(3):
            samples.append(procs.memory_kib(pids))
            await asyncio.sleep(scale.idle_settle_s / 3)
        idle = {key: sorted(sample[key] for sample in samples)[1] for key in ("rss_kib", "pss_kib")}
        wait_ms = int(scale.memory_wait_s * 1000)
        words = 20
        specs = [
            RequestSpec(
                OPENAI_PATH,
                chat_body(f"json:delay={wait_ms}:words={words}:m={tag}", stream=True),
                Expect(whole_text(words), stream=None),
            )
            for _ in range(scale.memory_streams)
        ]
        quiet = self.wait_quiet()
        started = time.perf_counter()
        batch = asyncio.ensure_future(
            run_batch(port, specs, concurrency=scale.memory_streams, timeout=wait_ms / 1000 + 60)
        )
        waiting = 0
        give_up = started + scale.memory_wait_s * 0.5
        while time.perf_counter() < give_up:
            waiting = (await get_json(self.upstream_port, "/_stats"))["inflight"]
            if waiting >= scale.memory_streams:
                break
            await asyncio.sleep(0.1)
        all_waiting_s = time.perf_counter() - started
        loaded: dict[str, int] = {"rss_kib": 0, "pss_kib": 0}
        stop_sampling = started + scale.memory_wait_s - 1.0
        while True:  # at least one sample, then every 0.5 s until just before the answers
            sample = procs.memory_kib(target.pids())
            loaded = {key: max(loaded[key], sample[key]) for key in loaded}
            if time.perf_counter() >= stop_sampling:
                break
            await asyncio.sleep(0.5)
        results = await batch
        summary = _summary(results)
        n = scale.memory_streams
        summary.update(
            {
                "streams": n,
                "waiting_reached": waiting,
                "all_waiting_after_s": round(all_waiting_s, 2),
                "idle": idle,
                "loaded": loaded,
                "rss_per_stream_kib": round((loaded["rss_kib"] - idle["rss_kib"]) / n, 2),
                "pss_per_stream_kib": round((loaded["pss_kib"] - idle["pss_kib"]) / n, 2),
                "processes": len(target.pids()),
                "quiet": quiet,
            }
        )
        return summary

    # --- detection: upstream calls per request ----------------------------------------

    async def detection(self, target: procs.Target, *, tag: str) -> dict[str, Any]:
        scale = self.scale
        out: dict[str, Any] = {}
        for kind in ("json", "stream", "reject"):
            for mode, concurrency in (
                ("sequential", 1),
                ("concurrent", scale.detection_concurrency),
            ):
                models = [
                    f"{kind}:chunks=20:words=20:m={tag}{mode[0]}{i}"
                    for i in range(scale.detection_models)
                ]
                expect = (
                    Expect("".join(stream_text(20)), stream=True, chunks=20)
                    if kind == "stream"
                    else Expect(whole_text(20), stream=True)
                )
                specs = [
                    RequestSpec(
                        OPENAI_PATH, chat_body(models[i % len(models)], stream=True), expect
                    )
                    for i in range(scale.detection_requests)
                ]

                async def run(
                    specs: list[RequestSpec] = specs,
                    models: list[str] = models,
                    concurrency: int = concurrency,
                ) -> dict[str, Any]:
                    results = await run_batch(target.port, specs, concurrency=concurrency)
                    stats = await get_json(self.upstream_port, "/_stats")
                    summary = _summary(results)
                    summary.pop("ttfb_ms")
                    by_model = {m: stats["by_model"].get(m, [0, 0]) for m in models}
                    calls = sum(sum(pair) for pair in by_model.values())
                    # D8: requests that started before the model's first rejection was sent
                    # (plus a few ms for the gateway to read it) may each make one extra call.
                    started_before = 0
                    for i, result in enumerate(results):
                        rejected = stats["rejected_at"].get(models[i % len(models)])
                        if rejected is not None and result.started < rejected + LEARN_SLACK:
                            started_before += 1
                    summary.update(
                        {
                            "models": len(models),
                            "upstream_calls": calls,
                            "calls_per_request": round(calls / len(specs), 4),
                            "extra_calls": calls - len(specs),
                            "stream_true_calls": sum(p[0] for p in by_model.values()),
                            "stream_false_calls": sum(p[1] for p in by_model.values()),
                            "max_extra_per_model": max(
                                (sum(p) - len(specs) // len(models) for p in by_model.values()),
                                default=0,
                            ),
                            "started_before_rejection_learned": started_before,
                        }
                    )
                    return summary

                out[f"{kind}_{mode}"] = await self.measured(target, run)
        return out


def engine_micro(iterations: int) -> dict[str, Any]:
    """The engine microbenchmark in its own process, pinned to the target core."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "bench.engine_micro", "--iterations", str(iterations)]
    completed = subprocess.run(
        procs.pinned(argv, procs.TARGET_CORE),
        cwd=procs.ROOT,
        capture_output=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result
