"""The agent registry and assignment service (PRODUCT.md §5).

:class:`AgentService` is reached as ``QueueService.agents``; the API, CLI, SDK and the
dispatcher call it. Registration and heartbeats stay on :class:`QueueService` (the worker
protocol); this adds reads, status changes, failover, per-queue dispatch settings and bids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.domain.agents import (
    MISSED_HEARTBEATS,
    AgentWorkload,
    Bid,
    BidSpec,
    QueueDispatch,
    QueueDispatchUpdate,
)
from offload.domain.errors import InvalidInput
from offload.domain.models import Agent, AgentStatus

if TYPE_CHECKING:
    from offload.core.service import QueueService


class AgentService:
    """Agents: read, drain, fail over; queues: dispatch mode; auctions: bids."""

    def __init__(self, queue: QueueService) -> None:
        self._queue = queue

    @property
    def heartbeat_s(self) -> float:
        """How often agents should heartbeat (``OFFLOAD_AGENT_HEARTBEAT``, default 10 s)."""
        return self._queue.settings.agent_heartbeat_s

    @property
    def offline_after_s(self) -> float:
        """Silence after which an agent is offline: three missed heartbeats."""
        return MISSED_HEARTBEATS * self.heartbeat_s

    def _now(self) -> float:
        return self._queue.clock.now()

    # ------------------------------------------------------------------ registry
    async def get(self, agent_id: str) -> Agent:
        """One agent with load and history (:class:`NotFound` if unknown)."""
        return await self._queue.store.get_agent(agent_id)

    async def workload(self, agent_id: str) -> AgentWorkload:
        """The agent, the tasks it holds now, and its history."""
        return await self._queue.store.agent_workload(agent_id)

    async def available(self, capability: str | None = None) -> list[Agent]:
        """Online agents below their concurrency limit (having ``capability``, if given),
        least loaded first, then most proficient."""
        agents = [
            a
            for a in await self._queue.store.list_agents()
            if a.status is AgentStatus.ONLINE
            and a.load < a.max_concurrency
            and (capability is None or capability in a.capabilities)
        ]
        agents.sort(
            key=lambda a: (
                a.load / a.max_concurrency,
                -(a.capabilities.get(capability, 0.0) if capability else 0.0),
                a.id,
            )
        )
        return agents

    async def set_status(self, agent_id: str, status: AgentStatus) -> Agent:
        """``draining``: finish current work, take no new. ``online``: take work again.
        ``offline``: retire now (its leases expire and its tasks are re-queued). ``busy`` is
        set by the agent itself through its heartbeat metadata, not here."""
        if status is AgentStatus.BUSY:
            raise InvalidInput(
                "busy is reported by the agent itself; set online, draining or offline",
                field="status",
            )
        return await self._queue.store.set_agent_status(agent_id, status, self._now())

    async def reap(self) -> list[str]:
        """Take silent agents offline (three missed heartbeats) and expire their leases."""
        return await self._queue.store.reap_agents(self._now(), self.offline_after_s)

    # ------------------------------------------------------------------ dispatch settings
    async def dispatch_settings(self, queue: str) -> QueueDispatch:
        """A queue's dispatch mode (``pull`` unless set)."""
        return await self._queue.store.get_queue_dispatch(_queue_name(queue))

    async def set_dispatch(self, queue: str, update: QueueDispatchUpdate) -> QueueDispatch:
        """Change a queue's dispatch mode, hybrid threshold or auction window."""
        return await self._queue.store.set_queue_dispatch(_queue_name(queue), update, self._now())

    # ------------------------------------------------------------------ auctions
    async def bid(self, task_id: str, bid: BidSpec, owner: str | None = None) -> Bid:
        """Place (or replace) a bid on an announced task while its window is open."""
        if owner is not None:
            await self._queue.get(task_id, owner)
        return await self._queue.store.place_bid(task_id, bid, self._now())

    async def bids(self, task_id: str, owner: str | None = None) -> list[Bid]:
        """A task's bids, best (cheapest) first."""
        await self._queue.get(task_id, owner)
        return await self._queue.store.bids(task_id)


def _queue_name(queue: str) -> str:
    name = queue.strip()
    if not name or len(name) > 100:
        raise InvalidInput("queue name must be 1-100 characters", field="queue")
    return name
