"""
``straico-gateway trace`` over a log written by a real gateway process.

The log comes from ``record_gateway_run`` (tests/server/test_audit.py): a ``serve --simulate``
subprocess that answered the requests of ``SENT``. The command runs both as a subprocess (the
installed console script, as a user runs it) and through click's ``CliRunner``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from engine.trace import TRANSITIONS
from server.cli import TRACE_FAILURE, main
from tests.server.test_audit import (
    FALLBACK_DONE,
    GATEWAY_COMMAND,
    SENT,
    SENT_BY_ID,
    record_gateway_run,
)

COMMAND_TIMEOUT = 30.0
USAGE_ERROR = 2


@pytest.fixture(name="log_path", scope="module")
def _log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_gateway_run(tmp_path_factory.mktemp("trace-cli"))


def trace(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["trace", *args], input=input, env=env)


def run_trace(
    *args: str, stdin: Any = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GATEWAY_COMMAND), "trace", *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=env,
        check=False,
    )


def logged_lines(log_path: Path) -> dict[str, str]:
    """Each request's line as the file holds it, by request id, in file order."""
    lines = {}
    for text in log_path.read_text(encoding="utf-8").splitlines():
        if text.startswith("{") and json.loads(text).get("event") == "request":
            lines[json.loads(text)["request_id"]] = text
    return lines


def timeline_ids(stdout: str) -> list[str]:
    """The request id of each timeline, in the order printed."""
    return [block.split("  ", 1)[0] for block in stdout.strip().split("\n\n") if block]


def succeeded(result: Result) -> str:
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout


def mermaid_counts(text: str) -> dict[tuple[str, str, str], int]:
    edges = {}
    for line in text.splitlines():
        if " : " in line:
            arrow, label = line.strip().split(" : ")
            source, target = arrow.split(" --> ")
            event, count = label.removesuffix(")").split(" (")
            edges[(source, event, target)] = int(count)
    return edges


def expected_counts(request_ids: set[str]) -> dict[tuple[str, str, str], int]:
    counts = {(source, event, target): 0 for (source, event), target in TRANSITIONS.items()}
    for sent in SENT:
        if sent.request_id in request_ids:
            for edge in sent.edges:
                counts[edge] += 1
    return counts


# --- timelines ------------------------------------------------------------------------------


def test_trace_subprocess_prints_one_timeline_per_request_in_log_order(log_path: Path) -> None:
    finished = run_trace(str(log_path))
    assert (finished.returncode, finished.stderr) == (0, "")
    assert timeline_ids(finished.stdout) == list(logged_lines(log_path))
    assert finished.stdout == succeeded(trace(str(log_path)))


def test_trace_subprocess_timeline_shows_transitions_and_time_in_state(log_path: Path) -> None:
    stdout = run_trace(str(log_path)).stdout
    blocks = {block.split("  ", 1)[0]: block for block in stdout.strip().split("\n\n")}
    for request_id, text in logged_lines(log_path).items():
        line = json.loads(text)
        header, *steps = blocks[request_id].splitlines()
        sent = SENT_BY_ID[request_id]
        ending = f"{sent.status} {sent.outcome}" + (f" {sent.error}" if sent.error else "")
        expected_header = (
            f"{request_id}  POST {line['path']}  {sent.model or '-'}  {ending}  "
            f"{round(line['duration_ms'])} ms"
        )
        assert header == expected_header
        previous_at = 0
        expected_steps = []
        for entry in line["trace"]:
            expected_steps.append(
                f"+{entry['at_ms']} ms {entry['source']} --{entry['event']}--> {entry['target']} "
                f"({entry['at_ms'] - previous_at} ms in {entry['source']})"
            )
            previous_at = entry["at_ms"]
        if not line["trace"]:
            expected_steps = ["no transitions: rejected before the machine started"]
        assert [" ".join(step.split()) for step in steps] == expected_steps


def test_trace_subprocess_reads_stdin_without_a_file(log_path: Path) -> None:
    with log_path.open(encoding="utf-8") as log_file:
        from_stdin = run_trace(stdin=log_file)
    assert (from_stdin.returncode, from_stdin.stdout) == (0, run_trace(str(log_path)).stdout)


def test_trace_dash_reads_stdin(log_path: Path) -> None:
    text = log_path.read_text(encoding="utf-8")
    assert succeeded(trace("-", input=text)) == succeeded(trace(str(log_path)))


# --- filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected_ids"),
    [
        pytest.param(
            ["--outcome", "errored,cancelled"],
            {"audit-unavailable", "audit-rate-limited", "audit-gone"},
            id="outcome-list",
        ),
        pytest.param(
            ["--outcome", "rejected", "--outcome", "cancelled"],
            {"audit-bad-json", "audit-unknown-path", "audit-gone"},
            id="outcome-repeated",
        ),
        pytest.param(["--error", "client_disconnected"], {"audit-gone"}, id="error"),
        pytest.param(
            ["--model", "sim/json", "--model", "sim/reject"],
            {"audit-json", "audit-json-stream", "audit-reject-1", "audit-reject-2"},
            id="model-repeated",
        ),
        pytest.param(
            ["--request-id", "audit-json,audit-gone"], {"audit-json", "audit-gone"}, id="ids"
        ),
        pytest.param(
            ["--outcome", "done", "--model", "sim/stream,sim/json:status=503"],
            {"audit-stream-1", "audit-stream-2"},
            id="filters-combined",
        ),
    ],
)
def test_trace_filters_select_requests(
    log_path: Path, args: list[str], expected_ids: set[str]
) -> None:
    assert set(timeline_ids(succeeded(trace(str(log_path), *args)))) == expected_ids


def test_trace_filter_matching_nothing_prints_nothing(log_path: Path) -> None:
    assert succeeded(trace(str(log_path), "--error", "stream_timeout")).strip() == ""


def test_trace_unknown_outcome_is_a_usage_error(log_path: Path) -> None:
    result = trace(str(log_path), "--outcome", "done,finished")
    assert result.exit_code == USAGE_ERROR
    assert "finished: not an outcome; choose from done, cancelled, rejected, errored" in (
        result.stderr
    )


def test_trace_json_prints_selected_lines_as_logged(log_path: Path) -> None:
    stdout = succeeded(trace(str(log_path), "--json", "--outcome", "errored,rejected"))
    logged = logged_lines(log_path)
    expected = [
        text
        for request_id, text in logged.items()
        if SENT_BY_ID[request_id].outcome in {"errored", "rejected"}
    ]
    assert stdout.splitlines() == expected


# --- summary --------------------------------------------------------------------------------


def test_trace_summary_json_counts_match_what_was_sent(log_path: Path) -> None:
    summary = json.loads(succeeded(trace(str(log_path), "--summary", "--json")))
    paths = {tuple(entry["states"]): entry["count"] for entry in summary["paths"]}
    assert summary["requests"] == len(SENT)
    assert paths == dict(Counter(sent.path for sent in SENT))
    assert summary["outcomes"] == dict(
        Counter({"done": 0, "cancelled": 0, "rejected": 0, "errored": 0})
        + Counter(sent.outcome for sent in SENT)
    )
    assert summary["errors"] == dict(Counter(s.error for s in SENT if s.error is not None))
    assert (summary["malformed_lines"], summary["inconsistent_lines"]) == (0, 0)
    visits = Counter(state for sent in SENT for state in sent.path[:-1])
    counted = {state: timing["count"] for state, timing in summary["time_in_state_ms"].items()}
    assert counted == dict(visits)
    for timing in summary["time_in_state_ms"].values():
        assert timing["p50"] <= timing["p90"] <= timing["p99"] <= timing["max"]


def test_trace_summary_subprocess_prints_readable_sections(log_path: Path) -> None:
    finished = run_trace(str(log_path), "--summary")
    lines = finished.stdout.splitlines()
    assert (finished.returncode, finished.stderr) == (0, "")
    assert lines[0].startswith(f"{len(SENT)} requests  (")
    assert lines[0].endswith("0 malformed, 0 inconsistent)")
    assert "  4  detecting → falling_back → draining → done" in lines
    assert "  1  detecting → streaming → errored" in lines
    assert lines[lines.index("outcomes") + 1 : lines.index("outcomes") + 5] == [
        "  done       6",
        "  cancelled  1",
        "  rejected   2",
        "  errored    2",
    ]
    time_header = lines[lines.index("time in state (ms)") + 1].split()
    assert time_header == ["state", "n", "p50", "p90", "p99", "max"]


def test_trace_summary_respects_filters(log_path: Path) -> None:
    summary = json.loads(
        succeeded(trace(str(log_path), "--summary", "--json", "--model", "sim/reject"))
    )
    assert summary["paths"] == [{"states": list(FALLBACK_DONE), "count": 2}]


# --- diagram --------------------------------------------------------------------------------


def test_trace_diagram_prints_mermaid_with_transition_counts(log_path: Path) -> None:
    stdout = succeeded(trace(str(log_path), "--diagram"))
    assert stdout.splitlines()[0] == "stateDiagram-v2"
    assert mermaid_counts(stdout) == expected_counts(set(SENT_BY_ID))


def test_trace_diagram_counts_only_selected_requests(log_path: Path) -> None:
    stdout = run_trace(str(log_path), "--diagram", "--outcome", "cancelled,errored").stdout
    chosen = {s.request_id for s in SENT if s.outcome in {"cancelled", "errored"}}
    assert mermaid_counts(stdout) == expected_counts(chosen)


@pytest.mark.parametrize("suffix", [".mmd", ".dot"])
def test_trace_diagram_output_writes_text_formats(
    log_path: Path, tmp_path: Path, suffix: str
) -> None:
    target = tmp_path / f"machine{suffix}"
    assert succeeded(trace(str(log_path), "--diagram", "--output", str(target))) == ""
    written = target.read_text(encoding="utf-8")
    if suffix == ".mmd":
        assert written == succeeded(trace(str(log_path), "--diagram"))
    else:
        assert written.startswith("digraph RequestMachine {")
        assert '[label="upstream_streamed (3)"]' in written


def test_trace_diagram_image_without_dot_exits_2_with_a_message(
    log_path: Path, tmp_path: Path
) -> None:
    target = tmp_path / "machine.svg"
    finished = run_trace(
        str(log_path),
        "--diagram",
        "--output",
        str(target),
        env={**os.environ, "PATH": str(tmp_path)},  # an empty directory: no dot anywhere
    )
    assert (finished.returncode, finished.stdout) == (TRACE_FAILURE, "")
    assert finished.stderr.startswith("straico-gateway: error: drawing an image needs Graphviz")
    assert "Traceback" not in finished.stderr
    assert not target.exists()


def test_trace_diagram_image_goes_through_dot(log_path: Path, tmp_path: Path) -> None:
    """A stand-in ``dot`` on PATH (the process seam) receives DOT text and -Tpng."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat\n', encoding="utf-8")
    fake.chmod(0o755)
    target = tmp_path / "machine.png"
    dot_text_file = tmp_path / "machine.dot"
    succeeded(trace(str(log_path), "--diagram", "--output", str(dot_text_file)))
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"  # the stand-in comes first
    result = trace(str(log_path), "--diagram", "--output", str(target), env={"PATH": path})
    assert succeeded(result) == ""
    actual = ((tmp_path / "argv").read_text(), target.read_text(encoding="utf-8"))
    assert actual == ("-Tpng\n", dot_text_file.read_text(encoding="utf-8"))


def test_trace_diagram_svg_with_graphviz(log_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "machine.svg"
    assert succeeded(trace(str(log_path), "--diagram", "--output", str(target))) == ""
    svg = target.read_text(encoding="utf-8")
    assert "<svg" in svg
    assert "upstream_streamed (3)" in svg


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--summary", "--diagram"], "choose one of --summary and --diagram", id="two"),
        pytest.param(["--diagram", "--json"], "--json prints request lines", id="json-diagram"),
        pytest.param(["--output", "x.svg"], "--output writes the diagram", id="output-alone"),
        pytest.param(["--diagram", "--output", "x.pdf"], "the suffix names the format", id="pdf"),
    ],
)
def test_trace_conflicting_options_are_usage_errors(
    log_path: Path, args: list[str], message: str
) -> None:
    result = trace(str(log_path), *args)
    assert result.exit_code == USAGE_ERROR
    assert message in result.stderr


def test_trace_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = trace(str(tmp_path / "nothing.log"))
    assert result.exit_code == USAGE_ERROR
    assert "nothing.log" in result.stderr


# --- damaged logs ---------------------------------------------------------------------------


def damaged_copy(log_path: Path, directory: Path) -> Path:
    """The log with a truncated request line, garbage, and an inconsistent line added."""
    lines = log_path.read_text(encoding="utf-8").splitlines(keepends=True)
    first = json.loads(logged_lines(log_path)["audit-stream-1"])
    undeclared = {**first, "request_id": "audit-forged"}
    undeclared["trace"] = [{**first["trace"][0], "event": "upstream_answered_whole"}]
    copy = directory / "damaged.log"
    copy.write_text(
        "".join(
            [
                *lines[:3],
                json.dumps(first)[:60] + "\n",  # line 4: truncated
                "#### garbage \x00 that is not JSON\n",  # line 5: skipped quietly
                "{garbage\n",  # line 6: malformed
                json.dumps(undeclared) + "\n",  # line 7: inconsistent
                *lines[3:],
            ]
        ),
        encoding="utf-8",
    )
    return copy


def test_trace_damaged_log_reports_bad_lines_and_shows_the_rest(
    log_path: Path, tmp_path: Path
) -> None:
    copy = damaged_copy(log_path, tmp_path)
    finished = run_trace(str(copy))
    assert finished.returncode == 0
    assert finished.stderr.splitlines() == [
        f"{copy}:4: malformed: not valid JSON (a truncated line?)",
        f"{copy}:6: malformed: not valid JSON (a truncated line?)",
        f"{copy}:7: inconsistent: transition 1 (detecting --upstream_answered_whole--> "
        "streaming) is not a declared transition",
    ]
    assert sorted(timeline_ids(finished.stdout)) == sorted(SENT_BY_ID)


def test_trace_damaged_log_summary_counts_skipped_lines(log_path: Path, tmp_path: Path) -> None:
    copy = damaged_copy(log_path, tmp_path)
    result = trace(str(copy), "--summary", "--json")
    summary = json.loads(result.stdout)
    assert result.exit_code == 0
    assert len(result.stderr.splitlines()) == 3
    assert (summary["requests"], summary["malformed_lines"], summary["inconsistent_lines"]) == (
        len(SENT),
        2,
        1,
    )


def test_trace_several_files_report_problems_by_file(log_path: Path, tmp_path: Path) -> None:
    copy = damaged_copy(log_path, tmp_path)
    result = trace(str(log_path), str(copy), "--json")
    assert result.exit_code == 0
    assert {line.split(":", 1)[0] for line in result.stderr.splitlines()} == {str(copy)}
    assert len(result.stdout.splitlines()) == 2 * len(SENT)


def test_trace_help_documents_filters_and_modes() -> None:
    result = CliRunner().invoke(main, ["trace", "--help"])
    for option in ("--outcome", "--error", "--model", "--request-id", "--summary", "--diagram"):
        assert option in result.stdout
    assert "comma-separated" in result.stdout
