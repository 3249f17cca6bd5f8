"""Value objects of agent assignment (PRODUCT.md §5): registry updates, per-queue dispatch
modes, auction bids, workloads and teams.

The agent record itself (:class:`offload.domain.models.Agent`) lives with the task record;
this module holds what the registry, the dispatcher and auctions add around it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from offload.domain.models import Agent, AgentStatus, Task

#: Agents heartbeat this often by default; three missed beats make one offline.
DEFAULT_HEARTBEAT_S = 10.0
MISSED_HEARTBEATS = 3
#: How long an auction stays open for bids by default.
DEFAULT_AUCTION_WINDOW_MS = 200


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AgentStatusChange(_Model):
    """An operator (or the agent) setting an agent's status: ``draining`` finishes current
    work and takes no new; ``online`` takes work again; ``offline`` retires it now."""

    status: AgentStatus


class AgentWorkload(_Model):
    """An agent, its live tasks and its history."""

    agent: Agent
    tasks: list[Task]
    success_rate: float | None = None


class DispatchMode(StrEnum):
    """How a queue's tasks reach agents.

    ``pull``: agents claim (the default, no dispatcher work). ``push``: the dispatcher
    assigns every queued task to the best push agent. ``hybrid``: tasks with priority at
    or above the threshold are pushed, the rest pulled. ``auction``: tasks are announced,
    capable agents bid, the best bid wins.
    """

    PULL = "pull"
    PUSH = "push"
    HYBRID = "hybrid"
    AUCTION = "auction"


class QueueDispatch(_Model):
    """A queue's dispatch settings."""

    queue: str = Field(min_length=1, max_length=100)
    mode: DispatchMode = DispatchMode.PULL
    hybrid_threshold: int = Field(8, ge=1, le=10)
    auction_window_ms: int = Field(DEFAULT_AUCTION_WINDOW_MS, ge=10, le=600_000)


class QueueDispatchUpdate(_Model):
    """``PUT /v1/queues/{name}/dispatch``: what to change (omitted fields keep their value)."""

    mode: DispatchMode | None = None
    hybrid_threshold: int | None = Field(None, ge=1, le=10)
    auction_window_ms: int | None = Field(None, ge=10, le=600_000)


class BidSpec(_Model):
    """An agent's offer for an announced task: lower ``cost`` wins, ``eta_s`` breaks ties."""

    agent_id: str = Field(min_length=1, max_length=200)
    cost: float = Field(ge=0)
    eta_s: float = Field(0.0, ge=0)


class Bid(_Model):
    """A stored bid."""

    task_id: str
    agent_id: str
    cost: float
    eta_s: float
    at: datetime
