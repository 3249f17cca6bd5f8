"""The task record (PRODUCT.md §2) and the value objects around it.

Models are pydantic v2 so the same classes validate input at every edge (SDK, CLI, API,
MCP) and serialise to the snake_case JSON of the API.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)

from offload.domain.errors import InvalidInput, summarize, validation_items
from offload.domain.flow import WaitingOn, check_resource_name
from offload.domain.status import Status

JSON = Any
_T = TypeVar("_T")
#: The largest event seq a database integer holds.
MAX_SEQ = 2**63 - 1
#: The deepest a listing pages (beyond it, filter instead).
MAX_OFFSET = 10_000_000


def _has_non_finite(value: Any) -> bool:
    """Whether a JSON-like value holds a float NaN or infinity anywhere."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


#: Why a value holding NaN or infinity is refused.
NOT_FINITE = "holds NaN or infinity, which JSON cannot carry"


def strict_json(value: Any, option: int = 0) -> bytes:
    """``value`` as JSON: ``TypeError`` for a type JSON has no form for, ``ValueError``
    (:data:`NOT_FINITE`) for NaN or infinity, which orjson would write as ``null``."""
    text = orjson.dumps(value, option=option)
    if b"null" in text and _has_non_finite(value):
        raise ValueError(NOT_FINITE)
    return text


def _storable(value: Any) -> Any:
    # Caught here, where the field is known, rather than as a server error at the insert.
    if value is None or (isinstance(value, dict | list) and not value):
        return value
    try:
        strict_json(value)
    except TypeError as exc:
        raise ValueError(f"cannot be stored as JSON: {exc}") from None
    return value


def _refuse_nul(v: _T) -> _T:
    # PostgreSQL text cannot hold NUL; refused on every backend so both behave alike (a
    # filter too: a live stream must refuse it before it starts, not fail half way).
    texts = v if isinstance(v, list) else [v]
    if any(isinstance(t, str) and "\x00" in t for t in texts):
        raise ValueError("contains a NUL character (\\x00), which cannot be stored")
    return v


#: JSON a caller gives that is stored as it is (metadata, checkpoint data, …).
StoredJSON = Annotated[Any, AfterValidator(_storable)]
StoredObject = Annotated[dict[str, Any], AfterValidator(_storable)]

#: A task's metadata is labels and references, returned with the task by every read.
MAX_METADATA_BYTES = 65_536


def _small_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if value:
        size = len(orjson.dumps(value))
        if size > MAX_METADATA_BYTES:
            raise ValueError(
                f"{size:,} bytes of JSON is over the limit of {MAX_METADATA_BYTES:,} (keep "
                "labels and references here, data in the input or an artifact)"
            )
    return value


#: A short name: a tag, a capability.
Label = Annotated[str, Field(max_length=100)]

PRIORITY_NAMES: dict[str, int] = {"low": 2, "normal": 5, "high": 8, "critical": 10}
MAX_BULK = 1000
#: The most retries a task (or a task type, by default) may have.
MAX_RETRIES = 100


def parse_priority(value: object) -> int:
    """Accept 1–10 or a name (``low`` 2, ``normal`` 5, ``high`` 8, ``critical`` 10)."""
    if isinstance(value, bool):
        raise ValueError("priority must be 1-10 or low|normal|high|critical")
    if isinstance(value, str):
        key = value.strip().lower()
        if key in PRIORITY_NAMES:
            return PRIORITY_NAMES[key]
        if key.isdigit():
            value = int(key)
        else:
            raise ValueError(f"priority {value!r}: use 1-10 or low|normal|high|critical")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= 10:
        raise ValueError(f"priority {value!r}: use 1-10 or low|normal|high|critical")
    return value


Priority = Annotated[int, BeforeValidator(parse_priority)]


def utcnow() -> datetime:
    """Aware UTC now."""
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


#: For what callers send: NaN and infinity are never a meaningful delay or timeout.
_FINITE = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


_all_fields: dict[type[BaseModel], set[str]] = {}
M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any) -> M:
    """``model`` built from a caller's ``data``; a mistake raises :class:`InvalidInput`
    naming the field, as the HTTP API and the CLI report it (not a pydantic error)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        items = validation_items(errors, extra="unknown option", empty="value")
        field = items[0]["field"] if errors[0].get("loc") else None
        raise InvalidInput(summarize(items, 3), field=field) from None


def _trusted(cls: type[M], values: dict[str, Any]) -> M:
    """Instantiate ``cls`` around ``values`` without validation.

    Every instance shares one "fields set" holding all field names: pydantic only ever adds
    names to it, and they are all there already.
    """
    fields = _all_fields.get(cls)
    if fields is None:
        fields = _all_fields[cls] = set(cls.model_fields)
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", fields)
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def trusted_lease(lease_id: str, holder: str | None, expires_at: datetime) -> Lease:
    """A :class:`Lease` from values the store wrote itself (no validation)."""
    return _trusted(Lease, {"id": lease_id, "holder": holder, "expires_at": expires_at})


class RequesterKind(StrEnum):
    """Who asked for the work."""

    HUMAN = "human"
    AGENT = "agent"
    SYSTEM = "system"


class Requester(_Model):
    """Who submitted a task, and on whose behalf."""

    kind: RequesterKind = RequesterKind.HUMAN
    id: str | None = None
    context: StoredJSON = None


class DependencyOn(StrEnum):
    """Which upstream outcome a dependency waits for."""

    COMPLETED = "completed"
    FAILED = "failed"
    FINISHED = "finished"


CONDITION_OPS = ("==", "!=", ">", ">=", "<", "<=", "in", "contains", "exists")


class Condition(_Model):
    """``when``: a test on the upstream result.

    Example: ``{"path": "score", "op": ">", "value": 3}``.
    """

    path: str = Field(description="dot path into the upstream result; '' is the whole result")
    op: Literal["==", "!=", ">", ">=", "<", "<=", "in", "contains", "exists"] = "=="
    value: StoredJSON = None


class Dependency(_Model):
    """An edge of the DAG: wait for ``task_id`` (or a sibling ``ref`` in a workflow)."""

    task_id: str
    on: DependencyOn = DependencyOn.COMPLETED
    when: Condition | None = None


def _coerce_dependencies(value: object) -> object:
    # A bare id means "on: completed" (PRODUCT.md §2).
    if isinstance(value, str):
        return [{"task_id": value}]
    if isinstance(value, list):
        return [{"task_id": v} if isinstance(v, str) else v for v in value]
    return value


def _distinct_dependencies(deps: list[Dependency]) -> list[Dependency]:
    # One edge per upstream: a repeat is dropped, a repeat that disagrees is refused.
    if len(deps) < 2:
        return deps
    seen: dict[str, Dependency] = {}
    for dep in deps:
        prior = seen.setdefault(dep.task_id, dep)
        if prior != dep:
            raise ValueError(
                f"{dep.task_id!r} is listed twice with different conditions; list it once"
            )
    return deps if len(seen) == len(deps) else list(seen.values())


Dependencies = Annotated[
    list[Dependency],
    BeforeValidator(_coerce_dependencies),
    AfterValidator(_distinct_dependencies),
]


class BackoffKind(StrEnum):
    """How long to wait between attempts."""

    EXPONENTIAL = "exponential"
    FIXED = "fixed"
    NONE = "none"


class RetryPolicy(_Model):
    """Backoff between attempts (PRODUCT.md §4.4)."""

    model_config = _FINITE

    backoff: BackoffKind = BackoffKind.EXPONENTIAL
    base_s: float = Field(1.0, ge=0)
    factor: float = Field(2.0, ge=1)
    cap_s: float = Field(300.0, ge=0)
    jitter: bool = True


class Lease(_Model):
    """Who holds a task and until when. Every progress/complete/fail presents ``id``."""

    id: str
    holder: str | None = None
    expires_at: datetime


class AssignmentMethod(StrEnum):
    """How a task reached its agent."""

    CLAIMED = "claimed"
    ASSIGNED = "assigned"
    VOLUNTEERED = "volunteered"
    AUCTION = "auction"


class Assignment(_Model):
    """The agent doing the work and how it got it."""

    agent_id: str | None = None
    collaborators: list[str] = Field(default_factory=list)
    assigned_at: datetime | None = None
    method: AssignmentMethod = AssignmentMethod.CLAIMED
    #: For team tasks: each member's role (agent id → role), when roles were given.
    roles: dict[str, str] = Field(default_factory=dict)


class ErrorInfo(_Model):
    """Why an attempt failed."""

    type: str
    message: str
    traceback: str | None = None
    retryable: bool = True
    attempt: int | None = None
    at: datetime | None = None
    #: For ``DependencyFailed``: the upstream task that made the dependency impossible.
    upstream: str | None = None


#: An error's message keeps its first this many characters, its traceback its last (where
#: the cause is): a task keeps the error of every attempt, and reads return them all.
MAX_ERROR_MESSAGE_CHARS = 2_000
MAX_TRACEBACK_CHARS = 8_000
#: An error's type is a class name, counted in statistics: no more than this.
MAX_ERROR_TYPE_CHARS = 200


def clip_message(text: str) -> str:
    """An error message within :data:`MAX_ERROR_MESSAGE_CHARS` (its beginning kept)."""
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        return text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    return text


def clip_traceback(text: str) -> str:
    """A traceback within :data:`MAX_TRACEBACK_CHARS` (its end kept)."""
    if len(text) > MAX_TRACEBACK_CHARS:
        head = "…(truncated)\n"
        return head + text[-(MAX_TRACEBACK_CHARS - len(head)) :]
    return text


def clipped_error(error: ErrorInfo) -> ErrorInfo:
    """``error`` with its type, message and traceback within the limits (itself when they
    are)."""
    kind, message, tb = (
        error.type[:MAX_ERROR_TYPE_CHARS],
        clip_message(error.message),
        error.traceback,
    )
    tb = clip_traceback(tb) if tb is not None else None
    if kind == error.type and message is error.message and tb is error.traceback:
        return error
    return error.model_copy(update={"type": kind, "message": message, "traceback": tb})


class Checkpoint(_Model):
    """A named snapshot a handler saved; a later attempt can resume from it."""

    name: str
    at: datetime
    data: StoredJSON = None


class Artifact(_Model):
    """A file-like output of a task, inline or by URI."""

    name: str
    content_type: str = "application/octet-stream"
    size: int = 0
    uri: str | None = None
    inline: StoredJSON = None


class ReviewStatus(StrEnum):
    """Where a review stands."""

    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


class ReviewDecisionKind(StrEnum):
    """What a reviewer decided."""

    APPROVE = "approve"
    REJECT = "reject"


class ReviewRound(_Model):
    """One decided review round, kept in the task's review history."""

    round: int
    decision: ReviewDecisionKind
    reviewer: str | None = None
    feedback: str | None = None
    quality_score: float | None = None
    #: The agent whose result was reviewed.
    agent_id: str | None = None
    #: A rejected round keeps the result it rejected (an approved one stays in ``result``).
    result: JSON = None
    decided_at: datetime


class Review(_Model):
    """Review stage state (PRODUCT.md §5): who reviews, where it stands, every round so far.

    ``reviewer`` is an agent id, ``capability:NAME`` (any agent with that capability) or
    ``human``. ``feedback`` is the latest decision's; a rejected task's next attempt reads it.
    """

    reviewer: str | None = None
    status: ReviewStatus = ReviewStatus.PENDING
    feedback: str | None = None
    quality_score: float | None = None
    required: bool = False
    max_rounds: int = 3
    #: Review decisions made so far.
    rounds: int = 0
    #: Default for rejections: the next attempt may not go to the agent that was rejected.
    exclude_previous_agent: bool = False
    #: When the result now under review arrived, and which agent produced it.
    requested_at: datetime | None = None
    agent_id: str | None = None
    history: list[ReviewRound] = Field(default_factory=list)


def _coerce_review_spec(value: object) -> object:
    # `review: true` asks for the default review (by a human); `false` means none.
    if value is True:
        return {}
    if value is False:
        return None
    return value


class ReviewSpec(_Model):
    """What a submitter (or a task type) asks for: ``review: {required, reviewer, max_rounds}``.

    Giving the block means review is wanted (``required`` defaults to true).
    """

    required: bool = True
    reviewer: str = Field(
        "human",
        min_length=1,
        max_length=200,
        description='an agent id, "capability:NAME" (any agent with it) or "human"',
    )
    max_rounds: int = Field(3, ge=1, le=100, description="rejections before the task fails")
    exclude_previous_agent: bool = Field(
        False, description="after a rejection, let another agent make the next attempt"
    )

    @field_validator("reviewer")
    @classmethod
    def _reviewer(cls, v: str) -> str:
        v = v.strip()
        if v.startswith("capability:") and not v.removeprefix("capability:").strip():
            raise ValueError('"capability:" needs a capability name, e.g. "capability:review"')
        if not v:
            raise ValueError('reviewer must be an agent id, "capability:NAME" or "human"')
        return v


OptionalReviewSpec = Annotated[ReviewSpec | None, BeforeValidator(_coerce_review_spec)]


class TeamMode(StrEnum):
    """How a team works on a task."""

    #: One primary does the work; the collaborators are named in the assignment.
    TEAM = "team"
    #: The same task runs on ``size`` agents; their results are merged into a parent.
    SWARM = "swarm"


class Team(_Model):
    """``team`` on a task (PRODUCT.md §5): how many agents, in which roles."""

    size: int = Field(2, ge=1, le=50)
    roles: list[str] = Field(default_factory=list, max_length=50)
    mode: TeamMode = TeamMode.TEAM

    @field_validator("roles")
    @classmethod
    def _no_blank_roles(cls, v: list[str]) -> list[str]:
        if any(not r.strip() for r in v):
            raise ValueError("roles must be non-empty names")
        return v

    @model_validator(mode="after")
    def _roles_fit(self) -> Team:
        if len(self.roles) > self.size:
            raise ValueError(f"{len(self.roles)} roles for a team of {self.size}")
        return self


class Complexity(StrEnum):
    """A coarse size hint used for estimates and routing."""

    SIMPLE = "simple"
    MODERATE = "moderate"
    COMPLEX = "complex"


class Task(_Model):
    """The full task record; every field exists in storage and in the API."""

    model_config = ConfigDict(extra="ignore")

    # identity
    id: str
    type: str
    title: str | None = None
    description: str | None = None
    instructions: str | None = None
    input: JSON = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    queue: str = "default"
    # ownership
    owner: str | None = None
    requester: Requester = Field(default_factory=Requester)
    # routing
    priority: int = 5
    capabilities: list[str] = Field(default_factory=list)
    agent_id: str | None = None
    assignment: Assignment | None = None
    # dependencies
    depends_on: list[Dependency] = Field(default_factory=list)
    parent_id: str | None = None
    ref: str | None = None
    children: list[str] = Field(default_factory=list)
    # lifecycle
    status: Status
    attempt: int = 0
    max_retries: int = 3
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_s: float | None = None
    run_at: datetime | None = None
    deadline: datetime | None = None
    lease: Lease | None = None
    cancel_requested: bool = False
    pause_requested: bool = False
    # progress
    progress: float = 0.0
    current_step: str | None = None
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    artifacts: list[Artifact] = Field(default_factory=list)
    # outcome
    result: JSON = None
    error: ErrorInfo | None = None
    errors: list[ErrorInfo] = Field(default_factory=list)
    review: Review | None = None
    cache_hit: bool = False
    cache_key: str | None = Field(
        None, description="where this task's result is cached (type@version:input hash)"
    )
    #: A team of agents (primary + collaborators), or a swarm (PRODUCT.md §5).
    team: Team | None = None
    # timing
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    estimated_duration_s: float | None = None
    actual_duration_s: float | None = None
    # misc
    idempotency_key: str | None = None
    cache_ttl_s: float | None = None
    complexity: Complexity | None = None
    metadata: dict[str, JSON] = Field(default_factory=dict)
    # flow control (§4.8)
    resources: dict[str, int] = Field(
        default_factory=dict, description="units of named resources held while running"
    )
    limit_key: str | None = Field(
        None, description="the concurrency/rate-limit group: the type, or type␟key value"
    )
    waiting_on: WaitingOn | None = Field(
        None,
        description="why a task that is not running waits: dependency, schedule, "
        "concurrency, rate_limit, resource or paused (computed on read)",
    )

    @property
    def done(self) -> bool:
        """True once the task is completed, failed or cancelled."""
        return self.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    @classmethod
    def trusted(cls, **values: Any) -> Task:
        """Build from values that are already valid, skipping validation (see
        :meth:`from_trusted`)."""
        return cls.from_trusted(values)

    @classmethod
    def from_trusted(cls, values: dict[str, Any]) -> Task:
        """Build from a dict of already-valid values, which becomes the model's own.

        Bulk submit and claims build thousands of records from validated data; pydantic's
        ``model_construct`` walks every field per call, which costs more than the insert.
        Every field must be given (the store contract suite checks decoded rows).
        """
        return _trusted(cls, values)


class TaskSpec(_Model):
    """What a caller provides to create a task; everything but ``type`` is optional."""

    # NaN stays NaN on the wire (JSON would make it null), so the server refuses it as
    # the local service does, instead of storing a changed input.
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, allow_inf_nan=False, ser_json_inf_nan="constants"
    )

    type: str = Field(min_length=1, max_length=200)
    input: JSON = Field(default_factory=dict)
    title: str | None = Field(None, max_length=500)
    description: str | None = Field(None, max_length=20_000)
    instructions: str | None = Field(None, max_length=20_000)
    tags: list[Label] = Field(default_factory=list, max_length=50)
    queue: str = Field("default", min_length=1, max_length=100)
    owner: str | None = None
    requester: Requester | None = None
    priority: Priority = 5
    capabilities: list[Label] | None = Field(None, max_length=50)
    agent_id: str | None = None
    depends_on: Dependencies = Field(default_factory=list, max_length=1000)
    max_retries: int | None = Field(None, ge=0, le=MAX_RETRIES)
    retry: RetryPolicy | None = None
    timeout_s: float | None = Field(None, gt=0)
    run_at: datetime | None = None
    deadline: datetime | None = None
    idempotency_key: str | None = Field(None, max_length=200)
    cache_ttl_s: float | None = Field(None, ge=0)
    complexity: Complexity | None = None
    metadata: Annotated[StoredObject, AfterValidator(_small_metadata)] = Field(default_factory=dict)
    review: OptionalReviewSpec = None
    #: Units of named resources the task holds while it runs, e.g. ``{"gpu": 1}``.
    resources: dict[str, int] = Field(default_factory=dict, max_length=20)
    #: Work by a team: a primary and collaborators, or a swarm of ``size`` agents.
    team: Team | None = None
    #: Inside a workflow: this child's name, referenced by siblings' ``depends_on``/``$ref``.
    ref: str | None = Field(None, max_length=100)

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, int]) -> dict[str, int]:
        for name, units in v.items():
            check_resource_name(name)
            if units < 1:
                raise ValueError(f"resource {name!r} needs at least 1 unit, got {units}")
        return v

    @field_validator("run_at", "deadline")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        # Naive datetimes are taken as UTC so stored instants are unambiguous.
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v

    @field_validator(
        "type", "title", "description", "instructions", "queue", "owner", "agent_id",
        "idempotency_key", "ref",
    )  # fmt: skip
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        return _refuse_nul(v)


class WorkflowSpec(_Model):
    """A parent task plus children that form a DAG, created in one transaction."""

    title: str | None = None
    description: str | None = None
    tasks: list[TaskSpec] = Field(min_length=1, max_length=MAX_BULK)
    priority: Priority = 5
    tags: list[str] = Field(default_factory=list)
    queue: str = "default"
    owner: str | None = None
    requester: Requester | None = None
    idempotency_key: str | None = None
    metadata: StoredObject = Field(default_factory=dict)


class TaskFilter(_Model):
    """Filters for listing tasks; ``status`` accepts aliases (``pending``, ``active``, ``done``)."""

    status: list[str] | None = None
    type: str | None = None
    agent_id: str | None = None

    _no_nul = field_validator(
        "status", "type", "agent_id", "owner", "tag", "queue", "parent_id", "search"
    )(_refuse_nul)

    @field_validator("status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        # status="failed" or "failed,cancelled" reads as naturally as a list.
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    owner: str | None = None
    tag: str | None = None
    queue: str | None = None
    parent_id: str | None = None
    search: str | None = None
    #: 0 asks for the ``total`` alone (a cheap count: no rows are read or sent).
    limit: int = Field(50, ge=0, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class TaskPage(_Model):
    """One page of a listing plus the total number matching."""

    tasks: list[Task]
    total: int
    limit: int
    offset: int


class TaskEvent(_Model):
    """One entry of a task's append-only event log (PRODUCT.md §2.1).

    ``seq`` is global and strictly increasing, so it orders one task's events and also
    serves as the resume point of a live stream.
    """

    seq: int
    task_id: str
    at: datetime
    kind: str
    actor: str | None = None
    data: JSON = None
    #: The task's type and current status, filled by the live stream for its consumers.
    task_type: str | None = None
    task_status: str | None = None


class EventFilter(_Model):
    """Which events a live stream delivers."""

    task_id: str | None = None
    type: str | None = None
    status: list[str] | None = None
    owner: str | None = None

    _no_nul = field_validator("task_id", "type", "status", "owner")(_refuse_nul)


class ClaimRequest(_Model):
    """Ask for up to ``max`` eligible tasks with a lease each."""

    agent_id: str
    capabilities: list[str] = Field(default_factory=list)
    queues: list[str] = Field(default_factory=lambda: ["default"])
    types: list[str] | None = None
    max: int = Field(1, ge=1, le=1000)
    lease_ttl_s: float = Field(30.0, gt=0, le=86_400)
    #: Set by the server from the caller's token: only this owner's tasks are eligible.
    tenant: str | None = None


class LeaseRef(_Model):
    """A task and the lease its holder presents."""

    task_id: str
    lease_id: str


class LeaseState(_Model):
    """A heartbeat's answer for one lease."""

    task_id: str
    lease_id: str
    valid: bool
    expires_at: datetime | None = None
    cancel_requested: bool = False
    pause_requested: bool = False


#: Longest ``current_step`` and log line a lease holder may report, in characters, and the
#: most JSON a checkpoint's data or an artifact's inline content may hold: the same over
#: HTTP and in a process of its own.
MAX_STEP_CHARS = 1_000
MAX_LOG_CHARS = 100_000
MAX_CHECKPOINT_BYTES = 1_000_000


class ProgressUpdate(_Model):
    """Progress reported by a lease holder; every part is optional."""

    task_id: str
    lease_id: str
    progress: float | None = Field(None, ge=0, le=100)
    current_step: str | None = Field(None, max_length=MAX_STEP_CHARS)
    log: str | None = Field(None, max_length=MAX_LOG_CHARS)
    level: str = Field("info", max_length=20)
    checkpoint: Checkpoint | None = None
    artifact: Artifact | None = None


class Completion(_Model):
    """A successful attempt's result."""

    task_id: str
    lease_id: str
    result: JSON = None


class Failure(_Model):
    """A failed attempt; ``retryable=False`` sends it to the dead-letter queue now."""

    task_id: str
    lease_id: str
    error: ErrorInfo
    retry_delay_s: float | None = None

    model_config = _FINITE


class Ack(_Model):
    """Outcome of a complete/fail call for one task."""

    task_id: str
    ok: bool
    status: Status | None = None
    code: str | None = None
    message: str | None = None

    @classmethod
    def accepted(cls, task_id: str, status: Status) -> Ack:
        """An acknowledgement of an accepted outcome, built without validation: a
        worker's batch of completions is answered with hundreds of these."""
        return _trusted(
            cls, {"task_id": task_id, "ok": True, "status": status, "code": None, "message": None}
        )


class AgentKind(StrEnum):
    """What sort of actor an agent is."""

    LLM = "llm"
    PROGRAM = "program"
    HUMAN = "human"


class AgentStatus(StrEnum):
    """Availability of an agent."""

    ONLINE = "online"
    BUSY = "busy"
    DRAINING = "draining"
    OFFLINE = "offline"


class AgentRegistration(_Model):
    """What an agent (or worker) says about itself when it registers."""

    id: str | None = None
    name: str
    kind: AgentKind = AgentKind.PROGRAM
    capabilities: dict[str, float] = Field(default_factory=dict)
    max_concurrency: int = Field(1, ge=1, le=100_000)
    queues: list[str] = Field(default_factory=lambda: ["default"])
    endpoint: str | None = None
    metadata: StoredObject = Field(default_factory=dict)


class Agent(_Model):
    """A registered actor: an LLM agent, a program (workers register as one) or a person."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    kind: AgentKind = AgentKind.PROGRAM
    capabilities: dict[str, float] = Field(default_factory=dict)
    max_concurrency: int = 1
    queues: list[str] = Field(default_factory=lambda: ["default"])
    status: AgentStatus = AgentStatus.ONLINE
    last_heartbeat: datetime | None = None
    endpoint: str | None = None
    metadata: dict[str, JSON] = Field(default_factory=dict)
    load: int = 0
    completed: int = 0
    failed: int = 0
    mean_duration_s: float | None = None
    created_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def success_rate(self) -> float | None:
        """Share of finished attempts that completed, or None without history."""
        n = self.completed + self.failed
        return self.completed / n if n else None


class TypeStats(_Model):
    """Per-type figures for ``stats()``."""

    type: str
    count: int
    completed: int
    failed: int
    success_rate: float | None
    run_p50_s: float | None
    run_p95_s: float | None
    wait_p50_s: float | None
    wait_p95_s: float | None


class Stats(_Model):
    """Queue-wide figures."""

    counts: dict[str, int]
    total: int
    by_type: list[TypeStats]
    agents: dict[str, int] = Field(default_factory=dict)
    generated_at: datetime


class TaskTypeInfo(_Model):
    """A task type's public description (names, schemas, defaults)."""

    name: str
    description: str
    input_schema: dict[str, JSON]
    output_schema: dict[str, JSON] | None = None
    capabilities: list[str] = Field(default_factory=list)
    max_retries: int = 3
    timeout_s: float | None = None
    queue: str = "default"
    executable: bool = True
    version: int = 1
    batch_size: int | None = Field(None, description="handler takes up to this many inputs")
    batch_wait_ms: float | None = None
    cache_ttl_s: float | None = None
    concurrency: int | None = None
    rate_limit: str | None = None


class Role(StrEnum):
    """What a token may do: admins see all, users their own tasks, agents claim work."""

    ADMIN = "admin"
    USER = "user"
    AGENT = "agent"


class Principal(_Model):
    """The authenticated caller of an API request."""

    user: str
    role: Role
    token_id: str | None = None

    @property
    def owner_scope(self) -> str | None:
        """The owner filter to apply: None (all tasks) for admins, else the user."""
        return None if self.role is Role.ADMIN else self.user


class TokenInfo(_Model):
    """An API token's record (never the secret itself)."""

    id: str
    user: str
    role: Role
    name: str | None = None
    created_at: datetime
    last_used_at: datetime | None = None
    revoked: bool = False


class NewToken(_Model):
    """A freshly created token: ``token`` is shown once and stored only as a hash."""

    token: str
    info: TokenInfo


class AuditEntry(_Model):
    """One state-changing call: who, what, when, outcome."""

    seq: int = 0
    at: datetime
    actor: str | None = None
    role: str | None = None
    action: str
    target: str | None = None
    status: int | None = None
    details: dict[str, JSON] = Field(default_factory=dict)
