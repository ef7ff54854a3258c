"""
The async driver: runs one engine session between an upstream and a client, on asyncio.

:class:`Exchange` performs what the session asks (call or cancel the upstream, send the head
and the body) and tells it what happened (upstream head, bytes, end, failure; deadlines; the
client leaving; shutdown). It is framework-neutral: a web framework iterates
:meth:`Exchange.frames`, sends what it yields, and closes it when the client leaves.

Rules:

1. One task reads the upstream and feeds an inbox; the frames generator is the only place
   that calls the session, so the session needs no locks.
2. The head is the first frame: a framework awaits it before it answers (§5 "holding the
   head back").
3. Closing or cancelling :meth:`Exchange.frames` before it ended means the client left
   (``client_gone``), or, during shutdown, ``shut_down``. The upstream call is cancelled at once.
4. Every loop reaches a real suspension at least every ``YIELD_EVERY`` inputs, so a fast
   upstream never starves the event loop (stack-notes §2).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Final, Literal

import httpx

from engine.errors import GatewayError, InternalError
from engine.events import (
    CallUpstream,
    CancelUpstream,
    ClientGone,
    Delivered,
    Finish,
    Input,
    SendBytes,
    SendHead,
    ShutDown,
    UpstreamData,
    UpstreamEnd,
    UpstreamFailed,
    UpstreamHead,
)
from engine.session import Session

from .errors import map_httpx_error
from .upstream import Prepared, Upstream

__all__ = ["Exchange", "Frame"]

Frame = SendHead | bytes
#: The reader pauses when this many inputs wait unread (the client is slower than upstream).
INBOX_HIGH_WATER: Final = 64
#: A real suspension at least this often, even when inputs are always ready.
YIELD_EVERY: Final = 32
#: How long a finished upstream body may take to end by itself before it is closed.
DRAIN_GRACE: Final = 2.0

_background: set[asyncio.Task[None]] = set()


class Exchange:
    """One request's session, its upstream call and its output, wired together."""

    def __init__(
        self,
        session: Session,
        upstream: Upstream,
        prepared: Prepared,
        client: httpx.AsyncClient,
        *,
        key: str | None,
        on_finish: Callable[[Session], None] | None = None,
        shutting_down: Callable[[], bool] = lambda: False,
    ) -> None:
        self.session = session
        self._upstream = upstream
        self.prepared = prepared
        self._client = client
        self._key = key
        self._on_finish = on_finish
        self._shutting_down = shutting_down
        self._loop = asyncio.get_running_loop()
        self._inbox: collections.deque[Input] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._reader: asyncio.Task[None] | None = None
        self._discard = False

    def clock(self) -> float:
        return self._loop.time()

    # --- inputs from outside ------------------------------------------------------------

    def push(self, event: Input) -> None:
        """Deliver an input to the session (from the reader, or a shutdown)."""
        if self._discard:
            return
        self._inbox.append(event)
        if len(self._inbox) >= INBOX_HIGH_WATER:
            self._room.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def shut_down(self) -> None:
        """The shutdown grace period is over: end this request with ``shut_down``."""
        self.push(ShutDown())

    # --- the loop -----------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[Frame]:
        """The head, then body bytes, until the session finishes."""
        session = self.session
        finished = False
        try:
            actions = session.start(self.clock())
            since_suspend = 0
            while True:
                for action in actions:
                    if isinstance(action, SendBytes):
                        yield action.data
                    elif isinstance(action, SendHead):
                        yield action
                    elif isinstance(action, CallUpstream):
                        self._start_call(action.stream)
                    elif isinstance(action, CancelUpstream):
                        await self._cancel_reader()
                    elif isinstance(action, Finish):
                        finished = True
                if finished or session.is_final:
                    break
                event = self._take_nowait()
                if event is None or since_suspend >= YIELD_EVERY:
                    since_suspend = 0
                    if event is not None:
                        self._inbox.appendleft(event)
                        await asyncio.sleep(0)
                        event = self._take_nowait()
                    if event is None:
                        event = await self._wait_input(session.next_deadline())
                since_suspend += 1
                now = self.clock()
                actions = session.handle(event, now) if event else session.handle_timer(now)
            session.handle(Delivered(), self.clock())
        finally:
            await self._close(finished)

    async def _close(self, finished: bool) -> None:
        session = self.session
        if not session.is_final:
            gone = ShutDown() if self._shutting_down() else ClientGone()
            session.handle(gone, self.clock())
        self._discard = True
        self._inbox.clear()
        self._room.set()
        reader = self._reader
        if reader is not None and not reader.done():
            if finished and session.state == "done":
                self._drain_in_background(reader)
            else:
                await self._cancel_reader()
        if self._on_finish is not None:
            self._on_finish(session)

    def _take_nowait(self) -> Input | None:
        if not self._inbox:
            return None
        event = self._inbox.popleft()
        if not self._room.is_set() and len(self._inbox) < INBOX_HIGH_WATER // 2:
            self._room.set()
        return event

    async def _wait_input(self, deadline: float | None) -> Input | None:
        """The next input, or None when *deadline* (the loop's clock) passes first."""
        if deadline is not None and deadline <= self.clock():
            return None
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = None
        if deadline is not None:
            timer = self._loop.call_at(deadline, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return self._take_nowait()

    # --- the upstream call --------------------------------------------------------------

    def _start_call(self, stream: bool) -> None:
        previous = self._reader
        if previous is not None and not previous.done():
            previous.cancel()
        self._reader = self._loop.create_task(self._read(stream))

    async def _read(self, stream: bool) -> None:
        # Every failure reaches the session as an input: a reader that died silently would
        # leave the request waiting for its answer timeout.
        try:
            request = self._upstream.chat_request(self.prepared, stream=stream, key=self._key)
            response = await self._client.send(request, stream=True)
        except Exception as exc:
            error = _mapped(exc, "head")
            if isinstance(error, InternalError):  # a bug, not an upstream fault: keep it
                self.session.exception = exc
            self.push(UpstreamFailed(error))
            return
        try:
            headers = response.headers
            self.push(
                UpstreamHead(
                    response.status_code,
                    headers.get("content-type", ""),
                    headers.get("retry-after"),
                )
            )
            async for data in response.aiter_raw():
                if not data:
                    continue
                self.push(UpstreamData(data))
                if not self._room.is_set():
                    await self._room.wait()
            self.push(UpstreamEnd())
        except Exception as exc:
            self.push(UpstreamFailed(_mapped(exc, "body")))
        finally:
            await response.aclose()

    async def _cancel_reader(self) -> None:
        reader = self._reader
        if reader is None or reader.done():
            return
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader

    def _drain_in_background(self, reader: asyncio.Task[None]) -> None:
        """Let a finished upstream body end by itself, so its connection is pooled again."""

        async def drain() -> None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(reader, DRAIN_GRACE)

        task = self._loop.create_task(drain())
        _background.add(task)
        task.add_done_callback(_background.discard)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _mapped(exc: Exception, phase: Literal["head", "body"]) -> GatewayError:
    try:
        return map_httpx_error(exc, phase=phase)
    except Exception:  # the mapping itself failed: a bug
        return InternalError()
