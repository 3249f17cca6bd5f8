"""The review stage in SQL, shared by both backends (mixed into :class:`SqlStore`).

Completion sends a task that requires review to ``reviewing`` (see ``SqlStore._complete``:
the stored ``review`` column is non-NULL exactly for such tasks); this module records the
request, applies reviewers' decisions with conditional updates, lists reviews and resets
the review budget on a dead-letter retry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from offload.domain.errors import Conflict
from offload.domain.models import Review, ReviewStatus, Task
from offload.domain.review import (
    EVENT_DECIDED,
    EVENT_REQUESTED,
    ReviewDecision,
    ReviewFilter,
    decide,
    requested,
    reset_for_retry,
)
from offload.domain.rules import sort_key
from offload.domain.status import Status, check_transition
from offload.storage.rows import dt, dumps, loads, row_to_task

if TYPE_CHECKING:
    from offload.storage.sql import Cursor, Dialect, Row

R = TypeVar("R")


class _Core(Protocol):
    """The parts of :class:`SqlStore` the review methods build on."""

    d: Dialect
    aging: float

    async def _run(self, fn: Callable[..., R], *args: Any) -> R: ...
    def _write(self, fn: Callable[..., R], *args: Any) -> R: ...
    def _read(self, fn: Callable[..., R], *args: Any) -> R: ...
    def _owned(self, cur: Cursor, task_id: str, owner: str | None) -> Row: ...
    def _task(self, cur: Cursor, task_id: str, owner: str | None = None) -> Task: ...
    def _after_terminal(self, cur: Cursor, task_id: str, now: float) -> None: ...
    @staticmethod
    def _event(
        cur: Cursor, task_id: str, at: float, kind: str, actor: str | None = None, data: Any = None
    ) -> None: ...


class ReviewSql:
    """Review-stage transactions; :class:`SqlStore` inherits them."""

    def _request_reviews(self: _Core, cur: Cursor, rows: Sequence[Row], now: float) -> None:
        """Record the review request of tasks that just moved ``running -> reviewing``.

        ``rows`` are the completion's RETURNING rows (``review`` still the stored state).
        """
        at = dt(now)
        assert at is not None
        for r in rows:
            review = requested(Review.model_validate_json(r["review"]), r["lease_holder"], at)
            cur.execute(
                "UPDATE tasks SET review = ? WHERE id = ? AND status = 'reviewing'",
                (review.model_dump_json(), r["id"]),
            )
            self._event(
                cur,
                r["id"],
                now,
                EVENT_REQUESTED,
                r["lease_holder"],
                {
                    "reviewer": review.reviewer,
                    "round": review.rounds + 1,
                    "attempt": r["attempt"],
                    "agent_id": r["lease_holder"],
                },
            )

    async def decide_review(
        self: _Core,
        task_id: str,
        decision: ReviewDecision,
        now: float,
        *,
        owner: str | None,
        actor: str | None,
    ) -> Task:
        """Approve (``completed``) or reject (``queued``, or ``failed`` after the last round)
        a task in ``reviewing``; anything else is a :class:`Conflict`."""

        def w(cur: Cursor) -> Task:
            row = self._owned(cur, task_id, owner)
            current = Status(row["status"])
            if current is not Status.REVIEWING:
                raise Conflict(
                    f"task {task_id} is {current.value}, not reviewing: only a result awaiting "
                    "review can be approved or rejected",
                    details={"task_id": task_id, "status": current.value},
                )
            review = (
                Review.model_validate_json(row["review"])
                if row["review"]
                else Review(required=True, reviewer="human")
            )
            reviewer = decision.reviewer or actor
            verdict = decide(
                review,
                decision,
                result=loads(row["result"]),
                excluded_agents=loads(row["excluded_agents"]) or [],
                reviewer=reviewer,
                at=dt(now),  # type: ignore[arg-type]
            )
            target = verdict.target
            if (
                target is Status.QUEUED
                and row["agent_id"] is not None
                and row["agent_id"] in verdict.excluded_agents
            ):
                raise Conflict(
                    f"task {task_id} is pinned to agent {row['agent_id']}; excluding that agent "
                    "would leave nobody to run it (reject without exclude_previous_agent)",
                    details={"task_id": task_id, "agent_id": row["agent_id"]},
                )
            check_transition(task_id, current, target)
            review_json = verdict.review.model_dump_json()
            excluded = dumps(verdict.excluded_agents) if verdict.excluded_agents else None
            if target is Status.COMPLETED:
                cur.execute(
                    "UPDATE tasks SET status = 'completed', review = ?, finished_at = ?, "
                    "updated_at = ? WHERE id = ? AND status = 'reviewing'",
                    (review_json, now, now, task_id),
                )
            elif target is Status.QUEUED:
                # Straight back to the queue: the rework is ready now (run_at has passed).
                cur.execute(
                    "UPDATE tasks SET status = 'queued', review = ?, excluded_agents = ?, "
                    "result = NULL, progress = 0, current_step = NULL, queued_at = ?, "
                    "sort_key = ?, updated_at = ? WHERE id = ? AND status = 'reviewing'",
                    (
                        review_json,
                        excluded,
                        now,
                        sort_key(now, row["priority"], self.aging),
                        now,
                        task_id,
                    ),
                )
            else:
                assert verdict.error is not None
                err = verdict.error.model_copy(update={"attempt": row["attempt"]})
                cur.execute(
                    "UPDATE tasks SET status = 'failed', review = ?, excluded_agents = ?, "
                    f"error = ?, errors = {self.d.append_json('errors')}, finished_at = ?, "
                    "updated_at = ? WHERE id = ? AND status = 'reviewing'",
                    (
                        review_json,
                        excluded,
                        err.model_dump_json(),
                        err.model_dump_json(),
                        now,
                        now,
                        task_id,
                    ),
                )
            if cur.rowcount != 1:  # pragma: no cover - the row is locked (or writes serialised)
                raise Conflict(f"task {task_id} changed while being reviewed; try again")
            last = verdict.review.history[-1]
            self._event(
                cur,
                task_id,
                now,
                EVENT_DECIDED,
                reviewer,
                {
                    "decision": last.decision.value,
                    "round": last.round,
                    "feedback": last.feedback,
                    "quality_score": last.quality_score,
                    "agent_id": last.agent_id,
                    "to": target.value,
                },
            )
            if target is Status.COMPLETED:
                self._event(cur, task_id, now, "completed", reviewer, {"review": "approved"})
                self._after_terminal(cur, task_id, now)
            elif target is Status.FAILED:
                self._event(
                    cur,
                    task_id,
                    now,
                    "failed",
                    reviewer,
                    {"error": err.type, "message": err.message, "from": current.value},
                )
                self._after_terminal(cur, task_id, now)
            return self._task(cur, task_id)

        return await self._run(self._write, w)

    async def list_reviews(self: _Core, flt: ReviewFilter) -> tuple[list[Task], int]:
        """Tasks whose review matches ``flt``, oldest request first, with the total.

        A registered agent named as ``reviewer`` also sees the reviews assigned to
        ``capability:NAME`` for each capability it registered with.
        """

        def q(cur: Cursor) -> tuple[list[Task], int]:
            where = ["review IS NOT NULL"]
            args: list[Any] = []
            if flt.status is ReviewStatus.PENDING:
                # Pending = awaiting a decision now (the partial status index finds them).
                where.append("status = 'reviewing'")
            else:
                where.append(f"{self.d.json_text('review', 'status')} = ?")
                args.append(flt.status.value)
            if flt.owner is not None:
                where.append("owner = ?")
                args.append(flt.owner)
            agent_caps: list[str] = []
            if flt.reviewer:
                agent = cur.execute(
                    "SELECT capabilities FROM agents WHERE id = ?", (flt.reviewer,)
                ).fetchone()
                if agent is not None:
                    agent_caps = sorted(loads(agent["capabilities"]) or {})
            keys = flt.reviewer_keys(agent_caps)
            if keys:
                where.append(
                    f"{self.d.json_text('review', 'reviewer')} IN ({', '.join('?' * len(keys))})"
                )
                args += keys
            clause = " AND ".join(where)
            total = cur.execute(f"SELECT count(*) FROM tasks WHERE {clause}", args).scalar()
            rows = cur.execute(
                f"SELECT * FROM tasks WHERE {clause} ORDER BY updated_at, id LIMIT ? OFFSET ?",
                [*args, flt.limit, flt.offset],
            ).fetchall()
            return [row_to_task(r) for r in rows], int(total)

        return await self._run(self._read, q)

    def _reset_review(self: _Core, cur: Cursor, row: Row) -> None:
        """A dead-letter retry: a fresh review budget and no excluded agents."""
        if row["review"] is None and row["excluded_agents"] is None:
            return
        review = (
            reset_for_retry(Review.model_validate_json(row["review"])).model_dump_json()
            if row["review"]
            else None
        )
        cur.execute(
            "UPDATE tasks SET review = ?, excluded_agents = NULL WHERE id = ?", (review, row["id"])
        )
