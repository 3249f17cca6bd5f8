"""Tasks: submit (one, batch, workflow), list, read, events, wait and control.

Every handler is a thin adapter: parse, apply the caller's tenancy, call the service,
serialise. Users see and act on their own tasks only (others' answer 404).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from starlette.responses import Response

from offload.api import render
from offload.api.changes import wait_for_task, watch_events
from offload.api.deps import CallerDep, ContextDep, SubmitterDep, audit_details
from offload.api.errors import COMMON, responses
from offload.api.schemas import (
    BatchSubmit,
    CancelBody,
    ChildView,
    DependencyView,
    EventList,
    TaskDetail,
    TaskList,
)
from offload.domain.errors import NotFound
from offload.domain.models import (
    MAX_OFFSET,
    MAX_SEQ,
    Task,
    TaskEvent,
    TaskFilter,
    TaskPage,
    TaskSpec,
    WorkflowSpec,
)

router = APIRouter(prefix="/v1", tags=["tasks"], responses=responses(*COMMON))

TaskId = Annotated[str, Path(min_length=1, max_length=200, description="task id")]
#: Pages of a task's log read to find its most recent events.
_EVENT_PAGES = 20


@router.post(
    "/tasks",
    status_code=201,
    response_model=Task,
    responses=responses(413),
    summary="Submit a task",
)
async def submit_task(
    spec: TaskSpec, caller: SubmitterDep, ctx: ContextDep, request: Request
) -> Response:
    """Create one task; durable once this answers. ``idempotency_key`` (unique per owner)
    returns the existing task instead of creating another."""
    task = await ctx.service.submit(spec, caller.submit_owner(spec.owner))
    audit_details(request, task_id=task.id, type=task.type)
    return render.model(task, 201)


@router.post(
    "/tasks/batch",
    status_code=201,
    response_model=TaskList,
    responses=responses(413),
    summary="Submit up to 1,000 tasks atomically",
)
async def submit_batch(
    batch: BatchSubmit, caller: SubmitterDep, ctx: ContextDep, request: Request
) -> Response:
    """All or none, in one transaction; answers the tasks in the order given."""
    specs = batch.tasks
    if caller.is_admin:
        # Admins may name an owner per task; the others are theirs.
        default = caller.owner
        if default is not None:
            specs = [s if s.owner is not None else s.model_copy(update={"owner": default})
                     for s in specs]  # fmt: skip
        created = await ctx.service.submit_many(specs, None)
    else:
        for spec in specs:
            caller.submit_owner(spec.owner)
        created = await ctx.service.submit_many(specs, caller.owner)
    audit_details(request, count=len(created))
    return render.tasks(created, 201)


@router.post(
    "/workflows",
    status_code=201,
    response_model=Task,
    responses=responses(413),
    tags=["workflows"],
    summary="Submit a workflow (a parent and a DAG of children)",
)
async def submit_workflow(
    spec: WorkflowSpec, caller: SubmitterDep, ctx: ContextDep, request: Request
) -> Response:
    """Create the parent (type ``workflow``) and its children in one transaction; children
    name each other by ``ref`` in ``depends_on`` and ``{"$ref": "a.result.path"}`` inputs."""
    parent = await ctx.service.submit_workflow(spec, caller.submit_owner(spec.owner))
    audit_details(request, task_id=parent.id, children=len(parent.children))
    return render.model(parent, 201)


@router.get("/tasks", response_model=TaskPage, summary="List tasks")
async def list_tasks(
    caller: CallerDep,
    ctx: ContextDep,
    status: Annotated[
        list[str] | None,
        Query(
            description="statuses or aliases (pending, active, done); repeat or comma-separate",
        ),
    ] = None,
    type: Annotated[str | None, Query(max_length=200)] = None,
    agent_id: Annotated[str | None, Query(max_length=200)] = None,
    owner: Annotated[str | None, Query(max_length=200, description="admins only")] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    queue: Annotated[str | None, Query(max_length=100)] = None,
    search: Annotated[str | None, Query(max_length=500, description="text in the title")] = None,
    parent_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=0, le=1000, description="0: only the total, no tasks")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """Newest first, with the ``total`` matching (for paging)."""
    statuses = [part for value in status or [] for part in value.split(",") if part.strip()]
    flt = TaskFilter(
        status=statuses or None, type=type, agent_id=agent_id,
        owner=caller.owner_filter(owner), tag=tag, queue=queue, search=search,
        parent_id=parent_id, limit=limit, offset=offset,
    )  # fmt: skip
    page = await ctx.service.list(flt, caller.scope)
    return render.model(page)


@router.get(
    "/tasks/{task_id}",
    response_model=TaskDetail,
    responses=responses(404),
    summary="Read a task (with children, dependencies and recent events)",
)
async def get_task(
    task_id: TaskId,
    caller: CallerDep,
    ctx: ContextDep,
    detail: Annotated[
        bool, Query(description="false: the task record only (what SDK clients read)")
    ] = True,
    events: Annotated[int, Query(ge=0, le=500, description="how many recent events")] = 20,
) -> Response:
    """The task record; with ``detail`` (default) also ``child_tasks``, ``dependencies``
    (with each upstream's status) and ``recent_events``."""
    service, scope = ctx.service, caller.scope
    task = await service.get(task_id, scope)
    if not detail:
        return render.model(task)
    children: list[ChildView] = []
    if task.children:
        page = await service.list(TaskFilter(parent_id=task.id, limit=1000), scope)
        children = [
            ChildView(id=c.id, type=c.type, title=c.title, ref=c.ref, status=c.status,
                      progress=c.progress)
            for c in sorted(page.tasks, key=lambda c: c.id)
        ]  # fmt: skip
    dependencies = []
    for dep in task.depends_on[:200]:
        try:
            upstream: Task | None = await service.get(dep.task_id, scope)
        except NotFound:
            upstream = None
        dependencies.append(
            DependencyView(
                task_id=dep.task_id,
                on=dep.on,
                when=dep.when,
                status=upstream.status if upstream else None,
                type=upstream.type if upstream else None,
            )
        )
    recent = await _recent_events(ctx, task.id, events)
    body = TaskDetail.model_construct(
        **dict(task), child_tasks=children, dependencies=dependencies, recent_events=recent
    )
    return render.model(body)


async def _recent_events(ctx: ContextDep, task_id: str, n: int) -> list[TaskEvent]:
    if n == 0:
        return []
    tail: list[TaskEvent] = []
    after = 0
    for _ in range(_EVENT_PAGES):
        page = await ctx.service.events(task_id, after, 1000)
        tail = (tail + page)[-n:]
        if len(page) < 1000:
            break
        after = page[-1].seq
    return tail


@router.get(
    "/tasks/{task_id}/events",
    response_model=EventList,
    responses=responses(404),
    summary="A task's event log (optionally long-polled)",
)
async def task_events(
    task_id: TaskId,
    caller: CallerDep,
    ctx: ContextDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="only events with seq > after")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    wait: Annotated[
        float, Query(ge=0, le=60, description="seconds to wait for the first new event")
    ] = 0.0,
) -> Response:
    """Events oldest first. With ``wait``, an empty answer comes only after that long:
    pass the last ``seq`` seen as ``after`` to follow a task."""
    events = await watch_events(
        ctx.service, ctx.feed, task_id, after=after, limit=limit,
        timeout=min(wait, ctx.settings.max_wait_s), owner=caller.scope,
    )  # fmt: skip
    return render.wrapped("events", events)


@router.get(
    "/tasks/{task_id}/wait",
    response_model=Task,
    responses=responses(404),
    summary="Wait for a task to finish (long poll)",
)
async def wait_task(
    task_id: TaskId,
    caller: CallerDep,
    ctx: ContextDep,
    timeout: Annotated[float, Query(ge=0, le=60, description="seconds to wait at most")] = 30.0,
) -> Response:
    """The task as soon as it is terminal, or as it stands after ``timeout`` seconds
    (check ``status``; wait again to keep waiting)."""
    task = await wait_for_task(
        ctx.service, ctx.feed, task_id, min(timeout, ctx.settings.max_wait_s), caller.scope
    )
    return render.model(task)


_CONTROL = responses(404, 409)


@router.post(
    "/tasks/{task_id}/cancel", response_model=Task, responses=_CONTROL, summary="Cancel a task"
)
async def cancel_task(
    task_id: TaskId,
    caller: CallerDep,
    ctx: ContextDep,
    body: Annotated[CancelBody | None, Body()] = None,
) -> Response:
    """Cancel now, or (running) ask the holder to stop: ``cancel_requested`` turns true and
    the task ends ``cancelled`` once the worker notices."""
    reason = body.reason if body is not None else None
    task = await ctx.service.cancel(task_id, reason, owner=caller.scope, actor=caller.actor)
    return render.model(task)


@router.post(
    "/tasks/{task_id}/pause", response_model=Task, responses=_CONTROL, summary="Pause a task"
)
async def pause_task(task_id: TaskId, caller: CallerDep, ctx: ContextDep) -> Response:
    """Pause a pending task now, or ask a running one's holder to stop."""
    task = await ctx.service.pause(task_id, owner=caller.scope, actor=caller.actor)
    return render.model(task)


@router.post(
    "/tasks/{task_id}/resume", response_model=Task, responses=_CONTROL, summary="Resume a task"
)
async def resume_task(task_id: TaskId, caller: CallerDep, ctx: ContextDep) -> Response:
    """Return a paused task to the queue (or blocked/scheduled, as its state requires)."""
    task = await ctx.service.resume(task_id, owner=caller.scope, actor=caller.actor)
    return render.model(task)


@router.post(
    "/tasks/{task_id}/retry",
    response_model=Task,
    responses=_CONTROL,
    summary="Retry a failed or cancelled task",
)
async def retry_task(task_id: TaskId, caller: CallerDep, ctx: ContextDep) -> Response:
    """Back to the queue with a fresh attempt budget."""
    task = await ctx.service.retry(task_id, owner=caller.scope, actor=caller.actor)
    return render.model(task)


@router.post(
    "/dlq/retry",
    response_model=TaskList,
    tags=["dlq"],
    summary="Retry every dead-letter task matching a filter",
)
async def retry_dead_letters(
    flt: TaskFilter, caller: CallerDep, ctx: ContextDep, request: Request
) -> Response:
    """Status defaults to ``failed``; at most ``limit`` (≤ 1,000) tasks per call."""
    flt = flt.model_copy(update={"owner": caller.owner_filter(flt.owner)})
    retried = await ctx.service.retry_many(flt, owner=caller.scope, actor=caller.actor)
    audit_details(request, count=len(retried))
    return render.tasks(retried)
