"""
The real ``straico-gateway serve`` in a subprocess, for tests of the whole command.

Its stderr (the JSON log lines) goes to a file the test reads; every subprocess runs in its own
process group and is killed when the test leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

STARTUP_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
POLL_SECONDS = 0.05
SHUTDOWN_GRACE = 2.0

_GATEWAY_SCRIPT = shutil.which("straico-gateway", path=str(Path(sys.executable).parent))
#: The installed console command; ``python -m server.cli`` when the project is not installed.
GATEWAY_COMMAND = [_GATEWAY_SCRIPT] if _GATEWAY_SCRIPT else [sys.executable, "-m", "server.cli"]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any gateway or prometheus setting, plus *extra*."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("STRAICO_") and name.upper() != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(extra)
    return env


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll *condition* until it returns something truthy; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)


class GatewayProcess:
    """
    ``straico-gateway serve ...`` in a subprocess, its stderr (JSON log lines) in a file.

    Use it as a context manager: leaving kills its whole process group if it still runs.
    """

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self._log_file = log_path.open("wb")
        self.process = subprocess.Popen(
            [*GATEWAY_COMMAND, "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            env=clean_environment() if env is None else env,
            start_new_session=True,  # its own process group: workers included in close()
        )
        self.url = ""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the process group if anything of it still runs; always reap the parent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):  # workers left by an exited parent
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(EXIT_TIMEOUT)
        self._log_file.close()
        for line in self.lines():  # a killed supervisor could not remove its metrics directory
            if line.get("event") == "workers_starting":
                shutil.rmtree(line["metrics_dir"], ignore_errors=True)

    def wait_listening(self) -> str:
        """Wait until the gateway (every worker) listens; return its base URL."""

        def listening() -> str | None:
            if self.process.poll() is not None:
                raise AssertionError(f"the gateway exited at start-up:\n{self.log_text()}")
            for line in self.lines():
                if line.get("event") == "gateway_listening" and "worker" not in line:
                    return str(line["url"])
            return None

        self.url = wait_until(listening, STARTUP_TIMEOUT, "the gateway to listen")
        return self.url

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (any other line is skipped)."""
        found = []
        for text in self.log_text().splitlines():
            if text.startswith("{") and text.endswith("}"):
                found.append(json.loads(text))
        return found

    def request_line(self, request_id: str) -> dict[str, Any]:
        matches = [
            line
            for line in self.lines()
            if line.get("event") == "request" and line.get("request_id") == request_id
        ]
        assert len(matches) == 1, f"{len(matches)} log lines for {request_id}:\n{self.log_text()}"
        return matches[0]

    def wait_request_line(self, request_id: str) -> dict[str, Any]:
        def logged() -> bool:
            return any(
                line.get("event") == "request" and line.get("request_id") == request_id
                for line in self.lines()
            )

        wait_until(logged, EXIT_TIMEOUT, f"the log line of {request_id}")
        return self.request_line(request_id)

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self) -> int:
        return self.process.wait(EXIT_TIMEOUT)


def chat_body(model: str, *, stream: bool) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]}


async def read_stream(
    client: httpx.AsyncClient, url: str, model: str, request_id: str, first_bytes: asyncio.Event
) -> bytes:
    """The whole body of a streamed chat request; httpx raises if the connection is cut."""
    async with client.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=chat_body(model, stream=True),
        headers={"X-Request-ID": request_id},
    ) as response:
        assert response.status_code == 200
        parts = []
        async for part in response.aiter_raw():
            parts.append(part)
            first_bytes.set()
    return b"".join(parts)


async def wait_ready_status(url: str, expected: int) -> dict[str, Any]:
    """Poll ``/readyz`` on fresh connections until it answers *expected*."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    while True:
        async with httpx.AsyncClient(timeout=5) as fresh:
            response = await fresh.get(f"{url}/readyz")
        if response.status_code == expected:
            body: dict[str, Any] = response.json()
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz never answered {expected}")
        await asyncio.sleep(POLL_SECONDS)


def serve_args(*, workers: int, grace: float = SHUTDOWN_GRACE) -> list[str]:
    return [
        "--simulate",
        "--port",
        "0",
        "--shutdown-grace",
        str(grace),
        "--heartbeat-interval",
        "0.2",
        "--log-format",
        "json",
        "--workers",
        str(workers),
    ]
