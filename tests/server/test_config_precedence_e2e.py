"""
Precedence flag > env > file > default (contract §10) on the real command, end to end: the
printed configuration, the behaviour of a running gateway, and start-up refusals (exit 3).
"""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from server.cli import STARTUP_FAILURE
from tests.support.gateway_process import (
    GATEWAY_COMMAND,
    GatewayProcess,
    chat_body,
    clean_environment,
)
from tests.support.sse_check import check_stream

RUN_TIMEOUT = 20.0

#: heartbeat_interval is given at three levels, answer_timeout at two, stream_timeout at one.
CONFIG_FILE = """\
heartbeat_interval = 5
answer_timeout = 100
stream_timeout = 90
log_format = "console"
"""
ENV = {
    "STRAICO_GATEWAY_HEARTBEAT_INTERVAL": "3",
    "STRAICO_GATEWAY_ANSWER_TIMEOUT": "200",
    "STRAICO_GATEWAY_LOG_FORMAT": "json",
}
FLAGS = ["--heartbeat-interval", "0.2"]


def serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``straico-gateway serve`` to its end (bounded: killed past ``RUN_TIMEOUT``)."""
    return subprocess.run(
        [*GATEWAY_COMMAND, "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


@pytest.fixture(name="config_file")
def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG_FILE)
    return path


def test_config_precedence_in_the_printed_configuration(config_file: Path) -> None:
    result = serve(
        ["--simulate", "--config", str(config_file), *FLAGS, "--print-config"],
        clean_environment(**ENV),
    )
    printed = tomllib.loads(result.stdout)

    assert result.returncode == 0
    assert {
        "heartbeat_interval": printed["heartbeat_interval"],  # flag over env and file
        "answer_timeout": printed["answer_timeout"],  # env over file
        "stream_timeout": printed["stream_timeout"],  # file over default
        "connect_timeout": printed["connect_timeout"],  # default
        "log_format": printed["log_format"],  # env over file
    } == {
        "heartbeat_interval": 0.2,
        "answer_timeout": 200.0,
        "stream_timeout": 90.0,
        "connect_timeout": 10.0,
        "log_format": "json",
    }


def test_config_precedence_flag_sets_the_heartbeats_of_a_running_gateway(
    start_gateway: Callable[..., GatewayProcess], config_file: Path
) -> None:
    """
    The answer takes 1 s. With the flag's 0.2 s the client gets keep-alive comments; with the
    environment's 3 s or the file's 5 s it would get none. JSON log lines show the environment's
    log format won over the file's.
    """
    gateway = start_gateway(
        "--simulate",
        "--port",
        "0",
        "--config",
        str(config_file),
        *FLAGS,
        env=clean_environment(**ENV),
    )

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=chat_body("sim/json:delay=1000", stream=True),
        headers={"X-Request-ID": "precedence-1"},
        timeout=RUN_TIMEOUT,
    )
    report = check_stream(response.content)
    line = gateway.wait_request_line("precedence-1")

    assert report.done is True
    assert report.comments >= 1
    assert line["heartbeats"] == report.comments


@pytest.mark.parametrize(
    ("file_text", "env", "expected"),
    [
        pytest.param(
            "heartbeat_intervall = 5\n",
            {},
            "unknown key 'heartbeat_intervall'",
            id="unknown-file-key",
        ),
        pytest.param(
            "heartbeat_interval = \n",
            {},
            "--config:",
            id="invalid-toml",
        ),
        pytest.param(
            'heartbeat_interval = "fast"\n',
            {},
            "--heartbeat-interval: expected non-negative seconds, got 'fast'",
            id="bad-file-value",
        ),
        pytest.param(
            "",
            {"STRAICO_GATEWAY_WORKERS": "many"},
            "--workers:",
            id="bad-env-value",
        ),
        pytest.param(
            "",
            {"STRAICO_GATEWAY_SHUTDOWN_GRACE": "-1"},
            "--shutdown-grace:",
            id="negative-grace",
        ),
    ],
)
def test_config_invalid_setting_stops_startup_with_exit_code_3(
    tmp_path: Path, file_text: str, env: dict[str, str], expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(file_text)

    result = serve(["--simulate", "--port", "0", "--config", str(path)], clean_environment(**env))

    assert result.returncode == STARTUP_FAILURE
    assert result.stderr.startswith("straico-gateway: error: ")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
