"""Agent registry reads and control, per-queue dispatch modes, and auction bids
(PRODUCT.md §5). Registration, heartbeats and listing live with the worker protocol in
:mod:`offload.api.routes_workers`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel
from starlette.responses import Response

from offload.api import render
from offload.api.deps import CallerDep, ContextDep
from offload.api.errors import COMMON, responses
from offload.domain.agents import (
    AgentStatusChange,
    AgentWorkload,
    Bid,
    BidSpec,
    QueueDispatch,
    QueueDispatchUpdate,
)
from offload.domain.models import Agent, Role

router = APIRouter(prefix="/v1", responses=responses(*COMMON))

AgentId = Annotated[str, Path(min_length=1, max_length=200, description="agent id")]
TaskId = Annotated[str, Path(min_length=1, max_length=200, description="task id")]
QueueName = Annotated[str, Path(min_length=1, max_length=100, description="queue name")]


class BidList(BaseModel):
    """A task's bids, best first."""

    bids: list[Bid]


@router.get(
    "/agents/{agent_id}/workload",
    response_model=AgentWorkload,
    responses=responses(404),
    tags=["agents"],
    summary="An agent's current tasks and history",
)
async def agent_workload(agent_id: AgentId, caller: CallerDep, ctx: ContextDep) -> Response:
    """The agent record (status, load, history) plus the tasks it holds now."""
    workload = await ctx.service.agents.workload(agent_id)
    if caller.scope is not None:
        # Other tenants' tasks are not shown to non-admins.
        workload.tasks = [t for t in workload.tasks if t.owner == caller.scope]
    return render.model(workload)


@router.patch(
    "/agents/{agent_id}",
    response_model=Agent,
    responses=responses(404),
    tags=["agents"],
    summary="Drain, resume or retire an agent",
)
async def set_agent_status(
    agent_id: AgentId, body: AgentStatusChange, caller: CallerDep, ctx: ContextDep
) -> Response:
    """``draining``: finish current work, take no new; ``online``: take work again;
    ``offline``: retire now (its tasks are re-queued). Admin and agent tokens."""
    caller.require(Role.ADMIN, Role.AGENT)
    return render.model(await ctx.service.agents.set_status(agent_id, body.status))


@router.get(
    "/queues/{queue}/dispatch",
    response_model=QueueDispatch,
    tags=["agents"],
    summary="A queue's dispatch mode",
)
async def get_dispatch(queue: QueueName, caller: CallerDep, ctx: ContextDep) -> Response:
    """``pull`` (default), ``push``, ``hybrid`` (priority ≥ threshold pushed) or ``auction``."""
    return render.model(await ctx.service.agents.dispatch_settings(queue))


@router.put(
    "/queues/{queue}/dispatch",
    response_model=QueueDispatch,
    tags=["agents"],
    summary="Set a queue's dispatch mode",
)
async def put_dispatch(
    queue: QueueName, body: QueueDispatchUpdate, caller: CallerDep, ctx: ContextDep
) -> Response:
    """Change the mode, hybrid threshold or auction window (omitted fields stay). Admins."""
    caller.require(Role.ADMIN)
    settings = await ctx.service.agents.set_dispatch(queue, body)
    if ctx.dispatcher is not None:
        ctx.dispatcher.wake()  # look at the queue again now
    return render.model(settings)


@router.post(
    "/tasks/{task_id}/bids",
    status_code=201,
    response_model=Bid,
    responses=responses(404, 409),
    tags=["agents"],
    summary="Bid for an announced task",
)
async def place_bid(task_id: TaskId, body: BidSpec, caller: CallerDep, ctx: ContextDep) -> Response:
    """While the task's auction is open (event ``auction.announced``): offer ``cost`` and
    ``eta_s``; the lowest cost wins when the window closes. 409 once it is closed."""
    caller.require(Role.ADMIN, Role.AGENT)
    return render.model(await ctx.service.agents.bid(task_id, body, caller.scope), 201)


@router.get(
    "/tasks/{task_id}/bids",
    response_model=BidList,
    responses=responses(404),
    tags=["agents"],
    summary="A task's auction bids",
)
async def list_bids(task_id: TaskId, caller: CallerDep, ctx: ContextDep) -> Response:
    """Every bid on the task, best first."""
    return render.wrapped("bids", await ctx.service.agents.bids(task_id, caller.scope))
