"""
The request machine of contract §2, declared with python-statemachine.

This class is the single source of truth for the lifecycle: :mod:`engine.trace` compiles it
into a ``(state, event) -> target`` table at import, and requests step that table instead of
instantiating the library (an instance costs more than a request's whole budget).
Sources are listed explicitly so the class reads line by line against the contract's table.
"""

from __future__ import annotations

from statemachine import State, StateMachine

__all__ = ["RequestMachine"]


class RequestMachine(StateMachine):
    """One request: detecting -> streaming / falling_back -> draining -> done / errored."""

    allow_event_without_transition = False
    catch_errors_as_events = False

    detecting = State(initial=True)
    streaming = State()
    falling_back = State()
    draining = State()
    done = State(final=True)
    errored = State(final=True)

    upstream_streamed = detecting.to(streaming)
    upstream_answered_whole = detecting.to(falling_back)
    stream_rejected = detecting.to(falling_back)
    stream_declined = detecting.to(falling_back)
    answer_received = falling_back.to(draining)
    upstream_finished = streaming.to(draining)
    drained = draining.to(done)
    upstream_failed = errored.from_(detecting, streaming, falling_back)
    timed_out = errored.from_(detecting, streaming, falling_back)
    client_gone = errored.from_(detecting, streaming, falling_back, draining)
    shut_down = errored.from_(detecting, streaming, falling_back, draining)
    gateway_failed = errored.from_(detecting, streaming, falling_back, draining)
