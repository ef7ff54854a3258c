"""
The benchmark, seconds long, so that it cannot rot: real processes on loopback, tiny sizes.

The fake upstream, a gateway and the floor run as subprocesses, as in ``make bench``. No
assertion is about time: these tests check that requests go through each scenario, that the
load generator's validation accepts what is right and refuses what is wrong, and that the
result and its summary have the shape ``docs/performance.md`` is built from.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bench import procs, report
from bench.engine_micro import run_engine_micro
from bench.fake_upstream import parse_model, stream_text, whole_text
from bench.loadgen import Expect, RequestSpec, chat_body, get_json, run_batch, run_sequential
from bench.run import _floor, _gateway
from bench.scenarios import OPENAI_PATH, Bench, Scale

SCALE = Scale.smoke()


class Upstream:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_upstream", "--port", "0"],
            cwd=procs.ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline().split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(autouse=True, scope="module")
def _no_pinning() -> Iterator[None]:
    procs.PINNING = False
    yield
    procs.PINNING = True


@pytest.fixture(name="upstream", scope="module")
def _upstream() -> Iterator[Upstream]:
    upstream = Upstream()
    try:
        yield upstream
    finally:
        upstream.stop()


def _started(target: procs.Target) -> Iterator[procs.Target]:
    target.log_path = None
    assert target.start(timeout=30), target.failure
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture(name="gateway", scope="module")
def _gateway_target(upstream: Upstream) -> Iterator[procs.Target]:
    yield from _started(_gateway("gateway", upstream.url))


@pytest.fixture(name="fallback_gateway", scope="module")
def _fallback_gateway(upstream: Upstream) -> Iterator[procs.Target]:
    hb = f"--heartbeat-interval={SCALE.heartbeat:g}"
    yield from _started(_gateway("gateway_fallback", upstream.url, hb, kind="straico"))


@pytest.fixture(name="floor", scope="module")
def _floor_target(upstream: Upstream) -> Iterator[procs.Target]:
    yield from _started(_floor(upstream.url))


def _bench(upstream: Upstream, *targets: procs.Target) -> Bench:
    def own() -> set[int]:
        pids = {upstream.proc.pid}
        for target in targets:
            pids.update(target.pids())
        return pids

    return Bench(upstream.port, SCALE, own)


def _direct(upstream: Upstream) -> procs.Target:
    return procs.Target("direct", [], upstream.port)


def test_fake_upstream_parse_model_reads_every_key() -> None:
    spec = parse_model("stream:chunks=7:words=3:delay=20:gap=1.5:id=x-1")
    assert (spec.kind, spec.chunks, spec.answer_words, spec.delay_ms, spec.gap_ms, spec.tag) == (
        "stream",
        7,
        3,
        20.0,
        1.5,
        "x-1",
    )


def test_loadgen_stream_through_gateway_is_valid(gateway: procs.Target) -> None:
    spec = RequestSpec(
        OPENAI_PATH,
        chat_body("stream:chunks=10", stream=True, include_usage=True),
        Expect("".join(stream_text(10)), stream=True, chunks=10),
    )
    results = asyncio.run(run_sequential(gateway.port, spec, count=3, warmup=1))
    assert [(r.ok, r.error, r.chunks) for r in results] == [(True, None, 10)] * 3


def test_loadgen_missing_chunk_is_invalid(gateway: procs.Target) -> None:
    spec = RequestSpec(
        OPENAI_PATH,
        chat_body("stream:chunks=10", stream=True),
        Expect("".join(stream_text(11)), stream=True, chunks=11),
    )
    [result] = asyncio.run(run_sequential(gateway.port, spec, count=1, warmup=0))
    assert (result.ok, result.error) == (False, "10 content chunks, expected 11")


def test_loadgen_wrong_text_is_invalid(upstream: Upstream) -> None:
    spec = RequestSpec(
        OPENAI_PATH, chat_body("json:words=5", stream=False), Expect(whole_text(4), stream=False)
    )
    [result] = asyncio.run(run_sequential(upstream.port, spec, count=1, warmup=0))
    assert (result.ok, result.error) == (False, "content differs")


def test_loadgen_rejection_is_invalid_and_counted(upstream: Upstream) -> None:
    model = "reject:m=smoke-counted"
    spec = RequestSpec(OPENAI_PATH, chat_body(model, stream=True), Expect("", stream=True))

    async def go() -> tuple[Any, Any]:
        results = await run_batch(upstream.port, [spec, spec], concurrency=2)
        return results, await get_json(upstream.port, "/_stats")

    results, stats = asyncio.run(go())
    assert [(r.ok, r.error) for r in results] == [(False, "status 400")] * 2
    assert stats["by_model"][model] == [2, 0]


def test_bench_scenarios_produce_the_result_shape(
    upstream: Upstream,
    gateway: procs.Target,
    fallback_gateway: procs.Target,
    floor: procs.Target,
) -> None:
    """One round of every scenario at smoke size, then the summary of it."""
    bench = _bench(upstream, gateway, fallback_gateway, floor)
    direct = _direct(upstream)

    async def one_round() -> dict[str, Any]:
        targets = {"direct": direct, "gateway": gateway, "floor": floor}
        rnd: dict[str, Any] = {"round": 1, "sequential": {}, "concurrent": {}}
        for name, target in targets.items():
            rnd["sequential"][name] = await bench.sequential(target)
            rnd["concurrent"][name] = await bench.concurrent(target)
        rnd["fallback"] = {
            "gateway_fallback": await bench.fallback(fallback_gateway, tag="smoke-fb")
        }
        rnd["detection"] = {"gateway": await bench.detection(gateway, tag="smoke")}
        rnd["memory"] = {
            "gateway": await bench.memory(gateway, tag="smoke-gw"),
            "floor": await bench.memory(floor, tag="smoke-fl"),
        }
        return rnd

    rnd = asyncio.run(one_round())
    rnd["engine"] = run_engine_micro(iterations=5, repeats=1)

    for name in ("direct", "gateway", "floor"):
        for body in ("stream", "json"):
            seq = rnd["sequential"][name][body]
            assert (seq["requests"], seq["ok"], seq["errors"]) == (
                SCALE.seq_count,
                SCALE.seq_count,
                {},
            )
            assert rnd["concurrent"][name][body]["errors"] == {}
    fallback = rnd["fallback"]["gateway_fallback"]
    assert (fallback["ok"], fallback["answer_to_first_delta_ms"]["n"]) == (2, 2)
    assert fallback["heartbeat_spacing_ms"] is not None
    detection = rnd["detection"]["gateway"]
    calls = {case: detection[case]["extra_calls"] for case in detection}
    assert calls["json_sequential"] == calls["json_concurrent"] == 0
    assert calls["reject_sequential"] == SCALE.detection_models
    assert {case: detection[case]["ok"] for case in detection} == dict.fromkeys(
        detection, SCALE.detection_requests
    )
    for name in ("gateway", "floor"):
        memory = rnd["memory"][name]
        assert (memory["ok"], memory["waiting_reached"]) == (SCALE.memory_streams,) * 2
        assert memory["idle"]["rss_kib"] > 0 and memory["idle"]["pss_kib"] > 0

    summary = report.summarize({"meta": {"scale": {"heartbeat": SCALE.heartbeat}}, "rounds": [rnd]})
    by_name = {t["target"]: t for t in summary["targets"]}
    litellm = [name for name in by_name if "LiteLLM" in name]
    # Ratios may lack a divisor at smoke size (a floor relaying 10 chunks in no time).
    figures = [name for name, t in by_name.items() if t["unit"] != "x" and name not in litellm]
    assert [name for name in figures if by_name[name]["measured"] is None] == []
    assert [by_name[name]["measured"] for name in litellm] == [None, None]
    assert "| target | measured |" in report.markdown({"summary": summary})
