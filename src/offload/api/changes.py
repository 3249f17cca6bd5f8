"""One watcher of the database per server process, any number of waiters.

Long polls (wait, watch, claims, ``/v1/changes``), the live event stream and the embedded
worker all wait here instead of each polling the store: one :meth:`QueueService.wait_for_work`
loop wakes them all, and it runs only while someone waits. Waiters take a
:meth:`ChangeFeed.mark` *before* reading, so a change that lands between the read and the
wait is never missed.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time

from offload.core.service import QueueService
from offload.domain.models import ClaimRequest, Task, TaskEvent

log = logging.getLogger("offload.api")

#: Waiters re-check at least this often, whatever the feed says.
RECHECK_S = 1.0


class ChangeFeed:
    """Broadcasts "the database may have changed" to every waiter in this process."""

    def __init__(self, service: QueueService) -> None:
        self._service = service
        self._generation = 0
        self._event = asyncio.Event()
        self._closed = False
        # The store is watched only while someone waits: an idle server does not poll.
        self._waiters = 0
        self._wanted = asyncio.Event()

    @property
    def closed(self) -> bool:
        """True once the server is shutting down: long polls and streams answer now."""
        return self._closed

    def mark(self) -> int:
        """The current generation; pass it to :meth:`wait` to catch changes after now."""
        return self._generation

    def notify(self) -> None:
        """Wake every waiter (a change was seen, or the server is stopping)."""
        self._generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        """Release every waiter and answer later ones at once (graceful shutdown). The
        watch goes on until cancelled, for the embedded worker's last moments."""
        if not self._closed:
            self._closed = True
            self.notify()

    async def wait(self, timeout: float, since: int | None = None) -> bool:
        """True when a change came after ``since`` (default: now), False after ``timeout``."""
        if since is not None and since != self._generation:
            return True
        if self._closed:
            return False
        event = self._event
        self._waiters += 1
        self._wanted.set()
        try:
            await asyncio.wait_for(event.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1
        return not self._closed

    async def run(self) -> None:
        """Watch the store until cancelled (started by the app's lifespan)."""
        since = self._service.change_token()
        while True:
            if self._waiters == 0:
                self._wanted.clear()
                await self._wanted.wait()
                # Whatever changed while nobody watched: wake the new waiters to re-check.
                if self._service.change_token() != since:
                    since = self._service.change_token()
                    self.notify()
                    continue
            try:
                changed = await self._service.wait_for_work(RECHECK_S, since)
            except Exception as exc:  # the store is briefly unreachable: keep watching
                log.warning("change watch failed: %s", exc)
                await asyncio.sleep(RECHECK_S)
                changed = True
            # Read the token before waking anyone: a later commit is caught by the next wait.
            since = self._service.change_token()
            if changed:
                self.notify()


# -- long polls over the feed ---------------------------------------------------------------
async def wait_for_task(
    service: QueueService, feed: ChangeFeed, task_id: str, timeout: float, owner: str | None
) -> Task:
    """The task once it is terminal, or as it stands after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        mark = feed.mark()
        task = await service.get(task_id, owner)
        remaining = deadline - time.monotonic()
        if task.done or remaining <= 0 or feed.closed:
            return task
        await feed.wait(min(remaining, RECHECK_S), mark)


async def watch_events(
    service: QueueService,
    feed: ChangeFeed,
    task_id: str,
    *,
    after: int,
    limit: int,
    timeout: float,
    owner: str | None,
) -> builtins.list[TaskEvent]:
    """Events of one task after ``after``; waits up to ``timeout`` for the first one."""
    await service.get(task_id, owner)  # 404 for unknown ids and other tenants' tasks
    deadline = time.monotonic() + timeout
    while True:
        mark = feed.mark()
        events = await service.events(task_id, after, limit)
        remaining = deadline - time.monotonic()
        if events or remaining <= 0 or feed.closed:
            return events
        await feed.wait(min(remaining, RECHECK_S), mark)


async def claim_waiting(
    service: QueueService, feed: ChangeFeed, req: ClaimRequest, wait_s: float
) -> tuple[builtins.list[Task], int]:
    """Claim; with nothing to claim, try again on every change for up to ``wait_s``.

    Returns the tasks and the change mark taken before the last claim (a caller waiting
    for work from that mark cannot miss a submit that raced the claim).
    """
    deadline = time.monotonic() + wait_s
    while True:
        mark = feed.mark()
        tasks = await service.claim(req)
        remaining = deadline - time.monotonic()
        if tasks or remaining <= 0 or feed.closed:
            return tasks, mark
        await feed.wait(min(remaining, RECHECK_S), mark)
