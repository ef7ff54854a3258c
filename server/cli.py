"""
The ``straico-gateway`` command line: each subcommand is a thin layer over one function.

Rules:

1. ``serve`` options default to ``None``, "not given". Defaults, environment twins, parsing and
   every check live in ``server.settings`` (flag > env > file > default, contract §10), so the
   options take plain text, have no ``envvar=``, and the same value is judged the same way
   whichever source gave it.
2. ``--config`` has the environment twin ``STRAICO_GATEWAY_CONFIG``; ``--print-config`` has none.
3. A start-up problem prints ``straico-gateway: error: <message>`` on stderr and exits with
   ``STARTUP_FAILURE`` (3), never with a traceback. Click's own usage errors (an unknown option,
   a missing argument) keep click's exit code 2.
4. ``simulate`` takes its own flags, with no environment twins (contract §12).
5. ``trace`` reads request log lines (contract §11) through ``server.audit``; it takes its own
   flags, with no environment twins. Skipped lines are reported on stderr and do not change the
   exit code; a diagram that cannot be drawn exits with ``TRACE_FAILURE`` (2), never a traceback.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from server import audit
from server.settings import (
    DEFAULT_STRAICO_URL,
    MIB,
    Settings,
    SettingsError,
    env_name_of,
    flag_of,
    load_config_file,
)

__all__ = ["PROG_NAME", "STARTUP_FAILURE", "TRACE_FAILURE", "main"]

PROG_NAME = "straico-gateway"
#: Exit code when the settings stop start-up (uvicorn uses the same).
STARTUP_FAILURE = 3
#: Exit code when ``trace`` cannot do what was asked (no Graphviz for an image), as click's own.
TRACE_FAILURE = 2
CONFIG_ENV = env_name_of("config")

SIMULATOR_HOST = "127.0.0.1"
SIMULATOR_PORT = 8001
SIMULATOR_KEY = "sim-key"

_Command = TypeVar("_Command", bound=Callable[..., Any])
_DEFAULTS = Settings()


def _version() -> str:
    try:
        return importlib.metadata.version(PROG_NAME)
    except importlib.metadata.PackageNotFoundError:  # running from a checkout, not installed
        return "unknown (not installed)"


def _shown_default(name: str) -> str | None:
    """The default of a setting as the help shows it, or None when it has none to show."""
    value = getattr(_DEFAULTS, name)
    if value is None or value == ():
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if name == "max_body_size" and value % MIB == 0:
        return f"{value // MIB}MiB"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _help(name: str, text: str) -> str:
    default = _shown_default(name)
    return text if default is None else f"{text}  [default: {default}]"


def _value(name: str, metavar: str, text: str) -> Callable[[_Command], _Command]:
    return click.option(flag_of(name), name, default=None, metavar=metavar, help=_help(name, text))


def _switch(name: str, declaration: str, text: str) -> Callable[[_Command], _Command]:
    return click.option(declaration, name, is_flag=True, default=None, help=_help(name, text))


#: One option per setting, in the order of contract §10.
_SERVE_OPTIONS = (
    _value("host", "HOST", "Address to listen on."),
    _value("port", "PORT", "Port to listen on."),
    _value("upstream_kind", "[straico|openai]", "The upstream's API."),
    _value(
        "upstream_url",
        "URL",
        f"Upstream base URL; for openai required, with its /v1.  [default: {DEFAULT_STRAICO_URL}"
        " for straico]",
    ),
    _value(
        "upstream_key",
        "KEY",
        "Key for every upstream call (also STRAICO_API_KEY for straico); without it each "
        "client's own bearer token goes upstream.",
    ),
    _value("client_keys", "K1,K2", "Keys a client must present (needs an upstream key)."),
    _value("client_keys_file", "FILE", "File of client keys, one a line, '#' comments allowed."),
    _value("streaming", "[auto|on|off]", "Ask the upstream to stream: auto detects per model."),
    _value(
        "detection_cache_ttl", "SECONDS", "How long a detected capability is trusted; 0: never."
    ),
    _switch(
        "fallback",
        "--fallback/--no-fallback",
        "Replay a whole answer as a stream when the upstream does not stream, or fail.",
    ),
    _value(
        "heartbeat_interval", "SECONDS", "Silence before a keep-alive to a waiting client; 0: none."
    ),
    _value("heartbeat_style", "[comment|chunk]", "Keep-alive as an SSE comment or an empty chunk."),
    _value("stream_timeout", "SECONDS", "Longest silence allowed from an upstream stream."),
    _value("answer_timeout", "SECONDS", "Longest wait for an upstream answer."),
    _value("connect_timeout", "SECONDS", "Longest wait to connect to the upstream."),
    _value("replay_chunk_chars", "N", "Largest delta, in characters, when replaying an answer."),
    _value("max_connections", "N", "Most upstream connections at once."),
    _value("max_body_size", "SIZE", "Largest request body: bytes, or with B/KB/MB/KiB/MiB/GiB."),
    _value("log_format", "[json|console|auto]", "Log format; auto: console on a terminal."),
    _value("log_level", "[debug|info|warning|error|critical]", "Lowest level logged."),
    _switch(
        "log_content",
        "--log-content/--no-log-content",
        "Log each request's messages and answer.",
    ),
    _value("workers", "N", "Worker processes sharing the listening socket."),
    _value("loop", "[auto|asyncio|uvloop]", "Event loop; auto: uvloop where installed."),
    _value("shutdown_grace", "SECONDS", "Time in-flight requests get after SIGTERM or SIGINT."),
    _switch("simulate", "--simulate", "Use the built-in Straico simulator as the upstream."),
)


def _serve_options(command: _Command) -> _Command:
    for option in reversed(_SERVE_OPTIONS):  # decorators apply bottom-up; keep §10's order
        command = option(command)
    return command


def _fail_startup(exc: SettingsError) -> None:
    click.echo(f"{PROG_NAME}: error: {exc.message}", err=True)
    click.get_current_context().exit(STARTUP_FAILURE)


def _effective_settings(flags: dict[str, object], config: str | None) -> Settings:
    config_path = config or os.environ.get(CONFIG_ENV, "").strip() or None
    file = load_config_file(config_path) if config_path is not None else None
    return Settings.resolve(flags, env=os.environ, file=file)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name=PROG_NAME)
def main() -> None:
    """An OpenAI-compatible streaming chat gateway for Straico and OpenAI-compatible upstreams."""


@main.command(
    epilog=(
        "Every option also reads the environment variable STRAICO_GATEWAY_<OPTION> "
        "(e.g. STRAICO_GATEWAY_STREAM_TIMEOUT) and the config file key <option> "
        "(e.g. stream_timeout = 90); precedence: option > environment > file > default."
    )
)
@_serve_options
@click.option("--config", metavar="FILE", default=None, help="TOML file of settings.")
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the effective configuration as TOML, keys hidden, and exit.",
)
def serve(config: str | None, print_config: bool, **flags: object) -> None:
    """Run the gateway."""
    try:
        settings = _effective_settings(flags, config)
        if print_config:
            click.echo(settings.to_toml(), nl=False)
            return
        from server.run import run

        run(settings)
    except SettingsError as exc:
        _fail_startup(exc)


@main.command()
@click.option(
    "--host",
    default=SIMULATOR_HOST,
    metavar="HOST",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    default=SIMULATOR_PORT,
    type=click.IntRange(0, 65535),
    metavar="PORT",
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--key",
    default=SIMULATOR_KEY,
    metavar="KEY",
    show_default=True,
    help="The key clients must send.",
)
def simulate(host: str, port: int, key: str) -> None:
    """Serve the built-in Straico simulator (for demos and tests)."""
    from server.simulator.run import run_simulator

    run_simulator(host, port, key)


#: What ``trace --diagram --output FILE`` writes, by the file's suffix.
_DIAGRAM_SUFFIXES = {".mmd": "mermaid", ".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png"}


def _listed(given: tuple[str, ...]) -> frozenset[str]:
    """Values of a repeatable option, each of which may also be a comma-separated list."""
    return frozenset(value.strip() for item in given for value in item.split(",") if value.strip())


def _check_outcomes(_ctx: click.Context, _param: click.Parameter, given: tuple[str, ...]) -> Any:
    unknown = sorted(_listed(given) - set(audit.OUTCOMES))
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: not an outcome; choose from {', '.join(audit.OUTCOMES)}"
        )
    return given


def _check_output(_ctx: click.Context, _param: click.Parameter, given: Path | None) -> Any:
    if given is not None and given.suffix.lower() not in _DIAGRAM_SUFFIXES:
        raise click.BadParameter(
            f"{given.name}: the suffix names the format; use one of "
            f"{', '.join(sorted(_DIAGRAM_SUFFIXES))}"
        )
    return given


def _read_logs(files: tuple[IO[str], ...]) -> audit.AuditLog:
    log = audit.AuditLog()
    for stream in files:
        log += audit.read_log(stream, source=getattr(stream, "name", "<stdin>"))
    return log


def _write_diagram(log: audit.AuditLog, selection: audit.Selection, output: Path | None) -> None:
    counts = audit.transition_counts(log.select(selection))
    if output is None:
        click.echo(audit.mermaid_diagram(counts), nl=False)
        return
    kind = _DIAGRAM_SUFFIXES[output.suffix.lower()]
    if kind == "mermaid":
        output.write_text(audit.mermaid_diagram(counts), encoding="utf-8")
    elif kind == "dot":
        output.write_text(audit.dot_diagram(counts), encoding="utf-8")
    else:
        try:
            image = audit.render_image(audit.dot_diagram(counts), kind)
        except audit.GraphvizError as exc:
            click.echo(f"{PROG_NAME}: error: {exc}", err=True)
            click.get_current_context().exit(TRACE_FAILURE)
        output.write_bytes(image)


@main.command(
    epilog=(
        "Filters take one value or a comma-separated list and may be repeated; values of one "
        "filter are alternatives, different filters must all match. Malformed lines and lines "
        "whose trace the machine does not allow are reported on stderr and skipped."
    )
)
@click.argument(
    "logfiles",
    nargs=-1,
    metavar="[LOGFILE]...",
    default=("-",),  # stdin when no file is named
    type=click.File("r", encoding="utf-8", errors="replace"),
)
@click.option(
    "--outcome",
    "outcomes",
    multiple=True,
    metavar="OUTCOME",
    callback=_check_outcomes,
    help=f"Keep requests with this outcome ({', '.join(audit.OUTCOMES)}).",
)
@click.option(
    "--error", "errors", multiple=True, metavar="KIND", help="Keep requests with this error kind."
)
@click.option(
    "--model", "models", multiple=True, metavar="MODEL", help="Keep requests for this model."
)
@click.option("--request-id", "request_ids", multiple=True, metavar="ID", help="Keep this request.")
@click.option("--summary", is_flag=True, help="Count paths, outcomes, errors; time each state.")
@click.option(
    "--diagram", is_flag=True, help="The state diagram (mermaid) with each transition's count."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the selected request lines as logged (with --summary: the summary as JSON).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    callback=_check_output,
    metavar="FILE",
    help="With --diagram: write FILE.mmd, FILE.dot, or an image FILE.svg / FILE.png (Graphviz).",
)
def trace(
    *,
    logfiles: tuple[IO[str], ...],
    outcomes: tuple[str, ...],
    errors: tuple[str, ...],
    models: tuple[str, ...],
    request_ids: tuple[str, ...],
    summary: bool,
    diagram: bool,
    as_json: bool,
    output: Path | None,
) -> None:
    """Read request log lines (stdin when no LOGFILE, or '-') and show each request's path."""
    if summary and diagram:
        raise click.UsageError("choose one of --summary and --diagram")
    if diagram and as_json:
        raise click.UsageError("--json prints request lines or the summary, not a diagram")
    if output is not None and not diagram:
        raise click.UsageError("--output writes the diagram: add --diagram")
    selection = audit.Selection(
        outcomes=_listed(outcomes),
        errors=_listed(errors),
        models=_listed(models),
        request_ids=_listed(request_ids),
    )
    log = _read_logs(logfiles)
    for problem in log.problems:
        click.echo(problem.describe(), err=True)
    if diagram:
        _write_diagram(log, selection, output)
    elif summary:
        result = audit.summarise(log, selection)
        shown = json.dumps(result.to_dict()) if as_json else audit.format_summary(result)
        click.echo(shown)
    elif as_json:
        for record in log.select(selection):
            click.echo(record.text)
    else:
        click.echo("\n\n".join(audit.format_timeline(r) for r in log.select(selection)))


if __name__ == "__main__":
    main()
