"""Conversions between domain models and database rows, shared by every backend.

Times are stored as epoch seconds and JSON as text, so both backends keep one row shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, TypeVar, cast

import orjson
from pydantic import BaseModel, TypeAdapter

from offload.domain.models import (
    Agent,
    Artifact,
    Assignment,
    Checkpoint,
    Complexity,
    Dependency,
    ErrorInfo,
    Requester,
    RetryPolicy,
    Review,
    Task,
    TaskEvent,
    Team,
    trusted_lease,
)
from offload.domain.status import Status

M = TypeVar("M", bound=BaseModel)

#: Columns written on insert, in order.
TASK_INSERT_COLUMNS: tuple[str, ...] = (
    "id", "type", "title", "description", "instructions", "input", "tags", "queue", "owner",
    "requester", "priority", "capabilities", "caps_key", "agent_id", "depends_on", "parent_id",
    "ref", "status", "max_retries", "retry", "timeout_s", "run_at", "deadline", "error",
    "result", "cache_hit", "created_at", "updated_at", "queued_at", "started_at", "finished_at",
    "estimated_duration_s", "idempotency_key", "cache_ttl_s", "complexity", "metadata",
    "review", "team", "limit_key", "resources", "cache_key", "progress", "actual_duration_s",
    "sort_key",
)  # fmt: skip


def dumps(value: Any) -> str:
    """JSON text for a column."""
    return orjson.dumps(value).decode()


def loads(text: str | bytes | None) -> Any:
    """Parse a JSON column (None stays None)."""
    if text is None:
        return None
    return orjson.loads(text)


def ts(value: datetime | None) -> float | None:
    """Epoch seconds from an aware datetime."""
    return None if value is None else value.timestamp()


def dt(value: float | None) -> datetime | None:
    """Aware UTC datetime from epoch seconds."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


def caps_key(capabilities: list[str]) -> str:
    """Normalised capability set; '' means "anyone may claim it"."""
    return ",".join(sorted(set(capabilities)))


def task_to_row(t: Task, memo: dict[Any, Any] | None = None, order: float = 0.0) -> tuple[Any, ...]:
    """Row values (in :data:`TASK_INSERT_COLUMNS` order) for a new task; ``order`` is its
    ``sort_key`` (0 for a task that is not ready). ``memo`` (one per batch) shares the
    texts of values that tasks of a batch have in common."""
    # Bulk submit spends a good part of its time here, hence the inlined conversions and
    # the per-batch memo of the texts that repeat (requester, retry policy, capabilities).
    if memo is None:
        memo = {}
    j = orjson.dumps
    v = t.__dict__
    caps = v["capabilities"]
    caps_texts = memo.get(tuple(caps))
    if caps_texts is None:
        caps_texts = memo[tuple(caps)] = (j(caps).decode(), caps_key(caps))
    caps_json, caps_k = caps_texts
    requester, retry = v["requester"], v["retry"]
    req_json = memo.get(id(requester))
    if req_json is None:
        req_json = memo[id(requester)] = requester.model_dump_json()
    retry_json = memo.get(id(retry))
    if retry_json is None:
        retry_json = memo[id(retry)] = retry.model_dump_json()
    tags, meta, deps = v["tags"], v["metadata"], v["depends_on"]
    error, result, review, team, resources = (
        v["error"], v["result"], v["review"], v["team"], v["resources"]
    )  # fmt: skip
    run_at, deadline, queued_at, started_at, finished_at, complexity = (
        v["run_at"], v["deadline"], v["queued_at"], v["started_at"], v["finished_at"],
        v["complexity"],
    )  # fmt: skip
    return (
        v["id"], v["type"], v["title"], v["description"], v["instructions"],
        j(v["input"]).decode(), j(tags).decode() if tags else "[]",
        v["queue"], v["owner"], req_json, v["priority"], caps_json, caps_k, v["agent_id"],
        j([d.model_dump(mode="json", exclude_none=True) for d in deps]).decode()
        if deps else "[]",
        v["parent_id"], v["ref"], v["status"].value, v["max_retries"], retry_json,
        v["timeout_s"],
        None if run_at is None else run_at.timestamp(),
        None if deadline is None else deadline.timestamp(),
        error.model_dump_json() if error else None,
        j(result).decode() if result is not None else None, int(v["cache_hit"]),
        v["created_at"].timestamp(), v["updated_at"].timestamp(),
        None if queued_at is None else queued_at.timestamp(),
        None if started_at is None else started_at.timestamp(),
        None if finished_at is None else finished_at.timestamp(),
        v["estimated_duration_s"], v["idempotency_key"], v["cache_ttl_s"],
        complexity.value if complexity else None, j(meta).decode() if meta else "{}",
        # Only a review that is required is stored: completion tests `review IS NULL`.
        review.model_dump_json() if review and review.required else None,
        team.model_dump_json() if team else None, v["limit_key"],
        j(resources).decode() if resources else None, v["cache_key"], v["progress"],
        v["actual_duration_s"], order,
    )  # fmt: skip


#: The columns in which the tasks of a bulk submit of one shape differ (one value per task:
#: the same encoding as :func:`task_to_row`); they share every other column.
ALIKE_VARYING: tuple[str, ...] = (
    "id", "title", "description", "instructions", "input", "tags", "metadata", "ref",
    "idempotency_key", "estimated_duration_s",
)  # fmt: skip
# Every other field, including the ones an insert does not store: a field added to Task
# later joins the comparison by itself rather than being shared by mistake.
_alike_fields = itemgetter(*(f for f in Task.model_fields if f not in ALIKE_VARYING))


def alike_key(t: Task, order: float) -> tuple[Any, ...]:
    """What tasks must have equal (with their ``sort_key``) to share all but the
    :data:`ALIKE_VARYING` columns; compared with ``==`` (models are not hashable)."""
    return (_alike_fields(t.__dict__), order)


def varying_row(t: Task) -> tuple[Any, ...]:
    """The :data:`ALIKE_VARYING` values of a new task, as :func:`task_to_row` writes them."""
    v = t.__dict__
    j = orjson.dumps
    tags, meta = v["tags"], v["metadata"]
    return (
        v["id"], v["title"], v["description"], v["instructions"], j(v["input"]).decode(),
        j(tags).decode() if tags else "[]", j(meta).decode() if meta else "{}", v["ref"],
        v["idempotency_key"], v["estimated_duration_s"],
    )  # fmt: skip


def expand_alike(shared: Mapping[str, Any], rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Full rows (:data:`TASK_INSERT_COLUMNS` order) from shared values and
    :func:`varying_row` rows, for a backend that inserts whole rows."""
    base = [shared.get(c) for c in TASK_INSERT_COLUMNS]
    slots = [(TASK_INSERT_COLUMNS.index(c), i) for i, c in enumerate(ALIKE_VARYING)]
    out = []
    for r in rows:
        full = base.copy()
        for at, i in slots:
            full[at] = r[i]
        out.append(tuple(full))
    return out


_CACHE_LIMIT = 4096
_model_cache: dict[tuple[type[BaseModel], str], Any] = {}
_list_adapters: dict[type[BaseModel], TypeAdapter[Any]] = {}


def _model(model: type[M], text: str | None) -> M | None:
    """Parse a small JSON-object column, sharing instances for repeated texts.

    Claims read hundreds of rows whose requester, retry policy and assignment texts are
    identical; parsing each distinct text once keeps row decoding cheap.
    """
    if text is None:
        return None
    key = (model, text)
    out = _model_cache.get(key)
    if out is None:
        if len(_model_cache) >= _CACHE_LIMIT:
            _model_cache.clear()
        out = _model_cache[key] = model.model_validate_json(text)
    return cast(M, out)


def _models(model: type[BaseModel], text: str | None) -> list[Any]:
    if not text or text == "[]":
        return []
    adapter = _list_adapters.get(model)
    if adapter is None:
        adapter = _list_adapters[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return list(adapter.validate_json(text))


_TIME_FIELDS = ("run_at", "deadline", "created_at", "updated_at", "queued_at", "started_at",
                "finished_at")  # fmt: skip
_STATUS = {s.value: s for s in Status}
#: Datetimes of recently decoded timestamps (see row_to_task).
_times: dict[float, datetime] = {}
_COMPLEXITY = {c.value: c for c in Complexity}


def _datetime(ts: float) -> datetime:
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        # A time beyond what this platform can show (stored before delays were capped):
        # the row stays readable instead of breaking every page it is on.
        return datetime.max.replace(tzinfo=UTC) if ts > 0 else datetime.min.replace(tzinfo=UTC)


def row_to_task(r: dict[str, Any], children: list[str] | None = None) -> Task:
    """A :class:`Task` from a full ``tasks`` row, which it consumes (values come from our
    own writes, so nothing is validated again).

    Decoding happens in place in the row dict: claims decode hundreds of rows per call and
    this is their hottest Python path.
    """
    lease_id = r.pop("lease_id")
    holder = r.pop("lease_holder")
    expires = r.pop("lease_expires_at")
    # Storage details that are not fields of Task.
    for name in ("caps_key", "assigned_agent", "paused_from", "sort_key", "n_dependents",
                 "excluded_agents"):  # fmt: skip
        r.pop(name, None)
    r["lease"] = (
        trusted_lease(lease_id, holder, datetime.fromtimestamp(expires, UTC))
        if lease_id is not None
        else None
    )
    r["input"] = orjson.loads(r["input"])
    r["tags"] = orjson.loads(r["tags"])
    r["capabilities"] = orjson.loads(r["capabilities"])
    r["metadata"] = orjson.loads(r["metadata"]) if r["metadata"] else {}
    result = r["result"]
    r["result"] = None if result is None else orjson.loads(result)
    r["requester"] = _model(Requester, r["requester"]) or Requester()
    r["retry"] = _model(RetryPolicy, r["retry"]) or RetryPolicy()
    r["assignment"] = _model(Assignment, r["assignment"])
    r["depends_on"] = _models(Dependency, r["depends_on"])
    r["checkpoints"] = _models(Checkpoint, r["checkpoints"])
    r["artifacts"] = _models(Artifact, r["artifacts"])
    r["errors"] = _models(ErrorInfo, r["errors"])
    error = r["error"]
    r["error"] = ErrorInfo.model_validate_json(error) if error else None
    review = r["review"]
    r["review"] = Review.model_validate_json(review) if review else None
    team = r.get("team")
    r["team"] = _model(Team, team) if team else None
    r["status"] = _STATUS[r["status"]]
    complexity = r["complexity"]
    r["complexity"] = _COMPLEXITY[complexity] if complexity else None
    r["cancel_requested"] = bool(r["cancel_requested"])
    r["pause_requested"] = bool(r["pause_requested"])
    r["cache_hit"] = bool(r["cache_hit"])
    r["children"] = children or []
    resources = r.get("resources")
    r["resources"] = orjson.loads(resources) if resources else {}
    r.setdefault("limit_key", None)
    r.setdefault("cache_key", None)
    r["waiting_on"] = None
    # Rows of one claim or page share most of their times (a batch's created_at, the
    # claim's started_at and updated_at): each distinct one is converted once.
    times = _times
    if len(times) > _CACHE_LIMIT:
        times.clear()
    for name in _TIME_FIELDS:
        value = r[name]
        if value is not None:
            at = times.get(value)
            if at is None:
                at = times[value] = _datetime(value)
            r[name] = at
    return Task.from_trusted(r)


def row_to_event(r: Mapping[str, Any]) -> TaskEvent:
    """A :class:`TaskEvent` from a ``task_events`` row."""
    return TaskEvent(
        seq=r["seq"],
        task_id=r["task_id"],
        at=dt(r["at"]) or datetime.now(UTC),
        kind=r["kind"],
        actor=r["actor"],
        data=loads(r["data"]),
        task_type=r.get("task_type"),
        task_status=r.get("task_status"),
    )


def row_to_agent(r: Mapping[str, Any]) -> Agent:
    """An :class:`Agent` from an ``agents`` row plus computed load/history columns."""
    return Agent.model_validate({
        "id": r["id"], "name": r["name"], "kind": r["kind"],
        "capabilities": loads(r["capabilities"]) or {}, "max_concurrency": r["max_concurrency"],
        "queues": loads(r["queues"]) or ["default"], "status": r["status"],
        "last_heartbeat": dt(r["last_heartbeat"]), "endpoint": r["endpoint"],
        "metadata": loads(r["metadata"]) or {}, "load": r["load"] or 0,
        "completed": r["completed"] or 0, "failed": r["failed"] or 0,
        "mean_duration_s": r["mean_duration_s"], "created_at": dt(r["created_at"]),
    })  # fmt: skip
