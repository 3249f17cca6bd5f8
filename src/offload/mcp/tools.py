"""The MCP tools: thin calls through the client, with schemas an LLM can act on alone.

Each argument's ``Field(description=…)`` (with an example) becomes the tool's JSON schema;
each method's docstring is the tool's description: when to use it and what it returns.
Every tool answers with a one-line summary, the data as JSON text, and the same data as
structured content validated against the view's schema (:mod:`offload.mcp.views`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offload.client.base import AsyncClient
from offload.domain.errors import InvalidInput, OffloadError, UnknownTaskType, WaitTimeout
from offload.domain.models import MAX_BULK, ReviewStatus, TaskFilter, TaskSpec, WorkflowSpec
from offload.domain.review import ReviewDecision, ReviewFilter
from offload.domain.schedules import ScheduleSpec
from offload.domain.status import Status
from offload.mcp.errors import error_result, offload_error_result, validation_errors
from offload.mcp.scope import ClientFactory, current_request
from offload.mcp.views import (
    DEFAULT_RESULT_CHARS,
    MAX_LIST,
    MAX_RESULT_CHARS,
    QueueStats,
    ReviewList,
    ScheduleList,
    ScheduleView,
    TaskList,
    TaskTypeList,
    TaskView,
    WorkflowView,
    preview,
    queue_stats,
    review_list,
    schedule_view,
    task_list,
    task_view,
    to_json_text,
    type_view,
)

#: Longest ``wait_for_task`` long poll; MCP clients time requests out after a minute or two.
MAX_WAIT_S = 120.0
#: Most steps in one ``submit_workflow`` call.
MAX_WORKFLOW_STEPS = min(MAX_LIST, MAX_BULK)

# -- argument types (their descriptions become the tools' JSON schemas) -----------------

TaskId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="A task id as returned by submit_agent_task, e.g. "
        '"01a20256-59a4-7000-a429-3f3bf6c074e0".',
    ),
]
TaskTypeName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description='A task type name from list_task_types, e.g. "math.factorial"; free-form '
        'work for other agents: "general", "research", "coding", "analysis", "review", '
        '"documentation".',
    ),
]
PriorityName = Literal["low", "normal", "high", "critical"]
PriorityArg = Annotated[
    PriorityName | Annotated[int, Field(ge=1, le=10)],
    Field(
        description='How urgent: "low", "normal" (default), "high", "critical", or 1-10 '
        '(higher runs first). Example: "high".'
    ),
]
StatusName = Literal[
    "blocked",
    "scheduled",
    "queued",
    "assigned",
    "running",
    "reviewing",
    "paused",
    "completed",
    "failed",
    "cancelled",
    "pending",
    "active",
    "done",
    "terminal",
    "executing",
    "dead",
    "dlq",
]
MaxResultChars = Annotated[
    int,
    Field(
        ge=100,
        le=MAX_RESULT_CHARS,
        description="Longest result to return whole, in characters of JSON; a longer one "
        "comes back in pages (result_page, next_result_offset). Example: 20000.",
    ),
]
_StepRef = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


class WorkflowStep(BaseModel):
    """One step of a workflow."""

    model_config = ConfigDict(extra="forbid")

    ref: _StepRef = Field(
        description="This step's name, unique in the workflow; other steps name it in "
        'depends_on. Example: "fact".'
    )
    task_type: TaskTypeName
    input: dict[str, Any] = Field(
        default_factory=dict,
        description="The step's input object. A value may be an earlier step's result: "
        '{"$ref": "<ref>.result"} or {"$ref": "<ref>.result.<field>"} (that step then runs '
        'first). Example: {"n": {"$ref": "count.result.n"}}.',
    )
    depends_on: list[_StepRef] = Field(
        default_factory=list,
        max_length=MAX_WORKFLOW_STEPS,
        description='refs of steps that must complete first. Example: ["fetch"].',
    )
    title: str | None = Field(None, max_length=500, description="A short name for the step.")
    description: str | None = Field(
        None, max_length=20_000, description="For free-form agent types: what is wanted."
    )
    instructions: str | None = Field(
        None, max_length=20_000, description="For free-form agent types: how to do it."
    )
    priority: PriorityArg | None = None
    timeout_s: float | None = Field(None, gt=0, le=86_400, description="Per-attempt limit.")


def _ok(view: BaseModel, summary: str) -> CallToolResult:
    """A successful tool result: a one-line summary, the data as JSON text, and the same
    data as structured content (clients that ignore ``structuredContent`` still see it)."""
    data = view.model_dump(mode="json")
    compact = view.model_dump(mode="json", exclude_none=True)
    return CallToolResult(
        content=[
            TextContent(type="text", text=summary),
            TextContent(type="text", text=to_json_text(compact)),
        ],
        structured_content=data,
    )


def _task_summary(view: TaskView) -> str:
    label = f"Task {view.id} ({view.type})"
    if view.status is Status.COMPLETED:
        if view.result_page is not None:
            return (
                f"{label} completed; its result is {view.result_chars} characters of JSON, "
                f"returned in pages (this one starts at {view.result_offset})."
            )
        return f"{label} completed. Result: {preview(view.result, 500)}"
    if view.status is Status.FAILED:
        why = f"{view.error.type}: {view.error.message}" if view.error else "no error recorded"
        return f"{label} failed after {view.attempt} attempt(s): {why}. {view.next_step}"
    if view.status is Status.CANCELLED:
        return f"{label} was cancelled. {view.next_step}"
    progress = f", {view.progress:g}% done" if view.progress else ""
    step = f" ({view.current_step})" if view.current_step else ""
    return f"{label} is {view.status.value}{progress}{step}. {view.next_step}"


class OffloadTools:
    """The tools, each a thin call through the client the factory returns."""

    def __init__(self, client_for: ClientFactory) -> None:
        self._client_for = client_for

    async def _client(self) -> AsyncClient:
        return await self._client_for(current_request())

    async def _guard(
        self, call: Callable[[AsyncClient], Awaitable[CallToolResult]]
    ) -> CallToolResult:
        # Anticipated failures become tool errors the agent can act on; anything else is a
        # bug, which the SDK reports as a generic tool error and logs with its traceback.
        try:
            return await call(await self._client())
        except OffloadError as exc:
            return offload_error_result(exc)
        except ValidationError as exc:
            problems = "; ".join(f"{path} {problem}" for path, problem in validation_errors(exc))
            return error_result(
                f"invalid {exc.title}: {problems}",
                code="invalid_input",
                hint="correct the fields named and call again",
            )

    # -- submitting --------------------------------------------------------------------

    async def submit_agent_task(
        self,
        task_type: TaskTypeName,
        input: Annotated[
            dict[str, Any],
            Field(
                description="The input object; it must match the type's input_schema from "
                'list_task_types. Example for math.factorial: {"n": 10}; for '
                'math.evaluate: {"expression": "2**100 / 3"}.'
            ),
        ] = {},  # noqa: B006 - never mutated; the SDK validates a copy per call
        priority: PriorityArg = "normal",
        title: Annotated[
            str | None, Field(max_length=500, description="A short name for the task.")
        ] = None,
        description: Annotated[
            str | None,
            Field(
                max_length=20_000,
                description="For free-form agent types: what is wanted and why.",
            ),
        ] = None,
        instructions: Annotated[
            str | None,
            Field(
                max_length=20_000,
                description="For free-form agent types: how to do it, constraints, format.",
            ),
        ] = None,
        depends_on: Annotated[
            list[str],
            Field(
                max_length=MAX_LIST,
                description="Ids of existing tasks that must complete first; until then this "
                "task waits (status blocked). Example: "
                '["01a20256-59a4-7000-a429-3f3bf6c074e0"].',
            ),
        ] = [],  # noqa: B006 - never mutated
        tags: Annotated[
            list[Annotated[str, Field(max_length=100)]],
            Field(max_length=50, description='Labels to find the task by. Example: ["report"].'),
        ] = [],  # noqa: B006 - never mutated
        timeout_s: Annotated[
            float | None,
            Field(gt=0, le=86_400, description="Limit per attempt, in seconds. Example: 60."),
        ] = None,
        max_retries: Annotated[
            int | None,
            Field(ge=0, le=100, description="Attempts after the first on failure (default 3)."),
        ] = None,
        idempotency_key: Annotated[
            str | None,
            Field(
                max_length=200,
                description="Submitting again with the same key returns the first task "
                "instead of a duplicate: safe to retry a submit whose answer you lost.",
            ),
        ] = None,
        reviewer: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=200,
                description="Have the result reviewed before the task counts as done: an "
                'agent id, "capability:NAME" (any agent with it) or "human". A rejected result '
                'is redone with the reviewer\'s feedback. Example: "capability:review".',
            ),
        ] = None,
    ) -> Annotated[CallToolResult, TaskView]:
        """Queue one task for Offload to compute or for another agent to do; returns at once.

        Use it for work you should not do inline: exact math (big integers, factorials,
        exact fractions: math.factorial, math.evaluate), anything over many rows of data,
        jobs longer than a reply, or free-form work for another agent (general, research,
        coding, analysis, review, documentation). Call list_task_types first to learn the
        types and their input schemas.

        Returns the new task: `id`, `status` (queued, or blocked while depends_on is
        unmet) and `next_step`. Then call wait_for_task(task_id=id) to get the result.
        Example: task_type="math.factorial", input={"n": 10} -> later result 3628800.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            options: dict[str, Any] = {
                "priority": priority,
                "title": title,
                "description": description,
                "instructions": instructions,
                "depends_on": list(depends_on),
                "tags": list(tags),
                "timeout_s": timeout_s,
                "max_retries": max_retries,
                "idempotency_key": idempotency_key,
            }
            if reviewer is not None:
                options["review"] = {"reviewer": reviewer}
            try:
                task = await client.submit(task_type, dict(input), **options)
            except InvalidInput as exc:
                if isinstance(exc, UnknownTaskType) or not (exc.field or "").startswith("input"):
                    raise
                schema = await _input_schema(client, task_type)
                return offload_error_result(
                    exc,
                    hint=f"make `input` match the input schema of {task_type}: "
                    f"{to_json_text(schema)}"
                    if schema
                    else "list_task_types shows the input schema",
                )
            view = task_view(task)
            return _ok(
                view,
                f"Submitted {task.type} task {task.id} ({task.status.value}, priority "
                f'{task.priority}). Next: wait_for_task(task_id="{task.id}").',
            )

        return await self._guard(call)

    async def submit_workflow(
        self,
        tasks: Annotated[
            list[WorkflowStep],
            Field(
                min_length=1,
                max_length=MAX_WORKFLOW_STEPS,
                description="The steps, 1 to 100. Steps with no dependency between them run "
                "in parallel. Example: "
                '[{"ref": "count", "task_type": "util.echo", "input": {"n": 5}}, '
                '{"ref": "fact", "task_type": "math.factorial", '
                '"input": {"n": {"$ref": "count.result.n"}}, "depends_on": ["count"]}].',
            ),
        ],
        title: Annotated[
            str | None, Field(max_length=500, description="A short name for the workflow.")
        ] = None,
        description: Annotated[
            str | None, Field(max_length=20_000, description="What the workflow is for.")
        ] = None,
        priority: PriorityArg = "normal",
    ) -> Annotated[CallToolResult, WorkflowView]:
        """Queue several tasks at once as one workflow whose steps may depend on each other.

        Use it for multi-step work: each step is a task (task_type + input, as in
        submit_agent_task) with a `ref`; `depends_on` lists refs that must complete first,
        and an input value {"$ref": "<ref>.result.<field>"} takes an earlier step's result.
        All steps are created together (or none, if any is invalid). If a step fails for
        good, the steps depending on it are cancelled.

        Returns the workflow task (`workflow.id`) and each step's task id (`steps`). Call
        wait_for_task on the workflow id: its result maps each ref to that step's result.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            specs = []
            for step in tasks:
                fields = step.model_dump(exclude_none=True, exclude={"task_type"})
                specs.append(TaskSpec.model_validate({"type": step.task_type, **fields}))
            spec = WorkflowSpec(
                title=title, description=description, priority=priority, tasks=specs
            )
            parent = await client.submit_workflow(spec)
            page = await client.list(TaskFilter(parent_id=parent.id, limit=MAX_LIST))
            steps = {t.ref: t.id for t in sorted(page.tasks, key=lambda t: t.id) if t.ref}
            view = WorkflowView(workflow=task_view(parent), steps=steps)
            return _ok(
                view,
                f"Submitted workflow {parent.id} with {len(steps)} steps "
                f'({", ".join(steps)}). Next: wait_for_task(task_id="{parent.id}").',
            )

        return await self._guard(call)

    # -- reading -----------------------------------------------------------------------

    async def wait_for_task(
        self,
        task_id: TaskId,
        timeout_s: Annotated[
            float,
            Field(
                ge=0,
                le=MAX_WAIT_S,
                description=f"How long to wait, in seconds (0 to {MAX_WAIT_S:g}); the task "
                "keeps running after a timeout. Example: 30.",
            ),
        ] = 30.0,
        max_result_chars: MaxResultChars = DEFAULT_RESULT_CHARS,
    ) -> Annotated[CallToolResult, TaskView]:
        """Wait until a task finishes (or timeout_s passes) and return it with its result.

        The normal way to get a result: after submit_agent_task or submit_workflow, call
        this with the returned id. When `done` is true read `result` (or `error` if it
        failed); when false the task is still going: call wait_for_task again. Waiting
        never cancels or changes the task.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            try:
                task = await client.wait(task_id, timeout=timeout_s)
            except WaitTimeout:
                task = await client.get(task_id)
            view = task_view(task, max_result_chars=max_result_chars)
            summary = _task_summary(view)
            if not view.done:
                summary = f"Not finished after {timeout_s:g}s. {summary}"
            return _ok(view, summary)

        return await self._guard(call)

    async def get_task_status(
        self,
        task_id: TaskId,
        max_result_chars: MaxResultChars = DEFAULT_RESULT_CHARS,
        result_offset: Annotated[
            int,
            Field(
                ge=0,
                description="Start of the result page, in characters of its JSON text: "
                "pass next_result_offset from the previous answer. Example: 20000.",
            ),
        ] = 0,
    ) -> Annotated[CallToolResult, TaskView]:
        """Look at a task now, without waiting: status, progress, result or error.

        Use it to check on a task you submitted earlier, to read a long result page by
        page (result_offset), or to see why a task failed. To wait for a task to finish,
        use wait_for_task instead.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            task = await client.get(task_id)
            view = task_view(task, max_result_chars=max_result_chars, result_offset=result_offset)
            return _ok(view, _task_summary(view))

        return await self._guard(call)

    async def get_agent_tasks(
        self,
        status: Annotated[
            list[StatusName] | None,
            Field(
                max_length=20,
                description="Only tasks in these statuses. Groups: pending (waiting), "
                'active (being worked on), done (finished). Example: ["failed"].',
            ),
        ] = None,
        task_type: Annotated[
            str | None,
            Field(max_length=200, description='Only this type. Example: "math.factorial".'),
        ] = None,
        agent_id: Annotated[
            str | None,
            Field(max_length=200, description="Only tasks done by this agent (worker) id."),
        ] = None,
        parent_id: Annotated[
            str | None, Field(max_length=200, description="Only the steps of this workflow.")
        ] = None,
        tag: Annotated[str | None, Field(max_length=100, description="Only with this tag.")] = (
            None
        ),
        search: Annotated[
            str | None, Field(max_length=200, description="Text to look for in titles.")
        ] = None,
        limit: Annotated[
            int, Field(ge=1, le=MAX_LIST, description=f"Tasks per page (1-{MAX_LIST}).")
        ] = 20,
        offset: Annotated[
            int, Field(ge=0, description="Skip this many (next_offset of the previous page).")
        ] = 0,
    ) -> Annotated[CallToolResult, TaskList]:
        """List tasks, newest first, with filters: find ids, failures, or an agent's work.

        Returns one page: for each task its id, type, status, progress, a short result
        preview and error, plus `total` and `next_offset` for the next page. Use
        get_task_status or wait_for_task on an id for the full result.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            flt = TaskFilter(
                status=list(status) if status else None,
                type=task_type,
                agent_id=agent_id,
                parent_id=parent_id,
                tag=tag,
                search=search,
                limit=limit,
                offset=offset,
            )
            view = task_list(await client.list(flt))
            shown = len(view.tasks)
            more = f" Next page: offset={view.next_offset}." if view.next_offset else ""
            counts: dict[str, int] = {}
            for t in view.tasks:
                counts[t.status.value] = counts.get(t.status.value, 0) + 1
            by_status = ", ".join(f"{n} {s}" for s, n in counts.items())
            detail = f" ({by_status})" if by_status else ""
            return _ok(view, f"{shown} of {view.total} matching tasks{detail}.{more}")

        return await self._guard(call)

    async def list_task_types(
        self,
        search: Annotated[
            str | None,
            Field(
                max_length=200,
                description="Only types whose name or description contains this text "
                '(case-insensitive). Example: "math".',
            ),
        ] = None,
        include_schemas: Annotated[
            bool,
            Field(description="Include each type's input JSON Schema (default true)."),
        ] = True,
    ) -> Annotated[CallToolResult, TaskTypeList]:
        """List the task types Offload can run, with what each does and the input it takes.

        Call it once before submitting: the `name` is the task_type for submit_agent_task
        and `input_schema` says what `input` must hold. `runs_automatically` true means a
        worker computes it exactly (math.*, util.*, …); false means free-form work that an
        external agent claims and does (general, research, coding, …).
        """

        async def call(client: AsyncClient) -> CallToolResult:
            infos = await client.task_types()
            if search:
                needle = search.lower()
                infos = [
                    i for i in infos if needle in i.name.lower() or needle in i.description.lower()
                ]
            views = [type_view(i, include_schema=include_schemas) for i in infos]
            view = TaskTypeList(task_types=views, count=len(views))
            names = ", ".join(v.name for v in views) or "none"
            return _ok(view, f"{len(views)} task types: {names}.")

        return await self._guard(call)

    async def get_queue_stats(self) -> Annotated[CallToolResult, QueueStats]:
        """Queue overview: tasks per status, per-type success rate and timings, agents.

        Use it to see whether work is piling up (pending), in progress (active) or failing
        (failed = the dead-letter queue), before submitting a lot or when tasks seem slow.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            view = queue_stats(await client.stats())
            failed = view.counts.get(Status.FAILED.value, 0)
            done = view.counts.get(Status.COMPLETED.value, 0)
            return _ok(
                view,
                f"{view.total} tasks: {view.pending} pending, {view.active} active, "
                f"{done} completed, {failed} failed.",
            )

        return await self._guard(call)

    # -- control -----------------------------------------------------------------------

    async def cancel_agent_task(
        self,
        task_id: TaskId,
        reason: Annotated[
            str | None,
            Field(max_length=1000, description='Why, for the task\'s log. Example: "not needed".'),
        ] = None,
    ) -> Annotated[CallToolResult, TaskView]:
        """Cancel a task that is no longer needed; tasks waiting for it are cancelled too.

        A waiting task is cancelled at once; a running one is asked to stop and ends as
        cancelled shortly after (`cancel_requested` true meanwhile). Finished tasks cannot be
        cancelled. retry_task re-queues a cancelled task.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            task = await client.cancel(task_id, reason)
            view = task_view(task)
            if task.status is Status.CANCELLED:
                summary = f"Task {task.id} ({task.type}) cancelled."
            else:
                summary = (
                    f"Cancel requested for task {task.id} ({task.type}, {task.status.value}); "
                    "it stops at its next check."
                )
            return _ok(view, summary)

        return await self._guard(call)

    async def retry_task(self, task_id: TaskId) -> Annotated[CallToolResult, TaskView]:
        """Run a failed or cancelled task again, with a fresh budget of attempts.

        Use it when a task failed for a passing reason (a timeout, a lost worker, a
        retryable error). If its error says retryable false, the input itself is wrong:
        submit a corrected task instead.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            task = await client.retry(task_id)
            view = task_view(task)
            return _ok(
                view,
                f"Task {task.id} ({task.type}) is {task.status.value} again. "
                f'Next: wait_for_task(task_id="{task.id}").',
            )

        return await self._guard(call)

    # -- schedules -----------------------------------------------------------------------

    async def schedule_task(
        self,
        name: Annotated[str, Field(min_length=1, max_length=200, description="a name for it")],
        task_type: Annotated[str, Field(description="a type from list_task_types")],
        parameters: Annotated[
            dict[str, Any] | None, Field(description="the input each created task gets")
        ] = None,
        cron: Annotated[
            str | None, Field(description="five-field cron, e.g. '0 9 * * 1-5' (weekdays 9:00)")
        ] = None,
        every_s: Annotated[
            float | None, Field(ge=1, description="or: fire every this many seconds")
        ] = None,
        timezone: Annotated[str, Field(description="IANA timezone for cron")] = "UTC",
    ) -> Annotated[CallToolResult, ScheduleView]:
        """Create a recurring task: one task per firing of cron (or every every_s seconds).

        Use it for work that must happen on a timetable: a nightly report, a check every
        five minutes. Give exactly one of cron or every_s. Each firing creates one task,
        exactly once; find them with get_agent_tasks. Stop it with remove_schedule.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            spec = ScheduleSpec.model_validate(
                {"name": name, "cron": cron, "every_s": every_s, "timezone": timezone,
                 "task": {"type": task_type, "input": parameters or {}}}
            )  # fmt: skip
            view = schedule_view(await client.create_schedule(spec))
            return _ok(
                view,
                f"Schedule {view.name} creates a {view.task_type} task {view.when}; "
                f"next at {view.next_fire_at}.",
            )

        return await self._guard(call)

    async def list_schedules(self) -> Annotated[CallToolResult, ScheduleList]:
        """Your schedules: what task each one creates, on which timetable, and when it fires
        next (UTC). Use it before schedule_task to avoid a second schedule for the same job,
        and to find the name remove_schedule needs."""

        async def call(client: AsyncClient) -> CallToolResult:
            views = [schedule_view(s) for s in await client.list_schedules()]
            return _ok(ScheduleList(schedules=views), f"{len(views)} schedule(s).")

        return await self._guard(call)

    async def remove_schedule(
        self, name: Annotated[str, Field(description="the schedule's name or id")]
    ) -> Annotated[CallToolResult, ScheduleView]:
        """Stop a schedule for good, by name or id. Tasks it already created stay as they are
        (cancel them with cancel_agent_task if needed). To change a timetable, remove the
        schedule and create it again with schedule_task."""

        async def call(client: AsyncClient) -> CallToolResult:
            view = schedule_view(await client.delete_schedule(name))
            return _ok(view, f"Schedule {view.name} removed.")

        return await self._guard(call)

    # -- review ------------------------------------------------------------------------

    async def list_reviews(
        self,
        reviewer: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=200,
                description='Whose reviews: your agent id, "capability:NAME" or "human". A '
                "registered agent also gets the reviews assigned to its capabilities. "
                'Example: "capability:code_review".',
            ),
        ] = None,
        status: Annotated[
            Literal["pending", "passed", "failed"],
            Field(
                description="pending: awaiting a decision (default); passed: approved; "
                "failed: last decision was a rejection."
            ),
        ] = "pending",
        limit: Annotated[
            int, Field(ge=1, le=MAX_LIST, description=f"Reviews per page (1-{MAX_LIST}).")
        ] = 20,
        offset: Annotated[
            int, Field(ge=0, description="Skip this many (next_offset of the previous page).")
        ] = 0,
    ) -> Annotated[CallToolResult, ReviewList]:
        """List task results waiting for review, oldest first, with what you need to judge them.

        Use it when you act as a reviewer: each entry has the task's description,
        instructions, input, the `result` to judge, the round number and earlier rounds'
        feedback (`history`). Decide each one with review_task(task_id, decision).
        """

        async def call(client: AsyncClient) -> CallToolResult:
            flt = ReviewFilter(
                reviewer=reviewer, status=ReviewStatus(status), limit=limit, offset=offset
            )
            view = review_list(await client.list_reviews(flt))
            more = f" Next page: offset={view.next_offset}." if view.next_offset else ""
            if status == "pending":
                hint = " Decide each with review_task." if view.reviews else ""
                summary = f"{view.total} result(s) awaiting review.{hint}{more}"
            else:
                summary = f"{view.total} {status} review(s).{more}"
            return _ok(view, summary)

        return await self._guard(call)

    async def review_task(
        self,
        task_id: TaskId,
        decision: Annotated[
            Literal["approve", "reject"],
            Field(
                description="approve: accept the result (the task completes); reject: send it "
                "back for another attempt with your feedback."
            ),
        ],
        feedback: Annotated[
            str | None,
            Field(
                max_length=20_000,
                description="What is good, or exactly what to fix: the next attempt reads it. "
                'Example: "Cite a source for each claim and cover 2023 too."',
            ),
        ] = None,
        quality_score: Annotated[
            float | None,
            Field(ge=0, le=1, description="How good the result is, 0 to 1. Example: 0.8."),
        ] = None,
        exclude_previous_agent: Annotated[
            bool | None,
            Field(
                description="On reject: true gives the next attempt to a different agent "
                "(default: the task's own review setting)."
            ),
        ] = None,
    ) -> Annotated[CallToolResult, TaskView]:
        """Approve or reject a task's result that is waiting for review (status reviewing).

        Approving completes the task and releases the tasks that depend on it. Rejecting
        re-queues it with your feedback for the next attempt; after the task's max_rounds
        rejections it fails (ReviewRejected). Find results to review with list_reviews.
        """

        async def call(client: AsyncClient) -> CallToolResult:
            body = ReviewDecision.model_validate(
                {
                    "decision": decision,
                    "feedback": feedback,
                    "quality_score": quality_score,
                    "exclude_previous_agent": exclude_previous_agent,
                }
            )
            task = await client.review(task_id, body)
            view = task_view(task)
            if task.status is Status.COMPLETED:
                summary = f"Approved: task {task.id} ({task.type}) is completed."
            elif task.status is Status.FAILED:
                summary = (
                    f"Rejected: task {task.id} used up its review rounds and failed "
                    "(ReviewRejected)."
                )
            else:
                summary = (
                    f"Rejected: task {task.id} is {task.status.value} again; the next attempt "
                    "sees your feedback."
                )
            return _ok(view, summary)

        return await self._guard(call)


async def _input_schema(client: AsyncClient, task_type: str) -> dict[str, Any] | None:
    for info in await client.task_types():
        if info.name == task_type:
            return info.input_schema
    return None


_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_ADD = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)

#: name -> (title, annotations). Order is the order clients list them in.
TOOLS: dict[str, tuple[str, ToolAnnotations]] = {
    "list_task_types": ("List task types", _READ),
    "submit_agent_task": ("Submit a task", _ADD),
    "wait_for_task": ("Wait for a task", _READ),
    "get_task_status": ("Get task status", _READ),
    "get_agent_tasks": ("List tasks", _READ),
    "submit_workflow": ("Submit a workflow", _ADD),
    "cancel_agent_task": (
        "Cancel a task",
        ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    ),
    "retry_task": ("Retry a task", _ADD),
    "list_reviews": ("List results awaiting review", _READ),
    "review_task": (
        "Approve or reject a result",
        ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    ),
    "get_queue_stats": ("Queue statistics", _READ),
    "schedule_task": ("Create a recurring task", _ADD),
    "list_schedules": ("List schedules", _READ),
    "remove_schedule": (
        "Remove a schedule",
        ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    ),
}
