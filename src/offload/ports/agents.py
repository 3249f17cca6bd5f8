"""The storage port of agent assignment (PRODUCT.md §5): registry reads and status,
failover, dispatch settings, push assignment and auctions. Part of
:class:`offload.ports.store.Store`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from offload.domain.agents import AgentWorkload, Bid, BidSpec, QueueDispatch, QueueDispatchUpdate
from offload.domain.models import Agent, AgentStatus, AssignmentMethod, Task


class AgentStore(Protocol):
    """Agent-side store operations; each one transaction."""

    async def get_agent(self, agent_id: str) -> Agent:
        """One agent with live load and history, or ``NotFound``."""
        ...

    async def agent_workload(self, agent_id: str) -> AgentWorkload:
        """An agent, the tasks it holds now and its history."""
        ...

    async def set_agent_status(self, agent_id: str, status: AgentStatus, now: float) -> Agent:
        """Set the status; ``offline`` expires the agent's leases at once."""
        ...

    async def reap_agents(self, now: float, offline_after_s: float) -> list[str]:
        """Take agents silent for ``offline_after_s`` offline (expiring their leases, event
        ``agent.offline``); returns those this call changed. Safe from many processes."""
        ...

    async def draining_agents(self) -> set[str]:
        """Ids of the agents now draining."""
        ...

    async def get_queue_dispatch(self, queue: str) -> QueueDispatch:
        """A queue's dispatch settings (``pull`` when never set)."""
        ...

    async def set_queue_dispatch(
        self, queue: str, update: QueueDispatchUpdate, now: float
    ) -> QueueDispatch:
        """Change a queue's dispatch settings."""
        ...

    async def list_queue_dispatch(self) -> list[QueueDispatch]:
        """Queues whose mode is not ``pull``."""
        ...

    async def dispatchable(self, queue: str, min_priority: int, limit: int) -> list[Task]:
        """Queued tasks never up for auction, best first."""
        ...

    async def push_candidates(self) -> list[Agent]:
        """Online agents with their live load (no history)."""
        ...

    async def agent_history(self, now: float) -> dict[tuple[str, str], tuple[int, int, float]]:
        """``(agent, type)`` → (completed, failed, mean seconds) over recent work."""
        ...

    async def assign(
        self,
        task_id: str,
        agent_id: str,
        method: AssignmentMethod,
        lease_ttl_s: float,
        now: float,
        collaborators: Sequence[str] = (),
        roles: Mapping[str, str] | None = None,
    ) -> Task | None:
        """Queued → assigned with a lease for ``agent_id`` (event ``task.assigned``); None
        if the task is no longer queued."""
        ...

    async def set_team(
        self,
        task_id: str,
        lease_id: str,
        collaborators: Sequence[str],
        roles: Mapping[str, str],
        now: float,
    ) -> Task | None:
        """Record a leased task's collaborators and roles (event ``team.formed``)."""
        ...

    async def start_assigned(self, task_id: str, lease_id: str, now: float) -> bool:
        """Assigned → running once the agent accepted."""
        ...

    async def unassign(self, task_id: str, lease_id: str, now: float, reason: str) -> bool:
        """Assigned → queued without spending the attempt (agent busy or unreachable)."""
        ...

    async def pinned_queued(self, agent_ids: Sequence[str]) -> list[Task]:
        """Waiting workflow children pinned to one of ``agent_ids``."""
        ...

    async def repin(
        self, task_id: str, old_agent: str, new_agent: str, new_ref: str | None, now: float
    ) -> bool:
        """Move a waiting pinned task to another agent (event ``swarm.repinned``)."""
        ...

    async def open_auction(self, task_id: str, now: float, window_s: float) -> bool:
        """Announce a queued task for bids (event ``auction.announced``)."""
        ...

    async def place_bid(self, task_id: str, bid: BidSpec, now: float) -> Bid:
        """Record a bid while the auction is open (event ``auction.bid``)."""
        ...

    async def due_auctions(self, now: float) -> list[str]:
        """Open auctions whose window has passed."""
        ...

    async def next_auction_close(self) -> float | None:
        """When the soonest open auction closes, or None."""
        ...

    async def close_auction(self, task_id: str, now: float) -> list[Bid] | None:
        """Close and return the bids, best first (None: someone else closed it)."""
        ...

    async def bids(self, task_id: str) -> list[Bid]:
        """A task's bids, best first."""
        ...
