"""Keeping Python's cyclic garbage collector out of the way: of bulk work, and of what a
long-running process built at start-up.

A bulk submit of 1,000 tasks allocates tens of thousands of short-lived, acyclic objects
(records, rows, JSON texts) that reference counting frees the moment the batch is stored.
The cyclic collector does not know that: the allocations trip its generation counters,
live batch objects are promoted into the oldest generation, and every few batches it walks
the whole heap, 10–25 ms each time. That was a fifth of a bulk submit's time in a process
holding 20,000 specs (and in a long-lived server, which holds more). Pausing the collector
while a batch is built and stored leaves nothing uncollected that would have been
collected: the batch's objects are freed by reference counts, and collection resumes
afterwards.

The pause is process-wide, so it is shared: concurrent batches (several HTTP clients at
once) hold it together and the collector resumes when the last one ends. So that steady
overlapping load cannot keep the collector off for good, a pause that has lasted longer
than :data:`MAX_PAUSE_S` runs a full collection when one of its batches ends, and starts
its clock again: at worst one collection a second, as often as the collector itself runs
under a bulk load.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator

#: A pause held this long (by overlapping batches) collects once when a batch ends.
MAX_PAUSE_S = 1.0

_lock = threading.Lock()
_holders = 0
_resume = False
_since = 0.0


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Pause cyclic garbage collection for the block (re-entrant, thread- and task-safe).

    Leaves the collector off if it was off (a program that disabled it keeps its choice).
    """
    global _holders, _resume, _since
    with _lock:
        if _holders == 0:
            _resume = gc.isenabled()
            _since = time.monotonic()
            if _resume:
                gc.disable()
        _holders += 1
    try:
        yield
    finally:
        overdue = False
        with _lock:
            _holders -= 1
            if _holders == 0:
                if _resume:
                    gc.enable()
            elif _resume and time.monotonic() - _since > MAX_PAUSE_S:
                overdue = True
                _since = time.monotonic()
        if overdue:
            # Outside the lock: finalizers run by a collection may submit work themselves.
            # Explicit collections run while the collector is disabled.
            gc.collect()


def freeze_startup_heap() -> None:
    """Exempt what a long-running process built at start-up from garbage collection.

    Modules, classes, schemas and the user's task modules live as long as the process, yet
    every full collection walked them again: about a tenth of a busy worker's CPU went to
    collections, two thirds of it to those walks. Call when start-up is done (imports
    loaded, store open), in a process Offload owns (``offload worker``, ``offload serve``),
    not in a user's program; objects made later are collected as usual.
    """
    gc.freeze()


def collection_held() -> bool:
    """True while some block holds :func:`collection_paused` (for tests and diagnostics)."""
    return _holders > 0
