"""The queue service: the one place adapters (SDK, CLI, API, MCP, workers) go through.

It turns caller specs into task records (type lookup, input validation, defaults,
estimates, DAG checks) and delegates every state change to the store, which applies the
domain's transition and retry rules atomically.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from offload.core.agents import AgentService
from offload.core.heap import collection_paused
from offload.core.registry import Registry, TaskType
from offload.domain.errors import (
    DependencyError,
    InvalidInput,
    NotFound,
    OffloadError,
    TooLarge,
    WaitTimeout,
)
from offload.domain.flow import (
    Limit,
    LimitSpec,
    QueueSettings,
    QueueSettingsSpec,
    Resource,
    WaitingOn,
    cache_key,
    limit_key,
)
from offload.domain.ids import new_id
from offload.domain.models import (
    MAX_BULK,
    MAX_SEQ,
    Ack,
    Agent,
    AgentRegistration,
    ClaimRequest,
    Completion,
    Dependency,
    EventFilter,
    Failure,
    LeaseRef,
    LeaseState,
    ProgressUpdate,
    Requester,
    RequesterKind,
    RetryPolicy,
    Stats,
    Task,
    TaskEvent,
    TaskFilter,
    TaskPage,
    TaskSpec,
    TaskTypeInfo,
    TeamMode,
    WorkflowSpec,
    clipped_error,
)
from offload.domain.review import ReviewDecision, ReviewFilter, review_state
from offload.domain.rules import (
    check_acyclic,
    check_kept,
    find_refs,
    json_size,
    result_too_large,
    validate_json_size,
)
from offload.domain.schedules import Schedule, ScheduleSpec, due_firings, first_fire
from offload.domain.settings import Settings
from offload.domain.status import Status
from offload.ports.clock import Clock, SystemClock
from offload.ports.store import ChangeKind, Store

log = logging.getLogger("offload.service")

WORKFLOW_TYPE = "workflow"
_ESTIMATE_REFRESH_S = 30.0
#: Batches this big are built and stored with the cyclic collector paused (see core.heap).
_PAUSE_GC_MIN = 64
#: A big batch's build lets other work run after each this many tasks (a quarter of a
#: millisecond): the round trips of the batch under way beside it are not held up.
_BUILD_SLICE = 25
#: Statuses that say by themselves why a task is not running.
_STATUS_WAIT = {
    Status.BLOCKED: WaitingOn.DEPENDENCY,
    Status.SCHEDULED: WaitingOn.SCHEDULE,
    Status.PAUSED: WaitingOn.PAUSED,
}
#: How stale the submit path's view of limits and resources may be.
FLOW_REFRESH_S = 1.0
_COMPLEXITY_ESTIMATE_S = {"simple": 10.0, "moderate": 120.0, "complex": 900.0}


#: How many just-submitted tasks :meth:`QueueService.wait` remembers (see ``_fresh``).
_FRESH_MAX = 256


class QueueService:
    """Submit, read, control and work tasks. Every method is async; one store underneath."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        clock: Clock | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.settings = settings or Settings()
        self._estimates: dict[str, float] = {}
        self._estimates_at = float("-inf")
        self._requesters: dict[str | None, Requester] = {}
        # Limits and resource names as of at most FLOW_REFRESH_S ago (submit needs them).
        self._limits: dict[str, Limit] = {}
        self._resource_names: set[str] = set()
        self._flow_at = float("-inf")
        # Tasks this service just submitted, with the "done" change token taken before their
        # insert and their owner: a wait that follows needs no read to learn they are unfinished.
        self._fresh: dict[str, tuple[int, str | None]] = {}
        # Big batches are built one at a time (see _submit_many).
        self._building = asyncio.Lock()
        #: The agent registry, dispatch settings and auctions (PRODUCT.md §5).
        self.agents = AgentService(self)

    # ------------------------------------------------------------------ building tasks
    def _requester(self, owner: str | None) -> Requester:
        # Shared instances let the store serialise one requester per batch, not per task.
        cached = self._requesters.get(owner)
        if cached is None:
            cached = self._requesters[owner] = Requester(kind=RequesterKind.HUMAN, id=owner)
            if len(self._requesters) > 1024:
                self._requesters.clear()
        return cached

    async def _refresh_flow(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._flow_at > FLOW_REFRESH_S:
            self._flow_at = now
            self._limits = {lim.type: lim for lim in await self.store.list_limits()}
            self._resource_names = await self.store.resource_names()

    async def _flow_fields(self, tt: TaskType, spec: TaskSpec, task_input: Any) -> str | None:
        """The task's limit key; checks its resources exist."""
        if spec.resources:
            unknown = sorted(set(spec.resources) - self._resource_names)
            if unknown:
                await self._refresh_flow(force=True)
                unknown = sorted(set(spec.resources) - self._resource_names)
            if unknown:
                raise InvalidInput(
                    f"unknown resource {unknown[0]!r}: define it first "
                    f"(offload resource set {unknown[0]} CAPACITY, or PUT /v1/resources/NAME)",
                    field="resources",
                    details={"unknown": unknown, "known": sorted(self._resource_names)},
                )
        lim = self._limits.get(tt.name)
        if lim is None:
            return None
        return limit_key(tt.name, task_input, lim.concurrency_key)

    async def _estimate(self, tt: TaskType, spec: TaskSpec) -> float:
        """Mean of that type's recent run times; a heuristic until there is history."""
        now = time.monotonic()
        if now - self._estimates_at > _ESTIMATE_REFRESH_S:
            self._estimates_at = now
            self._estimates = await self.store.mean_durations()
        return self._estimate_now(tt, spec)

    def _estimate_now(self, tt: TaskType, spec: TaskSpec) -> float:
        """:meth:`_estimate` from the history read last."""
        if tt.name in self._estimates:
            return round(self._estimates[tt.name], 3)
        if spec.complexity is not None:
            return _COMPLEXITY_ESTIMATE_S[spec.complexity.value]
        if tt.executable:
            return 1.0
        # Free-form work for agents: longer descriptions tend to mean longer jobs.
        text = len(spec.description or "") + len(spec.instructions or "")
        return round(60.0 + 0.5 * text, 1)

    def _validated_input(self, tt: TaskType, spec: TaskSpec) -> Any:
        text = validate_json_size(spec.input, self.settings.max_input_bytes, "input")
        # Only an input whose JSON holds a "$ref" key can reference a sibling.
        if b'"$ref"' in text and find_refs(spec.input):
            # Workflow inputs referencing upstream results are checked once resolved.
            if not isinstance(spec.input, dict):
                raise InvalidInput("input must be a JSON object", field="input")
            return spec.input
        return tt.validate_input(spec.input)

    async def _build(
        self,
        spec: TaskSpec,
        owner: str | None,
        now: float,
        *,
        parent_id: str | None = None,
        task_id: str | None = None,
        depends_on: builtins.list[Dependency] | None = None,
    ) -> Task:
        if spec.type == WORKFLOW_TYPE:
            raise InvalidInput(
                "submit workflows with submit_workflow (POST /v1/workflows)", field="type"
            )
        if spec.team is not None and spec.team.mode is TeamMode.SWARM:
            raise InvalidInput(
                "a swarm task is submitted on its own (not in a batch or workflow)",
                field="team",
            )
        tt = self.registry.get(spec.type)
        task_input = self._validated_input(tt, spec)
        owner = spec.owner if owner is None else owner
        requester = spec.requester or self._requester(owner)
        capabilities = sorted(set(tt.capabilities) | set(spec.capabilities or []))
        queue = spec.queue if spec.queue != "default" else tt.queue
        nowdt = datetime.fromtimestamp(now, UTC)
        if spec.deadline is not None and spec.deadline.timestamp() <= now:
            raise InvalidInput("deadline is in the past", field="deadline")
        deps = depends_on if depends_on is not None else spec.depends_on
        review = review_state(spec.review if spec.review is not None else tt.review)
        ttl = spec.cache_ttl_s if spec.cache_ttl_s is not None else tt.cache_ttl_s
        # The cache serves stand-alone work: a task that waits on others, belongs to a
        # workflow or needs a review is always run.
        ckey = (
            cache_key(tt.name, tt.version, task_input, owner)
            if ttl and not deps and parent_id is None and review is None
            else None
        )
        estimate = await self._estimate(tt, spec)
        limit = await self._flow_fields(tt, spec, task_input)
        # Every value is validated already (spec, registry, our own): construct, don't re-check.
        # A dict display with constant keys is built in one step; keyword arguments are not.
        return Task.from_trusted({
            "id": task_id or new_id(), "type": tt.name,
            "title": spec.title or _default_title(spec), "description": spec.description,
            "instructions": spec.instructions, "input": task_input, "tags": spec.tags,
            "queue": queue, "owner": owner, "requester": requester, "priority": spec.priority,
            "capabilities": capabilities, "agent_id": spec.agent_id, "depends_on": deps,
            "parent_id": parent_id, "ref": spec.ref, "status": Status.QUEUED,
            "max_retries": spec.max_retries if spec.max_retries is not None else tt.max_retries,
            "retry": spec.retry or tt.retry or _DEFAULT_RETRY,
            "timeout_s": spec.timeout_s if spec.timeout_s is not None else tt.timeout_s,
            "run_at": spec.run_at, "deadline": spec.deadline, "created_at": nowdt,
            "updated_at": nowdt, "estimated_duration_s": estimate,
            "idempotency_key": spec.idempotency_key, "cache_ttl_s": ttl, "cache_key": ckey,
            "complexity": spec.complexity, "metadata": spec.metadata, "team": spec.team,
            "review": review, "resources": spec.resources, "limit_key": limit,
            "waiting_on": None, "children": [], "lease": None, "assignment": None, "attempt": 0,
            "checkpoints": [], "artifacts": [], "result": None, "error": None, "errors": [],
            "cache_hit": False, "progress": 0.0, "current_step": None, "queued_at": None,
            "started_at": None, "finished_at": None, "actual_duration_s": None,
            "cancel_requested": False, "pause_requested": False,
        })  # fmt: skip

    def _template(self, task: Task) -> dict[str, Any] | None:
        """The values a task shares with others of its shape, or None when its record
        depends on its input beyond the input itself (a result cache key where its type
        caches, a limit key where its type is limited) or holds state of its own (a review)."""
        v = task.__dict__
        if v["review"] is not None or v["cache_ttl_s"] or v["type"] in self._limits:
            return None
        return dict(v)

    def _from_template(self, template: dict[str, Any], spec: TaskSpec) -> Task:
        """A plain task's record: its template with the task's own values.

        Every field that :func:`_shape` leaves out of the key is set here; the template's
        mutable values are copied, since records are updated in place until stored."""
        tt = self.registry.get(spec.type)
        values = dict(template)
        values.update(
            id=new_id(), input=self._validated_input(tt, spec),
            title=spec.title or _default_title(spec), description=spec.description,
            instructions=spec.instructions, tags=spec.tags, metadata=spec.metadata,
            idempotency_key=spec.idempotency_key, ref=spec.ref, resources=spec.resources,
            estimated_duration_s=self._estimate_now(tt, spec),
            capabilities=list(template["capabilities"]), depends_on=[], children=[],
            checkpoints=[], artifacts=[], errors=[],
        )  # fmt: skip
        return Task.from_trusted(values)

    # ------------------------------------------------------------------ submit
    async def submit(self, spec: TaskSpec, owner: str | None = None) -> Task:
        """Create one task (durable once this returns)."""
        if spec.team is not None and spec.team.mode is TeamMode.SWARM:
            return await self.agents.submit_swarm(spec, owner)
        # Taken before the insert: any finish of this task is announced after it.
        token = self.store.change_token("done")
        task = (await self.submit_many([spec], owner))[0]
        if not task.done:
            fresh = self._fresh
            if len(fresh) >= _FRESH_MAX:
                del fresh[next(iter(fresh))]
            fresh[task.id] = (token, task.owner)
        return task

    async def submit_many(
        self, specs: Sequence[TaskSpec], owner: str | None = None
    ) -> builtins.list[Task]:
        """Create up to 1,000 tasks in one transaction: all or none."""
        if not specs:
            return []
        if len(specs) > MAX_BULK:
            raise TooLarge(
                f"{len(specs)} tasks in one batch; the limit is {MAX_BULK}",
                details={"limit": MAX_BULK, "size": len(specs)},
            )
        big = len(specs) >= _PAUSE_GC_MIN
        with collection_paused() if big else contextlib.nullcontext():
            return await self._submit_many(specs, owner)

    async def _submit_many(
        self, specs: Sequence[TaskSpec], owner: str | None
    ) -> builtins.list[Task]:
        # Big batches under way at once (a bulk submit's lanes) are built one at a time,
        # yielding often, so the database writes one batch while the loop builds the next.
        # Built side by side, they were finished together, then written together while
        # the loop sat idle: a third of a bulk submit's time went by so.
        async with self._building if len(specs) >= _PAUSE_GC_MIN else contextlib.nullcontext():
            now = self.clock.now()
            tasks = await self._build_many(specs, owner, now)
        return await self.store.insert_tasks(tasks, now)

    async def _build_many(
        self, specs: Sequence[TaskSpec], owner: str | None, now: float
    ) -> builtins.list[Task]:
        await self._refresh_flow()
        tasks = []
        # Tasks of one batch mostly differ only in their input and texts: the record of the
        # first task of each shape serves as the template of the others (see _from_template).
        templates: dict[tuple[Any, ...], dict[str, Any] | None] = {}
        for i, spec in enumerate(specs):
            if not i % _BUILD_SLICE and i:
                await asyncio.sleep(0)
            try:
                shape = _shape(spec)
                template = templates.get(shape) if shape is not None else None
                if template is not None:
                    task = self._from_template(template, spec)
                else:
                    task = await self._build(spec, owner, now)
                    if shape is not None and shape not in templates:
                        templates[shape] = self._template(task)
                tasks.append(task)
            except InvalidInput as exc:
                if len(specs) > 1:
                    exc.message = f"task #{i}: {exc.message}"
                    exc.args = (exc.message,)
                    exc.details["index"] = i
                raise
        return tasks

    async def submit_workflow(self, spec: WorkflowSpec, owner: str | None = None) -> Task:
        """Create a parent (type ``workflow``) and its children in one transaction."""
        now = self.clock.now()
        await self._refresh_flow()
        owner = spec.owner if owner is None else owner
        refs: dict[str, str] = {}
        for i, child in enumerate(spec.tasks):
            ref = child.ref or f"task{i + 1}"
            if ref in refs:
                raise InvalidInput(f"duplicate ref {ref!r} in workflow", field=f"tasks.{i}.ref")
            refs[ref] = new_id()
        # Edges by ref: explicit depends_on plus implicit ones from $ref inputs.
        deps_by_ref: dict[str, builtins.list[Dependency]] = {}
        graph: dict[str, builtins.list[str]] = {}
        for i, child in enumerate(spec.tasks):
            ref = child.ref or f"task{i + 1}"
            deps: builtins.list[Dependency] = []
            for d in child.depends_on:
                target = refs.get(d.task_id, d.task_id)
                if d.task_id == ref:
                    raise DependencyError(
                        f"task {ref!r} depends on itself", field=f"tasks.{i}.depends_on"
                    )
                deps.append(d.model_copy(update={"task_id": target}))
            named = {d.task_id for d in deps}
            for name in sorted(find_refs(child.input)):
                if name not in refs:
                    raise InvalidInput(
                        f"$ref to unknown task {name!r} in workflow", field=f"tasks.{i}.input"
                    )
                if refs[name] not in named:
                    deps.append(Dependency(task_id=refs[name]))
            deps_by_ref[ref] = deps
            graph[ref] = [r for r, tid in refs.items() if tid in {d.task_id for d in deps}]
        check_acyclic(graph)
        parent_id = new_id()
        nowdt = datetime.fromtimestamp(now, UTC)
        parent = Task(
            id=parent_id, type=WORKFLOW_TYPE, title=spec.title or f"workflow of {len(refs)} tasks",
            description=spec.description, input={"tasks": list(refs)}, tags=spec.tags,
            queue=spec.queue, owner=owner,
            requester=spec.requester or Requester(kind=RequesterKind.HUMAN, id=owner),
            priority=spec.priority, status=Status.RUNNING, created_at=nowdt, updated_at=nowdt,
            started_at=nowdt, idempotency_key=spec.idempotency_key, metadata=spec.metadata,
            max_retries=0,
        )  # fmt: skip
        children: dict[str, Task] = {}
        for i, child in enumerate(spec.tasks):
            ref = child.ref or f"task{i + 1}"
            spec_i = child.model_copy(update={
                "ref": ref, "owner": owner,
                "priority": child.priority if "priority" in child.model_fields_set
                else spec.priority,
            })  # fmt: skip
            try:
                children[ref] = await self._build(
                    spec_i,
                    owner,
                    now,
                    parent_id=parent_id,
                    task_id=refs[ref],
                    depends_on=deps_by_ref[ref],
                )
            except InvalidInput as exc:
                exc.message = f"task {ref!r}: {exc.message}"
                exc.args = (exc.message,)
                raise
        ordered = [children[r] for r in _topological(graph)]
        stored = await self.store.insert_tasks([parent, *ordered], now)
        if stored[0].id != parent_id:
            return stored[0]  # idempotent replay of an earlier workflow submit
        return await self.get(parent_id, owner)

    # ------------------------------------------------------------------ read
    async def get(self, task_id: str, owner: str | None = None) -> Task:
        """One task, or :class:`NotFound`."""
        task = await self.store.get_task(task_id, owner)
        if task is None:
            raise NotFound("task", task_id)
        waiting = _STATUS_WAIT.get(task.status)
        if task.status is Status.QUEUED and (task.limit_key or task.resources):
            waiting = await self.store.limit_wait(task.id, self.clock.now())
        if waiting is not None:
            task.__dict__["waiting_on"] = waiting
        return task

    async def list(self, flt: TaskFilter, owner: str | None = None) -> TaskPage:
        """A page of tasks (owner-restricted unless ``owner`` is None)."""
        if owner is not None:
            flt = flt.model_copy(update={"owner": owner})
        tasks, total = await self.store.list_tasks(flt)
        for t in tasks:
            # Limits need a query per task; a list shows the reasons its statuses give.
            if t.status in _STATUS_WAIT:
                t.__dict__["waiting_on"] = _STATUS_WAIT[t.status]
        return TaskPage(tasks=tasks, total=total, limit=flt.limit, offset=flt.offset)

    async def events(
        self, task_id: str, after: int = 0, limit: int = 1000, owner: str | None = None
    ) -> builtins.list[TaskEvent]:
        """A task's event log."""
        _check_seq(after)
        if owner is not None:
            await self.get(task_id, owner)
        return await self.store.events(task_id, after, limit)

    async def wait(
        self, task_id: str, timeout: float | None = None, owner: str | None = None
    ) -> Task:
        """Until the task is terminal (or :class:`WaitTimeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        token: int | None = None
        fresh = self._fresh.pop(task_id, None)
        if fresh is not None and (owner is None or owner == fresh[1]):
            # Submitted here and unfinished at its commit: skip the first read (it competed
            # with the worker claiming the task, a tenth of an idle round trip on PostgreSQL).
            token = fresh[0]
            first = 1.0 if deadline is None else min(deadline - time.monotonic(), 1.0)
            await self.store.wait_for_change(first, since=token, kind="done")
        while True:
            if token is not None:
                # The notification that woke us may carry the finished record: no read.
                heard = self.store.heard_finished(task_id, token)
                if heard is not None and heard.done and owner in (None, heard.owner):
                    return heard
            # Woken only by changes that may finish a task, not by every claim or progress
            # report: each wake-up is a read that competes with the work being waited for.
            token = self.store.change_token("done")
            task = await self.get(task_id, owner)
            if task.done:
                return task
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(task_id, task.status.value, timeout or 0.0)
            await self.store.wait_for_change(min(remaining, 1.0), since=token, kind="done")

    async def watch(
        self, task_id: str, after: int = 0, timeout: float = 30.0, owner: str | None = None
    ) -> builtins.list[TaskEvent]:
        """Events after ``after``; waits up to ``timeout`` for the first one."""
        _check_seq(after)
        await self.get(task_id, owner)
        deadline = time.monotonic() + timeout
        while True:
            token = self.store.change_token()
            events = await self.store.events(task_id, after)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return events
            await self.store.wait_for_change(min(remaining, 1.0), since=token)

    async def events_since(
        self, after_seq: int, flt: EventFilter | None = None, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Events of every task (or those ``flt`` selects) after ``after_seq``: the source of
        the live stream. Pass ``flt.owner`` to restrict to one tenant."""
        _check_seq(after_seq)
        return await self.store.events_since(after_seq, limit, flt)

    async def last_event_seq(self) -> int:
        """Where a new live stream starts."""
        return await self.store.last_event_seq()

    async def stats(self, owner: str | None = None) -> Stats:
        """Counts and per-type figures."""
        return await self.store.stats(self.clock.now(), owner)

    def task_types(self) -> builtins.list[TaskTypeInfo]:
        """The catalogue."""
        return self.registry.infos()

    # ------------------------------------------------------------------ control
    async def cancel(
        self,
        task_id: str,
        reason: str | None = None,
        *,
        owner: str | None = None,
        actor: str | None = None,
    ) -> Task:
        """Cancel (running tasks are asked to stop)."""
        return await self.store.cancel(
            task_id, self.clock.now(), owner=owner, actor=actor, reason=reason
        )

    async def pause(
        self, task_id: str, *, owner: str | None = None, actor: str | None = None
    ) -> Task:
        """Pause."""
        return await self.store.pause(task_id, self.clock.now(), owner=owner, actor=actor)

    async def resume(
        self, task_id: str, *, owner: str | None = None, actor: str | None = None
    ) -> Task:
        """Resume."""
        return await self.store.resume(task_id, self.clock.now(), owner=owner, actor=actor)

    async def retry(
        self, task_id: str, *, owner: str | None = None, actor: str | None = None
    ) -> Task:
        """Retry one failed or cancelled task."""
        return (await self.store.retry([task_id], self.clock.now(), owner=owner, actor=actor))[0]

    async def retry_many(
        self, flt: TaskFilter, *, owner: str | None = None, actor: str | None = None
    ) -> builtins.list[Task]:
        """Retry every dead-letter task matching the filter (at most 1,000 per call)."""
        flt = flt.model_copy(
            update={
                "status": flt.status or ["failed"],
                "offset": 0,
                "limit": min(flt.limit, MAX_BULK),
            }
        )
        page = await self.list(flt, owner)
        ids = [t.id for t in page.tasks]
        if not ids:
            return []
        return await self.store.retry(ids, self.clock.now(), owner=owner, actor=actor)

    # ------------------------------------------------------------------ review
    async def review(
        self,
        task_id: str,
        decision: ReviewDecision,
        *,
        owner: str | None = None,
        actor: str | None = None,
    ) -> Task:
        """Approve or reject the result of a task in ``reviewing``."""
        return await self.store.decide_review(
            task_id, decision, self.clock.now(), owner=owner, actor=actor
        )

    async def list_reviews(self, flt: ReviewFilter, owner: str | None = None) -> TaskPage:
        """Tasks awaiting (or past) review, for a reviewer to find its work."""
        if owner is not None:
            flt = flt.model_copy(update={"owner": owner})
        tasks, total = await self.store.list_reviews(flt)
        return TaskPage(tasks=tasks, total=total, limit=flt.limit, offset=flt.offset)

    # ------------------------------------------------------------------ worker protocol
    async def register_agent(self, reg: AgentRegistration) -> Agent:
        """Register or update an agent."""
        return await self.store.register_agent(reg, self.clock.now())

    async def agent_heartbeat(self, agent_id: str, metadata: dict[str, Any] | None = None) -> Agent:
        """Agent liveness."""
        return await self.store.agent_heartbeat(agent_id, metadata, self.clock.now())

    async def deregister_agent(self, agent_id: str) -> None:
        """Agent going away."""
        await self.store.deregister_agent(agent_id, self.clock.now())

    async def list_agents(self) -> builtins.list[Agent]:
        """All agents."""
        return await self.store.list_agents()

    async def claim(self, req: ClaimRequest) -> builtins.list[Task]:
        """Lease work (and name collaborators for team tasks among it). A draining agent
        gets nothing."""
        if req.agent_id in self.agents.draining:
            return []
        tasks = await self.store.claim(req, self.clock.now())
        if tasks and any(t.team is not None for t in tasks):
            return await self.agents.staff_teams(tasks, req.agent_id)
        return tasks

    async def wait_for_work(
        self, timeout: float, since: int | None = None, kind: ChangeKind = "any"
    ) -> bool:
        """Until the database changes in a way of ``kind`` (after ``since``, a
        :meth:`change_token` of that kind) or ``timeout`` — or until a rate-limited key
        gets its next token, so a worker claims it then instead of at its next poll."""
        wake = getattr(self.store, "flow_wake_at", None)
        if wake is not None:
            timeout = max(0.005, min(timeout, wake - self.clock.now()))
        return await self.store.wait_for_change(timeout, since, kind)

    # ------------------------------------------------------------------ flow control
    async def set_limit(self, task_type: str, spec: LimitSpec) -> Limit:
        """Set a task type's concurrency and rate limits (enforced by every claim)."""
        self.registry.get(task_type)  # unknown types are refused with close names
        if spec.is_empty():
            raise InvalidInput(
                "give a concurrency and/or a rate_limit (to remove limits, DELETE them)",
                field="concurrency",
            )
        out = await self.store.set_limit(task_type, spec, self.clock.now())
        await self._refresh_flow(force=True)
        return out

    async def delete_limit(self, task_type: str) -> None:
        """Remove a task type's limits."""
        await self.store.delete_limit(task_type)
        await self._refresh_flow(force=True)

    async def list_limits(self) -> builtins.list[Limit]:
        """Every task type's limits."""
        return await self.store.list_limits()

    async def set_resource(self, name: str, capacity: int) -> Resource:
        """Create a named resource or change its capacity."""
        out = await self.store.set_resource(name, capacity, self.clock.now())
        await self._refresh_flow(force=True)
        return out

    async def delete_resource(self, name: str) -> None:
        """Remove a resource (refused while unfinished tasks need it)."""
        await self.store.delete_resource(name)
        await self._refresh_flow(force=True)

    async def list_resources(self) -> builtins.list[Resource]:
        """Every resource with units in use and tasks waiting."""
        return await self.store.list_resources()

    async def set_queue_settings(self, queue: str, spec: QueueSettingsSpec) -> QueueSettings:
        """Set a queue's options (``fairness: owner``)."""
        return await self.store.set_queue_settings(queue, spec, self.clock.now())

    async def list_queue_settings(self) -> builtins.list[QueueSettings]:
        """Every queue with options set."""
        return await self.store.list_queue_settings()

    async def cache_stats(self) -> dict[str, int]:
        """Live cached results per task type."""
        return await self.store.cache_stats(self.clock.now())

    async def flow_stats(self) -> dict[str, Any]:
        """Queued tasks held by limits, and resource usage (for metrics)."""
        return await self.store.flow_stats()

    async def clear_cache(self, task_type: str | None = None) -> int:
        """Drop cached results (of one type, or all); returns how many were dropped."""
        if task_type is not None:
            self.registry.get(task_type)
        return await self.store.clear_cache(task_type)

    async def sync_declared_limits(self) -> int:
        """Store the limits declared with ``@offload.task(concurrency=…, rate_limit=…)``."""
        n = 0
        for tt in self.registry:
            spec = tt.limit_spec()
            if spec is not None:
                await self.store.set_limit(tt.name, spec, self.clock.now())
                n += 1
        if n:
            await self._refresh_flow(force=True)
        return n

    def change_token(self, kind: ChangeKind = "any") -> int:
        """The store's change counter of ``kind`` (see :meth:`Store.change_token`)."""
        return self.store.change_token(kind)

    async def heartbeat(
        self, leases: Sequence[LeaseRef], ttl_s: float
    ) -> builtins.list[LeaseState]:
        """Extend leases."""
        return await self.store.heartbeat(leases, ttl_s, self.clock.now())

    async def progress(self, update: ProgressUpdate) -> LeaseState:
        """Progress of a leased task. Checkpoint data and an artifact's inline content hold
        at most 1,000,000 bytes of JSON each (a task keeps them all; every read returns
        them): bigger content belongs behind an artifact's ``uri``."""
        if update.checkpoint is not None:
            check_kept(update.checkpoint.data, "checkpoint.data", "checkpoint data is")
        if update.artifact is not None:
            check_kept(update.artifact.inline, "artifact.inline", "artifact inline content is")
        return await self.store.progress(update, self.clock.now())

    async def complete(self, items: Sequence[Completion]) -> builtins.list[Ack]:
        """Successful attempts. A result over ``max_result_bytes`` of JSON is refused
        (``too_large``) and its lease kept: the caller may send less, or fail the attempt."""
        limit = self.settings.max_result_bytes
        refused: dict[str, Ack] = {}
        for c in items:
            size = json_size(c.result)
            if size > limit:
                refused[c.task_id] = Ack(
                    task_id=c.task_id, ok=False, code=TooLarge.code,
                    message=result_too_large(size, limit),
                )  # fmt: skip
        if not refused:
            return await self.store.complete(items, self.clock.now())
        kept = [c for c in items if c.task_id not in refused]
        stored = await self.store.complete(kept, self.clock.now()) if kept else []
        by_id = {a.task_id: a for a in stored} | refused
        return [by_id[c.task_id] for c in items if c.task_id in by_id]

    async def fail(self, items: Sequence[Failure]) -> builtins.list[Ack]:
        """Failed attempts; a long message keeps its first 2,000 characters and a long
        traceback its last 8,000, whoever reports them (a task keeps every attempt's)."""
        items = [
            f if (e := clipped_error(f.error)) is f.error else f.model_copy(update={"error": e})
            for f in items
        ]
        return await self.store.fail(items, self.clock.now())

    async def release(self, leases: Sequence[LeaseRef]) -> builtins.list[Ack]:
        """Hand leases back."""
        return await self.store.release(leases, self.clock.now())

    async def maintain(self) -> dict[str, int]:
        """Silent agents offline, then reaper (their leases too), promotions, deadlines."""
        offline = await self.agents.reap()
        done = await self.store.maintain(self.clock.now())
        if offline:  # their swarm members (re-queued just now) move to other agents
            done["swarm_repinned"] = await self.agents.repin_swarms(offline)
        done["schedules_fired"] = await self.fire_schedules()
        return {**done, "agents_offline": len(offline)}

    # ------------------------------------------------------------------ schedules
    async def create_schedule(self, spec: ScheduleSpec, owner: str | None = None) -> Schedule:
        """Store a schedule; its template is checked now, as a submit would be."""
        now = self.clock.now()
        await self._refresh_flow()
        await self._build(spec.task, owner, now)  # unknown type, bad input: refused here
        return await self.store.create_schedule(new_id(), spec, owner, first_fire(spec, now), now)

    async def list_schedules(self, owner: str | None = None) -> builtins.list[Schedule]:
        """Every schedule (yours unless ``owner`` is None)."""
        return await self.store.list_schedules(owner)

    async def get_schedule(self, ident: str, owner: str | None = None) -> Schedule:
        """One schedule by id or name."""
        return await self.store.get_schedule(ident, owner)

    async def delete_schedule(self, ident: str, owner: str | None = None) -> Schedule:
        """Remove a schedule (the tasks it created stay)."""
        return await self.store.delete_schedule(ident, owner)

    async def pause_schedule(
        self, ident: str, paused: bool = True, owner: str | None = None
    ) -> Schedule:
        """Pause or resume; a resumed schedule fires from its next time on."""
        now = self.clock.now()
        return await self.store.pause_schedule(
            ident, paused, lambda sch: first_fire(sch, now), owner, now
        )

    async def fire_schedules(self) -> int:
        """Create the tasks of every due firing (exactly once across servers)."""
        now = self.clock.now()
        fired = 0
        for sch in await self.store.due_schedules(now):
            times, next_at = due_firings(sch, sch.next_fire_at.timestamp(), now)
            firings = []
            for t in times:
                spec = sch.task.model_copy(
                    update={
                        "metadata": {
                            **sch.task.metadata,
                            "schedule_id": sch.id,
                            "schedule": sch.name,
                            "scheduled_for": datetime.fromtimestamp(t, UTC).isoformat(),
                        }
                    }
                )
                try:
                    firings.append((t, await self._build(spec, sch.owner, now)))
                except OffloadError as exc:
                    # The type or its schema changed since: skip the firing, keep the clock.
                    log.warning("schedule %s cannot fire: %s", sch.name, exc)
            created = await self.store.fire_schedule(sch.id, firings, next_at, now)
            fired += len(created)
        return fired

    async def run_maintenance(
        self, interval_s: float = 1.0, stop: asyncio.Event | None = None
    ) -> None:
        """Run :meth:`maintain` every ``interval_s`` until ``stop`` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.maintain()
            except Exception:  # a passing database error must not end maintenance for good
                log.warning("maintenance pass failed; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


def _shape(spec: TaskSpec) -> tuple[Any, ...] | None:
    """What a plain task's record derives from besides its own input, texts, tags, metadata
    and keys (None for a task that needs the full build: dependencies, teams, reviews,
    resources). Objects count by identity: equal ones in separate objects only cost a
    second template."""
    if spec.depends_on or spec.team is not None or spec.review is not None or spec.resources:
        return None
    return (
        spec.type, spec.queue, spec.owner, id(spec.requester), spec.priority,
        tuple(spec.capabilities) if spec.capabilities else (), spec.agent_id, spec.max_retries,
        id(spec.retry), spec.timeout_s, spec.run_at, spec.deadline, spec.cache_ttl_s,
        spec.complexity,
    )  # fmt: skip


def _default_title(spec: TaskSpec) -> str | None:
    if spec.description:
        first = spec.description.strip().splitlines()[0] if spec.description.strip() else ""
        return first[:120] or None
    return None


_DEFAULT_RETRY = RetryPolicy()


def _check_seq(after: int) -> None:
    if not 0 <= after <= MAX_SEQ:
        raise InvalidInput(f"after must be an event seq from 0 to {MAX_SEQ}", field="after")


def _topological(graph: dict[str, builtins.list[str]]) -> builtins.list[str]:
    """Refs ordered so every task comes after its dependencies (graph is acyclic)."""
    order: builtins.list[str] = []
    seen: set[str] = set()
    for root in graph:
        if root in seen:
            continue
        # Iterative DFS: long chains must not hit the recursion limit.
        stack: builtins.list[tuple[str, int]] = [(root, 0)]
        seen.add(root)
        while stack:
            node, i = stack[-1]
            deps = graph.get(node, [])
            if i < len(deps):
                stack[-1] = (node, i + 1)
                if deps[i] not in seen:
                    seen.add(deps[i])
                    stack.append((deps[i], 0))
            else:
                stack.pop()
                order.append(node)
    return order
