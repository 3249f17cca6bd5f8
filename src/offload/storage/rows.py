"""Conversions between domain models and database rows, shared by every backend.

Times are stored as epoch seconds and JSON as text, so both backends keep one row shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
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


def _json_of(model: Any, memo: dict[int, str] | None) -> str:
    # Bulk submits share requester/retry objects: serialise each once per batch.
    if memo is None:
        return str(model.model_dump_json())
    key = id(model)
    out = memo.get(key)
    if out is None:
        out = memo[key] = model.model_dump_json()
    return out


def task_to_row(t: Task, memo: dict[int, str] | None = None) -> tuple[Any, ...]:
    """Row values (in :data:`TASK_INSERT_COLUMNS` order) for a new task."""
    return (
        t.id, t.type, t.title, t.description, t.instructions, dumps(t.input), dumps(t.tags),
        t.queue, t.owner, _json_of(t.requester, memo), t.priority, dumps(t.capabilities),
        caps_key(t.capabilities), t.agent_id,
        dumps([d.model_dump(mode="json", exclude_none=True) for d in t.depends_on])
        if t.depends_on else "[]",
        t.parent_id, t.ref, t.status.value, t.max_retries, _json_of(t.retry, memo),
        t.timeout_s, ts(t.run_at), ts(t.deadline),
        t.error.model_dump_json() if t.error else None,
        dumps(t.result) if t.result is not None else None, int(t.cache_hit),
        ts(t.created_at), ts(t.updated_at), ts(t.queued_at), ts(t.started_at),
        ts(t.finished_at), t.estimated_duration_s, t.idempotency_key, t.cache_ttl_s,
        t.complexity.value if t.complexity else None, dumps(t.metadata),
        # Only a review that is required is stored: completion tests `review IS NULL`.
        t.review.model_dump_json() if t.review and t.review.required else None,
        t.team.model_dump_json() if t.team else None, t.limit_key,
        dumps(t.resources) if t.resources else None, t.cache_key, t.progress,
        t.actual_duration_s, 0.0,  # sort_key stays last
    )  # fmt: skip


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
_COMPLEXITY = {c.value: c for c in Complexity}


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
    fromts = datetime.fromtimestamp
    for name in _TIME_FIELDS:
        value = r[name]
        if value is not None:
            r[name] = fromts(value, UTC)
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
