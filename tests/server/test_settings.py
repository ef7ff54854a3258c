"""Settings: the defaults of contract §10, precedence, parsing, cross-field checks, config files."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

import attrs
import pytest

from engine.config import StreamingConfig
from server.settings import (
    DEFAULT_STRAICO_URL,
    GIB,
    KIB,
    MIB,
    REDACTED,
    Settings,
    SettingsError,
    load_config_file,
)

SERVER_KEY = "sk-server-4f1d9a"
CLIENT_KEY_A = "ck-alpha-77e2"
CLIENT_KEY_B = "ck-beta-0c3b"


def resolve(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    file: Mapping[str, object] | None = None,
) -> Settings:
    return Settings.resolve(flags or {}, env=env or {}, file=file)


def error_of(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    file: Mapping[str, object] | None = None,
) -> str:
    with pytest.raises(SettingsError) as caught:
        resolve(flags, env, file)
    return caught.value.message


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults ----------------------------------------------------------------------------------

#: Contract §10's table of defaults, copied literally.
CONTRACT_DEFAULTS = {
    "host": "127.0.0.1",
    "port": 8000,
    "upstream_kind": "straico",
    "upstream_url": DEFAULT_STRAICO_URL,
    "upstream_key": None,
    "client_keys": (),
    "client_keys_file": None,
    "streaming": "auto",
    "detection_cache_ttl": 600.0,
    "fallback": True,
    "heartbeat_interval": 10.0,
    "heartbeat_style": "comment",
    "stream_timeout": 120.0,
    "answer_timeout": 300.0,
    "connect_timeout": 10.0,
    "replay_chunk_chars": 24,
    "max_connections": 1000,
    "max_body_size": 16 * 1024 * 1024,
    "log_format": "auto",
    "log_level": "info",
    "log_content": False,
    "workers": 1,
    "loop": "auto",
    "shutdown_grace": 30.0,
    "simulate": False,
}


def test_settings_resolve_with_no_source_gives_contract_defaults() -> None:
    assert attrs.asdict(resolve()) == CONTRACT_DEFAULTS


def test_settings_default_url_is_api_straico_com() -> None:
    assert DEFAULT_STRAICO_URL == "https://api.straico.com"


def test_settings_default_streaming_config_equals_engine_defaults() -> None:
    assert resolve().streaming_config() == StreamingConfig()


# --- precedence: one test per level ------------------------------------------------------------


@attrs.frozen
class Layers:
    """One setting given at every level, and what each level alone should produce."""

    name: str
    file_value: object
    env_text: str
    flag_value: object
    from_file: object
    from_env: object
    from_flag: object

    @property
    def env_name(self) -> str:
        return "STRAICO_GATEWAY_" + self.name.upper()

    @property
    def base_flags(self) -> dict[str, object]:
        """Client keys need a server key; give one by flag so it never interferes."""
        return {"upstream_key": SERVER_KEY} if self.name == "client_keys" else {}


PRECEDENCE = [
    Layers("stream_timeout", 90, "45.5", "30", 90.0, 45.5, 30.0),
    Layers("fallback", False, "yes", False, False, True, False),
    Layers("streaming", "off", "on", "auto", "off", "on", "auto"),
    Layers("port", 9000, "9001", "9002", 9000, 9001, 9002),
    Layers("max_body_size", "1MiB", "2KB", "3", 1 * MIB, 2000, 3),
    Layers("client_keys", ["k1", "k2"], "k3,k4", "k5", ("k1", "k2"), ("k3", "k4"), ("k5",)),
    Layers("log_level", "debug", "WARNING", "error", "debug", "warning", "error"),
]


def layers_id(case: Layers) -> str:
    return case.name


@pytest.mark.parametrize("case", PRECEDENCE, ids=layers_id)
def test_settings_precedence_default_when_nothing_given(case: Layers) -> None:
    settings = resolve(case.base_flags, {}, {})
    assert getattr(settings, case.name) == CONTRACT_DEFAULTS[case.name]


@pytest.mark.parametrize("case", PRECEDENCE, ids=layers_id)
def test_settings_precedence_file_beats_default(case: Layers) -> None:
    settings = resolve(case.base_flags, {}, {case.name: case.file_value})
    assert getattr(settings, case.name) == case.from_file


@pytest.mark.parametrize("case", PRECEDENCE, ids=layers_id)
def test_settings_precedence_env_beats_file(case: Layers) -> None:
    settings = resolve(
        case.base_flags, {case.env_name: case.env_text}, {case.name: case.file_value}
    )
    assert getattr(settings, case.name) == case.from_env


@pytest.mark.parametrize("case", PRECEDENCE, ids=layers_id)
def test_settings_precedence_flag_beats_env(case: Layers) -> None:
    flags = {**case.base_flags, case.name: case.flag_value}
    settings = resolve(flags, {case.env_name: case.env_text}, {case.name: case.file_value})
    assert getattr(settings, case.name) == case.from_flag


def test_settings_flag_none_means_not_given() -> None:
    settings = resolve({"stream_timeout": None}, {"STRAICO_GATEWAY_STREAM_TIMEOUT": "7"})
    assert settings.stream_timeout == 7.0


def test_settings_empty_env_value_counts_as_unset() -> None:
    settings = resolve({}, {"STRAICO_GATEWAY_PORT": ""}, {"port": 9100})
    assert settings.port == 9100


def test_settings_unknown_flag_name_is_a_caller_bug() -> None:
    with pytest.raises(TypeError):
        resolve({"stream_timout": "5"})


# --- the upstream key (§9) ---------------------------------------------------------------------


def test_settings_straico_api_key_used_when_gateway_twin_unset() -> None:
    settings = resolve({}, {"STRAICO_API_KEY": SERVER_KEY})
    assert (settings.upstream_key, settings.server_key_mode) == (SERVER_KEY, True)


def test_settings_gateway_key_twin_beats_straico_api_key() -> None:
    env = {"STRAICO_API_KEY": "other", "STRAICO_GATEWAY_UPSTREAM_KEY": SERVER_KEY}
    assert resolve({}, env).upstream_key == SERVER_KEY


def test_settings_straico_api_key_beats_file_key() -> None:
    assert resolve({}, {"STRAICO_API_KEY": SERVER_KEY}, {"upstream_key": "k"}).upstream_key == (
        SERVER_KEY
    )


def test_settings_straico_api_key_ignored_for_openai_kind() -> None:
    flags = {"upstream_kind": "openai", "upstream_url": "http://127.0.0.1:9/v1"}
    settings = resolve(flags, {"STRAICO_API_KEY": SERVER_KEY})
    assert (settings.upstream_key, settings.server_key_mode) == (None, False)


def test_settings_straico_api_key_ignored_with_simulate() -> None:
    settings = resolve({"simulate": True}, {"STRAICO_API_KEY": SERVER_KEY})
    assert settings.upstream_key is None


def test_settings_no_key_is_per_request_mode() -> None:
    assert resolve().server_key_mode is False


def test_settings_simulate_is_server_key_mode_without_url() -> None:
    settings = resolve({"simulate": True})
    assert (settings.server_key_mode, settings.upstream_url) == (True, None)


def test_settings_repr_shows_no_key() -> None:
    settings = resolve({"upstream_key": SERVER_KEY, "client_keys": CLIENT_KEY_A})
    assert SERVER_KEY not in repr(settings) and CLIENT_KEY_A not in repr(settings)


# --- parsing text (flags and env) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[(word, True) for word in ("1", "true", "TRUE", "Yes", "on", " On ")],
        *[(word, False) for word in ("0", "false", "False", "NO", "off", "OFF")],
    ],
)
def test_settings_env_boolean_words(text: str, expected: bool) -> None:
    assert resolve({}, {"STRAICO_GATEWAY_LOG_CONTENT": text}).log_content == expected


def test_settings_env_boolean_invalid_names_flag_and_variable() -> None:
    message = error_of({}, {"STRAICO_GATEWAY_FALLBACK": "maybe"})
    assert message == (
        "--fallback: expected a boolean (1/0, true/false, yes/no, on/off), got 'maybe' "
        "(from STRAICO_GATEWAY_FALLBACK)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("k1", ("k1",)),
        ("k1,k2", ("k1", "k2")),
        (" k1 , k2 ,", ("k1", "k2")),
        ("k1,,k2,k1", ("k1", "k2")),
    ],
)
def test_settings_env_list_is_comma_separated(text: str, expected: tuple[str, ...]) -> None:
    env = {"STRAICO_GATEWAY_CLIENT_KEYS": text, "STRAICO_GATEWAY_UPSTREAM_KEY": SERVER_KEY}
    assert resolve({}, env).client_keys == expected


def test_settings_list_of_only_commas_is_an_error_without_echoing_it() -> None:
    message = error_of({"client_keys": " , ", "upstream_key": SERVER_KEY})
    assert message.startswith("--client-keys: expected ") and "' , '" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("1024", 1024),
        ("12B", 12),
        ("1KB", 1000),
        ("1kb", 1000),
        ("2MB", 2_000_000),
        ("1KiB", KIB),
        ("16MiB", 16 * MIB),
        ("16 mib", 16 * MIB),
        ("1GiB", GIB),
    ],
)
def test_settings_env_size_units(text: str, expected: int) -> None:
    assert resolve({}, {"STRAICO_GATEWAY_MAX_BODY_SIZE": text}).max_body_size == expected


@pytest.mark.parametrize("text", ["", "0", "-1", "1.5MB", "1TB", "MiB", "16 MiB x", "lots"])
def test_settings_invalid_size_names_flag(text: str) -> None:
    message = error_of({"max_body_size": text})
    assert message.startswith("--max-body-size: expected a size of at least 1 byte")


@pytest.mark.parametrize(
    ("text", "expected"), [("0", 0.0), ("1.5", 1.5), ("90", 90.0), (" 2 ", 2.0)]
)
def test_settings_env_duration_seconds(text: str, expected: float) -> None:
    assert resolve({}, {"STRAICO_GATEWAY_HEARTBEAT_INTERVAL": text}).heartbeat_interval == expected


@pytest.mark.parametrize("text", ["abc", "-1", "nan", "inf", "1e400", "10s"])
def test_settings_invalid_duration_names_flag_and_source(text: str) -> None:
    message = error_of({}, {"STRAICO_GATEWAY_SHUTDOWN_GRACE": text})
    assert message == (
        f"--shutdown-grace: expected non-negative seconds, got {text!r} "
        "(from STRAICO_GATEWAY_SHUTDOWN_GRACE)"
    )


def test_settings_invalid_flag_value_says_command_line() -> None:
    message = error_of({"stream_timeout": "abc"})
    assert message == (
        "--stream-timeout: expected positive seconds, got 'abc' (from the command line)"
    )


@pytest.mark.parametrize("text", ["Auto", "ON", " off "])
def test_settings_choices_are_case_insensitive(text: str) -> None:
    flags: dict[str, object] = {"streaming": text, "fallback": True}
    assert resolve(flags).streaming == text.strip().lower()


def test_settings_invalid_choice_lists_the_choices() -> None:
    assert error_of({"heartbeat_style": "bytes"}) == (
        "--heartbeat-style: expected one of comment, chunk, got 'bytes' (from the command line)"
    )


@pytest.mark.parametrize("text", ["80.5", "+80", "0x50", "eighty"])
def test_settings_port_must_be_a_whole_number(text: str) -> None:
    assert error_of({"port": text}).startswith("--port: expected an integer from 0 to 65535")


def test_settings_upstream_key_error_never_echoes_the_value() -> None:
    message = error_of({"upstream_key": "   "}, {})
    assert message == (
        "--upstream-key: expected a non-empty string, got a value of type str "
        "(from the command line)"
    )


# --- ranges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bad", "good"),
    [
        pytest.param("port", "65536", "65535", id="port-max"),
        pytest.param("port", "-1", "0", id="port-min"),
        pytest.param("workers", "0", "1", id="workers"),
        pytest.param("replay_chunk_chars", "0", "1", id="replay_chunk_chars"),
        pytest.param("max_connections", "0", "1", id="max_connections"),
        pytest.param("heartbeat_interval", "-0.5", "0", id="heartbeat_interval"),
        pytest.param("detection_cache_ttl", "-1", "0", id="detection_cache_ttl"),
        pytest.param("shutdown_grace", "-1", "0", id="shutdown_grace"),
        pytest.param("stream_timeout", "0", "0.001", id="stream_timeout"),
        pytest.param("answer_timeout", "0", "0.001", id="answer_timeout"),
        pytest.param("connect_timeout", "0", "0.001", id="connect_timeout"),
    ],
)
def test_settings_range_boundary(name: str, bad: str, good: str) -> None:
    flag = "--" + name.replace("_", "-")
    assert error_of({name: bad}).startswith(f"{flag}: expected ")
    assert str(getattr(resolve({name: good}), name)) in {good, str(float(good))}


# --- cross-field checks ------------------------------------------------------------------------


def test_settings_streaming_off_with_no_fallback_is_an_error() -> None:
    message = error_of({"fallback": False}, {"STRAICO_GATEWAY_STREAMING": "off"})
    assert message.startswith("--streaming off: cannot be combined with --no-fallback")


def test_settings_streaming_off_with_fallback_is_fine() -> None:
    assert resolve({"streaming": "off"}).streaming_config().force_streaming is False


def test_settings_client_keys_without_server_key_is_an_error() -> None:
    message = error_of({"client_keys": CLIENT_KEY_A})
    assert message.startswith("--client-keys: client keys need a server key")
    assert CLIENT_KEY_A not in message


def test_settings_client_keys_with_simulate_are_fine() -> None:
    assert resolve({"client_keys": CLIENT_KEY_A, "simulate": True}).client_keys == (CLIENT_KEY_A,)


def test_settings_simulate_with_upstream_url_is_an_error() -> None:
    message = error_of({"simulate": True}, {"STRAICO_GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9"})
    assert message == (
        "--simulate: cannot be combined with --upstream-url (given by "
        "STRAICO_GATEWAY_UPSTREAM_URL); the simulator is the upstream"
    )


def test_settings_simulate_with_openai_kind_is_an_error() -> None:
    message = error_of({"simulate": True}, {}, {"upstream_kind": "openai"})
    assert message == (
        "--simulate: cannot be combined with --upstream-kind openai (given by the config "
        "file); the simulator is a straico upstream"
    )


def test_settings_openai_kind_without_url_is_an_error() -> None:
    assert error_of({"upstream_kind": "openai"}).startswith(
        "--upstream-url: required with --upstream-kind openai"
    )


def test_settings_openai_kind_keeps_its_url_without_trailing_slash() -> None:
    flags = {"upstream_kind": "openai", "upstream_url": "http://127.0.0.1:8080/v1/"}
    assert resolve(flags).upstream_url == "http://127.0.0.1:8080/v1"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com",
        "http://",
        "example.com",
        "https:///v1",
        "http://h:99999",
        "http://exa mple.com",
        "x",
    ],
)
def test_settings_invalid_upstream_url_is_an_error(url: str) -> None:
    message = error_of({"upstream_url": url})
    assert message == (
        f"--upstream-url: expected an http or https URL with a host, got {url!r} "
        "(from the command line)"
    )


def test_settings_client_keys_file_is_read_and_merged(tmp_path: Path) -> None:
    keys_file = write(
        tmp_path,
        "keys.txt",
        f"# team keys\n\n  {CLIENT_KEY_B}  \n#{CLIENT_KEY_A}\n{CLIENT_KEY_A}\n",
    )
    flags = {
        "upstream_key": SERVER_KEY,
        "client_keys": CLIENT_KEY_A,
        "client_keys_file": str(keys_file),
    }
    assert resolve(flags).client_keys == (CLIENT_KEY_A, CLIENT_KEY_B)


def test_settings_client_keys_file_alone_needs_a_server_key(tmp_path: Path) -> None:
    keys_file = write(tmp_path, "keys.txt", f"{CLIENT_KEY_A}\n")
    message = error_of({"client_keys_file": str(keys_file)})
    assert message.startswith("--client-keys: client keys need a server key")


def test_settings_client_keys_file_missing_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    message = error_of({"client_keys_file": str(missing), "upstream_key": SERVER_KEY})
    assert message == f"--client-keys-file: cannot read {str(missing)!r}: No such file or directory"


def test_settings_client_keys_file_without_keys_is_an_error(tmp_path: Path) -> None:
    keys_file = write(tmp_path, "keys.txt", "# nothing yet\n\n")
    message = error_of({"client_keys_file": str(keys_file), "upstream_key": SERVER_KEY})
    assert message == f"--client-keys-file: {str(keys_file)!r} holds no key"


# --- config files ------------------------------------------------------------------------------


def test_load_config_file_reads_contract_example(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gateway.toml",
        'stream_timeout = 90\nfallback = false\nstreaming = "auto"\nclient_keys = ["k1", "k2"]\n'
        'max_body_size = "1MiB"\nupstream_key = "sk"\n',
    )
    assert load_config_file(path) == {
        "stream_timeout": 90.0,
        "fallback": False,
        "streaming": "auto",
        "client_keys": ("k1", "k2"),
        "max_body_size": MIB,
        "upstream_key": "sk",
    }


def test_load_config_file_result_resolves(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway.toml", 'streaming = "on"\nmax_body_size = 2048\n')
    settings = resolve({}, {}, load_config_file(path))
    assert (settings.streaming, settings.max_body_size) == ("on", 2048)


def test_load_config_file_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway.toml", "stream_timout = 90\n")
    with pytest.raises(SettingsError) as caught:
        load_config_file(path)
    assert caught.value.message == (
        f"--config: unknown key 'stream_timout' in config file {str(path)!r}; "
        "did you mean 'stream_timeout'?"
    )


def test_load_config_file_table_is_an_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway.toml", "[server]\nport = 1\n")
    with pytest.raises(SettingsError, match="unknown key 'server'"):
        load_config_file(path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            'stream_timeout = "90"',
            "--stream-timeout: expected positive seconds, got '90'",
            id="string-for-seconds",
        ),
        pytest.param(
            'fallback = "false"',
            "--fallback: expected a boolean (1/0, true/false, yes/no, on/off), got 'false'",
            id="string-for-bool",
        ),
        pytest.param(
            "port = true",
            "--port: expected an integer from 0 to 65535, got True",
            id="bool-for-int",
        ),
        pytest.param(
            "workers = 2.0", "--workers: expected an integer >= 1, got 2.0", id="float-for-int"
        ),
        pytest.param(
            'streaming = "sometimes"',
            "--streaming: expected one of auto, on, off, got 'sometimes'",
            id="bad-choice",
        ),
        pytest.param(
            'client_keys = "k1,k2"',
            "--client-keys: expected a comma-separated list (in a file: an array) of non-empty "
            "keys, got a value of type str",
            id="string-for-list",
        ),
        pytest.param(
            "client_keys = [1, 2]",
            "--client-keys: expected a comma-separated list (in a file: an array) of non-empty "
            "keys, got a value of type list",
            id="numbers-in-list",
        ),
        pytest.param(
            "stream_timeout = 0",
            "--stream-timeout: expected positive seconds, got 0",
            id="out-of-range",
        ),
    ],
)
def test_load_config_file_wrong_value_names_setting(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = write(tmp_path, "gateway.toml", line + "\n")
    name = line.split(" = ", maxsplit=1)[0]
    with pytest.raises(SettingsError) as caught:
        load_config_file(path)
    assert caught.value.message == f"{expected} (from config file {str(path)!r}, key {name})"


def test_load_config_file_bad_toml_names_config(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway.toml", "stream_timeout = \n")
    with pytest.raises(SettingsError) as caught:
        load_config_file(path)
    assert caught.value.message.startswith(f"--config: {str(path)!r} is not valid TOML: ")


def test_load_config_file_missing_names_config(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(SettingsError) as caught:
        load_config_file(path)
    assert caught.value.message == f"--config: cannot read {str(path)!r}: No such file or directory"


def test_settings_resolve_checks_file_mapping_too() -> None:
    assert error_of({}, {}, {"fallback": "no"}).startswith("--fallback: expected a boolean")
    assert error_of({}, {}, {"bogus": 1}) == "--config: unknown key 'bogus' in the config file"


# --- engine configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(("streaming", "forced"), [("auto", None), ("on", True), ("off", False)])
def test_settings_streaming_config_maps_streaming_mode(streaming: str, forced: bool | None) -> None:
    assert resolve({"streaming": streaming}).streaming_config().force_streaming is forced


def test_settings_streaming_config_maps_every_engine_field() -> None:
    settings = resolve(
        {
            "detection_cache_ttl": "0",
            "fallback": False,
            "stream_timeout": "5",
            "answer_timeout": "6",
            "heartbeat_interval": "0.5",
            "heartbeat_style": "chunk",
            "replay_chunk_chars": "3",
        }
    )
    assert settings.streaming_config() == StreamingConfig(
        force_streaming=None,
        detection_cache_duration=0.0,
        enable_fallback=False,
        streaming_timeout=5.0,
        answer_timeout=6.0,
        heartbeat_interval=0.5,
        heartbeat_style="chunk",
        replay_chunk_chars=3,
    )


# --- to_toml -----------------------------------------------------------------------------------


def keyed_settings(tmp_path: Path) -> Settings:
    keys_file = write(tmp_path, "keys.txt", f"{CLIENT_KEY_B}\n")
    return resolve(
        {
            "upstream_kind": "openai",
            "upstream_url": "https://user:pa55word@127.0.0.1:8443/v1",
            "upstream_key": SERVER_KEY,
            "client_keys": CLIENT_KEY_A,
            "client_keys_file": str(keys_file),
            "max_body_size": "1KiB",
            "stream_timeout": "1.5",
            "host": 'we"ird\\ho\tst\x7f\nx\x01é',
        }
    )


def test_settings_to_toml_parses_and_matches_settings(tmp_path: Path) -> None:
    settings = keyed_settings(tmp_path)
    printed = tomllib.loads(settings.to_toml())
    expected = attrs.asdict(settings)
    expected["upstream_key"] = REDACTED
    expected["client_keys"] = (REDACTED, REDACTED)
    expected["upstream_url"] = "https://user:***@127.0.0.1:8443/v1"
    assert {**printed, "client_keys": tuple(printed["client_keys"])} == expected


def test_settings_to_toml_never_shows_a_key(tmp_path: Path) -> None:
    printed = keyed_settings(tmp_path).to_toml()
    for secret in (SERVER_KEY, CLIENT_KEY_A, CLIENT_KEY_B, "pa55word"):
        assert secret not in printed


def test_settings_to_toml_unset_values_are_comments() -> None:
    printed = resolve({"simulate": True}).to_toml()
    assert "# upstream_url is not set" in printed.splitlines()
    assert "upstream_url" not in tomllib.loads(printed)


def test_settings_to_toml_unredacted_loads_back_to_equal_settings(tmp_path: Path) -> None:
    settings = keyed_settings(tmp_path)
    path = write(tmp_path, "printed.toml", settings.to_toml(redact=False))
    assert resolve({}, {}, load_config_file(path)) == settings
