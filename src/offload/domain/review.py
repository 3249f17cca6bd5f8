"""The review stage (PRODUCT.md §5): decisions, the listing filter and the one rule that
turns a decision into the task's next state. I/O-free; the store applies the outcome.

A task whose type or spec asks for review goes ``running -> reviewing`` when its handler
succeeds. A reviewer then approves (``-> completed``) or rejects: back to ``queued`` with
the feedback for the next attempt, or ``-> failed`` (``ReviewRejected``) once
``max_rounds`` rejections have been made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from offload.domain.models import (
    MAX_OFFSET,
    ErrorInfo,
    Review,
    ReviewDecisionKind,
    ReviewRound,
    ReviewSpec,
    ReviewStatus,
)
from offload.domain.status import Status

#: Error type of a task that used up its review rounds.
REVIEW_REJECTED = "ReviewRejected"
#: Reviewer meaning "a person" (the default).
HUMAN = "human"
CAPABILITY_PREFIX = "capability:"
#: Task event kinds of the review stage (on the SSE stream like every task event).
EVENT_REQUESTED = "review.requested"
EVENT_DECIDED = "review.decided"


class ReviewDecision(BaseModel):
    """``POST /v1/tasks/{id}/review``: approve or reject the result awaiting review."""

    model_config = ConfigDict(extra="forbid")

    decision: ReviewDecisionKind = Field(description="approve or reject")
    feedback: str | None = Field(
        None, max_length=20_000, description="what is good or what to fix; the next attempt sees it"
    )
    quality_score: float | None = Field(
        None, ge=0, le=1, description="how good the result is, 0 (poor) to 1 (excellent)"
    )
    exclude_previous_agent: bool | None = Field(
        None,
        description="on reject: the next attempt may not go to the agent that produced this "
        "result (default: the task's review setting)",
    )
    reviewer: str | None = Field(
        None, max_length=200, description="who decides (default: the caller)"
    )


class ReviewFilter(BaseModel):
    """Which reviews to list: by reviewer (agent id, ``capability:NAME``, ``human``) and state."""

    model_config = ConfigDict(extra="forbid")

    reviewer: str | None = Field(None, max_length=200)
    #: Also reviews assigned to ``capability:NAME`` for each of these.
    capabilities: list[str] = Field(default_factory=list, max_length=100)
    status: ReviewStatus = ReviewStatus.PENDING
    owner: str | None = None
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)

    def reviewer_keys(self, agent_capabilities: list[str] | None = None) -> list[str]:
        """Every ``review.reviewer`` value this filter matches ([] = any reviewer)."""
        keys: list[str] = []
        if self.reviewer:
            keys.append(self.reviewer)
        for cap in [*self.capabilities, *(agent_capabilities or [])]:
            keys.append(CAPABILITY_PREFIX + cap)
        return list(dict.fromkeys(keys))


def review_state(spec: ReviewSpec | None) -> Review | None:
    """The stored review state a new task starts with (None when no review is wanted)."""
    if spec is None or not spec.required:
        return None
    return Review(
        required=True,
        reviewer=spec.reviewer,
        max_rounds=spec.max_rounds,
        exclude_previous_agent=spec.exclude_previous_agent,
    )


def requested(review: Review, agent_id: str | None, at: datetime) -> Review:
    """The review state once a new result awaits review."""
    return review.model_copy(
        update={"status": ReviewStatus.PENDING, "requested_at": at, "agent_id": agent_id}
    )


@dataclass(frozen=True)
class Verdict:
    """What a decision does to the task."""

    target: Status
    review: Review
    #: Agents the next attempt may not go to (rejections with exclusion).
    excluded_agents: list[str]
    #: For ``failed``: the error.
    error: ErrorInfo | None = None


def decide(
    review: Review,
    decision: ReviewDecision,
    *,
    result: Any,
    excluded_agents: list[str],
    reviewer: str | None,
    at: datetime,
) -> Verdict:
    """Apply one decision to a task in ``reviewing`` (the caller checked the status)."""
    number = review.rounds + 1
    approve = decision.decision is ReviewDecisionKind.APPROVE
    entry = ReviewRound(
        round=number,
        decision=decision.decision,
        reviewer=reviewer,
        feedback=decision.feedback,
        quality_score=decision.quality_score,
        agent_id=review.agent_id,
        result=None if approve else result,
        decided_at=at,
    )
    updated = review.model_copy(
        update={
            "status": ReviewStatus.PASSED if approve else ReviewStatus.FAILED,
            "feedback": decision.feedback,
            "quality_score": decision.quality_score,
            "rounds": number,
            "history": [*review.history, entry],
        }
    )
    if approve:
        return Verdict(Status.COMPLETED, updated, excluded_agents)
    exclude = (
        decision.exclude_previous_agent
        if decision.exclude_previous_agent is not None
        else review.exclude_previous_agent
    )
    excluded = list(excluded_agents)
    if exclude and review.agent_id and review.agent_id not in excluded:
        excluded.append(review.agent_id)
    rejections = sum(1 for r in updated.history if r.decision is ReviewDecisionKind.REJECT)
    if rejections >= review.max_rounds:
        why = f": {decision.feedback}" if decision.feedback else ""
        error = ErrorInfo(
            type=REVIEW_REJECTED,
            message=f"result rejected in review {rejections} time(s) "
            f"(max_rounds {review.max_rounds}){why}",
            retryable=False,
            at=at,
        )
        return Verdict(Status.FAILED, updated, excluded, error)
    return Verdict(Status.QUEUED, updated, excluded)


def reset_for_retry(review: Review) -> Review:
    """A dead-letter retry starts a fresh review budget (the history stays)."""
    return review.model_copy(
        update={"status": ReviewStatus.PENDING, "rounds": 0, "requested_at": None, "agent_id": None}
    )
