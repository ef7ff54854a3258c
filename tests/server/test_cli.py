"""The command line: ``serve --print-config``, start-up errors (exit 3), help, version, simulate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner, Result

from server.cli import STARTUP_FAILURE, main
from server.settings import DEFAULT_STRAICO_URL, REDACTED, Settings, flag_of

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_KEY = "sk-server-93bd0e"
CLIENT_KEY = "ck-client-51aa"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read os.environ: keep this machine's variables out of the tests."""
    for name in list(os.environ):
        if name.startswith("STRAICO_"):
            monkeypatch.delenv(name)


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env)


def printed_config(result: Result) -> dict[str, object]:
    assert (result.exit_code, result.stderr) == (0, "")
    return tomllib.loads(result.stdout)


def expected_config(settings: Settings) -> dict[str, object]:
    return tomllib.loads(settings.to_toml())


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- serve --print-config ----------------------------------------------------------------------


def test_cli_print_config_without_sources_prints_defaults() -> None:
    printed = printed_config(invoke(["serve", "--print-config"]))
    assert printed == expected_config(Settings(upstream_url=DEFAULT_STRAICO_URL))


def test_cli_print_config_combines_flag_env_and_file(tmp_path: Path) -> None:
    config = write(
        tmp_path, "gateway.toml", 'heartbeat_interval = 3\nport = 9100\nstreaming = "on"\n'
    )
    result = invoke(
        ["serve", "--print-config", "--config", str(config), "--port", "9001", "--no-fallback"],
        env={"STRAICO_GATEWAY_STREAM_TIMEOUT": "45", "STRAICO_GATEWAY_PORT": "9002"},
    )
    expected = Settings(
        upstream_url=DEFAULT_STRAICO_URL,
        heartbeat_interval=3.0,
        streaming="on",
        stream_timeout=45.0,
        port=9001,
        fallback=False,
    )
    assert printed_config(result) == expected_config(expected)


def test_cli_print_config_shows_keys_as_stars() -> None:
    result = invoke(
        ["serve", "--print-config", "--upstream-key", SERVER_KEY, "--client-keys", CLIENT_KEY]
    )
    printed = printed_config(result)
    assert (printed["upstream_key"], printed["client_keys"]) == (REDACTED, [REDACTED])
    assert SERVER_KEY not in result.output and CLIENT_KEY not in result.output


def test_cli_print_config_hides_straico_api_key_from_env() -> None:
    result = invoke(["serve", "--print-config"], env={"STRAICO_API_KEY": SERVER_KEY})
    assert printed_config(result)["upstream_key"] == REDACTED
    assert SERVER_KEY not in result.output


def test_cli_config_env_twin_names_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, "gateway.toml", "workers = 4\n")
    result = invoke(["serve", "--print-config"], env={"STRAICO_GATEWAY_CONFIG": str(config)})
    assert printed_config(result)["workers"] == 4


def test_cli_config_flag_beats_its_env_twin(tmp_path: Path) -> None:
    chosen = write(tmp_path, "chosen.toml", "workers = 4\n")
    ignored = write(tmp_path, "ignored.toml", "workers = 8\n")
    result = invoke(
        ["serve", "--print-config", "--config", str(chosen)],
        env={"STRAICO_GATEWAY_CONFIG": str(ignored)},
    )
    assert printed_config(result)["workers"] == 4


def test_cli_switches_reach_settings() -> None:
    result = invoke(["serve", "--print-config", "--simulate", "--log-content"])
    printed = printed_config(result)
    assert (printed["simulate"], printed["log_content"], "upstream_url" in printed) == (
        True,
        True,
        False,
    )


def test_cli_serve_has_one_option_per_setting() -> None:
    result = invoke(["serve", "--help"])
    missing = [
        field.name for field in attrs.fields(Settings) if flag_of(field.name) not in result.stdout
    ]
    assert (result.exit_code, missing) == (0, [])


# --- start-up errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["--stream-timeout", "abc"],
            {},
            "--stream-timeout: expected positive seconds, got 'abc' (from the command line)",
            id="bad-flag",
        ),
        pytest.param(
            [],
            {"STRAICO_GATEWAY_WORKERS": "0"},
            "--workers: expected an integer >= 1, got '0' (from STRAICO_GATEWAY_WORKERS)",
            id="bad-env",
        ),
        pytest.param(
            ["--streaming", "off", "--no-fallback"],
            {},
            "--streaming off: cannot be combined with --no-fallback, since a streaming client "
            "could then never be answered (D10); use --streaming auto or --fallback",
            id="d10",
        ),
        pytest.param(
            ["--client-keys", CLIENT_KEY],
            {},
            "--client-keys: client keys need a server key; set --upstream-key "
            "(or STRAICO_GATEWAY_UPSTREAM_KEY) or drop the client keys",
            id="client-keys-without-server-key",
        ),
        pytest.param(
            ["--upstream-kind", "openai"],
            {},
            "--upstream-url: required with --upstream-kind openai; give the base URL with its "
            "/v1, as for the openai SDK's base_url (e.g. https://api.openai.com/v1)",
            id="openai-without-url",
        ),
        pytest.param(
            ["--simulate", "--upstream-url", "http://127.0.0.1:9"],
            {},
            "--simulate: cannot be combined with --upstream-url (given by --upstream-url); "
            "the simulator is the upstream",
            id="simulate-with-url",
        ),
    ],
)
@pytest.mark.parametrize("print_config", [False, True], ids=["serve", "print-config"])
def test_cli_startup_error_exits_3_with_one_line(
    args: list[str], env: dict[str, str], message: str, print_config: bool
) -> None:
    result = invoke(["serve", *args, *(["--print-config"] if print_config else [])], env=env)
    assert (result.exit_code, result.stdout, result.stderr) == (
        STARTUP_FAILURE,
        "",
        f"straico-gateway: error: {message}\n",
    )


def test_cli_bad_config_file_exits_3_naming_the_key(tmp_path: Path) -> None:
    config = write(tmp_path, "gateway.toml", "fallback = 0\n")
    result = invoke(["serve", "--print-config", "--config", str(config)])
    assert (result.exit_code, result.stderr) == (
        STARTUP_FAILURE,
        "straico-gateway: error: --fallback: expected a boolean (1/0, true/false, yes/no, "
        f"on/off), got 0 (from config file {str(config)!r}, key fallback)\n",
    )


def test_cli_missing_config_file_exits_3(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    result = invoke(["serve", "--print-config"], env={"STRAICO_GATEWAY_CONFIG": str(missing)})
    assert (result.exit_code, result.stderr) == (
        STARTUP_FAILURE,
        f"straico-gateway: error: --config: cannot read {str(missing)!r}: "
        "No such file or directory\n",
    )


def test_cli_unknown_option_is_a_usage_error() -> None:
    assert invoke(["serve", "--stream-timout", "5"]).exit_code == 2


# --- the group, help and version ---------------------------------------------------------------


def test_cli_help_lists_serve_and_simulate() -> None:
    result = invoke(["--help"])
    listing = result.stdout.split("Commands:")[1].splitlines()
    commands = [line.split()[0] for line in listing if re.match(r"  \S", line)]
    assert (result.exit_code, commands) == (0, ["serve", "simulate", "trace"])


def test_cli_version_names_the_program() -> None:
    result = invoke(["--version"])
    assert (result.exit_code, result.stdout.startswith("straico-gateway, version ")) == (0, True)


def test_cli_simulate_help_shows_its_defaults() -> None:
    result = invoke(["simulate", "--help"])
    shown = re.findall(r"\[default: ([^;\]]+)", result.stdout)
    assert (result.exit_code, shown) == (0, ["127.0.0.1", "8001", "sim-key"])


def test_cli_simulate_rejects_port_out_of_range() -> None:
    assert invoke(["simulate", "--port", "70000"]).exit_code == 2


# --- a real process ----------------------------------------------------------------------------


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("STRAICO_")}
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=REPO_ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_module_print_config_in_a_real_process() -> None:
    done = run_module(
        "serve", "--print-config", "--port", "9005", env={"STRAICO_API_KEY": SERVER_KEY}
    )
    printed = tomllib.loads(done.stdout)
    assert (done.returncode, done.stderr, printed["port"], printed["upstream_key"]) == (
        0,
        "",
        9005,
        REDACTED,
    )
    assert SERVER_KEY not in done.stdout


def test_cli_module_startup_error_in_a_real_process() -> None:
    done = run_module("serve", "--print-config", env={"STRAICO_GATEWAY_MAX_BODY_SIZE": "big"})
    assert (done.returncode, done.stdout, done.stderr) == (
        STARTUP_FAILURE,
        "",
        "straico-gateway: error: --max-body-size: expected a size of at least 1 byte: bytes, "
        "or a number with B/KB/MB/KiB/MiB/GiB, got 'big' (from STRAICO_GATEWAY_MAX_BODY_SIZE)\n",
    )
