"""What the MCP tools return: small, stable JSON views of tasks, lists, types and stats.

The views carry only what an agent acts on (status, progress, result, error, what to do
next), not the whole task record; ``offload://tasks/{id}`` has the record. Results larger
than a limit are cut into pages so one call never floods the agent's context.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from offload.domain.models import Stats, Task, TaskPage, TaskTypeInfo
from offload.domain.status import ACTIVE, PENDING, Status

#: Characters of result JSON a tool returns by default (a page; the rest on request).
DEFAULT_RESULT_CHARS = 20_000
#: Most characters of result JSON one call may ask for.
MAX_RESULT_CHARS = 100_000
#: Characters of result JSON shown per task in listings.
PREVIEW_CHARS = 200
#: Most tasks one listing returns.
MAX_LIST = 100


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorView(_View):
    """Why the task (or its last attempt) failed."""

    type: str = Field(description="error class, e.g. 'ValueError', 'LeaseExpired'")
    message: str
    retryable: bool = Field(description="false: retrying with the same input will fail again")


class TaskView(_View):
    """One task as an agent sees it: where it stands and what it produced."""

    id: str = Field(description="the task id; pass it to wait_for_task, get_task_status…")
    type: str
    title: str | None = None
    status: Status = Field(
        description="completed, failed and cancelled are final; anything else is still going"
    )
    done: bool = Field(description="true once the status is final")
    priority: int
    progress: float = Field(description="0-100, as reported by the worker")
    current_step: str | None = None
    attempt: int = Field(description="attempts started so far (1 = first)")
    max_retries: int
    result: Any = Field(
        None, description="the task's result (null until completed, or when paged: see result_page)"
    )
    result_page: str | None = Field(
        None, description="a slice of the result's JSON text, when it is too long to return whole"
    )
    result_chars: int | None = Field(None, description="length of the full result as JSON text")
    result_offset: int | None = Field(None, description="where result_page starts in that text")
    next_result_offset: int | None = Field(
        None, description="pass as result_offset to get_task_status for the next page; null at end"
    )
    error: ErrorView | None = None
    parent_id: str | None = Field(None, description="the workflow this task belongs to")
    ref: str | None = Field(None, description="this task's name inside its workflow")
    children: list[str] = Field(default_factory=list, description="workflow step task ids")
    depends_on: list[str] = Field(default_factory=list, description="upstream task ids")
    cancel_requested: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    estimated_duration_s: float | None = None
    actual_duration_s: float | None = None
    next_step: str = Field(description="what to call next, in words")


class ReviewRoundView(_View):
    """One decided review round."""

    round: int
    decision: str = Field(description="approve or reject")
    feedback: str | None = None
    quality_score: float | None = None
    agent_id: str | None = Field(None, description="the agent whose result was reviewed")


class ReviewView(_View):
    """A task whose result awaits (or went through) review, with what a reviewer needs."""

    task_id: str = Field(description="pass it to review_task")
    type: str
    title: str | None = None
    description: str | None = Field(None, description="what was asked for")
    instructions: str | None = None
    input: Any = None
    status: Status = Field(description="reviewing while a decision is awaited")
    reviewer: str | None = Field(
        None, description='an agent id, "capability:NAME" or "human": who should decide'
    )
    review_status: str = Field(description="pending, passed or failed (last decision)")
    round: int = Field(description="which review round this is (1 = first)")
    max_rounds: int = Field(description="rejections allowed before the task fails")
    agent_id: str | None = Field(None, description="the agent that produced the result")
    result: Any = Field(None, description="the result to judge (when it fits)")
    result_page: str | None = Field(
        None, description="the start of the result's JSON text when it is too long to return "
        "whole (get_task_status pages through it)"
    )  # fmt: skip
    history: list[ReviewRoundView] = Field(
        default_factory=list, description="earlier decisions, oldest first"
    )


class ReviewList(_View):
    """A page of reviews, oldest request first."""

    reviews: list[ReviewView]
    total: int = Field(description="reviews matching, over all pages")
    next_offset: int | None = Field(description="pass as offset for the next page; null at end")


class WorkflowView(_View):
    """A submitted workflow: its parent task and the task id of each step."""

    workflow: TaskView
    steps: dict[str, str] = Field(description="step ref -> task id")


class TaskSummary(_View):
    """One line of a listing."""

    id: str
    type: str
    title: str | None = None
    status: Status
    priority: int
    progress: float
    parent_id: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    result_preview: str | None = Field(
        None, description=f"the result as JSON, cut at {PREVIEW_CHARS} characters"
    )
    error: str | None = Field(None, description="'Type: message' when the task failed")


class TaskList(_View):
    """A page of tasks, newest first."""

    tasks: list[TaskSummary]
    total: int = Field(description="tasks matching the filters, over all pages")
    limit: int
    offset: int
    next_offset: int | None = Field(description="pass as offset for the next page; null at end")


class TaskTypeView(_View):
    """A task type: what it does and the input it takes."""

    name: str = Field(description="pass as task_type to submit_agent_task")
    description: str
    runs_automatically: bool = Field(
        description="true: a built-in worker computes it; false: free-form work an external "
        "agent (LLM, program or person) must claim and do"
    )
    capabilities: list[str] = Field(description="what the worker or agent must offer")
    input_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema of the input object (omitted when include_schemas=false)"
    )


class TaskTypeList(_View):
    """The catalogue of task types."""

    task_types: list[TaskTypeView]
    count: int


class TypeStatsView(_View):
    """Per-type figures."""

    type: str
    count: int
    completed: int
    failed: int
    success_rate: float | None
    run_p50_s: float | None
    run_p95_s: float | None
    wait_p50_s: float | None
    wait_p95_s: float | None


class QueueStats(_View):
    """Queue-wide figures."""

    counts: dict[str, int] = Field(description="tasks per status")
    total: int
    pending: int = Field(description="blocked + scheduled + queued: waiting to run")
    active: int = Field(description="assigned + running + reviewing")
    by_type: list[TypeStatsView] = Field(description=f"at most {MAX_LIST} types, busiest first")
    agents: dict[str, int] = Field(description="agents (workers) per status")
    generated_at: datetime


# -- conversions -----------------------------------------------------------------------


def to_json_text(value: Any) -> str:
    """Compact JSON, the form whose length the result limits count."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _error(task: Task) -> ErrorView | None:
    if task.error is None:
        return None
    e = task.error
    return ErrorView(type=e.type, message=e.message, retryable=e.retryable)


def _next_step(task: Task, paged: bool) -> str:
    if task.status is Status.COMPLETED:
        if paged:
            return (
                "The result is too long to return whole: read it page by page with "
                "get_task_status(task_id, result_offset=next_result_offset), or read the "
                f"resource offload://tasks/{task.id}/result for all of it."
            )
        return "Done: use the result."
    if task.status is Status.FAILED:
        hint = (
            "retry_task re-runs it"
            if task.error is None or task.error.retryable
            else ("the error is not retryable: fix the input and submit a new task")
        )
        return f"It failed for good ({hint})."
    if task.status is Status.CANCELLED:
        return "It was cancelled; retry_task re-queues it."
    if task.status is Status.BLOCKED:
        return "It waits for its dependencies; wait_for_task waits for it."
    if task.status is Status.PAUSED:
        return "It is paused; it will not run until resumed."
    if task.status is Status.REVIEWING:
        reviewer = task.review.reviewer if task.review else "a reviewer"
        return (
            f"Its result awaits review by {reviewer}: review_task approves or rejects it; "
            "wait_for_task waits for the decision."
        )
    return f'Still {task.status.value}: call wait_for_task(task_id="{task.id}") to wait for it.'


def task_view(
    task: Task,
    *,
    max_result_chars: int = DEFAULT_RESULT_CHARS,
    result_offset: int = 0,
) -> TaskView:
    """A task as a tool returns it; a long result comes back as one page of its JSON text."""
    result: Any = task.result
    page: str | None = None
    total: int | None = None
    offset: int | None = None
    next_offset: int | None = None
    paged = False
    if task.result is not None:
        text = to_json_text(task.result)
        total = len(text)
        if total > max_result_chars or result_offset > 0:
            paged = True
            start = min(result_offset, total)
            end = min(start + max_result_chars, total)
            result, page, offset = None, text[start:end], start
            next_offset = end if end < total else None
    return TaskView(
        id=task.id,
        type=task.type,
        title=task.title,
        status=task.status,
        done=task.done,
        priority=task.priority,
        progress=task.progress,
        current_step=task.current_step,
        attempt=task.attempt,
        max_retries=task.max_retries,
        result=result,
        result_page=page,
        result_chars=total,
        result_offset=offset,
        next_result_offset=next_offset,
        error=_error(task),
        parent_id=task.parent_id,
        ref=task.ref,
        children=list(task.children),
        depends_on=[d.task_id for d in task.depends_on],
        cancel_requested=task.cancel_requested,
        created_at=task.created_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
        estimated_duration_s=task.estimated_duration_s,
        actual_duration_s=task.actual_duration_s,
        next_step=_next_step(task, paged),
    )


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """``value`` as JSON, cut at ``limit`` characters with an ellipsis."""
    text = to_json_text(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def task_summary(task: Task) -> TaskSummary:
    """One listing line."""
    return TaskSummary(
        id=task.id,
        type=task.type,
        title=task.title,
        status=task.status,
        priority=task.priority,
        progress=task.progress,
        parent_id=task.parent_id,
        created_at=task.created_at,
        finished_at=task.finished_at,
        result_preview=None if task.result is None else preview(task.result),
        error=None if task.error is None else f"{task.error.type}: {task.error.message}",
    )


def task_list(page: TaskPage) -> TaskList:
    """A listing page."""
    end = page.offset + len(page.tasks)
    return TaskList(
        tasks=[task_summary(t) for t in page.tasks],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        next_offset=end if end < page.total else None,
    )


def type_view(info: TaskTypeInfo, *, include_schema: bool) -> TaskTypeView:
    """A catalogue entry."""
    return TaskTypeView(
        name=info.name,
        description=info.description,
        runs_automatically=info.executable,
        capabilities=list(info.capabilities),
        input_schema=info.input_schema if include_schema else None,
    )


def queue_stats(stats: Stats) -> QueueStats:
    """Queue figures with the pending/active groups added up."""
    counts = dict(stats.counts)
    by_type = sorted(stats.by_type, key=lambda t: (-t.count, t.type))[:MAX_LIST]
    return QueueStats(
        counts=counts,
        total=stats.total,
        pending=sum(counts.get(s.value, 0) for s in PENDING),
        active=sum(counts.get(s.value, 0) for s in ACTIVE),
        by_type=[TypeStatsView.model_validate(t.model_dump()) for t in by_type],
        agents=dict(stats.agents),
        generated_at=stats.generated_at,
    )


def review_view(task: Task, *, max_result_chars: int = DEFAULT_RESULT_CHARS) -> ReviewView:
    """A task as a reviewer sees it."""
    review = task.review
    assert review is not None  # only reviewed tasks are listed
    result: Any = task.result
    page: str | None = None
    if result is not None:
        text = to_json_text(result)
        if len(text) > max_result_chars:
            result, page = None, text[:max_result_chars]
    awaiting = task.status is Status.REVIEWING
    return ReviewView(
        task_id=task.id,
        type=task.type,
        title=task.title,
        description=task.description,
        instructions=task.instructions,
        input=task.input,
        status=task.status,
        reviewer=review.reviewer,
        review_status=review.status.value,
        round=review.rounds + (1 if awaiting else 0),
        max_rounds=review.max_rounds,
        agent_id=review.agent_id,
        result=result,
        result_page=page,
        history=[
            ReviewRoundView(
                round=r.round,
                decision=r.decision.value,
                feedback=r.feedback,
                quality_score=r.quality_score,
                agent_id=r.agent_id,
            )
            for r in review.history
        ],
    )


def review_list(page: TaskPage) -> ReviewList:
    """A page of reviews."""
    end = page.offset + len(page.tasks)
    return ReviewList(
        reviews=[review_view(t) for t in page.tasks if t.review is not None],
        total=page.total,
        next_offset=end if end < page.total else None,
    )


class ScheduleView(_View):
    """A schedule: a task template on a timetable."""

    id: str
    name: str = Field(description="pass to remove_schedule")
    task_type: str
    when: str = Field(description="'cron EXPR (TZ)' or 'every N s'")
    next_fire_at: str = Field(description="UTC, ISO 8601")
    paused: bool


class ScheduleList(_View):
    """Your schedules."""

    schedules: list[ScheduleView]


def schedule_view(s: Any) -> ScheduleView:
    """The agent-facing view of a schedule."""
    when = f"cron {s.cron} ({s.timezone})" if s.cron is not None else f"every {s.every_s:g} s"
    return ScheduleView(
        id=s.id, name=s.name, task_type=s.task.type, when=when,
        next_fire_at=s.next_fire_at.isoformat(), paused=s.paused,
    )  # fmt: skip
