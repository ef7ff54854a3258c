"""
The service's settings: every flag of ``serve`` (contract §10), where each value comes from, and
the checks that stop start-up.

Rules:

1. One setting per flag. ``--stream-timeout`` has the environment twin
   ``STRAICO_GATEWAY_STREAM_TIMEOUT`` and the config file key ``stream_timeout``.
2. Precedence is flag > environment > config file > default. Defaults live only on ``Settings``;
   a flag that was not given is ``None`` (or absent) in the mapping ``Settings.resolve`` gets.
3. Text (a flag's or an environment variable's value) is parsed: booleans accept
   1/0/true/false/yes/no/on/off, lists are comma-separated, sizes are bytes or a whole number
   with B/KB/MB/KiB/MiB/GiB (KB = 1000, KiB = 1024), durations are seconds. A config file's values
   must already have the right TOML type and are never coerced (``"90"`` is not a number), with
   one exception: a size may be a string with a unit (``max_body_size = "16MiB"``).
4. Every problem raises ``SettingsError``, whose message names the flag and where the value came
   from; nothing else escapes ``resolve`` and ``load_config_file``.
5. Keys never appear in a repr, an error message or ``to_toml(redact=True)`` (contract §9).

Choices the contract leaves open:

- An environment variable set to the empty string counts as unset.
- Choices (``--streaming``, ``--log-level``, ...) are case-insensitive and stored in lower case;
  ``--log-level`` is one of debug, info, warning, error, critical.
- ``STRAICO_API_KEY`` stands at the environment level, just below
  ``STRAICO_GATEWAY_UPSTREAM_KEY``; it is not consulted with ``--simulate``, whose upstream
  expects the simulator's own key, not the real Straico one.
- With ``--simulate`` the settings keep ``upstream_url`` and ``upstream_key`` unset (the
  simulator's URL is known only once it listens); ``server_key_mode`` is still True, because the
  gateway then calls the simulator with its key.
- A trailing ``/`` of ``--upstream-url`` is removed, since paths are appended to it.
- Client keys are stripped of surrounding blanks and empty ones dropped; a list that ends up
  empty, or a ``--client-keys-file`` that holds no key, is an error rather than a silently open
  gateway. Keys from ``--client-keys`` come first, then the file's, without duplicates.
- ``--max-body-size`` is at least 1 byte; ``--shutdown-grace`` may be 0.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs
import cattrs

from engine.config import SECONDS, StreamingConfig

__all__ = [
    "BYTES",
    "DEFAULT_STRAICO_URL",
    "ENV_PREFIX",
    "GIB",
    "KIB",
    "MIB",
    "REDACTED",
    "STRAICO_API_KEY_ENV",
    "HeartbeatStyle",
    "LogFormat",
    "LogLevel",
    "LoopKind",
    "Settings",
    "SettingsError",
    "StreamingMode",
    "UpstreamKind",
    "env_name_of",
    "flag_of",
    "load_config_file",
]

BYTES = 1
KIB = 1024 * BYTES
MIB = 1024 * KIB
GIB = 1024 * MIB
_SIZE_UNITS = {"b": BYTES, "kb": 1000, "mb": 1000 * 1000, "kib": KIB, "mib": MIB, "gib": GIB}

ENV_PREFIX = "STRAICO_GATEWAY_"
#: Straico's own variable, read for the upstream key when kind is straico (contract §9).
STRAICO_API_KEY_ENV = "STRAICO_API_KEY"
DEFAULT_STRAICO_URL = "https://api.straico.com"
#: How a key is shown by ``to_toml(redact=True)``.
REDACTED = "***"

UpstreamKind = Literal["straico", "openai"]
StreamingMode = Literal["auto", "on", "off"]
HeartbeatStyle = Literal["comment", "chunk"]
LogFormat = Literal["json", "console", "auto"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LoopKind = Literal["auto", "asyncio", "uvloop"]


class SettingsError(Exception):
    """A setting is invalid, so the service cannot start; the message names the flag."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen(kw_only=True)
class Settings:
    """
    The effective configuration of ``serve``: one field per flag of contract §10.

    Build it with ``Settings.resolve``, which applies precedence and every check; constructing
    it directly (as tests do) checks nothing.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    upstream_kind: UpstreamKind = "straico"
    #: ``None`` until resolved: straico's default URL, or the simulator's with ``--simulate``.
    upstream_url: str | None = None
    #: The server key; ``None`` is per-request mode (the client's bearer token goes upstream).
    upstream_key: str | None = attrs.field(default=None, repr=False)
    #: Keys clients must present; after ``resolve`` this includes the keys file's.
    client_keys: tuple[str, ...] = attrs.field(default=(), repr=False)
    client_keys_file: str | None = None
    streaming: StreamingMode = "auto"
    detection_cache_ttl: float = 600 * SECONDS
    fallback: bool = True
    heartbeat_interval: float = 10 * SECONDS
    heartbeat_style: HeartbeatStyle = "comment"
    stream_timeout: float = 120 * SECONDS
    answer_timeout: float = 300 * SECONDS
    connect_timeout: float = 10 * SECONDS
    replay_chunk_chars: int = 24
    max_connections: int = 1000
    max_body_size: int = 16 * MIB
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"
    log_content: bool = False
    workers: int = 1
    loop: LoopKind = "auto"
    shutdown_grace: float = 30 * SECONDS
    simulate: bool = False

    @classmethod
    def resolve(
        cls,
        flags: Mapping[str, object],
        *,
        env: Mapping[str, str],
        file: Mapping[str, object] | None,
    ) -> Settings:
        """
        Combine the four sources, flag > env > file > default, and check the result.

        Args:
            flags: setting name (snake case) to the flag's value; ``None`` means not given.
                A string is parsed like an environment value; anything else must have the
                setting's type already.
            env: the process environment (``os.environ``); only ``STRAICO_GATEWAY_*`` and
                ``STRAICO_API_KEY`` are read.
            file: the config file's values (``load_config_file``), or ``None``.

        Returns:
            The effective settings, with ``upstream_url`` filled in and the client keys file read.

        Raises:
            SettingsError: a value is invalid, a file key is unknown, or two settings conflict.
            TypeError: *flags* names no setting (a bug in the caller).
        """
        unknown_flags = sorted(set(flags) - set(_SPECS))
        if unknown_flags:
            raise TypeError(f"unknown settings in flags: {', '.join(unknown_flags)}")
        if file is not None:
            _reject_unknown_keys(file, where="the config file")

        given: dict[str, _Given] = {}
        for name in _SPECS:
            found = _pick(name, flags, env, file)
            if found is not None:
                given[name] = found
        kind = given["upstream_kind"].value if "upstream_kind" in given else "straico"
        simulate = given["simulate"].value if "simulate" in given else False
        # §9: with kind straico, STRAICO_API_KEY stands in for an unset STRAICO_GATEWAY_ twin.
        api_key = env.get(STRAICO_API_KEY_ENV, "").strip()
        key_given = given["upstream_key"].level if "upstream_key" in given else None
        if kind == "straico" and not simulate and api_key and key_given in (None, "file"):
            given["upstream_key"] = _Given.read("upstream_key", api_key, "env", STRAICO_API_KEY_ENV)
        _check_conflicts(given, kind=kind, simulate=simulate)

        values = {name: found.value for name, found in given.items()}
        if kind == "straico" and not simulate:
            values.setdefault("upstream_url", DEFAULT_STRAICO_URL)
        if "client_keys_file" in values:
            file_keys = _read_client_keys_file(values["client_keys_file"])
            values["client_keys"] = _unique((*values.get("client_keys", ()), *file_keys))
        settings = cls(**values)
        if settings.client_keys and not settings.server_key_mode:
            raise SettingsError(
                "--client-keys: client keys need a server key; set --upstream-key "
                f"(or {env_name_of('upstream_key')}) or drop the client keys"
            )
        return settings

    @property
    def server_key_mode(self) -> bool:
        """True when one upstream key serves every request (contract §9)."""
        return self.upstream_key is not None or self.simulate

    def streaming_config(self) -> StreamingConfig:
        """The engine's configuration (contract §3); the one place settings become it."""
        return StreamingConfig(
            force_streaming=_FORCE_STREAMING[self.streaming],
            detection_cache_duration=self.detection_cache_ttl,
            enable_fallback=self.fallback,
            streaming_timeout=self.stream_timeout,
            answer_timeout=self.answer_timeout,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_style=self.heartbeat_style,
            replay_chunk_chars=self.replay_chunk_chars,
        )

    def to_toml(self, *, redact: bool = True) -> str:
        """
        The effective configuration as a TOML config file (what ``--print-config`` prints).

        Args:
            redact: show every key, and a password in the upstream URL, as ``"***"``.
                With ``redact=False`` the text loads back into equal settings.

        Returns:
            One ``name = value`` line per setting; an unset one is a comment.
        """
        lines = ["# straico-gateway: effective configuration"]
        for field in attrs.fields(Settings):
            value = getattr(self, field.name)
            if redact and field.name in _SECRET:
                value = _redacted(value)
            elif redact and field.name == "upstream_url" and value is not None:
                value = _redact_url_password(value)
            if value is None:
                lines.append(f"# {field.name} is not set")
            else:
                lines.append(f"{field.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def flag_of(name: str) -> str:
    """The command-line spelling of a setting: ``stream_timeout`` -> ``--stream-timeout``."""
    return "--" + name.replace("_", "-")


def env_name_of(name: str) -> str:
    """The environment twin of a setting: ``port`` -> ``STRAICO_GATEWAY_PORT``."""
    return ENV_PREFIX + name.upper()


def load_config_file(path: str | os.PathLike[str]) -> dict[str, object]:
    """
    Read a TOML config file whose keys are setting names in snake case.

    Args:
        path: the file given with ``--config``.

    Returns:
        Each key's checked value (sizes in bytes, lists as tuples), ready for ``Settings.resolve``.

    Raises:
        SettingsError: the file cannot be read or parsed, a key is unknown, or a value is invalid.
    """
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(f"--config: cannot read {os.fspath(path)!r}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"--config: {os.fspath(path)!r} is not valid TOML: {exc}") from exc
    where = f"config file {os.fspath(path)!r}"
    _reject_unknown_keys(data, where=where)
    return {
        name: _SPECS[name].convert(name, value, source=f"{where}, key {name}", typed=True)
        for name, value in data.items()
    }


# --- how each setting is read ------------------------------------------------------------------


def _make_strict_converter() -> cattrs.Converter:
    """A converter that checks types instead of coercing them (stack-notes §5)."""
    converter = cattrs.Converter(forbid_extra_keys=True)

    def exact(*accepted: type) -> Callable[[object, type], object]:
        def hook(value: object, target: type) -> object:
            # bool is an int in Python, but `fallback = 1` or `port = true` is a mistake.
            if (isinstance(value, bool) and bool not in accepted) or not isinstance(
                value, accepted
            ):
                raise TypeError(f"expected {target.__name__}, got {type(value).__name__}")
            if target is float and isinstance(value, int | float):
                return float(value)  # TOML `stream_timeout = 90` is an int
            return value

        return hook

    for target, accepted in ((str, (str,)), (bool, (bool,)), (int, (int,)), (float, (int, float))):
        converter.register_structure_hook(target, exact(*accepted))

    def string_list(value: object, _: type) -> tuple[str, ...]:
        # A TOML string is iterable too: without this "k1,k2" would become its characters.
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return tuple(converter.structure(item, str) for item in value)

    converter.register_structure_hook_func(lambda target: target == tuple[str, ...], string_list)
    return converter


_STRICT = _make_strict_converter()
_INVALID = (ValueError, TypeError, cattrs.errors.CattrsError, cattrs.BaseValidationError)


@attrs.frozen
class _Spec:
    """How one setting's value is read from text and from a typed source."""

    #: What a valid value looks like, for error messages.
    expected: str
    #: Text (a flag or an environment variable) to the value; raises ValueError.
    parse: Callable[[str], Any]
    #: A typed value (a config file's) to the value; raises on a wrong type or value.
    load: Callable[[object], Any]
    #: Never echo the value in an error message.
    secret: bool = False

    def convert(self, name: str, raw: object, *, source: str, typed: bool = False) -> Any:
        """Read *raw* from *source*, or raise ``SettingsError`` naming the flag and the source."""
        try:
            if isinstance(raw, str) and not typed:
                return self.parse(raw)
            return self.load(raw)
        except _INVALID as exc:
            shown = f"a value of type {type(raw).__name__}" if self.secret else repr(raw)
            raise SettingsError(
                f"{flag_of(name)}: expected {self.expected}, got {shown} (from {source})"
            ) from exc


def _seconds(*, positive: bool = False) -> _Spec:
    def check(value: float) -> float:
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(value)
        return value

    return _Spec(
        expected="positive seconds" if positive else "non-negative seconds",
        parse=lambda text: check(float(text)),
        load=lambda value: check(_STRICT.structure(value, float)),
    )


def _integer(minimum: int, maximum: int | None = None) -> _Spec:
    def check(value: int) -> int:
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(value)
        return value

    def parse(text: str) -> int:
        if not re.fullmatch(r"\d+", text.strip()):
            raise ValueError(text)
        return check(int(text))

    expected = (
        f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    )
    return _Spec(expected, parse, lambda value: check(_STRICT.structure(value, int)))


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _boolean() -> _Spec:
    def parse(text: str) -> bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ValueError(text)

    return _Spec(
        expected="a boolean (1/0, true/false, yes/no, on/off)",
        parse=parse,
        load=lambda value: _STRICT.structure(value, bool),
    )


def _choice(*choices: str) -> _Spec:
    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in choices:
            raise ValueError(text)
        return word

    return _Spec(
        expected="one of " + ", ".join(choices),
        parse=parse,
        load=lambda value: parse(_STRICT.structure(value, str)),
    )


def _text(*, secret: bool = False) -> _Spec:
    def parse(text: str) -> str:
        stripped = text.strip()
        if not stripped:
            raise ValueError(text)
        return stripped

    return _Spec(
        expected="a non-empty string",
        parse=parse,
        load=lambda value: parse(_STRICT.structure(value, str)),
        secret=secret,
    )


def _url() -> _Spec:
    def parse(text: str) -> str:
        url = text.strip().rstrip("/")
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
        if parts.scheme not in {"http", "https"} or not parts.hostname or " " in url:
            raise ValueError(text)
        return url

    return _Spec(
        expected="an http or https URL with a host",
        parse=parse,
        load=lambda value: parse(_STRICT.structure(value, str)),
    )


def _size() -> _Spec:
    def check(value: int) -> int:
        if value < 1:
            raise ValueError(value)
        return value

    def parse(text: str) -> int:
        match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
        if match is None or match[2].lower() not in {"", *_SIZE_UNITS}:
            raise ValueError(text)
        return check(int(match[1]) * _SIZE_UNITS.get(match[2].lower(), BYTES))

    def load(value: object) -> int:
        if isinstance(value, str):
            return parse(value)
        return check(_STRICT.structure(value, int))

    return _Spec(
        "a size of at least 1 byte: bytes, or a number with B/KB/MB/KiB/MiB/GiB", parse, load
    )


def _keys() -> _Spec:
    def check(keys: Iterable[str]) -> tuple[str, ...]:
        kept = _unique(key.strip() for key in keys if key.strip())
        if not kept:
            raise ValueError("no key")
        return kept

    return _Spec(
        expected="a comma-separated list (in a file: an array) of non-empty keys",
        parse=lambda text: check(text.split(",")),
        load=lambda value: check(_STRICT.structure(value, tuple[str, ...])),
        secret=True,
    )


#: Every setting, in the order of contract §10.
_SPECS: dict[str, _Spec] = {
    "host": _text(),
    "port": _integer(0, 65535),
    "upstream_kind": _choice("straico", "openai"),
    "upstream_url": _url(),
    "upstream_key": _text(secret=True),
    "client_keys": _keys(),
    "client_keys_file": _text(),
    "streaming": _choice("auto", "on", "off"),
    "detection_cache_ttl": _seconds(),
    "fallback": _boolean(),
    "heartbeat_interval": _seconds(),
    "heartbeat_style": _choice("comment", "chunk"),
    "stream_timeout": _seconds(positive=True),
    "answer_timeout": _seconds(positive=True),
    "connect_timeout": _seconds(positive=True),
    "replay_chunk_chars": _integer(1),
    "max_connections": _integer(1),
    "max_body_size": _size(),
    "log_format": _choice("json", "console", "auto"),
    "log_level": _choice("debug", "info", "warning", "error", "critical"),
    "log_content": _boolean(),
    "workers": _integer(1),
    "loop": _choice("auto", "asyncio", "uvloop"),
    "shutdown_grace": _seconds(),
    "simulate": _boolean(),
}
_SECRET = frozenset({"upstream_key", "client_keys"})
_FORCE_STREAMING: dict[StreamingMode, bool | None] = {"auto": None, "on": True, "off": False}


_Level = Literal["flag", "env", "file"]


@attrs.frozen
class _Given:
    """A setting's value, read from the highest source that gives it."""

    value: Any
    level: _Level
    #: Who gave it, for messages: ``--port``, ``STRAICO_GATEWAY_PORT`` or ``the config file``.
    origin: str

    @classmethod
    def read(cls, name: str, raw: object, level: _Level, origin: str) -> _Given:
        source = "the command line" if level == "flag" else origin
        value = _SPECS[name].convert(name, raw, source=source, typed=level == "file")
        return cls(value, level, origin)


def _pick(
    name: str,
    flags: Mapping[str, object],
    env: Mapping[str, str],
    file: Mapping[str, object] | None,
) -> _Given | None:
    """The setting from the first source that gives it: flag, then env, then file."""
    flag_value = flags.get(name)
    if flag_value is not None:
        return _Given.read(name, flag_value, "flag", flag_of(name))
    env_name = env_name_of(name)
    env_value = env.get(env_name, "")
    if env_value.strip():
        return _Given.read(name, env_value, "env", env_name)
    if file is not None and name in file:
        return _Given.read(name, file[name], "file", "the config file")
    return None


def _check_conflicts(given: Mapping[str, _Given], *, kind: str, simulate: bool) -> None:
    """The checks that involve more than one setting (contract §9, §10, D10)."""
    if simulate and "upstream_url" in given:
        raise SettingsError(
            "--simulate: cannot be combined with --upstream-url (given by "
            f"{given['upstream_url'].origin}); the simulator is the upstream"
        )
    if simulate and kind == "openai":
        raise SettingsError(
            "--simulate: cannot be combined with --upstream-kind openai (given by "
            f"{given['upstream_kind'].origin}); the simulator is a straico upstream"
        )
    if kind == "openai" and "upstream_url" not in given:
        raise SettingsError(
            "--upstream-url: required with --upstream-kind openai; give the base URL with "
            "its /v1, as for the openai SDK's base_url (e.g. https://api.openai.com/v1)"
        )
    streaming = given.get("streaming")
    fallback = given.get("fallback")
    if streaming and streaming.value == "off" and fallback and fallback.value is False:
        raise SettingsError(
            "--streaming off: cannot be combined with --no-fallback, since a streaming "
            "client could then never be answered (D10); use --streaming auto or --fallback"
        )


def _reject_unknown_keys(data: Mapping[str, object], *, where: str) -> None:
    for key in data:
        if key not in _SPECS:
            close = difflib.get_close_matches(key, _SPECS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SettingsError(f"--config: unknown key {key!r} in {where}{hint}")


def _read_client_keys_file(path: str) -> tuple[str, ...]:
    """The keys of a client keys file: one a line, blank lines and ``#`` comments ignored."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"--client-keys-file: cannot read {path!r}: {reason}") from exc
    keys = _unique(
        stripped for line in lines if (stripped := line.strip()) and not stripped.startswith("#")
    )
    if not keys:
        raise SettingsError(f"--client-keys-file: {path!r} holds no key")
    return keys


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


# --- TOML output -------------------------------------------------------------------------------


def _redacted(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(REDACTED for _ in value)
    return None if value is None else REDACTED


def _redact_url_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:{REDACTED}@{parts.netloc.rpartition('@')[2]}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# TOML basic strings must escape ", \ and the control characters other than tab.
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}


def _toml_string(text: str) -> str:
    escaped = "".join(
        _TOML_ESCAPES.get(char)
        or (
            f"\\u{ord(char):04x}" if (ord(char) < 0x20 and char != "\t") or char == "\x7f" else char
        )
        for char in text
    )
    return f'"{escaped}"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")
