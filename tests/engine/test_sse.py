"""The SSE decoder and encoders (engine.sse): WHATWG rules, fed every way."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import UpstreamMalformed
from engine.sse import DONE, KEEP_ALIVE, SSEDecoder, SSEEvent, encode_data


def decode(stream: bytes, step: int | None = None) -> list[SSEEvent]:
    """Feed *stream* whole (step None) or in pieces of *step* bytes, then close."""
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    size = step or max(len(stream), 1)
    for start in range(0, len(stream), size):
        events.extend(decoder.feed(stream[start : start + size]))
    decoder.close()
    return events


def decode_at(stream: bytes, cuts: list[int]) -> list[SSEEvent]:
    """Feed *stream* cut at the byte offsets *cuts*."""
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    bounds = [0, *sorted(cuts), len(stream)]
    for start, end in itertools.pairwise(bounds):
        events.extend(decoder.feed(stream[start:end]))
    decoder.close()
    return events


RICH_STREAM = (
    "\ufeff: a comment first\r\n"
    "retry: 3000\r\n"
    "id: 7\n"
    'data: {"a": "héllo €"}\n'
    "\n"
    "event: error\r"
    "data:first\r"
    "data:  second\r"
    "\r"
    ": keep-alive\n"
    "\n"
    "unknown: field\n"
    "data\n"
    "\n"
    "data: 😀 last\r\n"
    "\r\n"
    "data: never finished\n"
).encode()

RICH_EVENTS = [
    SSEEvent("message", '{"a": "héllo €"}'),
    SSEEvent("error", "first\n second"),
    SSEEvent("message", ""),
    SSEEvent("message", "😀 last"),
]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, None], ids=lambda s: f"step-{s}")
def test_sse_decoder_rich_stream_is_indifferent_to_chunking(step: int | None) -> None:
    assert decode(RICH_STREAM, step) == RICH_EVENTS


def test_sse_decoder_data_with_space_gives_message_event() -> None:
    assert decode(b"data: hello\n\n") == [SSEEvent("message", "hello")]


def test_sse_decoder_data_without_space_keeps_value() -> None:
    assert decode(b"data:hello\n\n") == [SSEEvent("message", "hello")]


def test_sse_decoder_drops_only_one_leading_space() -> None:
    assert decode(b"data:   x \n\n") == [SSEEvent("message", "  x ")]


def test_sse_decoder_multi_line_data_joined_with_lf() -> None:
    assert decode(b"data: a\ndata: b\ndata:\n\n") == [SSEEvent("message", "a\nb\n")]


def test_sse_decoder_event_name_applies_to_its_event_only() -> None:
    stream = b"event: error\ndata: x\n\ndata: y\n\n"
    assert decode(stream) == [SSEEvent("error", "x"), SSEEvent("message", "y")]


def test_sse_decoder_empty_event_name_is_message() -> None:
    assert decode(b"event:\ndata: x\n\nevent\ndata: y\n\n") == [
        SSEEvent("message", "x"),
        SSEEvent("message", "y"),
    ]


def test_sse_decoder_blank_line_without_data_resets_event_name() -> None:
    assert decode(b"event: error\n\ndata: x\n\n") == [SSEEvent("message", "x")]


def test_sse_decoder_comment_only_keep_alive_yields_nothing() -> None:
    assert decode(b": keep-alive\n\n: ping\r\n\r\n") == []


def test_sse_decoder_keep_alive_after_id_yields_nothing() -> None:
    """httpx-sse yields empty events once an id was seen; the WHATWG rules do not."""
    assert decode(b"id: 1\ndata: x\n\n: keep-alive\n\nid: 2\n\n") == [SSEEvent("message", "x")]


def test_sse_decoder_id_retry_and_unknown_fields_are_ignored() -> None:
    stream = b"id: 5\nretry: abc\nfoo: bar\nDATA: shouted\ndata: kept\n\n"
    assert decode(stream) == [SSEEvent("message", "kept")]


def test_sse_decoder_bare_data_line_dispatches_empty_data() -> None:
    assert decode(b"data\n\n") == [SSEEvent("message", "")]


@pytest.mark.parametrize("ending", ["\n", "\r", "\r\n"], ids=["lf", "cr", "crlf"])
@pytest.mark.parametrize("step", [1, None], ids=["bytewise", "whole"])
def test_sse_decoder_line_endings_are_equivalent(ending: str, step: int | None) -> None:
    stream = ending.join(["data: a", "data: b", "", "event: e", "data: c", "", ""]).encode()
    assert decode(stream, step) == [SSEEvent("message", "a\nb"), SSEEvent("e", "c")]


def test_sse_decoder_crlf_split_across_feeds_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    first = decoder.feed(b"data: a\r")
    second = decoder.feed(b"\ndata: b\r\n\r\n")
    assert (first, second) == ([], [SSEEvent("message", "a\nb")])


def test_sse_decoder_cr_then_empty_feed_then_lf_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"data: a\r") + decoder.feed(b"") + decoder.feed(b"\n\n")
    assert events == [SSEEvent("message", "a")]


def test_sse_decoder_cr_ended_blank_line_dispatches_at_once() -> None:
    """An event ended by CR CR is dispatched without waiting for a possible LF."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [SSEEvent("message", "a")]


def test_sse_decoder_leading_bom_is_dropped() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent("message", "x")]


def test_sse_decoder_bom_split_across_feeds_is_dropped() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n", step=1) == [SSEEvent("message", "x")]


def test_sse_decoder_only_the_first_bom_is_dropped() -> None:
    """A second BOM makes the line's field name '\\ufeffdata', an unknown field."""
    stream = "\ufeff\ufeffdata: x\n\ndata: \ufeffy\n\n".encode()
    assert decode(stream) == [SSEEvent("message", "\ufeffy")]


def test_sse_decoder_utf8_character_split_across_feeds() -> None:
    stream = "data: é€😀\n\n".encode()
    assert decode(stream, step=1) == [SSEEvent("message", "é€😀")]


@pytest.mark.parametrize(
    "stream",
    [b"data: \xff\n\n", b"data: \xc3\x28\n\n", b"data: \xed\xa0\x80\n\n", b"\x80data: x\n\n"],
    ids=["invalid-start", "bad-continuation", "surrogate", "lone-continuation"],
)
@pytest.mark.parametrize("step", [1, None], ids=["bytewise", "whole"])
def test_sse_decoder_invalid_utf8_raises_malformed(stream: bytes, step: int | None) -> None:
    with pytest.raises(UpstreamMalformed) as caught:
        decode(stream, step)
    assert caught.value.message == "The upstream sent bytes that are not UTF-8."


def test_sse_decoder_close_drops_partial_event() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"data: done\n\ndata: partial\n")
    decoder.close()
    assert events == [SSEEvent("message", "done")]


def test_sse_decoder_feed_after_close_raises() -> None:
    decoder = SSEDecoder()
    decoder.close()
    with pytest.raises(RuntimeError):
        decoder.feed(b"data: x\n\n")


def test_sse_decoder_close_is_idempotent() -> None:
    decoder = SSEDecoder()
    decoder.close()
    decoder.close()
    with pytest.raises(RuntimeError):
        decoder.feed(b"")


@pytest.mark.parametrize("step", [1, 4, None], ids=["bytewise", "fours", "whole"])
def test_sse_decoder_line_longer_than_limit_raises_malformed(step: int | None) -> None:
    decoder = SSEDecoder(max_chars=16)
    line = b": " + b"x" * 15  # 17 characters, never ended
    with pytest.raises(UpstreamMalformed):
        for start in range(0, len(line), step or len(line)):
            decoder.feed(line[start : start + (step or len(line))])


@pytest.mark.parametrize("step", [1, None], ids=["bytewise", "whole"])
def test_sse_decoder_ended_line_longer_than_limit_raises_malformed(step: int | None) -> None:
    stream = b"data: x\n\n: " + b"x" * 15 + b"\n"
    decoder = SSEDecoder(max_chars=16)
    with pytest.raises(UpstreamMalformed):
        for start in range(0, len(stream), step or len(stream)):
            decoder.feed(stream[start : start + (step or len(stream))])


def test_sse_decoder_line_at_limit_is_accepted() -> None:
    decoder = SSEDecoder(max_chars=16)
    events = decoder.feed(b"data: 0123456789") + decoder.feed(b"\n\n")
    assert events == [SSEEvent("message", "0123456789")]


def test_sse_decoder_event_data_longer_than_limit_raises_malformed() -> None:
    decoder = SSEDecoder(max_chars=16)
    with pytest.raises(UpstreamMalformed):
        decoder.feed(b"data: 0123456\ndata: 0123456\ndata: 0\n")


def test_sse_decoder_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        SSEDecoder(max_chars=0)


def test_sse_decoder_feed_returns_events_as_soon_as_complete() -> None:
    decoder = SSEDecoder()
    outputs = [decoder.feed(part) for part in (b"data: a\n", b"\n", b"data: b\n\nda", b"ta: c\n\n")]
    assert outputs == [
        [],
        [SSEEvent("message", "a")],
        [SSEEvent("message", "b")],
        [SSEEvent("message", "c")],
    ]


def test_sse_event_is_frozen_with_slots() -> None:
    event = SSEEvent("message", "x")
    with pytest.raises(AttributeError):
        event.data = "y"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_encode_data_gives_one_event() -> None:
    assert encode_data('{"a": 1}') == b'data: {"a": 1}\n\n'


def test_encode_data_round_trips_through_decoder() -> None:
    payload = '{"content": "héllo 😀"}'
    assert decode(encode_data(payload)) == [SSEEvent("message", payload)]


def test_encode_data_multi_line_payload_round_trips_with_lf() -> None:
    assert decode(encode_data("a\nb\r\nc\rd")) == [SSEEvent("message", "a\nb\nc\nd")]


def test_keep_alive_is_a_comment_that_decodes_to_nothing() -> None:
    assert (KEEP_ALIVE, decode(KEEP_ALIVE)) == (b": keep-alive\n\n", [])


def test_done_decodes_to_done_marker() -> None:
    assert decode(DONE) == [SSEEvent("message", "[DONE]")]


# --- property: random streams, random split points ----------------------------------------

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=12,
)
ENDINGS = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """A stream of events, comments and ignored fields, and the events it must decode to."""
    lines: list[str] = []
    expected: list[SSEEvent] = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            lines.append(":" + draw(TEXT))
        name = draw(st.one_of(st.none(), TEXT))
        if name is not None:
            lines.append(f"event: {name}")
        data = draw(st.lists(TEXT, min_size=1, max_size=3))
        for value in data:
            # "data:" without a space keeps the value only when it does not start with one
            spaced = value.startswith(" ") or draw(st.booleans())
            lines.append(("data: " if spaced else "data:") + value)
            if draw(st.booleans()):
                lines.append("id: " + draw(TEXT))
        lines.append("")
        expected.append(SSEEvent(name or "message", "\n".join(data)))
    stream = "\ufeff" if draw(st.booleans()) else ""
    previous = ""
    for line in lines:
        ending = draw(ENDINGS)
        if previous == "\r" and not line and ending == "\n":
            ending = "\r"  # CR then an empty LF-ended line would be one CRLF ending
        stream += line + ending
        previous = ending
    return stream.encode(), expected


@given(data=st.data())
def test_sse_decoder_random_stream_and_splits_give_expected_events(data: st.DataObject) -> None:
    stream, expected = data.draw(streams())
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    whole = decode(stream)
    assert (whole, decode_at(stream, cuts), decode(stream, step=1)) == (expected,) * 3
