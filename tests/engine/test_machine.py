"""The declared machine, the compiled table and a library instance agree with contract §2."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statemachine.exceptions import TransitionNotAllowed as LibraryTransitionNotAllowed

from engine.machine import RequestMachine
from engine.trace import FINAL_STATES, INITIAL_STATE, TRANSITIONS, Cursor, TransitionNotAllowed

# One literal copy of the contract's table (§2): (event, sources, target).
CONTRACT_TABLE = [
    ("upstream_streamed", ["detecting"], "streaming"),
    ("upstream_answered_whole", ["detecting"], "falling_back"),
    ("stream_rejected", ["detecting"], "falling_back"),
    ("stream_declined", ["detecting"], "falling_back"),
    ("answer_received", ["falling_back"], "draining"),
    ("upstream_finished", ["streaming"], "draining"),
    ("drained", ["draining"], "done"),
    ("upstream_failed", ["detecting", "streaming", "falling_back"], "errored"),
    ("timed_out", ["detecting", "streaming", "falling_back"], "errored"),
    ("client_gone", ["detecting", "streaming", "falling_back", "draining"], "errored"),
    ("shut_down", ["detecting", "streaming", "falling_back", "draining"], "errored"),
    ("gateway_failed", ["detecting", "streaming", "falling_back", "draining"], "errored"),
]
EXPECTED = {(src, event): target for event, sources, target in CONTRACT_TABLE for src in sources}
STATES = ["detecting", "streaming", "falling_back", "draining", "done", "errored"]
EVENTS = [event for event, _, _ in CONTRACT_TABLE]
ALL_PAIRS = list(itertools.product(STATES, EVENTS))
NOT_IN_TABLE = [pair for pair in ALL_PAIRS if pair not in EXPECTED]


class Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def after_transition(self, event: object, source: object, target: object) -> None:
        self.rows.append((str(event), source.id, target.id))  # type: ignore[attr-defined]


def library_step(state: str, event: str) -> str | None:
    """What a real python-statemachine instance does: the oracle."""
    machine = RequestMachine(start_value=state)
    try:
        machine.send(event)
    except LibraryTransitionNotAllowed:
        return None
    return str(next(iter(machine.configuration)).id)


def test_machine_declares_the_contract_states_and_events() -> None:
    assert sorted(s.id for s in RequestMachine.states) == sorted(STATES)
    assert sorted(str(e.id) for e in RequestMachine.events) == sorted(EVENTS)
    assert INITIAL_STATE == "detecting"
    assert {"done", "errored"} == FINAL_STATES


def test_compiled_table_equals_the_contract_table() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=str)
def test_library_instance_agrees_with_compiled_table(state: str, event: str) -> None:
    assert library_step(state, event) == EXPECTED.get((state, event))


@pytest.mark.parametrize(("state", "event"), NOT_IN_TABLE, ids=str)
def test_cursor_pair_not_in_table_raises(state: str, event: str) -> None:
    cursor = Cursor(started_at=0.0, state=state)
    with pytest.raises(TransitionNotAllowed):
        cursor.fire(event, 1.0)
    assert cursor.state == state
    assert cursor.entries == []


@pytest.mark.parametrize("state", ["done", "errored"])
def test_final_states_accept_nothing(state: str) -> None:
    for event in EVENTS:
        assert library_step(state, event) is None
        with pytest.raises(TransitionNotAllowed):
            Cursor(started_at=0.0, state=state).fire(event, 0.0)


TYPICAL_PATHS = {
    "pass-through": ["upstream_streamed", "upstream_finished", "drained"],
    "fallback": ["upstream_answered_whole", "answer_received", "drained"],
    "non-streaming": ["stream_declined", "answer_received", "drained"],
    "client-gone-mid-stream": ["upstream_streamed", "client_gone"],
    "rejected-repeat-fails": ["stream_rejected", "upstream_failed"],
}


@pytest.mark.parametrize("events", TYPICAL_PATHS.values(), ids=TYPICAL_PATHS.keys())
def test_cursor_trace_equals_library_trace_on_typical_paths(events: list[str]) -> None:
    recorder = Recorder()
    machine = RequestMachine(listeners=[recorder])
    cursor = Cursor(started_at=0.0)
    for step, event in enumerate(events):
        machine.send(event)
        cursor.fire(event, step / 1000)
    assert [(e.event, e.source, e.target) for e in cursor.entries] == recorder.rows
    assert [e.at_ms for e in cursor.entries] == list(range(len(events)))
    assert cursor.is_final


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(EVENTS), max_size=12))
def test_cursor_and_library_agree_on_random_sequences(events: list[str]) -> None:
    recorder = Recorder()
    machine = RequestMachine(listeners=[recorder])
    cursor = Cursor(started_at=0.0)
    for event in events:
        try:
            machine.send(event)
            library_ok = True
        except LibraryTransitionNotAllowed:
            library_ok = False
        try:
            cursor.fire(event, 0.0)
            cursor_ok = True
        except TransitionNotAllowed:
            cursor_ok = False
        assert cursor_ok == library_ok
        assert cursor.state == next(iter(machine.configuration)).id
    assert [(e.event, e.source, e.target) for e in cursor.entries] == recorder.rows
