"""The review stage: reviewers list the results awaiting them and approve or reject them.

A task whose spec (or type) asks for ``review`` goes to ``reviewing`` when its work is done;
``GET /v1/reviews`` finds it, ``POST /v1/tasks/{id}/review`` decides it. Users act on
their own tasks only (others' answer 404), as everywhere.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from offload.api import render
from offload.api.deps import CallerDep, ContextDep, audit_details
from offload.api.errors import COMMON, responses
from offload.domain.errors import InvalidInput
from offload.domain.models import MAX_OFFSET, ReviewStatus, Task, TaskPage
from offload.domain.review import ReviewDecision, ReviewFilter

router = APIRouter(prefix="/v1", tags=["reviews"], responses=responses(*COMMON))

TaskId = Annotated[str, Path(min_length=1, max_length=200, description="task id")]


@router.get("/reviews", response_model=TaskPage, summary="List reviews (default: pending)")
async def list_reviews(
    caller: CallerDep,
    ctx: ContextDep,
    reviewer: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description='an agent id, "capability:NAME" or "human"; a registered agent also '
            "gets the reviews assigned to its capabilities",
        ),
    ] = None,
    capability: Annotated[
        list[str] | None,
        Query(max_length=100, description="also reviews for capability:NAME (repeatable)"),
    ] = None,
    status: Annotated[
        ReviewStatus, Query(description="pending (awaiting a decision), passed or failed")
    ] = ReviewStatus.PENDING,
    owner: Annotated[str | None, Query(max_length=200, description="admins only")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    *,
    request: Request,
) -> Response:
    """Tasks whose result awaits (or went through) review, oldest request first, with the
    result to judge, ``review.history`` of earlier rounds and the task's instructions."""
    _single_valued(request, "reviewer", "status", "owner", "limit", "offset")
    flt = ReviewFilter(
        reviewer=reviewer,
        capabilities=[c for value in capability or [] for c in value.split(",") if c.strip()],
        status=status,
        owner=caller.owner_filter(owner),
        limit=limit,
        offset=offset,
    )
    page = await ctx.service.list_reviews(flt)
    return render.model(page)


def _single_valued(request: Request, *names: str) -> None:
    """Refuse a repeated one-value parameter (``?reviewer=a&reviewer=b``): which one was
    meant is a guess, and a review listing for the wrong reviewer is worse than a 422."""
    for name in names:
        if len(request.query_params.getlist(name)) > 1:
            raise InvalidInput(f"give {name} once (it takes one value)", field=name)


@router.post(
    "/tasks/{task_id}/review",
    response_model=Task,
    responses=responses(404, 409),
    summary="Approve or reject a task's result",
)
async def review_task(
    task_id: TaskId,
    decision: ReviewDecision,
    caller: CallerDep,
    ctx: ContextDep,
    request: Request,
) -> Response:
    """``approve`` completes the task (feedback and ``quality_score`` kept); ``reject`` sends
    it back to ``queued`` with the feedback for the next attempt (optionally not to the
    same agent), or fails it (``ReviewRejected``) once ``max_rounds`` rejections are made.
    409 unless the task is ``reviewing``."""
    task = await ctx.service.review(task_id, decision, owner=caller.scope, actor=caller.actor)
    audit_details(request, task_id=task_id, decision=decision.decision.value)
    return render.model(task)
