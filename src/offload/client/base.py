"""The ``Client`` protocol shared by the SDK, CLI, MCP server and workers.

``AsyncClient`` is the protocol (async-first). ``offload.Client`` is a thin synchronous
facade over any ``AsyncClient``: it runs the async client on a private event loop thread.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from offload.client.bulk import IN_FLIGHT, Progress
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

T = TypeVar("T")


class AsyncClient(Protocol):
    """Everything a caller or a worker can ask of Offload, locally or over HTTP."""

    # -- submitting and reading ------------------------------------------------
    async def submit(self, task_type: str, input: Any = None, **options: Any) -> Task:
        """Create one task. ``options`` are :class:`TaskSpec` fields (priority, depends_on…)."""
        ...

    async def submit_spec(self, spec: TaskSpec) -> Task:
        """Create one task from a full spec."""
        ...

    async def submit_many(self, specs: Sequence[TaskSpec]) -> builtins.list[Task]:
        """Create up to 1,000 tasks atomically: all or none."""
        ...

    async def submit_all(
        self,
        specs: Sequence[TaskSpec],
        *,
        in_flight: int = IN_FLIGHT,
        progress: Progress | None = None,
    ) -> builtins.list[Task]:
        """Create any number of tasks in batches of up to 1,000 (each all or none),
        ``in_flight`` batches under way at once; see :func:`offload.client.bulk.submit_all`."""
        ...

    async def submit_workflow(self, spec: WorkflowSpec) -> Task:
        """Create a workflow parent and its children; returns the parent."""
        ...

    async def get(self, task_id: str) -> Task:
        """One task; ``NotFound`` if it does not exist (or is not yours)."""
        ...

    async def list(self, flt: TaskFilter | None = None, **filters: Any) -> TaskPage:
        """A page of tasks and the total matching."""
        ...

    async def events(
        self, task_id: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """A task's event log after ``after``."""
        ...

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Block until the task is terminal; ``WaitTimeout`` after ``timeout`` seconds."""
        ...

    async def watch(
        self, task_id: str, after: int = 0, timeout: float = 30.0
    ) -> builtins.list[TaskEvent]:
        """Events after ``after``, waiting up to ``timeout`` for at least one (long poll)."""
        ...

    # -- control -----------------------------------------------------------
    async def cancel(self, task_id: str, reason: str | None = None) -> Task:
        """Cancel a task (running ones are asked to stop)."""
        ...

    async def pause(self, task_id: str) -> Task:
        """Pause a task."""
        ...

    async def resume(self, task_id: str) -> Task:
        """Resume a paused task."""
        ...

    async def retry(self, task_id: str) -> Task:
        """Move a failed or cancelled task back to the queue with a fresh attempt budget."""
        ...

    async def retry_many(self, flt: TaskFilter) -> builtins.list[Task]:
        """Retry every failed task matching ``flt`` (status defaults to ``failed``)."""
        ...

    async def review(self, task_id: str, decision: ReviewDecision) -> Task:
        """Approve or reject the result of a task in ``reviewing``."""
        ...

    async def list_reviews(self, flt: ReviewFilter) -> TaskPage:
        """Tasks whose review matches ``flt`` (default: awaiting a decision), oldest first."""
        ...

    async def stats(self) -> Stats:
        """Counts by status and per-type figures."""
        ...

    async def set_limit(self, task_type: str, spec: LimitSpec) -> Limit:
        """Set a task type's concurrency/rate limits (admin)."""
        ...

    async def delete_limit(self, task_type: str) -> None:
        """Remove a task type's limits (admin)."""
        ...

    async def list_limits(self) -> builtins.list[Limit]:
        """Every task type's limits."""
        ...

    async def set_resource(self, name: str, capacity: int) -> Resource:
        """Create a named resource or set its capacity (admin)."""
        ...

    async def delete_resource(self, name: str) -> None:
        """Remove a resource (admin; refused while unfinished tasks need it)."""
        ...

    async def list_resources(self) -> builtins.list[Resource]:
        """Every resource with units in use and tasks waiting."""
        ...

    async def set_queue_settings(self, queue: str, spec: QueueSettingsSpec) -> QueueSettings:
        """Set a queue's options, e.g. ``fairness: owner`` (admin)."""
        ...

    async def clear_cache(self, task_type: str | None = None) -> int:
        """Drop cached results of one type (or all); returns how many (admin)."""
        ...

    async def create_schedule(self, spec: ScheduleSpec) -> Schedule:
        """Create a schedule (a task template on a timetable)."""
        ...

    async def list_schedules(self) -> builtins.list[Schedule]:
        """Your schedules."""
        ...

    async def get_schedule(self, ident: str) -> Schedule:
        """One schedule by id or name."""
        ...

    async def delete_schedule(self, ident: str) -> Schedule:
        """Remove a schedule."""
        ...

    async def pause_schedule(self, ident: str, paused: bool = True) -> Schedule:
        """Pause (or, with ``paused=False``, resume) a schedule."""
        ...

    async def list_queue_settings(self) -> builtins.list[QueueSettings]:
        """Every queue with options set."""
        ...

    async def task_types(self) -> builtins.list[TaskTypeInfo]:
        """The catalogue of task types with their JSON schemas."""
        ...

    # -- worker / agent protocol ----------------------------------------------
    async def register_agent(self, reg: AgentRegistration) -> Agent:
        """Register (or update) an agent; workers register themselves."""
        ...

    async def agent_heartbeat(self, agent_id: str, metadata: dict[str, Any] | None = None) -> Agent:
        """Tell Offload the agent is alive."""
        ...

    async def deregister_agent(self, agent_id: str) -> None:
        """Mark the agent offline."""
        ...

    async def list_agents(self) -> builtins.list[Agent]:
        """Every agent with live load."""
        ...

    async def get_agent(self, agent_id: str) -> Agent:
        """One agent with load and history."""
        ...

    async def available_agents(self, capability: str | None = None) -> builtins.list[Agent]:
        """Online agents with free capacity (having ``capability``), least loaded first."""
        ...

    async def agent_workload(self, agent_id: str) -> AgentWorkload:
        """An agent's current tasks and history."""
        ...

    async def set_agent_status(self, agent_id: str, status: AgentStatus) -> Agent:
        """Drain (``draining``), resume (``online``) or retire (``offline``) an agent."""
        ...

    async def get_dispatch(self, queue: str) -> QueueDispatch:
        """A queue's dispatch mode."""
        ...

    async def set_dispatch(self, queue: str, update: QueueDispatchUpdate) -> QueueDispatch:
        """Set a queue's dispatch mode (pull, push, hybrid, auction)."""
        ...

    async def bid(self, task_id: str, bid: BidSpec) -> Bid:
        """Bid for a task announced for auction."""
        ...

    async def claim(self, req: ClaimRequest) -> builtins.list[Task]:
        """Lease up to ``req.max`` tasks; may wait up to ``wait_s`` for work when idle."""
        ...

    async def wait_for_work(self, timeout: float) -> bool:
        """Return when new work may be claimable (True) or after ``timeout`` (False)."""
        ...

    async def heartbeat(
        self, leases: Sequence[LeaseRef], ttl_s: float
    ) -> builtins.list[LeaseState]:
        """Extend leases; answers ``cancel_requested``/``pause_requested`` per lease."""
        ...

    async def progress(self, update: ProgressUpdate) -> LeaseState:
        """Report progress/log/checkpoint/artifact for a leased task."""
        ...

    async def complete(self, items: Sequence[Completion]) -> builtins.list[Ack]:
        """Report successful attempts (batched)."""
        ...

    async def fail(self, items: Sequence[Failure]) -> builtins.list[Ack]:
        """Report failed attempts (batched)."""
        ...

    async def release(self, leases: Sequence[LeaseRef]) -> builtins.list[Ack]:
        """Hand leases back without spending an attempt."""
        ...

    async def maintain(self) -> dict[str, int]:
        """Run one maintenance pass (reap expired leases, promote due tasks, deadlines)."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...


class Client:
    """Synchronous facade over an :class:`AsyncClient` (the SDK's ``offload.Client``).

    ``Client()`` opens the local embedded database (or ``$OFFLOAD_URL`` when set);
    ``Client("http://host:8000", token=…)`` talks to a server; ``Client(database_url=…)``
    opens a specific database.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        database_url: str | None = None,
        async_client: AsyncClient | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="offload-client", daemon=True
        )
        self._thread.start()
        if async_client is None:
            from offload.client.factory import connect

            async_client = self._run(connect(url, token=token, database_url=database_url))
        self.aio: AsyncClient = async_client
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            # Ctrl-C (or any interruption) in the caller's thread: stop the coroutine too,
            # so nothing keeps running against a store that is about to close.
            fut.cancel()
            raise

    # -- SDK ---------------------------------------------------------------
    def submit(self, task_type: str, input: Any = None, **options: Any) -> Task:
        """Create one task; see :class:`offload.TaskSpec` for options."""
        return self._run(self.aio.submit(task_type, input, **options))

    def submit_many(self, specs: Sequence[TaskSpec | dict[str, Any]]) -> builtins.list[Task]:
        """Create up to 1,000 tasks atomically."""
        parsed = [s if isinstance(s, TaskSpec) else validated(TaskSpec, s) for s in specs]
        return self._run(self.aio.submit_many(parsed))

    def submit_all(
        self,
        specs: Sequence[TaskSpec | dict[str, Any]],
        *,
        in_flight: int = IN_FLIGHT,
        progress: Progress | None = None,
    ) -> builtins.list[Task]:
        """Create any number of tasks: batches of up to 1,000, each all or none, with
        ``in_flight`` under way at once. A failed batch's error lists the positions of the
        tasks that were created (``details["created"]``). ``progress(done, total)`` is called
        after each batch (on the client's thread)."""
        parsed = [s if isinstance(s, TaskSpec) else validated(TaskSpec, s) for s in specs]
        return self._run(self.aio.submit_all(parsed, in_flight=in_flight, progress=progress))

    def submit_workflow(self, spec: WorkflowSpec | dict[str, Any]) -> Task:
        """Create a workflow; returns the parent task."""
        wf = spec if isinstance(spec, WorkflowSpec) else validated(WorkflowSpec, spec)
        return self._run(self.aio.submit_workflow(wf))

    def get(self, task_id: str) -> Task:
        """One task."""
        return self._run(self.aio.get(task_id))

    def list(self, flt: TaskFilter | None = None, **filters: Any) -> TaskPage:
        """A page of tasks: ``client.list(status=["running"], type=…, limit=50)``."""
        return self._run(self.aio.list(flt, **filters))

    def events(self, task_id: str, after: int = 0, limit: int = 1000) -> builtins.list[TaskEvent]:
        """A task's event log."""
        return self._run(self.aio.events(task_id, after, limit))

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Block until the task is done; raises ``WaitTimeout`` after ``timeout`` seconds."""
        return self._run(self.aio.wait(task_id, timeout))

    def watch(
        self, task_id: str, after: int = 0, timeout: float = 30.0
    ) -> builtins.list[TaskEvent]:
        """Long-poll for events after ``after``."""
        return self._run(self.aio.watch(task_id, after, timeout))

    def cancel(self, task_id: str, reason: str | None = None) -> Task:
        """Cancel a task."""
        return self._run(self.aio.cancel(task_id, reason))

    def pause(self, task_id: str) -> Task:
        """Pause a task."""
        return self._run(self.aio.pause(task_id))

    def resume(self, task_id: str) -> Task:
        """Resume a paused task."""
        return self._run(self.aio.resume(task_id))

    def retry(self, task_id: str) -> Task:
        """Retry a failed or cancelled task."""
        return self._run(self.aio.retry(task_id))

    def retry_many(self, flt: TaskFilter | None = None, **filters: Any) -> builtins.list[Task]:
        """Retry every dead-letter task matching the filter."""
        f = flt or TaskFilter(**({"status": ["failed"]} | filters))
        return self._run(self.aio.retry_many(f))

    def review(
        self,
        task_id: str,
        decision: str,
        *,
        feedback: str | None = None,
        quality_score: float | None = None,
        exclude_previous_agent: bool | None = None,
        reviewer: str | None = None,
    ) -> Task:
        """Decide a review: ``client.review(id, "approve", quality_score=0.9)`` completes the
        task; ``"reject"`` sends it back to the queue with ``feedback`` for the next attempt
        (or fails it once its review rounds are used up)."""
        body = validated(
            ReviewDecision,
            {
                "decision": decision,
                "feedback": feedback,
                "quality_score": quality_score,
                "exclude_previous_agent": exclude_previous_agent,
                "reviewer": reviewer,
            },
        )
        return self._run(self.aio.review(task_id, body))

    def list_reviews(self, flt: ReviewFilter | None = None, **filters: Any) -> TaskPage:
        """Reviews to do: ``client.list_reviews(reviewer="capability:qa")``; ``status``
        pending (default), passed or failed."""
        return self._run(self.aio.list_reviews(flt or ReviewFilter(**filters)))

    def stats(self) -> Stats:
        """Queue statistics."""
        return self._run(self.aio.stats())

    def set_limit(self, task_type: str, spec: LimitSpec | None = None, **limits: Any) -> Limit:
        """Set a type's limits: ``set_limit("api.call", concurrency=2, rate_limit="10/s")``."""
        return self._run(self.aio.set_limit(task_type, spec or validated(LimitSpec, limits)))

    def delete_limit(self, task_type: str) -> None:
        """Remove a type's limits."""
        self._run(self.aio.delete_limit(task_type))

    def list_limits(self) -> builtins.list[Limit]:
        """Every type's limits."""
        return self._run(self.aio.list_limits())

    def set_resource(self, name: str, capacity: int) -> Resource:
        """Create a resource or set its capacity."""
        return self._run(self.aio.set_resource(name, capacity))

    def delete_resource(self, name: str) -> None:
        """Remove a resource."""
        self._run(self.aio.delete_resource(name))

    def list_resources(self) -> builtins.list[Resource]:
        """Every resource with its usage."""
        return self._run(self.aio.list_resources())

    def set_queue_settings(self, queue: str, **settings: Any) -> QueueSettings:
        """Set a queue's options: ``set_queue_settings("default", fairness="owner")``."""
        spec = validated(QueueSettingsSpec, settings)
        return self._run(self.aio.set_queue_settings(queue, spec))

    def list_queue_settings(self) -> builtins.list[QueueSettings]:
        """Every queue with options set."""
        return self._run(self.aio.list_queue_settings())

    def clear_cache(self, task_type: str | None = None) -> int:
        """Drop cached results of one type (or all); returns how many."""
        return self._run(self.aio.clear_cache(task_type))

    def create_schedule(
        self, name: str, task_type: str, input: Any = None, **options: Any
    ) -> Schedule:
        """``create_schedule("nightly", "report.build", {...}, cron="0 2 * * *")``: options
        are ``cron``, ``every_s``, ``timezone``, ``catchup`` and ``task`` (extra task fields)."""
        task = {"type": task_type, "input": input or {}, **options.pop("task", {})}
        spec = validated(ScheduleSpec, {"name": name, "task": task, **options})
        return self._run(self.aio.create_schedule(spec))

    def list_schedules(self) -> builtins.list[Schedule]:
        """Your schedules."""
        return self._run(self.aio.list_schedules())

    def get_schedule(self, ident: str) -> Schedule:
        """One schedule by id or name."""
        return self._run(self.aio.get_schedule(ident))

    def delete_schedule(self, ident: str) -> Schedule:
        """Remove a schedule."""
        return self._run(self.aio.delete_schedule(ident))

    def pause_schedule(self, ident: str, paused: bool = True) -> Schedule:
        """Pause (or resume) a schedule."""
        return self._run(self.aio.pause_schedule(ident, paused))

    def task_types(self) -> builtins.list[TaskTypeInfo]:
        """The task-type catalogue."""
        return self._run(self.aio.task_types())

    def list_agents(self) -> builtins.list[Agent]:
        """Registered agents."""
        return self._run(self.aio.list_agents())

    def register_agent(self, reg: AgentRegistration) -> Agent:
        """Register (or update) an agent."""
        return self._run(self.aio.register_agent(reg))

    def get_dispatch(self, queue: str) -> QueueDispatch:
        """A queue's dispatch mode."""
        return self._run(self.aio.get_dispatch(queue))

    def get_agent(self, agent_id: str) -> Agent:
        """One agent with load and history."""
        return self._run(self.aio.get_agent(agent_id))

    def available_agents(self, capability: str | None = None) -> builtins.list[Agent]:
        """Online agents with free capacity, least loaded first."""
        return self._run(self.aio.available_agents(capability))

    def agent_workload(self, agent_id: str) -> AgentWorkload:
        """An agent's current tasks and history."""
        return self._run(self.aio.agent_workload(agent_id))

    def set_agent_status(self, agent_id: str, status: AgentStatus | str) -> Agent:
        """Drain, resume or retire an agent."""
        return self._run(self.aio.set_agent_status(agent_id, AgentStatus(status)))

    def set_dispatch(self, queue: str, **update: Any) -> QueueDispatch:
        """Set a queue's dispatch mode: ``set_dispatch("q", mode="push")``."""
        return self._run(self.aio.set_dispatch(queue, QueueDispatchUpdate(**update)))

    def bid(self, task_id: str, agent_id: str, cost: float, eta_s: float = 0.0) -> Bid:
        """Bid for a task announced for auction."""
        return self._run(self.aio.bid(task_id, BidSpec(agent_id=agent_id, cost=cost, eta_s=eta_s)))

    def maintain(self) -> dict[str, int]:
        """One maintenance pass."""
        return self._run(self.aio.maintain())

    # -- seed names for agents -----------------------------------------------
    def submit_task(
        self,
        task_type: str,
        parameters: dict[str, Any] | None = None,
        priority: int | str = "normal",
    ) -> str:
        """Submit and return the new task's id."""
        return self.submit(task_type, parameters or {}, priority=priority).id

    def get_task_status(self, task_id: str) -> dict[str, Any]:
        """Status, progress, result and error of a task as plain JSON."""
        t = self.get(task_id)
        return {
            "id": t.id,
            "type": t.type,
            "status": t.status.value,
            "progress": t.progress,
            "current_step": t.current_step,
            "result": t.result,
            "error": t.error.model_dump(mode="json") if t.error else None,
        }

    def cancel_task(self, task_id: str) -> bool:
        """Cancel; True when the task is (or will be) cancelled."""
        t = self.cancel(task_id)
        return t.status.value == "cancelled" or t.cancel_requested

    def get_task_results(self, agent_id: str, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Results of the finished tasks an agent did."""
        page = self.list(agent_id=agent_id, status=["done"], limit=limit)
        return [
            {"id": t.id, "type": t.type, "status": t.status.value, "result": t.result}
            for t in page.tasks
        ]

    # -- lifecycle ---------------------------------------------------------
    def close(self) -> None:
        """Close the client and its loop thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    async def _shutdown(self) -> None:
        # Cancel whatever an interrupted call left behind before the store closes.
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.aio.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
