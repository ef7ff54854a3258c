"""
The fault matrix (``matrix.py``) run against real gateways: every runnable cell, compared with
what the contract says.

All cells run at once, each as one real request over loopback to a gateway whose flags the cell
names (gateways are shared between cells with the same flags and upstream), then each cell is
its own test: the result in the words of ``docs/reliability.md``, the details of §7 (error
shape, ``type``, ``Retry-After``, ``x-should-retry``), the stream's conformance, and the log
line. With ``FAULT_MATRIX_RESULTS`` set, the results are written there for
``generate_reliability.py``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from server.app import create_app
from server.settings import Settings
from server.simulator.app import create_simulator_app
from tests.e2e.conftest import (
    CLIENT_TIMEOUT,
    SIM_KEY,
    LogCapture,
    Simulator,
    chat_body,
    new_request_id,
    openai_error,
    settled_records,
    wait_log_line,
)
from tests.support.servers import ServerThread
from tests.support.sse_check import StreamViolation, check_stream

from .generate_reliability import DOCUMENT, RESULTS_ENV, expected_results, render
from .matrix import (
    CELLS,
    CLIENTS,
    COMMITS,
    FAULTS,
    PHASES,
    Cell,
    Clean,
    Failed,
    NotApplicable,
    Placement,
    Result,
    expected_result,
)
from .upstreams import HangUp, Reject, ScriptedUpstream, Silent, Step, StreamWhateverAsked

RUNNABLE = [cell for cell in CELLS if cell.runnable]
LATE_SECONDS = 0.6  # the 0.1 s tick commits first
#: Before the D4 rejection: after the tick, well within the 1 s answer timeout of its call.
LATE_REJECTION_SECONDS = 0.4
SCRIPTS: dict[str, tuple[Step, ...]] = {
    "hang_up": (HangUp(),),
    "hang_up_late": (HangUp(LATE_SECONDS),),
    "reject_then_refuse": (Reject(),),
    "reject_late_then_refuse": (Reject(LATE_REJECTION_SECONDS),),
    "reject_then_silent": (Reject(), Silent()),
    "reject_late_then_silent": (Reject(LATE_REJECTION_SECONDS), Silent()),
}
SSE_TYPE = "text/event-stream; charset=utf-8"
#: Simulator behaviours that never end their answer by themselves: the gateway must close them.
NEVER_ENDING = ("stall=", "delay=3000")


@attrs.frozen
class Observation:
    """What one cell's request got, and its log line."""

    status: int
    headers: dict[str, str]
    body: bytes
    log: dict[str, Any]


def observed_result(observation: Observation) -> Result:
    """The cell's result in the words of :class:`Result`, read from what the client got."""
    content_type = observation.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        try:
            report = check_stream(observation.body)
        except (StreamViolation, ValueError) as exc:
            saw = f"{observation.status}, a broken stream ({exc})"
        else:
            if report.error is not None:
                saw = f"{observation.status}, error event {report.error.get('code')}"
            else:
                saw = f"{observation.status}, [DONE]"
    else:
        try:
            code = json.loads(observation.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "(no error code)"
        saw = f"HTTP {observation.status} {code}"
    log = observation.log
    trace = tuple(entry["event"] for entry in log.get("trace", []))
    return Result(saw, str(log.get("outcome")), log.get("error"), trace)


# --- running the matrix ---------------------------------------------------------------------


class MatrixUpstreams:
    """The upstreams and gateways of one matrix run; gateways shared by identical settings."""

    def __init__(self, simulator_url: str) -> None:
        self._simulator_url = simulator_url
        self._stream_whatever = ServerThread(
            StreamWhateverAsked(create_simulator_app(SIM_KEY)), graceful_timeout=0.5
        )
        self._closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        self._gateways: dict[tuple[str, tuple[tuple[str, object], ...]], ServerThread] = {}
        self._scripted: list[ScriptedUpstream] = []

    def start(self) -> None:
        self._stream_whatever.start()

    def _upstream_url(self, placement: Placement) -> str:
        match placement.upstream:
            case "simulator":
                return self._simulator_url
            case "stream_whatever_asked":
                return self._stream_whatever.url
            case "closed_port":
                return f"http://127.0.0.1:{self._closed.getsockname()[1]}"
            case "scripted":
                assert placement.script is not None
                scripted = ScriptedUpstream(SCRIPTS[placement.script]).start()
                self._scripted.append(scripted)
                return scripted.url
        raise AssertionError(placement.upstream)

    def gateway_for(self, placement: Placement) -> ServerThread:
        url = self._upstream_url(placement)
        key = (url, placement.flags)
        if key not in self._gateways:
            given: dict[str, Any] = {
                "upstream_url": url,
                "upstream_key": SIM_KEY,
                "detection_cache_ttl": 0,
                "heartbeat_interval": 10.0,
            }
            given.update(dict(placement.flags))
            settings = Settings.resolve(given, env={}, file=None)
            self._gateways[key] = ServerThread(create_app(settings), graceful_timeout=0.5).start()
        return self._gateways[key]

    def stop(self) -> None:
        for scripted in self._scripted:
            scripted.stop()
        for gateway in self._gateways.values():
            gateway.stop()
        self._stream_whatever.stop()
        self._closed.close()


def _run_cell(cell: Cell, gateway: ServerThread, log_capture: LogCapture) -> Observation:
    assert cell.placement is not None
    rid = new_request_id(cell.id[:60])
    body = chat_body(cell.placement.model, stream=cell.client == "stream_client")
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post("/v1/chat/completions", json=body, headers={"X-Request-ID": rid})
    return Observation(
        status=response.status_code,
        headers={name.lower(): value for name, value in response.headers.items()},
        body=response.content,
        log=wait_log_line(log_capture, rid),
    )


@attrs.frozen
class MatrixRun:
    """Every runnable cell's observation (or why it has none), and the simulator's records."""

    observations: dict[str, Observation]
    failures: dict[str, str]
    records: list[dict[str, Any]]


@pytest.fixture(name="matrix", scope="module")
def _matrix(simulator: ServerThread, log_capture: LogCapture) -> Iterator[MatrixRun]:
    sim = Simulator(simulator.url)
    sim.clear()
    upstreams = MatrixUpstreams(simulator.url)
    upstreams.start()
    try:
        gateways = {}
        for cell in RUNNABLE:
            assert cell.placement is not None
            gateways[cell.id] = upstreams.gateway_for(cell.placement)
        observations: dict[str, Observation] = {}
        failures: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=len(RUNNABLE)) as pool:
            futures = {
                cell.id: pool.submit(_run_cell, cell, gateways[cell.id], log_capture)
                for cell in RUNNABLE
            }
            for cell_id, future in futures.items():
                try:
                    observations[cell_id] = future.result()
                except Exception as exc:  # reported by the cell's own test
                    failures[cell_id] = repr(exc)
        run = MatrixRun(observations, failures, settled_records(sim))
        _write_results(observations)
        yield run
    finally:
        upstreams.stop()


def _write_results(observations: dict[str, Observation]) -> None:
    target = os.environ.get(RESULTS_ENV)
    if not target:
        return
    results = {cid: observed_result(obs).as_json() for cid, obs in observations.items()}
    Path(target).write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")


# --- the cells ------------------------------------------------------------------------------


def _check_failed_before_commit(expect: Failed, observation: Observation) -> None:
    row = expect.row
    assert observation.headers["content-type"].startswith("application/json")
    error = openai_error(json.loads(observation.body))
    assert (error["type"], error["code"]) == (row.type, row.code)
    assert observation.headers.get("retry-after") == expect.retry_after
    should_retry = observation.headers.get("x-should-retry")
    assert should_retry == ("false" if row.should_retry_false else None)
    assert (observation.log["status"], observation.log["committed"]) == (row.status, False)


def _check_failed_after_commit(expect: Failed, observation: Observation) -> None:
    assert observation.headers["content-type"] == SSE_TYPE
    report = check_stream(observation.body)
    assert report.error is not None and report.done is False
    assert set(report.error) == {"message", "type", "param", "code"}
    assert report.error["type"] == expect.row.type
    assert b"[DONE]" not in observation.body
    assert (observation.log["status"], observation.log["committed"]) == (200, True)


def _check_clean(observation: Observation) -> None:
    assert observation.headers["content-type"] == SSE_TYPE
    report = check_stream(observation.body)
    assert report.done is True and report.error is None
    assert report.finish_reason == "stop"
    assert (observation.log["status"], observation.log["error_code"]) == (200, None)


@pytest.mark.parametrize("cell", RUNNABLE, ids=lambda cell: cell.id)
def test_fault_matrix_cell_matches_the_contract(matrix: MatrixRun, cell: Cell) -> None:
    assert cell.id in matrix.observations, matrix.failures.get(cell.id)
    observation = matrix.observations[cell.id]

    assert observed_result(observation) == expected_result(cell)
    expect = cell.expect
    if isinstance(expect, Failed):
        assert observation.log["error_code"] == expect.row.code
        if cell.commit == "before_commit":
            assert observation.status == expect.row.status
            _check_failed_before_commit(expect, observation)
        else:
            assert observation.status == 200
            _check_failed_after_commit(expect, observation)
    else:
        assert isinstance(expect, Clean)
        _check_clean(observation)
    calls = 2 if "stream_rejected" in expect.trace else 1  # D4 repeats the call once
    assert observation.log["upstream_calls"] == calls
    assert observation.log["trace"][-1]["target"] == (
        "done" if isinstance(expect, Clean) else "errored"
    )


def test_fault_matrix_upstream_calls_that_never_end_are_closed_by_the_gateway(
    matrix: MatrixRun,
) -> None:
    never_ending = [
        r
        for r in matrix.records
        if r["path"] == "/v2/chat/completions" and any(k in r["model"] for k in NEVER_ENDING)
    ]
    assert never_ending, "the matrix has stalled and silent upstream calls"
    assert [r["model"] for r in never_ending if not r["closed_early"]] == []


# --- the matrix itself ----------------------------------------------------------------------


def test_fault_matrix_has_one_cell_per_combination() -> None:
    seen = [(c.fault, c.phase, c.commit, c.client) for c in CELLS]
    every = [(f, p, m, c) for f in FAULTS for p in PHASES for m in COMMITS for c in CLIENTS]
    assert sorted(seen) == sorted(every)


def test_fault_matrix_cells_either_run_or_say_why_not() -> None:
    for cell in CELLS:
        if isinstance(cell.expect, NotApplicable):
            assert cell.placement is None and len(cell.expect.reason) > 20, cell.id
        else:
            assert cell.placement is not None, cell.id
    assert len(RUNNABLE) >= 70


def test_fault_matrix_every_fault_occurs_in_some_phase() -> None:
    assert {cell.fault for cell in RUNNABLE} == set(FAULTS)


def test_fault_matrix_reliability_document_is_in_sync() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(expected_results()), (
        "docs/reliability.md is stale: run python -m tests.faults.generate_reliability"
    )
