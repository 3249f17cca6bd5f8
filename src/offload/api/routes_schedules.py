"""Schedules over HTTP: ``/v1/schedules`` (PRODUCT.md §4.9)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from offload.api.deps import CallerDep, ContextDep, audit_details
from offload.api.errors import COMMON, responses
from offload.domain.schedules import Schedule, ScheduleSpec

router = APIRouter(responses=responses(*COMMON), tags=["schedules"])

Ident = Annotated[str, Path(min_length=1, max_length=200, description="schedule id or name")]


class ScheduleList(BaseModel):
    """Schedules."""

    schedules: list[Schedule]


@router.post(
    "/v1/schedules",
    status_code=201,
    response_model=Schedule,
    responses=responses(404, 409, 422),
    summary="Create a schedule",
)
async def create_schedule(
    body: ScheduleSpec, caller: CallerDep, ctx: ContextDep, request: Request
) -> Schedule:
    """A task template (``task``) on a timetable: ``cron`` (in ``timezone``) or ``every_s``.
    Each firing creates one task, exactly once however many servers run; firings missed
    while no server ran follow ``catchup`` (``skip``, ``one``, ``all``)."""
    out = await ctx.service.create_schedule(body, caller.scope)
    audit_details(request, schedule_id=out.id, name=out.name)
    return out


@router.get("/v1/schedules", response_model=ScheduleList, summary="List schedules")
async def list_schedules(caller: CallerDep, ctx: ContextDep) -> ScheduleList:
    """Your schedules (all of them for admins)."""
    return ScheduleList(schedules=await ctx.service.list_schedules(caller.scope))


@router.get(
    "/v1/schedules/{ident}", response_model=Schedule, responses=responses(404), summary="A schedule"
)
async def get_schedule(ident: Ident, caller: CallerDep, ctx: ContextDep) -> Schedule:
    """One schedule by id or name."""
    return await ctx.service.get_schedule(ident, caller.scope)


@router.delete(
    "/v1/schedules/{ident}",
    response_model=Schedule,
    responses=responses(404),
    summary="Remove a schedule",
)
async def delete_schedule(
    ident: Ident, caller: CallerDep, ctx: ContextDep, request: Request
) -> Schedule:
    """Stops it; the tasks it created stay."""
    out = await ctx.service.delete_schedule(ident, caller.scope)
    audit_details(request, schedule_id=out.id)
    return out


@router.post(
    "/v1/schedules/{ident}/pause",
    response_model=Schedule,
    responses=responses(404),
    summary="Pause a schedule",
)
async def pause_schedule(
    ident: Ident, caller: CallerDep, ctx: ContextDep, request: Request
) -> Schedule:
    """No firings until resumed."""
    out = await ctx.service.pause_schedule(ident, True, caller.scope)
    audit_details(request, schedule_id=out.id)
    return out


@router.post(
    "/v1/schedules/{ident}/resume",
    response_model=Schedule,
    responses=responses(404),
    summary="Resume a schedule",
)
async def resume_schedule(
    ident: Ident, caller: CallerDep, ctx: ContextDep, request: Request
) -> Schedule:
    """Fires again from its next time on (the paused stretch is not made up)."""
    out = await ctx.service.pause_schedule(ident, False, caller.scope)
    audit_details(request, schedule_id=out.id)
    return out
