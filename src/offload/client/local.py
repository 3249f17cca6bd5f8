"""The local client: the SDK talking straight to the service and the embedded store."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from offload.client import bulk
from offload.core.service import QueueService
from offload.domain.agents import AgentWorkload, Bid, BidSpec, QueueDispatch, QueueDispatchUpdate
from offload.domain.flow import (
    Limit,
    LimitSpec,
    QueueSettings,
    QueueSettingsSpec,
    Resource,
)
from offload.domain.models import (
    Ack,
    Agent,
    AgentRegistration,
    AgentStatus,
    ClaimRequest,
    Completion,
    Failure,
    LeaseRef,
    LeaseState,
    ProgressUpdate,
    Stats,
    Task,
    TaskEvent,
    TaskFilter,
    TaskPage,
    TaskSpec,
    TaskTypeInfo,
    WorkflowSpec,
    validated,
)
from offload.domain.review import ReviewDecision, ReviewFilter
from offload.domain.schedules import Schedule, ScheduleSpec


class LocalClient(bulk.BulkSubmit):
    """:class:`offload.client.base.AsyncClient` over an in-process :class:`QueueService`."""

    def __init__(self, service: QueueService, *, owner: str | None = None) -> None:
        self.service = service
        self.owner = owner
        self._since: int | None = None

    async def submit(self, task_type: str, input: Any = None, **options: Any) -> Task:
        """Create one task."""
        spec = validated(TaskSpec, {"type": task_type, "input": input or {}, **options})
        return await self.service.submit(spec, self.owner)

    async def submit_spec(self, spec: TaskSpec) -> Task:
        """Create one task from a spec."""
        return await self.service.submit(spec, self.owner)

    async def submit_many(self, specs: Sequence[TaskSpec]) -> builtins.list[Task]:
        """Create up to 1,000 tasks atomically."""
        return await self.service.submit_many(specs, self.owner)

    async def submit_workflow(self, spec: WorkflowSpec) -> Task:
        """Create a workflow."""
        return await self.service.submit_workflow(spec, self.owner)

    async def get(self, task_id: str) -> Task:
        """One task."""
        return await self.service.get(task_id, self.owner)

    async def list(self, flt: TaskFilter | None = None, **filters: Any) -> TaskPage:
        """A page of tasks."""
        return await self.service.list(flt or validated(TaskFilter, filters), self.owner)

    async def events(
        self, task_id: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """A task's events."""
        return await self.service.events(task_id, after, limit, self.owner)

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Until terminal."""
        return await self.service.wait(task_id, timeout, self.owner)

    async def watch(
        self, task_id: str, after: int = 0, timeout: float = 30.0
    ) -> builtins.list[TaskEvent]:
        """Long-poll events."""
        return await self.service.watch(task_id, after, timeout, self.owner)

    async def cancel(self, task_id: str, reason: str | None = None) -> Task:
        """Cancel."""
        return await self.service.cancel(task_id, reason, owner=self.owner, actor=self.owner)

    async def pause(self, task_id: str) -> Task:
        """Pause."""
        return await self.service.pause(task_id, owner=self.owner, actor=self.owner)

    async def resume(self, task_id: str) -> Task:
        """Resume."""
        return await self.service.resume(task_id, owner=self.owner, actor=self.owner)

    async def retry(self, task_id: str) -> Task:
        """Retry one."""
        return await self.service.retry(task_id, owner=self.owner, actor=self.owner)

    async def retry_many(self, flt: TaskFilter) -> builtins.list[Task]:
        """Retry matching dead-letter tasks."""
        return await self.service.retry_many(flt, owner=self.owner, actor=self.owner)

    async def set_limit(self, task_type: str, spec: LimitSpec) -> Limit:
        """Set a type's limits."""
        return await self.service.set_limit(task_type, spec)

    async def delete_limit(self, task_type: str) -> None:
        """Remove a type's limits."""
        await self.service.delete_limit(task_type)

    async def list_limits(self) -> builtins.list[Limit]:
        """Every type's limits."""
        return await self.service.list_limits()

    async def set_resource(self, name: str, capacity: int) -> Resource:
        """Create a resource or set its capacity."""
        return await self.service.set_resource(name, capacity)

    async def delete_resource(self, name: str) -> None:
        """Remove a resource."""
        await self.service.delete_resource(name)

    async def list_resources(self) -> builtins.list[Resource]:
        """Every resource with its usage."""
        return await self.service.list_resources()

    async def set_queue_settings(self, queue: str, spec: QueueSettingsSpec) -> QueueSettings:
        """Set a queue's options."""
        return await self.service.set_queue_settings(queue, spec)

    async def list_queue_settings(self) -> builtins.list[QueueSettings]:
        """Every queue with options set."""
        return await self.service.list_queue_settings()

    async def clear_cache(self, task_type: str | None = None) -> int:
        """Drop cached results."""
        return await self.service.clear_cache(task_type)

    async def create_schedule(self, spec: ScheduleSpec) -> Schedule:
        """Create a schedule."""
        return await self.service.create_schedule(spec, self.owner)

    async def list_schedules(self) -> builtins.list[Schedule]:
        """Your schedules."""
        return await self.service.list_schedules(self.owner)

    async def get_schedule(self, ident: str) -> Schedule:
        """One schedule."""
        return await self.service.get_schedule(ident, self.owner)

    async def delete_schedule(self, ident: str) -> Schedule:
        """Remove a schedule."""
        return await self.service.delete_schedule(ident, self.owner)

    async def pause_schedule(self, ident: str, paused: bool = True) -> Schedule:
        """Pause or resume a schedule."""
        return await self.service.pause_schedule(ident, paused, self.owner)

    async def review(self, task_id: str, decision: ReviewDecision) -> Task:
        """Approve or reject a task in ``reviewing``."""
        return await self.service.review(task_id, decision, owner=self.owner, actor=self.owner)

    async def list_reviews(self, flt: ReviewFilter) -> TaskPage:
        """Tasks whose review matches ``flt``."""
        return await self.service.list_reviews(flt, self.owner)

    async def stats(self) -> Stats:
        """Statistics."""
        return await self.service.stats(self.owner)

    async def task_types(self) -> builtins.list[TaskTypeInfo]:
        """Catalogue."""
        return self.service.task_types()

    async def register_agent(self, reg: AgentRegistration) -> Agent:
        """Register an agent."""
        return await self.service.register_agent(reg)

    async def agent_heartbeat(self, agent_id: str, metadata: dict[str, Any] | None = None) -> Agent:
        """Agent liveness."""
        return await self.service.agent_heartbeat(agent_id, metadata)

    async def deregister_agent(self, agent_id: str) -> None:
        """Agent leaving."""
        await self.service.deregister_agent(agent_id)

    async def get_agent(self, agent_id: str) -> Agent:
        """One agent."""
        return await self.service.agents.get(agent_id)

    async def available_agents(self, capability: str | None = None) -> builtins.list[Agent]:
        """Online agents with free capacity."""
        return await self.service.agents.available(capability)

    async def agent_workload(self, agent_id: str) -> AgentWorkload:
        """An agent's current tasks and history."""
        workload = await self.service.agents.workload(agent_id)
        if self.owner is not None:
            workload.tasks = [t for t in workload.tasks if t.owner == self.owner]
        return workload

    async def set_agent_status(self, agent_id: str, status: AgentStatus) -> Agent:
        """Drain, resume or retire an agent."""
        return await self.service.agents.set_status(agent_id, status)

    async def get_dispatch(self, queue: str) -> QueueDispatch:
        """A queue's dispatch mode."""
        return await self.service.agents.dispatch_settings(queue)

    async def set_dispatch(self, queue: str, update: QueueDispatchUpdate) -> QueueDispatch:
        """Set a queue's dispatch mode."""
        return await self.service.agents.set_dispatch(queue, update)

    async def bid(self, task_id: str, bid: BidSpec) -> Bid:
        """Bid for an announced task."""
        return await self.service.agents.bid(task_id, bid, self.owner)

    async def list_agents(self) -> builtins.list[Agent]:
        """Agents."""
        return await self.service.list_agents()

    async def claim(self, req: ClaimRequest) -> builtins.list[Task]:
        """Lease work; a following :meth:`wait_for_work` also catches submits that raced
        this claim (it waits for changes since just before the claim)."""
        self._since = self.service.change_token("work")
        return await self.service.claim(req)

    async def wait_for_work(self, timeout: float) -> bool:
        """Until work may have become claimable (not for claims or progress reports)."""
        since, self._since = self._since, None
        return await self.service.wait_for_work(timeout, since, "work")

    async def heartbeat(
        self, leases: Sequence[LeaseRef], ttl_s: float
    ) -> builtins.list[LeaseState]:
        """Extend leases."""
        return await self.service.heartbeat(leases, ttl_s)

    async def progress(self, update: ProgressUpdate) -> LeaseState:
        """Report progress."""
        return await self.service.progress(update)

    async def complete(self, items: Sequence[Completion]) -> builtins.list[Ack]:
        """Report successes."""
        return await self.service.complete(items)

    async def fail(self, items: Sequence[Failure]) -> builtins.list[Ack]:
        """Report failures."""
        return await self.service.fail(items)

    async def release(self, leases: Sequence[LeaseRef]) -> builtins.list[Ack]:
        """Hand leases back."""
        return await self.service.release(leases)

    async def maintain(self) -> dict[str, int]:
        """One maintenance pass."""
        return await self.service.maintain()

    async def close(self) -> None:
        """Close the store."""
        await self.service.store.close()
