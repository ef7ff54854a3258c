"""
The compiled transition table and the cursor that steps it, one trace entry per step.

Rule: the session never looks at the table itself; it calls :meth:`Cursor.fire`, the one
place where the state changes and the trace is written (contract §2, §11).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .machine import RequestMachine

__all__ = [
    "FINAL_STATES",
    "INITIAL_STATE",
    "TRANSITIONS",
    "Cursor",
    "TraceEntry",
    "TransitionNotAllowed",
    "compile_machine",
]


def compile_machine(machine: type[Any]) -> dict[tuple[str, str], str]:
    """Read a python-statemachine class into a ``(source, event) -> target`` table."""
    table: dict[tuple[str, str], str] = {}
    for state in machine.states:
        for transition in state.transitions:
            for event in transition.events:
                key = (state.id, str(event))
                if key in table:
                    raise ValueError(f"{key} has two targets; the machine must be deterministic")
                table[key] = transition.target.id
    return table


TRANSITIONS: Mapping[tuple[str, str], str] = compile_machine(RequestMachine)
INITIAL_STATE: str = RequestMachine.initial_state.id
FINAL_STATES: frozenset[str] = frozenset(s.id for s in RequestMachine.final_states)


class TransitionNotAllowed(Exception):
    """An event that the machine does not accept in its current state: a bug."""

    def __init__(self, event: str, state: str) -> None:
        super().__init__(f"event {event!r} is not allowed in state {state!r}")
        self.event = event
        self.state = state


@attrs.frozen
class TraceEntry:
    """One transition, ``at_ms`` milliseconds after the request began."""

    source: str
    event: str
    target: str
    at_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "event": self.event,
            "target": self.target,
            "at_ms": self.at_ms,
        }


@attrs.define
class Cursor:
    """Where one request is in the machine, and how it got there."""

    started_at: float
    table: Mapping[tuple[str, str], str] = TRANSITIONS
    state: str = INITIAL_STATE
    entries: list[TraceEntry] = attrs.Factory(list)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def fire(self, event: str, now: float) -> str:
        """Step the machine by *event* at time *now*; return the new state."""
        target = self.table.get((self.state, event))
        if target is None:
            raise TransitionNotAllowed(event, self.state)
        at_ms = int((now - self.started_at) * 1000)
        self.entries.append(TraceEntry(self.state, event, target, at_ms))
        self.state = target
        return target

    def visited(self, state: str) -> bool:
        return any(entry.target == state for entry in self.entries)
