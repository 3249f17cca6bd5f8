"""Health, readiness, metrics, statistics, the task-type catalogue, tokens and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from offload import __version__
from offload.api import render
from offload.api.deps import CallerDep, ContextDep, audit_details, context
from offload.api.errors import COMMON, responses
from offload.api.schemas import AuditPage, Health, Ready, TaskTypeList, TokenCreate, TokenList
from offload.domain.errors import Unavailable
from offload.domain.models import MAX_OFFSET, NewToken, Role, Stats, TokenInfo

router = APIRouter(responses=responses(*COMMON))
probes = APIRouter(tags=["system"])


@probes.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process answers (no database access)."""
    return Health(version=__version__)


@probes.get("/readyz", response_model=Ready, responses=responses(503), summary="Readiness")
async def readyz(request: Request) -> Ready:
    """The database answers and the server is not shutting down (503 otherwise)."""
    ctx = context(request)
    if ctx.feed.closed:
        raise Unavailable("the server is shutting down")
    try:
        seq = await ctx.service.last_event_seq()
    except Exception as exc:  # any database failure means "not ready"
        raise Unavailable(f"database unavailable: {type(exc).__name__}: {exc}") from None
    return Ready(version=__version__, last_event_seq=seq)


@router.get(
    "/metrics",
    tags=["system"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(caller: CallerDep, ctx: ContextDep) -> Response:
    """Prometheus text format (admin token when auth is on)."""
    caller.require(Role.ADMIN)
    body, content_type = await ctx.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/v1/stats", response_model=Stats, tags=["system"], summary="Queue statistics")
async def stats(caller: CallerDep, ctx: ContextDep) -> Response:
    """Counts by status, per-type success rate and run/wait percentiles, agents by status
    (your own tasks unless admin)."""
    return render.model(await ctx.service.stats(caller.scope))


@router.get("/v1/task-types", response_model=TaskTypeList, tags=["system"], summary="Task types")
async def task_types(caller: CallerDep, ctx: ContextDep) -> Response:
    """Every task type: name, description, input/output JSON schemas, defaults."""
    return render.wrapped("task_types", ctx.service.task_types())


@router.get("/v1/audit", response_model=AuditPage, tags=["admin"], summary="Audit log")
async def audit(
    caller: CallerDep,
    ctx: ContextDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    actor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    """Every state-changing call, newest first: who, what, target, when, status (admin)."""
    caller.require(Role.ADMIN)
    entries, total = await ctx.auth.list_audit(limit, offset, actor)
    return AuditPage(entries=entries, total=total, limit=limit, offset=offset)


@router.post(
    "/v1/tokens",
    status_code=201,
    response_model=NewToken,
    tags=["admin"],
    summary="Create an API token",
)
async def create_token(
    body: TokenCreate, caller: CallerDep, ctx: ContextDep, request: Request
) -> NewToken:
    """The secret is in this answer and nowhere else (stored hashed). Admin."""
    caller.require(Role.ADMIN)
    new = await ctx.auth.create_token(body.user, body.role, body.name)
    audit_details(request, token_id=new.info.id, user=new.info.user, role=new.info.role.value)
    return new


@router.get("/v1/tokens", response_model=TokenList, tags=["admin"], summary="List API tokens")
async def list_tokens(caller: CallerDep, ctx: ContextDep) -> TokenList:
    """Token records, never the secrets. Admin."""
    caller.require(Role.ADMIN)
    return TokenList(tokens=await ctx.auth.list_tokens())


@router.delete(
    "/v1/tokens/{token_id}",
    response_model=TokenInfo,
    responses=responses(404),
    tags=["admin"],
    summary="Revoke an API token",
)
async def revoke_token(
    token_id: Annotated[str, Path(min_length=1, max_length=200)],
    caller: CallerDep,
    ctx: ContextDep,
) -> TokenInfo:
    """The token stops working at once on this server (within seconds on others). Admin."""
    caller.require(Role.ADMIN)
    info = await ctx.auth.revoke_token(token_id)
    ctx.tokens.clear()
    return info
