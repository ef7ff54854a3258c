"""
Reading the audit trail (``server.audit``) over a log written by a real gateway process.

``record_gateway_run`` starts ``straico-gateway serve --simulate --log-format json`` as a
subprocess with its stderr going to a file, sends the requests of ``SENT`` (every kind of
path: pass-through, fallback, rejected flag, error statuses, a client that leaves, bad
requests), stops it with SIGTERM and returns the file. The expectations come from ``SENT`` and
from the file's JSON read independently here, never from the code under test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from engine.trace import TRANSITIONS
from server.audit import (
    AuditLog,
    GraphvizError,
    RequestRecord,
    Selection,
    Transition,
    dot_diagram,
    format_summary,
    format_timeline,
    mermaid_diagram,
    nearest_rank,
    read_log,
    render_image,
    state_times,
    states_visited,
    summarise,
    trace_inconsistency,
    transition_counts,
)

GATEWAY_COMMAND = Path(sys.executable).with_name("straico-gateway")
#: A gateway that never starts, or never stops, is killed after this long.
PROCESS_TIMEOUT = 60.0
WAIT_SECONDS = 15.0
POLL_SECONDS = 0.02
CLIENT_TIMEOUT = 10.0
CHAT_PATH = "/v1/chat/completions"


@attrs.frozen
class Sent:
    """One request sent to the gateway, and the log line it must leave."""

    request_id: str
    model: str | None
    stream: bool
    status: int
    outcome: str
    error: str | None
    path: tuple[str, ...]  # the states visited, empty when no machine ran
    events: tuple[str, ...]
    how: str = "chat"  # chat | leave (disconnect after the first bytes) | bad_json | unknown_path

    @property
    def edges(self) -> list[tuple[str, str, str]]:
        return list(zip(self.path, self.events, self.path[1:], strict=False))


FALLBACK_DONE = ("detecting", "falling_back", "draining", "done")
STREAM_DONE = ("detecting", "streaming", "draining", "done")
WHOLE = ("answer_received", "drained")

#: In the order sent; the second sim/reject call is declined because the first taught the cache.
SENT = (
    Sent("audit-stream-1", "sim/stream", True, 200, "done", None, STREAM_DONE,
         ("upstream_streamed", "upstream_finished", "drained")),
    Sent("audit-stream-2", "sim/stream", True, 200, "done", None, STREAM_DONE,
         ("upstream_streamed", "upstream_finished", "drained")),
    Sent("audit-json", "sim/json", False, 200, "done", None, FALLBACK_DONE,
         ("stream_declined", *WHOLE)),
    Sent("audit-json-stream", "sim/json", True, 200, "done", None, FALLBACK_DONE,
         ("upstream_answered_whole", *WHOLE)),
    Sent("audit-reject-1", "sim/reject", True, 200, "done", None, FALLBACK_DONE,
         ("stream_rejected", *WHOLE)),
    Sent("audit-reject-2", "sim/reject", True, 200, "done", None, FALLBACK_DONE,
         ("stream_declined", *WHOLE)),
    Sent("audit-unavailable", "sim/json:status=503", False, 503, "errored",
         "upstream_unavailable", ("detecting", "falling_back", "errored"),
         ("stream_declined", "upstream_failed")),
    Sent("audit-rate-limited", "sim/stream:status=429", True, 429, "errored",
         "upstream_rate_limited", ("detecting", "errored"), ("upstream_failed",)),
    Sent("audit-gone", "sim/stream:stall=1", True, 200, "cancelled", "client_disconnected",
         ("detecting", "streaming", "errored"), ("upstream_streamed", "client_gone"),
         how="leave"),
    Sent("audit-bad-json", None, False, 400, "rejected", "invalid_request", (), (),
         how="bad_json"),
    Sent("audit-unknown-path", None, False, 404, "rejected", "not_found", (), (),
         how="unknown_path"),
)  # fmt: skip
SENT_BY_ID = {sent.request_id: sent for sent in SENT}


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"gave up waiting for {what}")


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def _logged_request_ids(path: Path) -> set[str]:
    return {line["request_id"] for line in _json_lines(path) if line.get("event") == "request"}


def _listening_url(path: Path) -> str | None:
    for line in _json_lines(path):
        if line.get("event") == "gateway_listening":
            url: str = line["url"]
            return url
    return None


def _send(client: httpx.Client, sent: Sent) -> None:
    headers = {"X-Request-ID": sent.request_id}
    body: dict[str, Any] = {
        "model": sent.model,
        "messages": [{"role": "user", "content": "tell me"}],
    }
    if sent.stream:
        body["stream"] = True
    if sent.how == "bad_json":
        response = client.post(
            CHAT_PATH, content=b"{not json", headers={**headers, "Content-Type": "application/json"}
        )
    elif sent.how == "unknown_path":
        response = client.post("/v1/nothing", json=body, headers=headers)
    elif sent.how == "leave":
        with client.stream("POST", CHAT_PATH, json=body, headers=headers) as streamed:
            first = next(streamed.iter_bytes())  # something was relayed: the stream is on
            assert first.startswith(b"data: "), first
            response = streamed
        # leaving the block closes the connection mid-stream: the client is gone
    else:
        response = client.post(CHAT_PATH, json=body, headers=headers)
        response.read()
    assert response.status_code == sent.status, (sent.request_id, response.status_code)


def record_gateway_run(directory: Path) -> Path:
    """Run a real gateway, send ``SENT`` to it, stop it; return its log file."""
    log_path = directory / "gateway.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STRAICO_")}
    command = [
        str(GATEWAY_COMMAND),
        "serve",
        "--simulate",
        "--port=0",
        "--log-format=json",
        "--heartbeat-interval=0",
        "--shutdown-grace=1",
    ]
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=directory,
        )
    watchdog = threading.Timer(PROCESS_TIMEOUT, process.kill)  # a hung gateway fails, not hangs
    watchdog.start()
    try:
        _wait_for(lambda: _listening_url(log_path) is not None, "the gateway to listen")
        url = _listening_url(log_path)
        assert url is not None
        with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client:
            for sent in SENT:
                _send(client, sent)
        expected_ids = set(SENT_BY_ID)
        _wait_for(lambda: expected_ids <= _logged_request_ids(log_path), "every request line")
        process.send_signal(signal.SIGTERM)
        assert process.wait(PROCESS_TIMEOUT) == 0
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
    return log_path


@pytest.fixture(name="log_path", scope="module")
def _log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_gateway_run(tmp_path_factory.mktemp("audit"))


@pytest.fixture(name="audit_log", scope="module")
def _audit_log(log_path: Path) -> AuditLog:
    with log_path.open(encoding="utf-8") as lines:
        return read_log(lines, source=str(log_path))


def _records_by_id(audit_log: AuditLog) -> dict[str, RequestRecord]:
    return {record.request_id: record for record in audit_log.records}


def _raw_traces(log_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Each request's trace as the file holds it, read without server.audit."""
    return {
        line["request_id"]: line["trace"]
        for line in _json_lines(log_path)
        if line.get("event") == "request"
    }


# --- reading a real log ---------------------------------------------------------------------


def test_read_log_real_run_finds_every_request_and_no_problem(
    audit_log: AuditLog, log_path: Path
) -> None:
    line_count = len(log_path.read_text(encoding="utf-8").splitlines())
    found = [record.request_id for record in audit_log.records]
    assert sorted(found) == sorted(SENT_BY_ID)
    assert audit_log.problems == ()
    assert (audit_log.lines_read, audit_log.other_lines) == (line_count, line_count - len(SENT))


def test_read_log_real_run_records_match_what_was_sent(audit_log: AuditLog) -> None:
    records = _records_by_id(audit_log)
    actual = {
        rid: (
            r.model,
            r.status,
            r.outcome,
            r.error,
            states_visited(r),
            tuple(s.event for s in r.trace),
        )
        for rid, r in records.items()
    }
    expected = {
        s.request_id: (s.model, s.status, s.outcome, s.error, s.path, s.events) for s in SENT
    }
    assert actual == expected


def test_read_log_real_run_keeps_each_line_as_logged(audit_log: AuditLog, log_path: Path) -> None:
    lines = log_path.read_text(encoding="utf-8").splitlines()
    for record in audit_log.records:
        assert record.text == lines[record.line_number - 1]
        assert json.loads(record.text)["request_id"] == record.request_id


def test_state_times_real_run_are_differences_of_consecutive_at_ms(
    audit_log: AuditLog, log_path: Path
) -> None:
    raw = _raw_traces(log_path)
    for record in audit_log.records:
        at = [0, *(entry["at_ms"] for entry in raw[record.request_id])]
        expected = tuple(
            (entry["source"], at[i + 1] - at[i]) for i, entry in enumerate(raw[record.request_id])
        )
        assert state_times(record) == expected


# --- filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "expected_ids"),
    [
        pytest.param(Selection(), set(SENT_BY_ID), id="everything"),
        pytest.param(
            Selection(outcomes=frozenset({"errored", "cancelled"})),
            {"audit-unavailable", "audit-rate-limited", "audit-gone"},
            id="outcomes",
        ),
        pytest.param(
            Selection(errors=frozenset({"not_found"})), {"audit-unknown-path"}, id="error"
        ),
        pytest.param(
            Selection(models=frozenset({"sim/reject", "sim/json"})),
            {"audit-json", "audit-json-stream", "audit-reject-1", "audit-reject-2"},
            id="models",
        ),
        pytest.param(
            Selection(request_ids=frozenset({"audit-gone", "audit-json"})),
            {"audit-gone", "audit-json"},
            id="request-ids",
        ),
        pytest.param(
            Selection(outcomes=frozenset({"done"}), models=frozenset({"sim/stream"})),
            {"audit-stream-1", "audit-stream-2"},
            id="all-filters-must-match",
        ),
        pytest.param(Selection(errors=frozenset({"stream_timeout"})), set(), id="nothing"),
    ],
)
def test_selection_real_run_keeps_matching_requests(
    audit_log: AuditLog, selection: Selection, expected_ids: set[str]
) -> None:
    assert {record.request_id for record in audit_log.select(selection)} == expected_ids


# --- timelines ------------------------------------------------------------------------------


def test_format_timeline_real_run_shows_each_transition_with_its_timing(
    audit_log: AuditLog, log_path: Path
) -> None:
    raw = _raw_traces(log_path)
    for record in audit_log.records:
        header, *steps = format_timeline(record).splitlines()
        sent = SENT_BY_ID[record.request_id]
        assert header.split("  ")[:4] == [
            sent.request_id,
            f"POST {CHAT_PATH if sent.how != 'unknown_path' else '/v1/nothing'}",
            sent.model or "-",
            f"{sent.status} {sent.outcome}" + (f" {sent.error}" if sent.error else ""),
        ]
        assert header.endswith(f"  {round(record.duration_ms or 0)} ms")
        previous_at = 0
        expected_steps = []
        for entry in raw[record.request_id]:
            expected_steps.append(
                [
                    f"+{entry['at_ms']} ms",
                    f"{entry['source']} --{entry['event']}--> {entry['target']}",
                    f"({entry['at_ms'] - previous_at} ms in {entry['source']})",
                ]
            )
            previous_at = entry["at_ms"]
        actual_steps = [
            [part.strip() for part in step.strip().split("  ") if part] for step in steps
        ]
        if sent.outcome == "rejected":
            expected_steps = [["no transitions: rejected before the machine started"]]
        assert actual_steps == expected_steps


def test_format_timeline_aligns_columns() -> None:
    record = RequestRecord(
        source="-",
        line_number=1,
        text="{}",
        request_id="req_1",
        outcome="done",
        trace=(
            Transition("detecting", "stream_declined", "falling_back", 0),
            Transition("falling_back", "answer_received", "draining", 17),
            Transition("draining", "drained", "done", 17),
        ),
        method="POST",
        path=CHAT_PATH,
        status=200,
        model="sim/json",
        duration_ms=17.6,
    )
    assert format_timeline(record) == (
        "req_1  POST /v1/chat/completions  sim/json  200 done  18 ms\n"
        "   +0 ms  detecting --stream_declined--> falling_back  (0 ms in detecting)\n"
        "  +17 ms  falling_back --answer_received--> draining   (17 ms in falling_back)\n"
        "  +17 ms  draining --drained--> done                   (0 ms in draining)"
    )


# --- summary --------------------------------------------------------------------------------


def _expected_percentile(values: list[int], percentile: int) -> int:
    return sorted(values)[math.ceil(percentile * len(values) / 100) - 1]


def test_summarise_real_run_counts_paths_outcomes_and_errors(audit_log: AuditLog) -> None:
    summary = summarise(audit_log)
    assert summary.requests == len(SENT)
    assert dict(summary.paths) == dict(Counter(sent.path for sent in SENT))
    assert dict(summary.outcomes) == {
        "done": 6,
        "cancelled": 1,
        "rejected": 2,
        "errored": 2,
    }
    assert dict(summary.errors) == dict(Counter(s.error for s in SENT if s.error is not None))
    assert [count for _, count in summary.paths] == sorted(
        (count for _, count in summary.paths), reverse=True
    )


def test_summarise_real_run_percentiles_of_time_in_state(
    audit_log: AuditLog, log_path: Path
) -> None:
    spent: dict[str, list[int]] = {}
    for trace in _raw_traces(log_path).values():
        previous_at = 0
        for entry in trace:
            spent.setdefault(entry["source"], []).append(entry["at_ms"] - previous_at)
            previous_at = entry["at_ms"]
    actual = {
        timing.state: (timing.count, timing.p50_ms, timing.p90_ms, timing.p99_ms, timing.max_ms)
        for timing in summarise(audit_log).time_in_state
    }
    expected = {
        state: (
            len(values),
            _expected_percentile(values, 50),
            _expected_percentile(values, 90),
            _expected_percentile(values, 99),
            max(values),
        )
        for state, values in spent.items()
    }
    assert actual == expected
    assert set(actual) == {"detecting", "streaming", "falling_back", "draining"}


def test_summarise_real_run_respects_the_selection(audit_log: AuditLog) -> None:
    summary = summarise(audit_log, Selection(models=frozenset({"sim/stream"})))
    assert (summary.requests, summary.paths) == (2, ((STREAM_DONE, 2),))
    assert summary.lines_read == audit_log.lines_read


def test_format_summary_real_run_lists_every_section(audit_log: AuditLog) -> None:
    text = format_summary(summarise(audit_log))
    assert text.splitlines()[0].startswith(f"{len(SENT)} requests  (")
    assert "  4  detecting → falling_back → draining → done" in text.splitlines()
    assert "  2  (no machine: rejected)" in text.splitlines()
    for section in ("paths through the machine", "outcomes", "error kinds", "time in state (ms)"):
        assert section in text.splitlines()


def test_summary_to_dict_is_json_ready(audit_log: AuditLog) -> None:
    data = json.loads(json.dumps(summarise(audit_log).to_dict()))
    assert data["outcomes"] == {"done": 6, "cancelled": 1, "rejected": 2, "errored": 2}
    assert {"states": list(FALLBACK_DONE), "count": 4} in data["paths"]


@pytest.mark.parametrize(
    ("values", "percentile", "expected"),
    [
        pytest.param([5], 50, 5, id="one-value"),
        pytest.param(list(range(1, 11)), 50, 5, id="p50-of-ten"),
        pytest.param(list(range(1, 11)), 90, 9, id="p90-of-ten"),
        pytest.param(list(range(1, 11)), 99, 10, id="p99-of-ten"),
        pytest.param([30, 10, 20], 50, 20, id="unsorted"),
        pytest.param([1, 2, 3, 4], 100, 4, id="p100-is-max"),
    ],
)
def test_nearest_rank_picks_an_observed_value(
    values: list[int], percentile: int, expected: int
) -> None:
    assert nearest_rank(values, percentile) == expected


@pytest.mark.parametrize(("values", "percentile"), [([], 50), ([1], 0), ([1], 101)])
def test_nearest_rank_without_values_or_out_of_range_raises(
    values: list[int], percentile: int
) -> None:
    with pytest.raises(ValueError):
        nearest_rank(values, percentile)


# --- diagram --------------------------------------------------------------------------------


def _expected_counts() -> dict[tuple[str, str, str], int]:
    counts = {(source, event, target): 0 for (source, event), target in TRANSITIONS.items()}
    for sent in SENT:
        for edge in sent.edges:
            counts[edge] += 1
    return counts


def test_transition_counts_real_run_match_what_was_sent(audit_log: AuditLog) -> None:
    assert transition_counts(audit_log.records) == _expected_counts()


def test_mermaid_diagram_real_run_labels_every_declared_edge_with_its_count(
    audit_log: AuditLog,
) -> None:
    text = mermaid_diagram(transition_counts(audit_log.records))
    lines = [line.strip() for line in text.splitlines()]
    edges = {}
    for line in lines:
        if " : " in line:
            arrow, label = line.split(" : ")
            source, target = arrow.split(" --> ")
            event, count = label.removesuffix(")").split(" (")
            edges[(source, event, target)] = int(count)
    assert lines[:3] == ["stateDiagram-v2", "direction LR", "[*] --> detecting"]
    assert edges == _expected_counts()
    assert lines[-2:] == ["done --> [*]", "errored --> [*]"]


def test_dot_diagram_real_run_labels_edges_and_dims_unused_ones(audit_log: AuditLog) -> None:
    text = dot_diagram(transition_counts(audit_log.records))
    lines = [line.strip() for line in text.splitlines()]
    edges = [line for line in lines if " -> " in line and "__start__" not in line]
    assert '"streaming" -> "draining" [label="upstream_finished (2)"];' in edges
    assert '"draining" -> "errored" [label="shut_down (0)", style=dashed' in "\n".join(edges)
    assert len(edges) == len(TRANSITIONS)
    assert (lines[0], lines[-1]) == ("digraph RequestMachine {", "}")


def _fake_dot(directory: Path, script: str) -> Path:
    """A stand-in for Graphviz's ``dot`` at the process seam: it records what it was given."""
    path = directory / "dot"
    path.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_render_image_runs_dot_with_the_format_and_the_dot_text(tmp_path: Path) -> None:
    fake = _fake_dot(
        tmp_path, f'echo "$@" > {tmp_path}/argv\ncat > {tmp_path}/stdin\necho "<svg/>"'
    )
    text = dot_diagram(_expected_counts())
    image = render_image(text, "svg", dot_command=str(fake))
    actual = (image, (tmp_path / "argv").read_text(), (tmp_path / "stdin").read_text())
    assert actual == (b"<svg/>\n", "-Tsvg\n", text)


def test_render_image_failing_dot_raises_with_its_message(tmp_path: Path) -> None:
    fake = _fake_dot(tmp_path, 'echo "syntax error in line 1" >&2\nexit 1')
    with pytest.raises(GraphvizError, match="exit code 1: syntax error in line 1"):
        render_image("digraph {}", "png", dot_command=str(fake))


def test_render_image_without_dot_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no dot anywhere
    with pytest.raises(GraphvizError, match="apt-get install graphviz"):
        render_image("digraph {}", "svg")


def test_render_image_unknown_format_raises() -> None:
    with pytest.raises(ValueError, match="pdf"):
        render_image("digraph {}", "pdf", dot_command="dot")


# --- malformed and inconsistent lines -------------------------------------------------------


def _line_of(log_path: Path, request_id: str) -> dict[str, Any]:
    for line in _json_lines(log_path):
        if line.get("event") == "request" and line["request_id"] == request_id:
            return line
    raise AssertionError(request_id)


def _problems_of(text: str) -> list[tuple[int, str, str]]:
    log = read_log(text.splitlines(keepends=True), source="x.log")
    assert log.records == ()
    return [(p.line_number, p.kind, p.reason) for p in log.problems]


def _changed(line: dict[str, Any], **changes: Any) -> str:
    return json.dumps({**line, **changes})


def test_read_log_truncated_real_line_is_malformed(log_path: Path) -> None:
    whole = json.dumps(_line_of(log_path, "audit-json"))
    assert _problems_of(whole[: len(whole) // 2] + "\n") == [
        (1, "malformed", "not valid JSON (a truncated line?)")
    ]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"request_id": 5}, "request_id is missing or not a non-empty string", id="id"),
        pytest.param({"outcome": "running"}, "outcome 'running' is not one of", id="outcome"),
        pytest.param({"trace": "none"}, "trace is missing or not a list", id="trace-type"),
        pytest.param({"trace": [1]}, "trace entry 1 is not an object", id="trace-entry"),
        pytest.param(
            {"trace": [{"source": "detecting", "event": 3, "target": "x", "at_ms": 0}]},
            "trace entry 1 lacks a string source, event or target",
            id="trace-name",
        ),
        pytest.param(
            {"trace": [{"source": "detecting", "event": "e", "target": "x", "at_ms": -1}]},
            "trace entry 1 has no non-negative integer at_ms",
            id="trace-at-negative",
        ),
        pytest.param(
            {"trace": [{"source": "detecting", "event": "e", "target": "x", "at_ms": "0"}]},
            "trace entry 1 has no non-negative integer at_ms",
            id="trace-at-text",
        ),
        pytest.param({"status": "200"}, "status is not an integer", id="status"),
        pytest.param({"model": ["sim/json"]}, "model is not a string", id="model"),
        pytest.param({"duration_ms": True}, "duration_ms is not a number", id="duration"),
    ],
)
def test_read_log_request_line_with_wrong_types_is_malformed(
    log_path: Path, changes: dict[str, Any], reason: str
) -> None:
    [(line_number, kind, actual_reason)] = _problems_of(
        _changed(_line_of(log_path, "audit-json"), **changes)
    )
    assert (line_number, kind) == (1, "malformed")
    assert actual_reason.startswith(reason)


def _step(source: str, event: str, target: str, at_ms: int) -> dict[str, Any]:
    return {"source": source, "event": event, "target": target, "at_ms": at_ms}


@pytest.mark.parametrize(
    ("request_id", "changes", "reason"),
    [
        pytest.param(
            "audit-json",
            {"trace": [_step("detecting", "upstream_finished", "draining", 0)]},
            "transition 1 (detecting --upstream_finished--> draining) is not a declared transition",
            id="undeclared",
        ),
        pytest.param(
            "audit-json",
            {"trace": [_step("streaming", "upstream_finished", "draining", 0)]},
            "transition 1 starts in streaming, but the request was in detecting",
            id="wrong-start",
        ),
        pytest.param(
            "audit-json",
            {
                "trace": [
                    _step("detecting", "stream_declined", "falling_back", 5),
                    _step("falling_back", "answer_received", "draining", 3),
                    _step("draining", "drained", "done", 6),
                ]
            },
            "transition 2 is at 3 ms, before the previous one",
            id="time-goes-back",
        ),
        pytest.param(
            "audit-json",
            {
                "trace": [
                    _step("detecting", "stream_declined", "falling_back", 0),
                    _step("draining", "drained", "done", 6),
                ]
            },
            "transition 2 starts in draining, but the request was in falling_back",
            id="gap",
        ),
        pytest.param(
            "audit-unavailable",
            {"outcome": "done"},
            "outcome done must end in done, but the trace ends in errored",
            id="outcome-disagrees",
        ),
        pytest.param(
            "audit-json",
            {"trace": [_step("detecting", "stream_declined", "falling_back", 0)]},
            "outcome done must end in done, but the trace ends in falling_back",
            id="unfinished",
        ),
        pytest.param(
            "audit-bad-json",
            {"trace": [_step("detecting", "client_gone", "errored", 0)]},
            "a rejected request has no machine, but its trace has 1 transitions",
            id="rejected-with-trace",
        ),
        pytest.param(
            "audit-gone", {"trace": []}, "outcome cancelled needs transitions", id="empty"
        ),
    ],
)
def test_read_log_trace_not_a_path_of_the_machine_is_inconsistent(
    log_path: Path, request_id: str, changes: dict[str, Any], reason: str
) -> None:
    [(line_number, kind, actual_reason)] = _problems_of(
        _changed(_line_of(log_path, request_id), **changes)
    )
    assert (line_number, kind) == (1, "inconsistent")
    assert actual_reason.startswith(reason)


def test_trace_inconsistency_real_run_finds_none(audit_log: AuditLog) -> None:
    assert [trace_inconsistency(record) for record in audit_log.records] == [None] * len(SENT)


def test_read_log_damaged_copy_reports_bad_lines_and_keeps_the_rest(log_path: Path) -> None:
    lines = log_path.read_text(encoding="utf-8").splitlines(keepends=True)
    whole = json.dumps(_line_of(log_path, "audit-stream-1"))
    damaged = [
        *lines[:2],
        whole[:40] + "\n",  # cut mid-write
        "\x00\x01 binary garbage \ufffd\n",
        "{" * 100_000 + "\n",  # nested beyond the JSON parser's recursion limit
        *lines[2:],
        '{"event": "request", "request_id": "x"',  # the last line, unfinished and unterminated
    ]
    log = read_log(damaged, source="copy.log")
    assert sorted(r.request_id for r in log.records) == sorted(SENT_BY_ID)
    assert [(p.line_number, p.kind) for p in log.problems] == [
        (3, "malformed"),
        (5, "malformed"),
        (len(damaged), "malformed"),
    ]
    assert log.problems[0].describe() == "copy.log:3: malformed: not valid JSON (a truncated line?)"
    summary = summarise(log)
    assert (summary.requests, summary.malformed_lines, summary.lines_read) == (
        len(SENT),
        3,
        len(damaged),
    )
    assert summary.other_lines == len(damaged) - len(SENT) - 3


def test_audit_log_add_concatenates_in_order(audit_log: AuditLog) -> None:
    both = audit_log + read_log(["{broken\n", "plain text\n"], source="second.log")
    assert both.records == audit_log.records
    assert [p.source for p in both.problems] == ["second.log"]
    assert (both.lines_read, both.other_lines) == (
        audit_log.lines_read + 2,
        audit_log.other_lines + 1,
    )
