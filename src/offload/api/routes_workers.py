"""The worker/agent protocol: agents, claims with leases, lease heartbeats, progress and
outcomes (fenced by the lease), releases, maintenance, and the change long-poll.

Remote workers speak it through :class:`offload.client.http.HttpClient`. A stale lease is
refused with 409 ``stale_lease``. Tokens other than admin act on their own tenant only:
claims are limited to it, and leases of other tenants' tasks count as unknown.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from starlette.responses import Response

from offload.api import render
from offload.api.changes import claim_waiting
from offload.api.deps import CallerDep, ContextDep, audit_details, skip_audit
from offload.api.errors import COMMON, responses
from offload.api.schemas import (
    AckList,
    AgentHeartbeat,
    AgentList,
    Changed,
    ClaimBody,
    ClaimResult,
    CompleteBody,
    CompletionBatch,
    FailBody,
    FailureBatch,
    LeaseHeartbeat,
    LeaseRelease,
    LeaseStates,
    ProgressBody,
)
from offload.domain.errors import InvalidInput, NotFound, OffloadError, StaleLease, TooLarge
from offload.domain.models import (
    Ack,
    Agent,
    AgentRegistration,
    Completion,
    Failure,
    LeaseState,
    ProgressUpdate,
    Role,
)

router = APIRouter(prefix="/v1", responses=responses(*COMMON))

#: Response header of ``POST /v1/claims``: pass it as ``since`` to ``GET /v1/changes``.
CHANGE_TOKEN_HEADER = "X-Offload-Change-Token"

AgentId = Annotated[str, Path(min_length=1, max_length=200, description="agent id")]
TaskId = Annotated[str, Path(min_length=1, max_length=200, description="task id")]


# -- agents ------------------------------------------------------------------------------
@router.post(
    "/agents", status_code=201, response_model=Agent, tags=["agents"], summary="Register an agent"
)
async def register_agent(reg: AgentRegistration, caller: CallerDep, ctx: ContextDep) -> Response:
    """Create or update an agent (workers register themselves); answers its record."""
    return render.model(await ctx.service.register_agent(reg), 201)


@router.post(
    "/agents/{agent_id}/heartbeat",
    response_model=Agent,
    responses=responses(404),
    tags=["agents"],
    summary="Agent heartbeat",
)
async def agent_heartbeat(
    agent_id: AgentId,
    caller: CallerDep,
    ctx: ContextDep,
    body: Annotated[AgentHeartbeat | None, Body()] = None,
) -> Response:
    """The agent is alive (every 10 s; three missed make it offline)."""
    metadata = body.metadata if body is not None else None
    return render.model(await ctx.service.agent_heartbeat(agent_id, metadata))


@router.delete(
    "/agents/{agent_id}",
    status_code=204,
    responses=responses(404),
    tags=["agents"],
    summary="Deregister an agent (mark it offline)",
)
async def deregister_agent(agent_id: AgentId, caller: CallerDep, ctx: ContextDep) -> Response:
    """The agent is going away; its leases expire normally."""
    await ctx.service.deregister_agent(agent_id)
    return Response(status_code=204)


@router.get("/agents", response_model=AgentList, tags=["agents"], summary="List agents")
async def list_agents(caller: CallerDep, ctx: ContextDep) -> Response:
    """Every agent with its live load and history."""
    return render.wrapped("agents", await ctx.service.list_agents())


@router.get(
    "/agents/available",
    response_model=AgentList,
    tags=["agents"],
    summary="Agents with free capacity",
)
async def available_agents(
    caller: CallerDep,
    ctx: ContextDep,
    capability: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Online agents below their concurrency limit (with ``capability``, if given), least
    loaded first."""
    return render.wrapped("agents", await ctx.service.agents.available(capability))


@router.get(
    "/agents/{agent_id}",
    response_model=Agent,
    responses=responses(404),
    tags=["agents"],
    summary="Read an agent (workload and history)",
)
async def get_agent(agent_id: AgentId, caller: CallerDep, ctx: ContextDep) -> Response:
    """Status, load, capabilities and history (completed, failed, mean duration)."""
    return render.model(await ctx.service.agents.get(agent_id))


# -- claims and leases ---------------------------------------------------------------------
@router.post(
    "/claims",
    response_model=ClaimResult,
    tags=["worker protocol"],
    summary="Claim tasks with leases",
    responses={
        200: {
            "headers": {
                CHANGE_TOKEN_HEADER: {
                    "description": "pass as `since` to GET /v1/changes",
                    "schema": {"type": "integer"},
                }
            }
        }
    },
)
async def claim(body: ClaimBody, caller: CallerDep, ctx: ContextDep, request: Request) -> Response:
    """Lease up to ``max`` eligible tasks, best first; each answer carries its ``lease``.
    With ``wait_s``, an empty answer comes only after that long. Tokens other than admin
    claim only their own tasks."""
    tenant = body.tenant if caller.is_admin else caller.scope
    req = body.model_copy(update={"tenant": tenant})
    wait_s = min(body.wait_s, ctx.settings.max_wait_s)
    tasks, mark = await claim_waiting(ctx.service, ctx.feed, req, wait_s)
    if tasks:
        audit_details(request, agent_id=body.agent_id, count=len(tasks))
    else:
        skip_audit(request)
    response = render.tasks(tasks)
    response.headers[CHANGE_TOKEN_HEADER] = str(mark)
    return response


@router.get(
    "/changes",
    response_model=Changed,
    tags=["worker protocol"],
    summary="Wait for the database to change (long poll)",
)
async def changes(
    caller: CallerDep,
    ctx: ContextDep,
    timeout: Annotated[float, Query(ge=0, le=60)] = 1.0,
    since: Annotated[
        int | None, Query(ge=0, description="a change token (from a claim's header)")
    ] = None,
) -> Changed:
    """``changed: true`` as soon as new work may be claimable, else false after
    ``timeout``. Idle workers call it between claims."""
    changed = await ctx.feed.wait(min(timeout, ctx.settings.max_wait_s), since)
    return Changed(changed=changed, token=ctx.feed.mark())


@router.post(
    "/leases/heartbeat",
    response_model=LeaseStates,
    tags=["worker protocol"],
    summary="Extend leases",
)
async def lease_heartbeat(body: LeaseHeartbeat, caller: CallerDep, ctx: ContextDep) -> Response:
    """Per lease: ``valid`` (false: expired or re-claimed, stop the work), the new
    expiry, and ``cancel_requested``/``pause_requested``."""
    mine = await caller.visible(ctx.service, [ref.task_id for ref in body.leases])
    allowed = [ref for ref in body.leases if ref.task_id in mine]
    states = {s.task_id: s for s in await ctx.service.heartbeat(allowed, body.ttl_s)}
    out = [
        states.get(ref.task_id)
        or LeaseState(task_id=ref.task_id, lease_id=ref.lease_id, valid=False)
        for ref in body.leases
    ]
    return render.wrapped("leases", out)


@router.post(
    "/leases/release",
    response_model=AckList,
    tags=["worker protocol"],
    summary="Hand leases back",
)
async def release(body: LeaseRelease, caller: CallerDep, ctx: ContextDep) -> Response:
    """Return the tasks to the queue without spending an attempt (graceful shutdown)."""
    mine = await caller.visible(ctx.service, [ref.task_id for ref in body.leases])
    acks = await ctx.service.release([r for r in body.leases if r.task_id in mine])
    return render.wrapped("acks", _with_unknown(acks, [r.task_id for r in body.leases], mine))


# -- progress and outcomes ----------------------------------------------------------------
_FENCED = responses(404, 409)


@router.post(
    "/tasks/{task_id}/progress",
    response_model=LeaseState,
    responses=_FENCED,
    tags=["worker protocol"],
    summary="Report progress of a leased task",
)
async def progress(
    task_id: TaskId, body: ProgressBody, caller: CallerDep, ctx: ContextDep
) -> Response:
    """Progress (0–100), the current step, a log line, a checkpoint or an artifact; the
    answer says whether cancel or pause was requested. 409 ``stale_lease`` when the lease
    is no longer valid."""
    await _check_visible(caller, ctx, task_id)
    update = ProgressUpdate(task_id=task_id, **body.model_dump(exclude_unset=True))
    return render.model(await ctx.service.progress(update))


@router.post(
    "/tasks/{task_id}/complete",
    response_model=Ack,
    responses=_FENCED,
    tags=["worker protocol"],
    summary="Complete a leased task",
)
async def complete_one(
    task_id: TaskId, body: CompleteBody, caller: CallerDep, ctx: ContextDep
) -> Response:
    """Store the result; 409 ``stale_lease`` (result discarded) when the lease is no
    longer valid."""
    await _check_visible(caller, ctx, task_id)
    item = Completion(task_id=task_id, lease_id=body.lease_id, result=body.result)
    (ack,) = await ctx.service.complete([item])
    return render.model(_accepted(ack, body.lease_id))


@router.post(
    "/tasks/{task_id}/fail",
    response_model=Ack,
    responses=_FENCED,
    tags=["worker protocol"],
    summary="Fail a leased task's attempt",
)
async def fail_one(task_id: TaskId, body: FailBody, caller: CallerDep, ctx: ContextDep) -> Response:
    """Record the error; the retry policy decides retry or dead letter (``status`` in
    the answer). 409 ``stale_lease`` when the lease is no longer valid."""
    await _check_visible(caller, ctx, task_id)
    item = Failure(
        task_id=task_id, lease_id=body.lease_id, error=body.error, retry_delay_s=body.retry_delay_s
    )
    (ack,) = await ctx.service.fail([item])
    return render.model(_accepted(ack, body.lease_id))


@router.post(
    "/tasks/complete",
    response_model=AckList,
    tags=["worker protocol"],
    summary="Complete several leased tasks",
)
async def complete_many(
    body: CompletionBatch, caller: CallerDep, ctx: ContextDep, request: Request
) -> Response:
    """One ack per item, in order; refused items say why (``code``) and change nothing."""
    ids = [c.task_id for c in body.items]
    mine = await caller.visible(ctx.service, ids)
    acks = await ctx.service.complete([c for c in body.items if c.task_id in mine])
    audit_details(request, count=len(body.items))
    return render.wrapped("acks", _with_unknown(acks, ids, mine))


@router.post(
    "/tasks/fail",
    response_model=AckList,
    tags=["worker protocol"],
    summary="Fail several leased tasks' attempts",
)
async def fail_many(
    body: FailureBatch, caller: CallerDep, ctx: ContextDep, request: Request
) -> Response:
    """One ack per item, in order; refused items say why (``code``) and change nothing."""
    ids = [f.task_id for f in body.items]
    mine = await caller.visible(ctx.service, ids)
    acks = await ctx.service.fail([f for f in body.items if f.task_id in mine])
    audit_details(request, count=len(body.items))
    return render.wrapped("acks", _with_unknown(acks, ids, mine))


@router.post(
    "/maintenance",
    response_model=dict[str, int],
    tags=["worker protocol"],
    summary="Run one maintenance pass",
)
async def maintenance(caller: CallerDep, ctx: ContextDep) -> dict[str, int]:
    """Reap expired leases, promote due tasks, fail tasks past their deadline, mark silent
    agents offline (idempotent). Admin and agent tokens."""
    caller.require(Role.ADMIN, Role.AGENT)
    return await ctx.service.maintain()


# -- helpers -------------------------------------------------------------------------------
async def _check_visible(caller: CallerDep, ctx: ContextDep, task_id: str) -> None:
    if caller.scope is not None:
        await ctx.service.get(task_id, caller.scope)


def _with_unknown(acks: list[Ack], ids: list[str], mine: set[str]) -> list[Ack]:
    """Acks in request order, with ``not_found`` for tasks the caller may not touch."""
    by_id = {a.task_id: a for a in acks}
    return [
        by_id.get(task_id)
        or Ack(task_id=task_id, ok=False, code="not_found", message=f"task {task_id!r} not found")
        for task_id in ids
    ]


def _accepted(ack: Ack, lease_id: str) -> Ack:
    """The ack of a single-task call, or the error it stands for."""
    if ack.ok:
        return ack
    if ack.code == StaleLease.code:
        raise StaleLease(ack.task_id, lease_id)
    if ack.code == NotFound.code:
        raise NotFound("task", ack.task_id)
    if ack.code == InvalidInput.code:
        raise InvalidInput(ack.message or "invalid outcome", field="result")
    if ack.code == TooLarge.code:
        # The lease is kept: send a smaller result, or fail the attempt.
        raise TooLarge(ack.message or "result too large", details={"field": "result"})
    error = OffloadError(ack.message or f"refused ({ack.code})")
    error.code = ack.code or "conflict"
    error.http_status = 409
    raise error
