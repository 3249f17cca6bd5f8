"""``GET /v1/events``: the live event stream (Server-Sent Events).

Each SSE event is one task event: ``id`` is its ``seq`` (global, increasing), ``data`` the
event as JSON (with the task's type and current status). A client that reconnects with
``Last-Event-ID`` (browsers do it by themselves) resumes right after the last event it got,
from the durable event log: nothing is missed in between. Without it the stream starts
with the next new event, or after ``after`` when given.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from offload.api.changes import RECHECK_S
from offload.api.deps import ApiContext, CallerDep, ContextDep
from offload.api.errors import COMMON, responses
from offload.domain.errors import InvalidInput
from offload.domain.models import MAX_SEQ, EventFilter
from offload.domain.status import expand_statuses

router = APIRouter(prefix="/v1", tags=["events"], responses=responses(*COMMON))

#: Events read per database round trip while catching up.
PAGE = 500
#: Comment lines keep idle connections (and proxies) from timing out.
PING_S = 15.0


@router.get(
    "/events",
    response_class=EventSourceResponse,
    summary="Live task events (Server-Sent Events)",
    responses={
        200: {
            "description": "an endless text/event-stream; `id` is the event's seq",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def events(
    caller: CallerDep,
    ctx: ContextDep,
    task_id: Annotated[str | None, Query(max_length=200)] = None,
    type: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[
        list[str] | None,
        Query(description="tasks currently in these statuses (aliases ok; repeat or comma)"),
    ] = None,
    owner: Annotated[str | None, Query(max_length=200, description="admins only")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="start after this seq")
    ] = None,
    timeout: Annotated[
        float | None, Query(gt=0, le=86_400, description="close the stream after this long")
    ] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=40, include_in_schema=False)
    ] = None,
) -> EventSourceResponse:
    """Follow task events live, filtered by task, type, current status and (admins) owner.
    Reconnect with ``Last-Event-ID`` to resume without gaps."""
    statuses = [p for value in status or [] for p in value.split(",") if p.strip()] or None
    if statuses:
        expand_statuses(statuses)  # 422 now, not half way through a stream
    flt = EventFilter(task_id=task_id, type=type, status=statuses, owner=caller.owner_filter(owner))
    start = _resume_point(last_event_id, after)
    if start is None:
        start = await ctx.service.last_event_seq()
    return EventSourceResponse(
        _stream(ctx, flt, start, timeout),
        ping=PING_S,
        send_timeout=30.0,
        # At shutdown the stream ends by itself (the change feed closes); give it that
        # moment so clients see a clean end rather than a cut connection.
        shutdown_grace_period=2.0,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is not None and last_event_id.strip():
        try:
            seq = int(last_event_id.strip())
        except ValueError:
            raise InvalidInput(
                "Last-Event-ID must be an event seq (an integer)", field="Last-Event-ID"
            ) from None
        if not 0 <= seq <= MAX_SEQ:
            raise InvalidInput(
                f"Last-Event-ID must be an event seq from 0 to {MAX_SEQ}", field="Last-Event-ID"
            )
        return seq
    return after


async def _stream(
    ctx: ApiContext, flt: EventFilter, after: int, timeout: float | None
) -> AsyncIterator[ServerSentEvent]:
    service, feed = ctx.service, ctx.feed
    deadline = None if timeout is None else time.monotonic() + timeout
    # Tells browsers how soon to reconnect; the comment flushes the headers at once.
    yield ServerSentEvent(comment="offload events", retry=2000)
    while not feed.closed:
        mark = feed.mark()
        head = await service.last_event_seq()
        batch = await service.events_since(after, flt, PAGE)
        for event in batch:
            yield ServerSentEvent(data=event.model_dump_json(), id=str(event.seq))
        if batch:
            after = batch[-1].seq
        if len(batch) == PAGE:
            continue  # catching up: no waiting
        # Everything up to `head` that matches was just delivered: skip the rest for good,
        # so a filter that matches rarely does not rescan the log on every change.
        after = max(after, head)
        remaining = RECHECK_S if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            return
        await feed.wait(min(remaining, RECHECK_S), mark)
