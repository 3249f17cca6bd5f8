"""Run the store's blocking psycopg code on the event loop's thread without blocking it.

The shared SQL logic (:mod:`offload.storage.sql`) is synchronous: SQLite and PostgreSQL run
the same functions over a cursor. Run in a worker thread, each store call paid a handoff
there and back (a work queue, a thread wake-up, a future completed across threads and a
wake-up of the loop): 80-100 µs of CPU per call, a fifth of an idle submit→result round
trip on PostgreSQL. Here such a function runs in a greenlet on the loop's own thread
instead; whenever psycopg would block on its socket, the greenlet switches back to the loop,
which awaits the socket and switches in again. The code is unchanged and the loop keeps
running other coroutines while PostgreSQL works (what SQLAlchemy's asyncio layer does with
the same library).

Only a :class:`LoopConnection` waits this way, and only inside :func:`call`; in any other
thread or greenlet it is a plain blocking psycopg connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.waiting import Ready, Wait

try:
    import greenlet
except ImportError:  # pragma: no cover - greenlet comes with the postgres extra
    greenlet = None

R = TypeVar("R")

#: Whether calls can run on the loop here (without greenlet, every call takes a thread).
AVAILABLE = greenlet is not None
#: Finishers of calls whose callers were cancelled (kept until they end; see call()).
_finishing: set[asyncio.Task[Any]] = set()


if greenlet is not None:

    class _Call(greenlet.greenlet):  # type: ignore[misc]
        """A store call running on the loop's thread (its socket waits go to the loop)."""


def on_loop() -> bool:
    """Whether the running code is a bridged call (socket waits must not block)."""
    return greenlet is not None and type(greenlet.getcurrent()) is _Call


class LoopConnection(psycopg.Connection[Any]):
    """A psycopg connection whose waits, inside :func:`call`, go through the event loop."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        """Drive ``gen`` (psycopg's protocol generator) to its end."""
        if timeout is not None or not on_loop():
            return super().wait(gen, interval, timeout)
        fd = self.pgconn.socket
        loop_side = greenlet.getcurrent().parent
        try:
            state = next(gen)
            while True:
                ready = _writable(fd) if state == Wait.W else 0
                if not ready:
                    ready = loop_side.switch((fd, state))
                state = gen.send(ready)
        except StopIteration as done:
            return done.value


def _writable(fd: int) -> int:
    # A socket asked for writing nearly always is writable: a zero-timeout poll costs far
    # less than a trip through the loop.
    try:
        _, w, _ = select.select([], [fd], [], 0)
    except (OSError, ValueError):
        return 0  # let the loop's wait report it
    return int(Ready.W) if w else 0


async def _ready(fd: int, state: int) -> int:
    """Until ``fd`` is ready for what ``state`` asks; returns psycopg's ``Ready`` flags."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    ready = 0

    def wake(flag: int) -> None:
        nonlocal ready
        ready |= flag
        if not fut.done():
            fut.set_result(None)

    reading, writing = state & Wait.R, state & Wait.W
    if reading:
        loop.add_reader(fd, wake, int(Ready.R))
    try:
        if writing:
            loop.add_writer(fd, wake, int(Ready.W))
        try:
            await fut
        finally:
            if writing:
                loop.remove_writer(fd)
    finally:
        if reading:
            loop.remove_reader(fd)
    return ready


async def _drive(g: Any, request: Any) -> Any:
    """Answer the greenlet's socket waits until it ends; returns what it returned."""
    while not g.dead:
        try:
            ready = await _ready(*request)
        except (OSError, ValueError) as exc:  # the socket is gone
            request = g.throw(psycopg.OperationalError(f"connection socket closed: {exc}"))
            continue
        request = g.switch(ready)
    return request


async def call(fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)`` on this thread, the loop running while it waits on PostgreSQL.

    A caller cancelled mid-call gets its ``CancelledError`` at once while the call runs on
    to its end in the background, as it did in a thread: a transaction is never cut off
    half sent, and the call's own clean-up (returning its connection) still happens.
    """
    g = _Call(fn)
    request = g.switch(*args)
    if g.dead:
        return request  # type: ignore[no-any-return]
    try:
        return await _drive(g, request)  # type: ignore[no-any-return]
    except asyncio.CancelledError:
        if not g.dead:
            finisher = asyncio.get_running_loop().create_task(_finish(g))
            _finishing.add(finisher)
            finisher.add_done_callback(_finishing.discard)
        raise


async def _finish(g: Any) -> None:
    # The greenlet waits in its last switch for an answer to its last request, which the
    # cancellation interrupted; ask for that readiness again (a spurious wake-up is
    # harmless: psycopg polls again).
    # What the call returns or raises is nobody's any more (it has cleaned up after itself).
    with contextlib.suppress(Exception):
        request = g.switch(0)
        if not g.dead:
            await _drive(g, request)
