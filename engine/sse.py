"""
Server-sent events: the one decoder of the product (contract §5 R0) and the gateway's encoders.

The decoder follows the WHATWG event-stream rules ("Interpreting an event stream"):

1. The stream is UTF-8; one leading BOM is dropped. Bytes that are not UTF-8 are
   :class:`~engine.errors.UpstreamMalformed`.
2. Lines end with CRLF, LF or CR, and any of them may be split across feeds.
3. A line starting with ``:`` is a comment and is ignored. Any other line is ``field:value``
   (one space after the colon is dropped) or a bare ``field`` (the value is empty).
4. ``data`` appends its value to the event's data, lines joined by ``\\n``; ``event`` sets the
   event's name (``message`` when none or an empty one is given); ``id``, ``retry`` and unknown
   fields are ignored.
5. A blank line dispatches the event, only if it had at least one ``data`` line: a comment-only
   keep-alive yields nothing. The event name is reset at every blank line.
6. At the end of input a partial event (no blank line after it) is dropped.

The result never depends on how the bytes were split into feeds, with one exception for broken
input: when a feed holds bytes that are not UTF-8, it raises, and the events it completed before
the bad bytes are not returned (the request fails as ``upstream_malformed`` either way).

Guard: a line, or the data of one event, longer than ``max_chars`` characters (8 Mi by default)
is :class:`~engine.errors.UpstreamMalformed`, so a broken upstream cannot grow memory without
bound. The limit counts characters, which are never more than the bytes received.

Speed: the decoder is on the per-chunk hot path, so it never loops over bytes in Python. UTF-8 is
decoded by the C codec (a character split across feeds waits, at most 3 bytes, for the next feed),
lines are cut with ``str.split``, and CR handling is skipped when a feed holds no ``\\r``.
"""

from __future__ import annotations

import codecs

import attrs

from .errors import UpstreamMalformed

__all__ = [
    "DONE",
    "KEEP_ALIVE",
    "MAX_CHARS",
    "SSEDecoder",
    "SSEEvent",
    "encode_data",
]

MIB = 1024 * 1024
#: The longest line, and the longest data of one event, the decoder accepts (characters).
MAX_CHARS = 8 * MIB

#: The heartbeat comment of ``heartbeat_style = "comment"`` (contract §3).
KEEP_ALIVE = b": keep-alive\n\n"
#: The last event of every complete stream the gateway sends (contract §5).
DONE = b"data: [DONE]\n\n"

NOT_UTF8 = "The upstream sent bytes that are not UTF-8."
LINE_TOO_LONG = "The upstream sent an SSE line or event longer than the gateway accepts."

_BOM = "\ufeff"
_decode_utf8 = codecs.utf_8_decode


@attrs.frozen
class SSEEvent:
    """One dispatched event: its name (``message`` when none was given) and its data."""

    event: str
    data: str


class SSEDecoder:
    """
    Incremental SSE decoder: raw bytes in, complete events out.

    Feed it the upstream's bytes as they arrive; call :meth:`close` at the end of input.
    """

    __slots__ = (
        "_closed",
        "_data",
        "_data_chars",
        "_event",
        "_max_chars",
        "_partial",
        "_partial_chars",
        "_skip_lf",
        "_started",
        "_undecoded",
    )

    def __init__(self, *, max_chars: int = MAX_CHARS) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be at least 1")
        self._max_chars = max_chars
        self._undecoded = b""  # the first bytes of a UTF-8 character split across feeds
        self._started = False  # True once some text was decoded (the BOM rule applies before)
        self._skip_lf = (
            False  # the previous feed ended with CR: an LF starting this one ends no line
        )
        self._partial: list[str] = []  # pieces of the line not yet ended
        self._partial_chars = 0
        self._data: list[str] = []  # the data lines of the event being read
        self._data_chars = 0
        self._event = ""  # the event name being read; "" means "message"
        self._closed = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        """
        Decode *data*, the next bytes of the stream.

        Returns:
            The events completed by these bytes, in order (often none or one).

        Raises:
            UpstreamMalformed: the bytes are not UTF-8, or a line or an event is too long.
                The decoder must not be fed again after it raised.
            RuntimeError: the decoder was already closed (a bug in the caller).
        """
        if self._closed:
            raise RuntimeError("SSEDecoder.feed() called after close()")
        if self._undecoded:
            data = self._undecoded + data
        try:
            text, used = _decode_utf8(data, "strict", False)
        except UnicodeDecodeError as exc:
            raise UpstreamMalformed(NOT_UTF8) from exc
        self._undecoded = data[used:] if used < len(data) else b""
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == _BOM:
                text = text[1:]
        if self._skip_lf:
            # The CR that ended the previous feed and this LF are one CRLF line ending.
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        if "\r" in text:
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._keep_partial(text)
            return []
        lines = text.split("\n")
        if self._partial_chars + len(text) > self._max_chars:
            self._check_line_lengths(lines)
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = "".join(self._partial)
            self._partial = []
            self._partial_chars = 0
        self._keep_partial(lines.pop())
        return self._interpret(lines)

    def close(self) -> None:
        """End of input: a partial event without its blank line is dropped (WHATWG rule)."""
        self._closed = True
        self._undecoded = b""
        self._partial = []
        self._data = []
        self._event = ""

    def _keep_partial(self, text: str) -> None:
        """Keep *text*, the start of a line not yet ended, for the next feed."""
        if not text:
            return
        self._partial.append(text)
        self._partial_chars += len(text)
        if self._partial_chars > self._max_chars:
            raise UpstreamMalformed(LINE_TOO_LONG)

    def _check_line_lengths(self, lines: list[str]) -> None:
        """Refuse an ended line too long; only called when one may be (rare)."""
        first = self._partial_chars + len(lines[0])
        if max(first, *(len(line) for line in lines[1:-1]), 0) > self._max_chars:
            raise UpstreamMalformed(LINE_TOO_LONG)

    def _interpret(self, lines: list[str]) -> list[SSEEvent]:
        """Apply the field rules to complete *lines*; return the events they dispatch."""
        events: list[SSEEvent] = []
        for line in lines:
            if line[:5] == "data:":  # the hot path: almost every upstream line
                value = line[6:] if line[5:6] == " " else line[5:]
                self._add_data(value)
            elif not line:
                if self._data:
                    events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
                    self._data = []
                    self._data_chars = 0
                self._event = ""
            elif line[0] != ":":
                field, _, value = line.partition(":")
                if value[:1] == " ":
                    value = value[1:]
                if field == "data":
                    self._add_data(value)
                elif field == "event":
                    self._event = value
                # id, retry and unknown fields are ignored (the gateway never reconnects)
        return events

    def _add_data(self, value: str) -> None:
        self._data.append(value)
        self._data_chars += len(value) + 1
        if self._data_chars > self._max_chars:
            raise UpstreamMalformed(LINE_TOO_LONG)


def encode_data(payload: str) -> bytes:
    """
    Encode *payload* as one SSE event: ``data: <payload>\\n\\n``.

    A payload holding line breaks (never the case for JSON) becomes one ``data`` line per line,
    which a decoder joins back with ``\\n``; a CR cannot survive SSE and comes back as LF.
    """
    if "\n" in payload or "\r" in payload:
        lines = payload.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "".join([f"data: {line}\n" for line in lines] + ["\n"]).encode()
    return f"data: {payload}\n\n".encode()
