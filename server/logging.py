"""
structlog set-up and the one ``request`` log line of contract §11.

JSON lines on stderr with ``--log-format json`` (the audit trail that ``trace`` reads),
readable lines on a console. Keys never reach a log line: nothing here is given one.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

__all__ = ["configure_logging", "get_logger", "log_request"]

LogFormat = Literal["json", "console", "auto"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure_logging(
    log_format: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog once, before the first log call (stack-notes §6)."""
    stream = stream or sys.stderr
    json_lines = log_format == "json" or (log_format == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.reset_defaults()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), 20)),
        # One write per line (message and newline together), so lines never interleave.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    return structlog.get_logger("straico_gateway")


#: Every key of the request log line (contract §11), with its value when nothing set it:
#: a request refused before any machine, or a models request, still has them all.
LOG_LINE_DEFAULTS: dict[str, Any] = {
    "request_id": None,
    "method": None,
    "path": None,
    "status": None,
    "outcome": None,
    "error": None,
    "error_code": None,
    "model": None,
    "upstream_model": None,
    "upstream": None,
    "client_stream": None,
    "mode": None,
    "upstream_calls": 0,
    "capability": None,
    "committed": False,
    "ttfb_ms": None,
    "duration_ms": None,
    "chunks_out": 0,
    "heartbeats": 0,
    "finish_reason": None,
    "upstream_finish_reason": None,
    "usage": None,
    "price": None,
    "words": None,
    "ignored_fields": [],
    "trace": [],
}


def log_request(fields: dict[str, Any]) -> None:
    """Emit the request log line, every key of §11 present."""
    get_logger().info("request", **{**LOG_LINE_DEFAULTS, **fields})
