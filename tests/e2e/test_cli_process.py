"""
The installed console script in a real subprocess (contract §10, §12, §15).

``straico-gateway serve --simulate`` is configured through environment twins only, answers
over loopback, logs its JSON request lines on stderr and exits 0 on SIGTERM;
``straico-gateway simulate`` serves the Straico API with its key. Every wait is bounded and the
process is killed in teardown if a test left it running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.sse_check import check_stream

from .conftest import CLIENT_TIMEOUT, SIM_KEY, chat_body, new_request_id

SCRIPT = Path(sys.executable).parent / "straico-gateway"
STARTUP_SECONDS = 15.0
EXIT_SECONDS = 10.0
POLL_SECONDS = 0.05


def _free_port() -> int:
    """A loopback port that was free a moment ago (the process binds it itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any setting of ours, plus *extra*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRAICO")}
    env.update(extra)
    return env


class Process:
    """A started console script, its port, and what it wrote once it exited."""

    def __init__(self, args: list[str], port: int, env: dict[str, str]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.popen = subprocess.Popen(
            [str(SCRIPT), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.stdout = b""
        self.stderr = b""

    def wait_until_serving(self, path: str, headers: dict[str, str] | None = None) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                self.finish()
                raise AssertionError(
                    f"exited with {self.popen.returncode}: {self.stderr[-2000:]!r}"
                )
            try:
                if httpx.get(self.url + path, headers=headers, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(POLL_SECONDS)
        raise AssertionError(f"{self.url}{path} did not answer within {STARTUP_SECONDS} s")

    def terminate(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.finish()

    def finish(self) -> int:
        self.stdout, self.stderr = self.popen.communicate(timeout=EXIT_SECONDS)
        return self.popen.returncode

    def json_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.stderr.decode().splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.communicate(timeout=EXIT_SECONDS)


@pytest.fixture(name="start")
def _start() -> Iterator[Any]:
    started: list[Process] = []

    def start(args: list[str], env: dict[str, str]) -> Process:
        port = _free_port()
        process = Process([*args, "--port", str(port)], port, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def test_cli_process_serve_simulate_uses_env_twins_and_stops_on_sigterm(start: Any) -> None:
    process: Process = start(
        ["serve", "--simulate"],
        _clean_env(
            STRAICO_GATEWAY_HEARTBEAT_INTERVAL="0.2",
            STRAICO_GATEWAY_LOG_FORMAT="json",
        ),
    )
    process.wait_until_serving("/healthz")

    streamed_id, whole_id = new_request_id("cli-stream"), new_request_id("cli-whole")
    with httpx.Client(base_url=process.url, timeout=CLIENT_TIMEOUT) as http:
        streamed = http.post(
            "/v1/chat/completions",
            json=chat_body("sim/json:delay=700", stream=True),
            headers={"X-Request-ID": streamed_id},
        )
        whole = http.post(
            "/v1/chat/completions",
            json=chat_body("sim/stream"),
            headers={"X-Request-ID": whole_id},
        )

    assert streamed.status_code == 200, streamed.text
    report = check_stream(streamed.content)
    assert report.comments >= 1  # 0.2 s heartbeats: the environment twin took effect
    assert report.content
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"]

    assert process.terminate() == 0
    requests = {
        line.get("request_id"): line
        for line in process.json_lines()
        if line.get("event") == "request"
    }
    assert requests[streamed_id]["heartbeats"] == report.comments
    assert (requests[streamed_id]["outcome"], requests[whole_id]["outcome"]) == ("done", "done")
    assert SIM_KEY.encode() not in process.stderr


def test_cli_process_simulate_answers_with_its_key(start: Any) -> None:
    process: Process = start(["simulate"], _clean_env())
    authorised = {"Authorization": f"Bearer {SIM_KEY}"}
    process.wait_until_serving("/v2/models", authorised)

    with httpx.Client(base_url=process.url, timeout=CLIENT_TIMEOUT) as http:
        models = http.get("/v2/models", headers=authorised)
        refused = http.get("/v2/models", headers={"Authorization": "Bearer not-the-key"})

    assert models.status_code == 200
    ids = {model["id"] for model in models.json()["data"]}
    assert {"sim/stream", "sim/json", "sim/reject"} <= ids
    assert refused.status_code == 401
    assert refused.json()["success"] is False
    assert process.terminate() == 0
