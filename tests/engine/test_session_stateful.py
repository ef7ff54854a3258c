"""
Hypothesis drives a session with random upstream behaviour, chunking, faults, ticks and
disconnects, and checks after every step what the client has received so far.
"""

from __future__ import annotations

import json

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from engine.capability import CapabilityCache
from engine.config import StreamingConfig
from engine.errors import StreamTimeout, UpstreamDisconnected, UpstreamTimeout, UpstreamUnreachable
from engine.events import (
    ClientGone,
    ShutDown,
    UpstreamData,
    UpstreamEnd,
    UpstreamFailed,
    UpstreamHead,
)
from engine.trace import FINAL_STATES, TRANSITIONS
from tests.support.sse_check import check_stream

from .harness import Harness, chat_body, completion_body, sse_stream

REJECTION = b'{"error": "streaming is not supported for this model", "success": false}'
FAULTS = [UpstreamDisconnected, UpstreamUnreachable, UpstreamTimeout, StreamTimeout]
RARE = 12
words = st.text(alphabet="abcdefgh xyz\u00e9\u4e16", min_size=0, max_size=12)


class SessionMachine(RuleBasedStateMachine):
    harness: Harness

    @initialize(
        kind=st.sampled_from(["sse", "json", "reject", "sse_always"]),
        client_stream=st.booleans(),
        include_usage=st.booleans(),
        interval=st.sampled_from([0.0, 1.0]),
        pieces=st.lists(words, min_size=0, max_size=6),
        finish=st.sampled_from([None, "stop", "length", "end_turn", "tool_use"]),
        done_marker=st.booleans(),
    )
    def setup(
        self,
        kind: str,
        client_stream: bool,
        include_usage: bool,
        interval: float,
        pieces: list[str],
        finish: str | None,
        done_marker: bool,
    ) -> None:
        self.kind = kind
        self.pieces = pieces
        self.finish = finish
        self.done_marker = done_marker
        self.include_usage = include_usage and client_stream
        config = StreamingConfig(
            heartbeat_interval=interval, streaming_timeout=5, answer_timeout=30
        )
        body = chat_body(stream=client_stream, include_usage=self.include_usage)
        self.harness = Harness(body, config=config, cache=CapabilityCache(ttl=600)).start()
        self.calls_seen = 0
        self._next_call()

    # --- the simulated upstream ----------------------------------------------------------

    def _next_call(self) -> None:
        """Set up the answer to the newest call the session asked for."""
        calls = self.harness.calls
        self.calls_seen = len(calls)
        if not calls:
            self.head = None
            return
        stream = calls[-1]
        text = "".join(self.pieces)
        if self.kind == "reject" and stream:
            self.head, self.body = UpstreamHead(400, "application/json"), REJECTION
        elif (self.kind == "sse" and stream) or self.kind == "sse_always":
            events = sse_stream(self.pieces, finish=self.finish, done=self.done_marker)
            self.head, self.body = UpstreamHead(200, "text/event-stream"), b"".join(events)
        else:
            self.head = UpstreamHead(200, "application/json")
            self.body = completion_body(text, finish=self.finish)
        self.head_sent = False
        self.offset = 0

    def _after(self) -> None:
        if len(self.harness.calls) != self.calls_seen:
            self._next_call()

    def _live(self) -> bool:
        return self.head is not None and not self.harness.session.is_final

    @precondition(lambda self: self._live())
    @rule(size=st.integers(min_value=1, max_value=400))
    def upstream_sends(self, size: int) -> None:
        h = self.harness
        h.now += 0.01
        if not self.head_sent:
            self.head_sent = True
            h.feed(self.head)  # type: ignore[arg-type]
        elif self.offset < len(self.body):
            data = self.body[self.offset : self.offset + size]
            self.offset += len(data)
            h.feed(UpstreamData(data))
        else:
            h.feed(UpstreamEnd())
        self._after()

    # Faults, disconnects and shutdown fire on one draw in RARE, so that most runs get far
    # into the upstream's answer before something goes wrong.

    @precondition(lambda self: self._live())
    @rule(fault=st.sampled_from(FAULTS), draw=st.integers(0, RARE))
    def upstream_fails(self, fault: type, draw: int) -> None:
        if draw == 0:
            self.harness.feed(UpstreamFailed(fault()))
            self._after()

    @rule(draw=st.integers(0, RARE))
    def client_leaves(self, draw: int) -> None:
        if draw == 0:
            self.harness.feed(ClientGone())

    @rule(draw=st.integers(0, RARE))
    def shutdown_grace_ends(self, draw: int) -> None:
        if draw == 0:
            self.harness.feed(ShutDown())

    @rule()
    def time_passes(self) -> None:
        deadline = self.harness.session.next_deadline()
        if deadline is not None:
            self.harness.tick(max(deadline, self.harness.now))
            self._after()

    # --- what must hold after every step --------------------------------------------------

    @invariant()
    def trace_is_a_path_of_declared_transitions(self) -> None:
        state = "detecting"
        for entry in self.harness.session.cursor.entries:
            assert entry.source == state
            assert TRANSITIONS[(entry.source, entry.event)] == entry.target
            state = entry.target
        assert state == self.harness.session.state
        finals = [e for e in self.harness.session.cursor.entries if e.target in FINAL_STATES]
        assert len(finals) <= 1

    @invariant()
    def client_output_is_valid_so_far(self) -> None:
        h = self.harness
        session = h.session
        if not session.client_stream:
            assert not session.committed
            if h.head is None:
                return
            assert h.finished
            body = json.loads(bytes(h.body))
            if session.state == "done":
                assert h.status == 200
                assert body["choices"][0]["message"]["content"] == "".join(self.pieces)
            else:
                assert h.status is not None and h.status >= 400
                assert set(body["error"]) == {"message", "type", "param", "code"}
            return
        if h.head is None:
            return
        if h.status != 200:
            assert not session.committed
            assert session.state == "errored"
            assert "error" in json.loads(bytes(h.body))
            return
        complete = h.finished
        report = check_stream(bytes(h.body), include_usage=self.include_usage, partial=not complete)
        if session.state == "done":
            assert report.done
            assert report.content == "".join(self.pieces)
        elif session.state == "errored":
            assert not report.done  # a failure never ends with a clean finish
            if session.outcome == "errored":
                assert complete and report.error is not None

    def teardown(self) -> None:
        session = getattr(self, "harness", None)
        if session is not None:
            json.dumps(self.harness.session.summary())


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, derandomize=False
)
