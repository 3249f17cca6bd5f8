"""Threads for synchronous handlers.

Unlike ``ThreadPoolExecutor``, a thread stuck in an attempt the worker gave up on (timed out,
cancelled, lease lost) does not cost a slot: every submitted job gets a thread at once, a new
one if none is idle, and threads beyond ``size`` retire when their job ends. Threads are
daemons, so a handler that never returns cannot keep the process alive after shutdown.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

J = TypeVar("J")


class HandlerThreads(Generic[J]):
    """Run ``run(job)`` for each submitted job on its own thread, reusing idle threads."""

    def __init__(self, run: Callable[[J], None], size: int, name: str = "offload-handler") -> None:
        self._run = run
        self._size = max(1, size)
        self._name = name
        self._jobs: queue.SimpleQueue[J | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._closed = False
        self._serial = 0

    @property
    def threads(self) -> int:
        """Threads alive now (idle, busy or stuck)."""
        return self._threads

    def submit(self, job: J) -> None:
        """Start ``job`` now on an idle thread or a new one."""
        with self._lock:
            if self._closed:
                raise RuntimeError("handler threads are shut down")
            # Reserve an idle thread, or count the one about to start: each job has a thread.
            spawn = self._idle == 0
            if spawn:
                self._threads += 1
                self._serial += 1
                serial = self._serial
            else:
                self._idle -= 1
        self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._work, name=f"{self._name}-{serial}", daemon=True).start()

    def shutdown(self) -> None:
        """Let idle threads exit; busy ones exit when their job ends. Does not wait."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
            self._threads -= idle
        for _ in range(idle):
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._run(job)
            with self._lock:
                if self._closed or self._threads > self._size:
                    self._threads -= 1
                    return
                self._idle += 1
