"""Request and response bodies of the REST API that are not domain models themselves.

Domain models (``TaskSpec``, ``Task``, ``TaskEvent``, ``Agent``…) are used as they are;
these wrap them (``{"tasks": [...]}``) or carry what only the wire needs (a lease id from
the path's task, a long-poll ``wait_s``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from offload.domain.models import (
    MAX_BULK,
    MAX_LOG_CHARS,
    MAX_STEP_CHARS,
    Ack,
    Agent,
    Artifact,
    AuditEntry,
    Checkpoint,
    ClaimRequest,
    Completion,
    Condition,
    DependencyOn,
    ErrorInfo,
    Failure,
    LeaseRef,
    LeaseState,
    Role,
    Task,
    TaskEvent,
    TaskSpec,
    TaskTypeInfo,
    TokenInfo,
)
from offload.domain.status import Status

#: Most leases one heartbeat or release call may carry.
MAX_LEASES = 10_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- tasks -------------------------------------------------------------------------------
class BatchSubmit(_Body):
    """Up to 1,000 tasks created in one transaction: all or none."""

    tasks: list[TaskSpec] = Field(
        json_schema_extra={"maxItems": MAX_BULK},
        description=f"at most {MAX_BULK}; more is refused with 413",
    )


class TaskList(BaseModel):
    """Tasks, in the order of the request (batch submit) or the operation."""

    tasks: list[Task]


class CancelBody(_Body):
    """Why the task is cancelled (optional; kept in the task's error and events)."""

    reason: str | None = Field(None, max_length=2000)


class ChildView(BaseModel):
    """A workflow child, summarised."""

    id: str
    type: str
    title: str | None = None
    ref: str | None = None
    status: Status
    progress: float = 0.0


class DependencyView(BaseModel):
    """One ``depends_on`` edge and where its upstream stands now."""

    task_id: str
    on: DependencyOn
    when: Condition | None = None
    status: Status | None = Field(None, description="upstream status (null if not visible)")
    type: str | None = None


class TaskDetail(Task):
    """A task with its children, dependencies and most recent events."""

    child_tasks: list[ChildView] = Field(default_factory=list)
    dependencies: list[DependencyView] = Field(default_factory=list)
    recent_events: list[TaskEvent] = Field(default_factory=list)


class EventList(BaseModel):
    """A slice of an event log, oldest first."""

    events: list[TaskEvent]


# -- worker / agent protocol --------------------------------------------------------------
class ClaimBody(ClaimRequest):
    """A claim; ``wait_s`` > 0 holds the request until work arrives (long poll).

    ``tenant`` is honoured for admins only; every other token claims its own tasks.
    """

    wait_s: float = Field(0.0, ge=0, le=60, description="long-poll up to this many seconds")


class ClaimResult(BaseModel):
    """Leased tasks (``lease.id`` goes with every progress/complete/fail call)."""

    tasks: list[Task]


class LeaseHeartbeat(_Body):
    """Extend these leases to ``ttl_s`` from now."""

    leases: list[LeaseRef] = Field(max_length=MAX_LEASES)
    ttl_s: float = Field(30.0, gt=0, le=86_400)


class LeaseStates(BaseModel):
    """Per lease: still valid, new expiry, cancel/pause requested."""

    leases: list[LeaseState]


class LeaseRelease(_Body):
    """Hand these leases back without spending an attempt."""

    leases: list[LeaseRef] = Field(max_length=MAX_LEASES)


class AckList(BaseModel):
    """Per task: accepted or why not (``code`` ``stale_lease``, ``not_found``…)."""

    acks: list[Ack]


class ProgressBody(_Body):
    """Progress of a leased task; every part but ``lease_id`` is optional."""

    lease_id: str
    progress: float | None = Field(None, ge=0, le=100)
    current_step: str | None = Field(None, max_length=MAX_STEP_CHARS)
    log: str | None = Field(None, max_length=MAX_LOG_CHARS)
    level: str = Field("info", max_length=20)
    checkpoint: Checkpoint | None = None
    artifact: Artifact | None = None


class CompleteBody(_Body):
    """The result of the attempt holding ``lease_id``."""

    lease_id: str
    result: Any = None


class FailBody(_Body):
    """Why the attempt holding ``lease_id`` failed; ``error.retryable`` false skips retries."""

    lease_id: str
    error: ErrorInfo
    retry_delay_s: float | None = Field(None, ge=0, le=86_400)


class CompletionBatch(_Body):
    """Several successful attempts at once (what workers send)."""

    items: list[Completion] = Field(max_length=MAX_BULK)


class FailureBatch(_Body):
    """Several failed attempts at once."""

    items: list[Failure] = Field(max_length=MAX_BULK)


class AgentHeartbeat(_Body):
    """Agent liveness plus fresh metadata (cpu %, load…)."""

    metadata: dict[str, Any] | None = None


class AgentList(BaseModel):
    """Registered agents with live load."""

    agents: list[Agent]


class Changed(BaseModel):
    """Whether the database changed during the wait, and the change token to wait from."""

    changed: bool
    token: int


# -- system ------------------------------------------------------------------------------
class TaskTypeList(BaseModel):
    """The catalogue of task types with their JSON schemas."""

    task_types: list[TaskTypeInfo]


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"
    version: str


class Ready(BaseModel):
    """The process is up and its database answers."""

    status: Literal["ready"] = "ready"
    version: str
    last_event_seq: int


class TokenCreate(_Body):
    """A new API token for ``user`` with ``role``."""

    user: str = Field(min_length=1, max_length=200)
    role: Role = Role.USER
    name: str | None = Field(None, max_length=200)


class TokenList(BaseModel):
    """Token records (never the secrets)."""

    tokens: list[TokenInfo]


class AuditPage(BaseModel):
    """Audit entries, newest first, and the total."""

    entries: list[AuditEntry]
    total: int
    limit: int
    offset: int
