"""Flow control over HTTP: per-type limits and named resources (PRODUCT.md §4.8)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from offload.api.deps import CallerDep, ContextDep, audit_details
from offload.api.errors import COMMON, responses
from offload.domain.flow import (
    Limit,
    LimitSpec,
    QueueSettings,
    QueueSettingsSpec,
    Resource,
    ResourceSpec,
)
from offload.domain.models import Role

router = APIRouter(responses=responses(*COMMON), tags=["flow control"])

TypeName = Annotated[str, Path(min_length=1, max_length=200)]
ResourceName = Annotated[str, Path(min_length=1, max_length=100)]


QueueName = Annotated[str, Path(min_length=1, max_length=100)]


class QueueSettingsList(BaseModel):
    """Every queue with options set."""

    queues: list[QueueSettings]


class LimitList(BaseModel):
    """Every task type's limits."""

    limits: list[Limit]


class ResourceList(BaseModel):
    """Every resource with units in use and tasks waiting."""

    resources: list[Resource]


@router.get("/v1/limits", response_model=LimitList, summary="List limits")
async def list_limits(caller: CallerDep, ctx: ContextDep) -> LimitList:
    """Concurrency and rate limits per task type."""
    return LimitList(limits=await ctx.service.list_limits())


@router.put(
    "/v1/limits/{task_type}",
    response_model=Limit,
    responses=responses(404, 422),
    summary="Set a task type's limits",
)
async def set_limit(
    task_type: TypeName, body: LimitSpec, caller: CallerDep, ctx: ContextDep, request: Request
) -> Limit:
    """``concurrency`` (tasks running at once, per ``concurrency_key`` value when given),
    ``rate_limit`` (``"100/m"``, ``/s``, ``/h``) and the ``strategy`` for tasks over the
    concurrency limit (``queue``, ``cancel_newest``, ``cancel_in_progress``). Admin."""
    caller.require(Role.ADMIN)
    out = await ctx.service.set_limit(task_type, body)
    audit_details(request, task_type=task_type)
    return out


@router.delete(
    "/v1/limits/{task_type}",
    status_code=204,
    response_class=Response,
    responses=responses(404),
    summary="Remove a task type's limits",
)
async def delete_limit(
    task_type: TypeName, caller: CallerDep, ctx: ContextDep, request: Request
) -> Response:
    """Its queued tasks become unlimited at once. Admin."""
    caller.require(Role.ADMIN)
    await ctx.service.delete_limit(task_type)
    audit_details(request, task_type=task_type)
    return Response(status_code=204)


@router.get("/v1/resources", response_model=ResourceList, summary="List resources")
async def list_resources(caller: CallerDep, ctx: ContextDep) -> ResourceList:
    """Capacity, units in use and tasks waiting, per resource."""
    return ResourceList(resources=await ctx.service.list_resources())


@router.put(
    "/v1/resources/{name}",
    response_model=Resource,
    responses=responses(422),
    summary="Create a resource or set its capacity",
)
async def set_resource(
    name: ResourceName, body: ResourceSpec, caller: CallerDep, ctx: ContextDep, request: Request
) -> Resource:
    """Tasks that declare ``resources: {NAME: units}`` run only while that many units are
    free. Admin."""
    caller.require(Role.ADMIN)
    out = await ctx.service.set_resource(name, body.capacity)
    audit_details(request, resource=name, capacity=body.capacity)
    return out


@router.delete(
    "/v1/resources/{name}",
    status_code=204,
    response_class=Response,
    responses=responses(404, 409),
    summary="Remove a resource",
)
async def delete_resource(
    name: ResourceName, caller: CallerDep, ctx: ContextDep, request: Request
) -> Response:
    """Refused (409) while unfinished tasks need it. Admin."""
    caller.require(Role.ADMIN)
    await ctx.service.delete_resource(name)
    audit_details(request, resource=name)
    return Response(status_code=204)


@router.get("/v1/queues", response_model=QueueSettingsList, summary="List queue options")
async def list_queues(caller: CallerDep, ctx: ContextDep) -> QueueSettingsList:
    """Queues with options set (``fairness``)."""
    return QueueSettingsList(queues=await ctx.service.list_queue_settings())


@router.put(
    "/v1/queues/{queue}",
    response_model=QueueSettings,
    responses=responses(422),
    summary="Set a queue's options",
)
async def set_queue(
    queue: QueueName, body: QueueSettingsSpec, caller: CallerDep, ctx: ContextDep, request: Request
) -> QueueSettings:
    """``fairness: owner``: among equal priority, claims alternate across owners, so one
    tenant's flood cannot starve another's tasks. Admin."""
    caller.require(Role.ADMIN)
    out = await ctx.service.set_queue_settings(queue, body)
    audit_details(request, queue=queue, fairness=body.fairness.value)
    return out


class CacheCleared(BaseModel):
    """How many cached results were dropped."""

    removed: int


class CacheStats(BaseModel):
    """Live cached results per task type."""

    entries: dict[str, int]


@router.get("/v1/cache", response_model=CacheStats, tags=["cache"], summary="Result cache")
async def cache_stats(caller: CallerDep, ctx: ContextDep) -> CacheStats:
    """Live cached results per task type (tasks with ``cache_ttl_s``)."""
    return CacheStats(entries=await ctx.service.cache_stats())


@router.delete(
    "/v1/cache",
    response_model=CacheCleared,
    responses=responses(404),
    tags=["cache"],
    summary="Clear the result cache",
)
async def clear_cache(
    caller: CallerDep,
    ctx: ContextDep,
    request: Request,
    task_type: Annotated[str | None, Query(alias="type", min_length=1, max_length=200)] = None,
) -> CacheCleared:
    """Drop cached results of one type (``?type=…``) or all; the next submits run. Admin."""
    caller.require(Role.ADMIN)
    removed = await ctx.service.clear_cache(task_type)
    audit_details(request, task_type=task_type, removed=removed)
    return CacheCleared(removed=removed)
