"""The in-server client: a :class:`LocalClient` whose waits go through the server's
:class:`~offload.api.changes.ChangeFeed`, for the embedded worker and the ``/mcp`` mount."""

from __future__ import annotations

import builtins

from offload.api.changes import ChangeFeed, wait_for_task, watch_events
from offload.client.local import LocalClient
from offload.core.service import QueueService
from offload.domain.errors import WaitTimeout
from offload.domain.models import ClaimRequest, Task, TaskEvent


class ServerClient(LocalClient):
    """A tenant's view of the server's own service (``owner`` None: every task)."""

    def __init__(
        self, service: QueueService, feed: ChangeFeed, *, owner: str | None = None
    ) -> None:
        super().__init__(service, owner=owner)
        self.feed = feed
        self._since: int | None = None

    async def claim(self, req: ClaimRequest) -> builtins.list[Task]:
        """Lease work; a later :meth:`wait_for_work` catches submits racing this claim."""
        self._since = self.feed.mark()
        return await super().claim(req)

    async def wait_for_work(self, timeout: float) -> bool:
        """Until the database changes (since the last claim) or ``timeout``."""
        since, self._since = self._since, None
        if self.feed.closed:
            # Shutting down: the feed answers at once now, so wait on the store itself.
            return await self.service.wait_for_work(timeout)
        return await self.feed.wait(timeout, since)

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Until terminal; ``WaitTimeout`` after ``timeout`` seconds."""
        budget = float("inf") if timeout is None else timeout
        while True:
            task = await wait_for_task(
                self.service, self.feed, task_id, min(budget, 60.0), self.owner
            )
            budget -= 60.0
            if task.done:
                return task
            if budget <= 0 or self.feed.closed:
                raise WaitTimeout(task_id, task.status.value, timeout or 0.0)

    async def watch(
        self, task_id: str, after: int = 0, timeout: float = 30.0
    ) -> builtins.list[TaskEvent]:
        """Events after ``after``; waits up to ``timeout`` for the first one."""
        return await watch_events(
            self.service, self.feed, task_id, after=after, limit=1000, timeout=timeout,
            owner=self.owner,
        )  # fmt: skip

    async def close(self) -> None:
        """Nothing to release: the server owns the store."""
