"""The agent registry and assignment service (PRODUCT.md §5).

:class:`AgentService` is reached as ``QueueService.agents``; the API, CLI, SDK and the
dispatcher call it. Registration and heartbeats stay on :class:`QueueService` (the worker
protocol); this adds reads, status changes, failover, per-queue dispatch settings and bids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.core.scoring import TypeHistory
from offload.core.teams import pick_collaborators, pick_swarm
from offload.domain.agents import (
    MISSED_HEARTBEATS,
    AgentWorkload,
    Bid,
    BidSpec,
    QueueDispatch,
    QueueDispatchUpdate,
)
from offload.domain.errors import InvalidInput
from offload.domain.models import Agent, AgentStatus, Task, TaskSpec, TeamMode, WorkflowSpec

if TYPE_CHECKING:
    from offload.core.service import QueueService


class AgentService:
    """Agents: read, drain, fail over; queues: dispatch mode; auctions: bids."""

    def __init__(self, queue: QueueService) -> None:
        self._queue = queue
        #: Agents draining, as of the last maintenance pass (or status change here): their
        #: claims get nothing, without a query on the claim path.
        self.draining: frozenset[str] = frozenset()

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
        agent = await self._queue.store.set_agent_status(agent_id, status, self._now())
        if status is AgentStatus.DRAINING:
            self.draining = self.draining | {agent_id}
        else:
            self.draining = self.draining - {agent_id}
        return agent

    async def reap(self) -> list[str]:
        """Take silent agents offline (three missed heartbeats) and expire their leases;
        refresh which agents are draining."""
        self.draining = frozenset(await self._queue.store.draining_agents())
        return await self._queue.store.reap_agents(self._now(), self.offline_after_s)

    # ------------------------------------------------------------------ dispatch settings
    async def dispatch_settings(self, queue: str) -> QueueDispatch:
        """A queue's dispatch mode (``pull`` unless set)."""
        return await self._queue.store.get_queue_dispatch(_queue_name(queue))

    async def set_dispatch(self, queue: str, update: QueueDispatchUpdate) -> QueueDispatch:
        """Change a queue's dispatch mode, hybrid threshold or auction window."""
        return await self._queue.store.set_queue_dispatch(_queue_name(queue), update, self._now())

    # ------------------------------------------------------------------ teams
    async def submit_swarm(self, spec: TaskSpec, owner: str | None = None) -> Task:
        """``team: {mode: swarm, size: n}``: the task on ``n`` different agents, as a
        workflow whose children are pinned one per agent; the parent's result merges
        theirs keyed by agent id (see :mod:`offload.core.teams`)."""
        team = spec.team
        if team is None or team.mode is not TeamMode.SWARM:
            raise InvalidInput("not a swarm task", field="team")
        if spec.agent_id is not None:
            raise InvalidInput("a swarm task cannot be pinned to one agent", field="agent_id")
        task_type = self._queue.registry.get(spec.type)
        required = sorted(set(task_type.capabilities) | set(spec.capabilities or []))
        queue = spec.queue if spec.queue != "default" else task_type.queue
        now = self._now()
        members = pick_swarm(
            required,
            task_type.name,
            queue,
            team.size,
            await self._queue.store.push_candidates(),
            {k: TypeHistory(*v) for k, v in (await self._queue.store.agent_history(now)).items()},
        )
        if len(members) < team.size:
            raise InvalidInput(
                f"a swarm of {team.size} needs {team.size} online agents able to run "
                f"{spec.type} on queue {queue!r}; {len(members)} are",
                field="team.size",
                details={"available": [a.id for a in members]},
            )
        children = [
            spec.model_copy(
                update={
                    "team": None,
                    "agent_id": agent.id,
                    "ref": agent.id if len(agent.id) <= 100 else f"member{i + 1}",
                    "idempotency_key": None,
                    "depends_on": [],
                }
            )
            for i, agent in enumerate(members)
        ]
        workflow = WorkflowSpec(
            title=spec.title or f"swarm of {team.size}: {spec.type}",
            description=spec.description,
            tasks=children,
            priority=spec.priority,
            tags=spec.tags,
            queue=queue,
            owner=spec.owner,
            requester=spec.requester,
            idempotency_key=spec.idempotency_key,
            metadata={**spec.metadata, "team": team.model_dump(mode="json")},
        )
        return await self._queue.submit_workflow(workflow, owner)

    async def repin_swarms(self, offline: list[str]) -> int:
        """Swarm members waiting for an agent that went offline move to another capable
        online agent not yet in their swarm (their ``ref``, the key of the merged result,
        becomes the new agent's id). Returns how many moved."""
        store = self._queue.store
        moved = 0
        agents: list[Agent] | None = None
        for task in await store.pinned_queued(offline):
            parent = await store.get_task(task.parent_id or "")
            team = (parent.metadata.get("team") if parent is not None else None) or {}
            if parent is None or team.get("mode") != TeamMode.SWARM.value:
                continue  # an ordinary pin: it waits for its agent
            taken = set()
            for child_id in parent.children:
                child = await store.get_task(child_id)
                if child is not None and child.agent_id:
                    taken.add(child.agent_id)
            if agents is None:
                agents = await store.push_candidates()
            free = [a for a in agents if a.id not in taken]
            picks = pick_swarm(task.capabilities, task.type, task.queue, 1, free)
            if not picks or task.agent_id is None:
                continue  # nobody free: it waits (for its agent, or the next lost one)
            pick = picks[0]
            ref = pick.id if task.ref == task.agent_id and len(pick.id) <= 100 else None
            if await store.repin(task.id, task.agent_id, pick.id, ref, self._now()):
                moved += 1
        return moved

    async def staff_teams(self, tasks: list[Task], primary: str) -> list[Task]:
        """Name collaborators for claimed team tasks (``primary`` claimed them)."""
        agents: list[Agent] | None = None
        out = []
        for task in tasks:
            team = task.team
            if team is None or team.mode is not TeamMode.TEAM or task.lease is None:
                out.append(task)
                continue
            if agents is None:
                agents = await self._queue.store.push_candidates()
            collaborators, roles = pick_collaborators(primary, task, team, agents)
            staffed = await self._queue.store.set_team(
                task.id, task.lease.id, collaborators, roles, self._now()
            )
            out.append(staffed or task)
        return out

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
