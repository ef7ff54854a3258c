"""The session's behaviour, driven directly with explicit time (no IO, no sleeps)."""

from __future__ import annotations

import json

import pytest

from engine.capability import CapabilityCache
from engine.config import StreamingConfig
from engine.errors import UpstreamDisconnected, UpstreamUnreachable
from engine.events import (
    ClientGone,
    ShutDown,
    UpstreamData,
    UpstreamEnd,
    UpstreamFailed,
    UpstreamHead,
)
from tests.support.sse_check import check_stream

from .harness import KEY, Harness, chat_body, completion_body, sse_stream

SSE = UpstreamHead(200, "text/event-stream")
JSON = UpstreamHead(200, "application/json")
REJECTION = b'{"error": "stream is not supported", "success": false}'
USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def stream_all(h: Harness, events: list[bytes], at: float = 0.1) -> Harness:
    h.feed(SSE, at=at)
    for event in events:
        h.feed(UpstreamData(event))
    return h.feed(UpstreamEnd())


def test_session_pass_through_relays_every_chunk_and_ends_done() -> None:
    h = Harness(chat_body(stream=True)).start()
    assert h.calls == [True]
    stream_all(h, sse_stream(["Hel", "lo", " world"]))
    report = check_stream(bytes(h.body))
    assert report.content == "Hello world"
    assert report.finish_reason == "stop"
    assert report.id == "chatcmpl-" + "a" * 24
    assert report.model == "sim/test"
    assert h.headers["X-Gateway-Stream-Mode"] == "stream"
    assert h.path() == ["upstream_streamed", "upstream_finished", "drained"]
    assert h.session.outcome == "done"
    assert h.cache.lookup(KEY, 1.0)[0] == "streams"


def test_session_pass_through_drops_upstream_role_and_maps_finish_reason() -> None:
    h = Harness(chat_body(stream=True)).start()
    stream_all(h, sse_stream(["a"], finish="end_turn"))
    report = check_stream(bytes(h.body))
    # Our role chunk, one content chunk, our finish chunk.
    assert len(report.events) == 3
    assert report.finish_reason == "stop"
    assert h.session.upstream_finish_reason == "end_turn"


def test_session_usage_chunk_only_when_asked() -> None:
    asked = Harness(chat_body(stream=True, include_usage=True)).start()
    stream_all(asked, sse_stream(["a"], usage=USAGE))
    assert check_stream(bytes(asked.body), include_usage=True).usage == USAGE

    not_asked = Harness(chat_body(stream=True)).start()
    stream_all(not_asked, sse_stream(["a"], usage=USAGE))
    report = check_stream(bytes(not_asked.body))
    assert report.usage is None
    assert b'"usage"' not in bytes(not_asked.body)


def test_session_fallback_replays_the_whole_answer_in_several_deltas() -> None:
    text = "The quick brown fox jumps over the lazy dog, then rests for a while."
    h = Harness(chat_body(stream=True, include_usage=True)).start()
    h.feed(JSON, UpstreamData(completion_body(text, usage=USAGE)), UpstreamEnd(), at=0.2)
    report = check_stream(bytes(h.body), include_usage=True)
    assert report.content == text
    assert len(report.events) > 4
    assert report.usage == USAGE
    assert h.headers["X-Gateway-Stream-Mode"] == "fallback"
    assert h.path() == ["upstream_answered_whole", "answer_received", "drained"]
    assert h.calls == [True]
    assert h.cache.lookup(KEY, 1.0)[0] == "answers_whole"


def test_session_rejected_stream_flag_repeats_once_without_it_and_is_cached() -> None:
    cache = CapabilityCache(ttl=600)
    h = Harness(chat_body(stream=True), cache=cache).start()
    h.feed(UpstreamHead(400, "application/json"), UpstreamData(REJECTION), UpstreamEnd())
    assert h.calls == [True, False]
    h.feed(JSON, UpstreamData(completion_body("fine")), UpstreamEnd())
    assert check_stream(bytes(h.body)).content == "fine"
    assert h.path() == ["stream_rejected", "answer_received", "drained"]
    assert h.session.upstream_calls == 2

    second = Harness(chat_body(stream=True), cache=cache).start()
    assert second.calls == [False]
    assert second.path() == ["stream_declined"]
    assert second.session.capability == "rejects_stream"


def test_session_non_streaming_client_gets_one_completion() -> None:
    h = Harness(chat_body(stream=False)).start()
    assert h.calls == [False]
    h.feed(JSON, UpstreamData(completion_body("Hi there", finish="max_tokens")), UpstreamEnd())
    body = h.json()
    assert h.status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hi there"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["model"] == "sim/test"
    assert h.path() == ["stream_declined", "answer_received", "drained"]
    assert len(h.cache) == 0  # a non-streaming request teaches nothing


def test_session_non_streaming_client_reads_an_sse_body_whole() -> None:
    """D11: some servers stream whatever the flag says."""
    h = Harness(chat_body(stream=False)).start()
    h.feed(SSE)
    for event in sse_stream(["one ", "two"], finish="length", usage=USAGE):
        h.feed(UpstreamData(event))
    h.feed(UpstreamEnd())
    body = h.json()
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == USAGE


def test_session_first_tick_commits_and_later_ticks_send_heartbeats() -> None:
    config = StreamingConfig(heartbeat_interval=1.0)
    h = Harness(chat_body(stream=True), config=config).start()
    assert h.session.next_deadline() == 1.0
    h.tick(1.0)
    assert h.status == 200
    assert h.headers["X-Gateway-Stream-Mode"] == "detecting"
    h.tick(2.0).tick(3.0)
    assert h.session.heartbeats == 2
    assert bytes(h.body).count(b": keep-alive\n\n") == 2
    h.feed(JSON, UpstreamData(completion_body("late answer")), UpstreamEnd(), at=3.5)
    report = check_stream(bytes(h.body))
    assert report.content == "late answer"
    assert report.comments == 2


def test_session_heartbeat_chunk_style_sends_empty_content_deltas() -> None:
    config = StreamingConfig(heartbeat_interval=1.0, heartbeat_style="chunk")
    h = Harness(chat_body(stream=True), config=config).start().tick(1.0).tick(2.0)
    h.feed(JSON, UpstreamData(completion_body("x")), UpstreamEnd())
    report = check_stream(bytes(h.body))
    assert report.heartbeat_chunks == 1
    assert report.content == "x"


def test_session_quick_error_keeps_its_http_status() -> None:
    h = Harness(chat_body(stream=True), config=StreamingConfig(heartbeat_interval=1.0)).start()
    h.feed(UpstreamHead(429, "application/json", retry_after="7"))
    h.feed(UpstreamData(b'{"error": "Too many requests", "success": false}'), UpstreamEnd())
    assert h.status == 429
    assert ("Retry-After", "7") in h.head.headers  # type: ignore[union-attr]
    assert h.json()["error"]["code"] == "rate_limit_exceeded"
    assert h.session.error_kind == "upstream_rate_limited"
    assert h.path() == ["upstream_failed"]


def test_session_slow_error_becomes_an_error_event_after_the_commit() -> None:
    h = Harness(chat_body(stream=True), config=StreamingConfig(heartbeat_interval=1.0)).start()
    h.tick(1.0)
    h.feed(UpstreamHead(503, "text/plain"), UpstreamData(b"busy"), UpstreamEnd(), at=1.5)
    report = check_stream(bytes(h.body))
    assert h.status == 200
    assert report.error is not None
    assert report.error["code"] == "upstream_unavailable"
    assert not report.done
    assert h.finished


def test_session_stream_silence_before_finish_is_a_stream_timeout() -> None:
    config = StreamingConfig(streaming_timeout=5.0, heartbeat_interval=0)
    h = Harness(chat_body(stream=True), config=config).start()
    h.feed(SSE, UpstreamData(sse_stream(["a"], finish=None, done=False)[1]), at=1.0)
    assert h.session.next_deadline() == 6.0
    h.tick(6.0)
    report = check_stream(bytes(h.body))
    assert report.error is not None and report.error["code"] == "stream_timeout"
    assert h.path() == ["upstream_streamed", "timed_out"]
    assert h.cancels >= 1


def test_session_silence_after_the_finish_chunk_ends_cleanly() -> None:
    config = StreamingConfig(streaming_timeout=5.0, heartbeat_interval=0)
    h = Harness(chat_body(stream=True), config=config).start()
    h.feed(SSE, at=1.0)
    for event in sse_stream(["a", "b"], done=False):
        h.feed(UpstreamData(event))
    h.tick(6.0)
    assert check_stream(bytes(h.body)).content == "ab"
    assert h.session.outcome == "done"


def test_session_broken_connection_after_finish_chunk_ends_cleanly() -> None:
    h = Harness(chat_body(stream=True)).start()
    h.feed(SSE)
    for event in sse_stream(["a"], done=False):
        h.feed(UpstreamData(event))
    h.feed(UpstreamFailed(UpstreamDisconnected()))
    assert check_stream(bytes(h.body)).done
    assert h.session.outcome == "done"


def test_session_broken_connection_mid_stream_is_upstream_disconnected() -> None:
    h = Harness(chat_body(stream=True)).start()
    h.feed(SSE)
    for event in sse_stream(["a"], finish=None, done=False):
        h.feed(UpstreamData(event))
    h.feed(UpstreamFailed(UpstreamDisconnected()))
    report = check_stream(bytes(h.body))
    assert report.error is not None and report.error["code"] == "upstream_disconnected"


def test_session_clean_end_before_finish_chunk_finishes_with_stop() -> None:
    h = Harness(chat_body(stream=True)).start()
    stream_all(h, sse_stream(["a"], finish=None, done=False))
    assert check_stream(bytes(h.body)).finish_reason == "stop"


def test_session_answer_timeout_before_head_is_504() -> None:
    config = StreamingConfig(answer_timeout=3.0, heartbeat_interval=0)
    h = Harness(chat_body(stream=False), config=config).start()
    assert h.session.next_deadline() == 3.0
    h.tick(3.0)
    assert h.status == 504
    assert h.json()["error"]["code"] == "upstream_timeout"
    assert h.path() == ["stream_declined", "timed_out"]


def test_session_error_event_mid_stream_is_upstream_error() -> None:
    h = Harness(chat_body(stream=True)).start()
    h.feed(SSE, UpstreamData(sse_stream(["a"])[1]))
    h.feed(UpstreamData(b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'))
    report = check_stream(bytes(h.body))
    assert report.content == "a"
    assert report.error is not None and report.error["code"] == "upstream_error"


def test_session_malformed_sse_payload_is_upstream_malformed() -> None:
    h = Harness(chat_body(stream=True)).start()
    h.feed(SSE, UpstreamData(b'data: {"broken\n\n'))
    assert h.status == 502
    assert h.json()["error"]["code"] == "upstream_malformed"


def test_session_malformed_json_answer_teaches_nothing() -> None:
    h = Harness(chat_body(stream=True)).start()
    h.feed(JSON, UpstreamData(b"{not json"), UpstreamEnd())
    assert h.status == 502
    assert h.json()["error"]["code"] == "upstream_malformed"
    assert len(h.cache) == 0


def test_session_connect_failure_is_upstream_unreachable() -> None:
    h = Harness(chat_body(stream=True)).start()
    h.feed(UpstreamFailed(UpstreamUnreachable()))
    assert h.status == 502
    assert h.json()["error"]["code"] == "upstream_unreachable"
    assert len(h.cache) == 0


@pytest.mark.parametrize("phase", ["detecting", "streaming", "falling_back", "draining"])
def test_session_client_gone_in_any_phase_ends_errored(phase: str) -> None:
    h = Harness(chat_body(stream=True)).start()
    if phase == "streaming":
        h.feed(SSE)
    elif phase == "falling_back":
        h.feed(JSON)
    elif phase == "draining":
        h.finished = False
        h.feed(JSON, UpstreamData(completion_body("x")))
        h.apply = lambda actions: None  # type: ignore[method-assign]  # never delivered
        h.feed(UpstreamEnd())
    assert h.session.state == phase
    h.session.handle(ClientGone(), 1.0)
    assert h.session.state == "errored"
    assert h.session.outcome == "cancelled"
    assert h.session.error_kind == "client_disconnected"
    assert h.path()[-1] == "client_gone"


def test_session_shutdown_after_commit_sends_the_shutdown_event() -> None:
    h = Harness(chat_body(stream=True), config=StreamingConfig(heartbeat_interval=1.0)).start()
    h.tick(1.0).feed(ShutDown())
    report = check_stream(bytes(h.body))
    assert report.error is not None and report.error["code"] == "server_shutting_down"
    assert h.path()[-1] == "shut_down"


def test_session_inputs_after_a_final_state_are_absorbed() -> None:
    h = Harness(chat_body(stream=True)).start()
    stream_all(h, sse_stream(["a"]))
    before = bytes(h.body)
    for late in (SSE, UpstreamData(b"data: {}\n\n"), UpstreamEnd(), ClientGone(), ShutDown()):
        assert h.session.handle(late, 9.0) == []
    assert h.session.handle_timer(99.0) == []
    assert bytes(h.body) == before
    assert h.session.state == "done"


def test_session_forced_on_neither_reads_nor_writes_the_cache() -> None:
    cache = CapabilityCache(ttl=600)
    cache.learn(KEY, "rejects_stream", 0.0)
    config = StreamingConfig(force_streaming=True)
    h = Harness(chat_body(stream=True), config=config, cache=cache).start()
    assert h.calls == [True]
    h.feed(JSON, UpstreamData(completion_body("x")), UpstreamEnd())
    assert cache.lookup(KEY, 1.0)[0] == "rejects_stream"
    assert h.session.capability == "forced"


def test_session_forced_off_never_asks_for_a_stream() -> None:
    h = Harness(chat_body(stream=True), config=StreamingConfig(force_streaming=False)).start()
    assert h.calls == [False]
    assert h.path() == ["stream_declined"]


def test_session_cache_entry_expires_after_ttl() -> None:
    cache = CapabilityCache(ttl=10)
    cache.learn(KEY, "rejects_stream", 0.0)
    assert Harness(chat_body(stream=True), cache=cache, now=5.0).start().calls == [False]
    assert Harness(chat_body(stream=True), cache=cache, now=10.0).start().calls == [True]


def test_session_zero_ttl_caches_nothing() -> None:
    cache = CapabilityCache(ttl=0)
    h = Harness(chat_body(stream=True), cache=cache).start()
    h.feed(UpstreamHead(400, "application/json"), UpstreamData(REJECTION), UpstreamEnd())
    assert len(cache) == 0
    assert Harness(chat_body(stream=True), cache=cache).start().calls == [True]


def test_session_newest_observation_replaces_the_entry() -> None:
    cache = CapabilityCache(ttl=600)
    cache.learn(KEY, "answers_whole", 0.0)
    h = Harness(chat_body(stream=True), cache=cache).start()
    assert h.calls == [True]  # only rejects_stream changes what is sent (D6)
    stream_all(h, sse_stream(["a"]))
    assert cache.lookup(KEY, 1.0)[0] == "streams"


@pytest.mark.parametrize("entry", ["rejects_stream", "answers_whole"])
def test_session_no_fallback_with_cached_incapability_fails_without_a_call(entry: str) -> None:
    cache = CapabilityCache(ttl=600)
    cache.learn(KEY, entry, 0.0)  # type: ignore[arg-type]
    config = StreamingConfig(enable_fallback=False)
    h = Harness(chat_body(stream=True), config=config, cache=cache).start()
    assert h.calls == []
    assert h.status == 400
    assert h.json()["error"]["code"] == "streaming_unsupported"
    assert h.path() == ["upstream_failed"]


def test_session_no_fallback_json_answer_fails_after_one_call_and_learns() -> None:
    config = StreamingConfig(enable_fallback=False)
    h = Harness(chat_body(stream=True), config=config).start()
    h.feed(JSON)
    assert h.status == 400
    assert h.json()["error"]["code"] == "streaming_unsupported"
    assert h.calls == [True]
    assert h.cache.lookup(KEY, 1.0)[0] == "answers_whole"


def test_session_no_fallback_rejection_fails_without_a_repeat() -> None:
    config = StreamingConfig(enable_fallback=False)
    h = Harness(chat_body(stream=True), config=config).start()
    h.feed(UpstreamHead(400, "application/json"), UpstreamData(REJECTION), UpstreamEnd())
    assert h.calls == [True]
    assert h.json()["error"]["code"] == "streaming_unsupported"
    assert h.cache.lookup(KEY, 1.0)[0] == "rejects_stream"


def test_session_needs_whole_is_declined_and_teaches_nothing() -> None:
    h = Harness(chat_body(stream=True), needs_whole=True).start()
    assert h.calls == [False]
    h.feed(JSON, UpstreamData(completion_body("x")), UpstreamEnd())
    assert check_stream(bytes(h.body)).content == "x"
    assert len(h.cache) == 0


def test_session_upstream_key_echoed_in_an_error_is_removed() -> None:
    h = Harness(chat_body(stream=False), secrets=("sk-secret-123",)).start()
    h.feed(UpstreamHead(400, "application/json"))
    h.feed(UpstreamData(b'{"error": "bad key sk-secret-123 given"}'), UpstreamEnd())
    assert b"sk-secret-123" not in bytes(h.body)


def test_session_summary_has_the_log_line_fields() -> None:
    h = Harness(chat_body(stream=True)).start()
    stream_all(h, sse_stream(["a"], usage=USAGE))
    summary = h.session.summary()
    assert summary["outcome"] == "done"
    assert summary["mode"] == "stream"
    assert summary["upstream_calls"] == 1
    assert summary["committed"] is True
    assert summary["usage"] == USAGE
    assert summary["upstream_model"] == "provider/model"
    assert [t["event"] for t in summary["trace"]] == h.path()
    json.dumps(summary)  # plain data
