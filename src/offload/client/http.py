"""The HTTP client: the :class:`~offload.client.base.AsyncClient` protocol over REST v1.

``offload.Client("http://host:8000", token=…)`` (or ``$OFFLOAD_URL``/``$OFFLOAD_TOKEN``)
uses it, so the SDK, the CLI, the MCP server and workers behave the same against a server
as against the local database. Errors come back as the same :class:`OffloadError`
subclasses, chosen by the error ``code`` (``NotFound``, ``StaleLease``, ``InvalidInput``…);
an unreachable server is :class:`~offload.domain.errors.Unavailable`. One keep-alive
connection pool per client; ``wait``, ``watch`` and ``wait_for_work`` long-poll.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticSerializationError

from offload.client import bulk
from offload.core.auth import Forbidden, Unauthenticated
from offload.domain.agents import (
    AgentStatusChange,
    AgentWorkload,
    Bid,
    BidSpec,
    QueueDispatch,
    QueueDispatchUpdate,
)
from offload.domain.errors import (
    Conflict,
    DependencyError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    OffloadError,
    StaleLease,
    TooLarge,
    Unavailable,
    UnknownTaskType,
    WaitTimeout,
)
from offload.domain.flow import (
    Limit,
    LimitSpec,
    QueueSettings,
    QueueSettingsSpec,
    Resource,
    ResourceSpec,
)
from offload.domain.models import (
    Ack,
    Agent,
    AgentRegistration,
    AgentStatus,
    AuditEntry,
    ClaimRequest,
    Completion,
    Failure,
    LeaseRef,
    LeaseState,
    NewToken,
    ProgressUpdate,
    Role,
    Stats,
    Task,
    TaskEvent,
    TaskFilter,
    TaskPage,
    TaskSpec,
    TaskTypeInfo,
    TokenInfo,
    WorkflowSpec,
    validated,
)
from offload.domain.review import ReviewDecision, ReviewFilter
from offload.domain.schedules import Schedule, ScheduleSpec

M = TypeVar("M", bound=BaseModel)

# httpx logs every request at INFO; a worker makes thousands. Keep it for debugging only,
# unless the application set that logger's level itself.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)

#: Error classes by their wire ``code`` (rebuilt without calling their constructors).
_ERRORS: dict[str, type[OffloadError]] = {
    cls.code: cls
    for cls in (
        InvalidInput, UnknownTaskType, DependencyError, NotFound, Conflict, IllegalTransition,
        StaleLease, TooLarge, WaitTimeout, Unavailable, Unauthenticated, Forbidden,
    )
}  # fmt: skip

#: Longest single long-poll request; longer waits are several requests.
LONG_POLL_S = 30.0
#: Submits answered 429 are retried this many times, after the server's Retry-After.
RATE_LIMIT_RETRIES = 3
MAX_BATCH = 1000
#: Outcomes travel in requests of about this size at most (one bigger result alone): a
#: batch of large results must not add up to more than the server's body limit.
OUTCOME_BODY_BYTES = 1_000_000
CHANGE_TOKEN_HEADER = "X-Offload-Change-Token"


class _Tasks(BaseModel):
    tasks: list[Task]


class _Events(BaseModel):
    events: list[TaskEvent]


class _Agents(BaseModel):
    agents: list[Agent]


class _Acks(BaseModel):
    acks: list[Ack]


class _Leases(BaseModel):
    leases: list[LeaseState]


class _Limits(BaseModel):
    limits: list[Limit]


class _Schedules(BaseModel):
    schedules: list[Schedule]


class _Queues(BaseModel):
    queues: list[QueueSettings]


class _Resources(BaseModel):
    resources: list[Resource]


class _TaskTypes(BaseModel):
    task_types: list[TaskTypeInfo]


class _Changed(BaseModel):
    changed: bool
    token: int = 0


class _Tokens(BaseModel):
    tokens: list[TokenInfo]


class _Audit(BaseModel):
    entries: list[AuditEntry]
    total: int


_SPECS: TypeAdapter[list[TaskSpec]] = TypeAdapter(list[TaskSpec])
_COUNTS: TypeAdapter[dict[str, int]] = TypeAdapter(dict[str, int])


def error_from_response(status: int, content: bytes, url: str = "") -> OffloadError:
    """The :class:`OffloadError` an error answer stands for (same class as locally)."""
    try:
        body = orjson.loads(content)
        err = body["error"]
        code, message = str(err["code"]), str(err.get("message") or err["code"])
        details = err.get("details") if isinstance(err.get("details"), dict) else {}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        if status in (502, 503, 504):
            return Unavailable(f"server at {url} is unavailable (HTTP {status})")
        text = content[:200].decode(errors="replace").strip()
        exc = OffloadError(f"HTTP {status} from {url}: {text or 'no body'}")
        exc.code, exc.http_status = "http_error", status
        return exc
    cls = _ERRORS.get(code)
    if cls is None:
        exc = OffloadError(message, details=details)
        exc.code, exc.http_status = code, status  # e.g. rate_limited, internal
        return exc
    exc = cls.__new__(cls)
    OffloadError.__init__(exc, message, details=details)
    if isinstance(exc, InvalidInput):
        exc.field = details.get("field")
    return exc


def _by_size(parts: builtins.list[bytes], budget: int) -> Iterator[builtins.list[bytes]]:
    """``parts`` in order, in groups of at most ``budget`` bytes (a bigger part alone)."""
    group: builtins.list[bytes] = []
    size = 0
    for part in parts:
        if group and size + len(part) > budget:
            yield group
            group, size = [], 0
        group.append(part)
        size += len(part) + 1
    if group:
        yield group


def _q(ident: str) -> str:
    return quote(ident, safe="")


class HttpClient(bulk.BulkSubmit):
    """:class:`~offload.client.base.AsyncClient` talking to an Offload server."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": "offload-python", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )
        self._timeout = timeout
        self._since: int | None = None

    def __repr__(self) -> str:
        return f"HttpClient({self.url!r})"

    # -- plumbing ------------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Any = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if body is not None else None
        request_timeout = httpx.Timeout(timeout, connect=10.0) if timeout is not None else None
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                response = await self._http.request(
                    method,
                    path,
                    content=body,
                    params=params,
                    headers=headers,
                    timeout=request_timeout
                    if request_timeout is not None
                    else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TimeoutException as exc:
                raise Unavailable(f"{method} {self.url}{path} timed out ({exc!r})") from None
            except httpx.HTTPError as exc:
                raise Unavailable(f"cannot reach {self.url}: {exc}") from None
            if response.status_code == 429 and attempt < RATE_LIMIT_RETRIES:
                await asyncio.sleep(_retry_after(response))
                continue
            if response.status_code >= 400:
                raise error_from_response(response.status_code, response.content, self.url)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get(self, path: str, model: type[M], params: Any = None, **kw: Any) -> M:
        response = await self._call("GET", path, params=params, **kw)
        return model.model_validate_json(response.content)

    async def _post(self, path: str, model: type[M], body: bytes | None = None, **kw: Any) -> M:
        response = await self._call("POST", path, body=body, **kw)
        return model.model_validate_json(response.content)

    # -- submitting and reading ---------------------------------------------------------------
    async def submit(self, task_type: str, input: Any = None, **options: Any) -> Task:
        """Create one task."""
        spec = validated(TaskSpec, {"type": task_type, "input": input or {}, **options})
        return await self.submit_spec(spec)

    async def submit_spec(self, spec: TaskSpec) -> Task:
        """Create one task from a spec."""
        return await self._post(
            "/v1/tasks", Task, spec.model_dump_json(exclude_unset=True).encode()
        )

    async def submit_many(self, specs: Sequence[TaskSpec]) -> builtins.list[Task]:
        """Create up to 1,000 tasks atomically."""
        if not specs:
            return []
        body = b'{"tasks":' + _SPECS.dump_json(list(specs), exclude_unset=True) + b"}"
        return (await self._post("/v1/tasks/batch", _Tasks, body)).tasks

    async def submit_workflow(self, spec: WorkflowSpec) -> Task:
        """Create a workflow; returns the parent."""
        body = spec.model_dump_json(exclude_unset=True).encode()
        return await self._post("/v1/workflows", Task, body)

    async def get(self, task_id: str) -> Task:
        """One task."""
        return await self._get(f"/v1/tasks/{_q(task_id)}", Task, {"detail": "false"})

    async def list(self, flt: TaskFilter | None = None, **filters: Any) -> TaskPage:
        """A page of tasks."""
        flt = flt or validated(TaskFilter, filters)
        params: builtins.list[tuple[str, str | int]] = [("status", s) for s in flt.status or []]
        for key in ("type", "agent_id", "owner", "tag", "queue", "parent_id", "search"):
            value = getattr(flt, key)
            if value is not None:
                params.append((key, value))
        params += [("limit", flt.limit), ("offset", flt.offset)]
        return await self._get("/v1/tasks", TaskPage, params)

    async def events(
        self, task_id: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """A task's events after ``after``."""
        params = {"after": after, "limit": limit}
        return (await self._get(f"/v1/tasks/{_q(task_id)}/events", _Events, params)).events

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Until the task is terminal; ``WaitTimeout`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = (
                LONG_POLL_S
                if deadline is None
                else max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
            )
            task = await self._get(
                f"/v1/tasks/{_q(task_id)}/wait", Task, {"timeout": round(chunk, 3)},
                timeout=chunk + self._timeout,
            )  # fmt: skip
            if task.done:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(task_id, task.status.value, timeout or 0.0)

    async def watch(
        self, task_id: str, after: int = 0, timeout: float = 30.0
    ) -> builtins.list[TaskEvent]:
        """Events after ``after``, waiting up to ``timeout`` for the first (long poll)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            chunk = max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
            params = {"after": after, "wait": round(chunk, 3)}
            page = await self._get(
                f"/v1/tasks/{_q(task_id)}/events", _Events, params, timeout=chunk + self._timeout
            )
            if page.events or time.monotonic() >= deadline:
                return page.events

    # -- control -----------------------------------------------------------------------------
    async def cancel(self, task_id: str, reason: str | None = None) -> Task:
        """Cancel a task."""
        body = orjson.dumps({"reason": reason}) if reason is not None else None
        return await self._post(f"/v1/tasks/{_q(task_id)}/cancel", Task, body)

    async def pause(self, task_id: str) -> Task:
        """Pause a task."""
        return await self._post(f"/v1/tasks/{_q(task_id)}/pause", Task)

    async def resume(self, task_id: str) -> Task:
        """Resume a paused task."""
        return await self._post(f"/v1/tasks/{_q(task_id)}/resume", Task)

    async def retry(self, task_id: str) -> Task:
        """Retry a failed or cancelled task."""
        return await self._post(f"/v1/tasks/{_q(task_id)}/retry", Task)

    async def retry_many(self, flt: TaskFilter) -> builtins.list[Task]:
        """Retry every dead-letter task matching ``flt``."""
        body = flt.model_dump_json(exclude_none=True).encode()
        return (await self._post("/v1/dlq/retry", _Tasks, body)).tasks

    async def review(self, task_id: str, decision: ReviewDecision) -> Task:
        """Approve or reject a task in ``reviewing``."""
        body = decision.model_dump_json(exclude_none=True).encode()
        return await self._post(f"/v1/tasks/{_q(task_id)}/review", Task, body)

    async def list_reviews(self, flt: ReviewFilter) -> TaskPage:
        """Tasks whose review matches ``flt``."""
        params: builtins.list[tuple[str, str | int]] = [("capability", c) for c in flt.capabilities]
        if flt.reviewer is not None:
            params.append(("reviewer", flt.reviewer))
        if flt.owner is not None:
            params.append(("owner", flt.owner))
        params += [("status", flt.status.value), ("limit", flt.limit), ("offset", flt.offset)]
        return await self._get("/v1/reviews", TaskPage, params)

    async def stats(self) -> Stats:
        """Queue statistics."""
        return await self._get("/v1/stats", Stats)

    async def set_limit(self, task_type: str, spec: LimitSpec) -> Limit:
        """Set a type's limits."""
        response = await self._call(
            "PUT", f"/v1/limits/{_q(task_type)}", body=spec.model_dump_json().encode()
        )
        return Limit.model_validate_json(response.content)

    async def delete_limit(self, task_type: str) -> None:
        """Remove a type's limits."""
        await self._call("DELETE", f"/v1/limits/{_q(task_type)}")

    async def list_limits(self) -> builtins.list[Limit]:
        """Every type's limits."""
        return (await self._get("/v1/limits", _Limits)).limits

    async def set_resource(self, name: str, capacity: int) -> Resource:
        """Create a resource or set its capacity."""
        body = ResourceSpec(capacity=capacity).model_dump_json().encode()
        response = await self._call("PUT", f"/v1/resources/{_q(name)}", body=body)
        return Resource.model_validate_json(response.content)

    async def delete_resource(self, name: str) -> None:
        """Remove a resource."""
        await self._call("DELETE", f"/v1/resources/{_q(name)}")

    async def list_resources(self) -> builtins.list[Resource]:
        """Every resource with its usage."""
        return (await self._get("/v1/resources", _Resources)).resources

    async def set_queue_settings(self, queue: str, spec: QueueSettingsSpec) -> QueueSettings:
        """Set a queue's options."""
        response = await self._call(
            "PUT", f"/v1/queues/{_q(queue)}", body=spec.model_dump_json().encode()
        )
        return QueueSettings.model_validate_json(response.content)

    async def list_queue_settings(self) -> builtins.list[QueueSettings]:
        """Every queue with options set."""
        return (await self._get("/v1/queues", _Queues)).queues

    async def create_schedule(self, spec: ScheduleSpec) -> Schedule:
        """Create a schedule."""
        return await self._post(
            "/v1/schedules", Schedule, spec.model_dump_json(exclude_none=True).encode()
        )

    async def list_schedules(self) -> builtins.list[Schedule]:
        """Your schedules."""
        return (await self._get("/v1/schedules", _Schedules)).schedules

    async def get_schedule(self, ident: str) -> Schedule:
        """One schedule."""
        return await self._get(f"/v1/schedules/{_q(ident)}", Schedule)

    async def delete_schedule(self, ident: str) -> Schedule:
        """Remove a schedule."""
        response = await self._call("DELETE", f"/v1/schedules/{_q(ident)}")
        return Schedule.model_validate_json(response.content)

    async def pause_schedule(self, ident: str, paused: bool = True) -> Schedule:
        """Pause or resume a schedule."""
        action = "pause" if paused else "resume"
        return await self._post(f"/v1/schedules/{_q(ident)}/{action}", Schedule)

    async def clear_cache(self, task_type: str | None = None) -> int:
        """Drop cached results."""
        params = {"type": task_type} if task_type is not None else None
        response = await self._call("DELETE", "/v1/cache", params=params)
        return int(orjson.loads(response.content)["removed"])

    async def task_types(self) -> builtins.list[TaskTypeInfo]:
        """The task-type catalogue."""
        return (await self._get("/v1/task-types", _TaskTypes)).task_types

    # -- worker / agent protocol ---------------------------------------------------------------
    async def register_agent(self, reg: AgentRegistration) -> Agent:
        """Register (or update) an agent."""
        return await self._post("/v1/agents", Agent, reg.model_dump_json().encode())

    async def agent_heartbeat(self, agent_id: str, metadata: dict[str, Any] | None = None) -> Agent:
        """Agent liveness."""
        body = orjson.dumps({"metadata": metadata}, default=str)
        return await self._post(f"/v1/agents/{_q(agent_id)}/heartbeat", Agent, body)

    async def deregister_agent(self, agent_id: str) -> None:
        """Mark the agent offline."""
        await self._call("DELETE", f"/v1/agents/{_q(agent_id)}")

    async def get_agent(self, agent_id: str) -> Agent:
        """One agent."""
        return await self._get(f"/v1/agents/{_q(agent_id)}", Agent)

    async def available_agents(self, capability: str | None = None) -> builtins.list[Agent]:
        """Online agents with free capacity."""
        params = {"capability": capability} if capability else None
        return (await self._get("/v1/agents/available", _Agents, params)).agents

    async def agent_workload(self, agent_id: str) -> AgentWorkload:
        """An agent's current tasks and history."""
        return await self._get(f"/v1/agents/{_q(agent_id)}/workload", AgentWorkload)

    async def set_agent_status(self, agent_id: str, status: AgentStatus) -> Agent:
        """Drain, resume or retire an agent."""
        body = AgentStatusChange(status=status).model_dump_json().encode()
        response = await self._call("PATCH", f"/v1/agents/{_q(agent_id)}", body=body)
        return Agent.model_validate_json(response.content)

    async def get_dispatch(self, queue: str) -> QueueDispatch:
        """A queue's dispatch mode."""
        return await self._get(f"/v1/queues/{_q(queue)}/dispatch", QueueDispatch)

    async def set_dispatch(self, queue: str, update: QueueDispatchUpdate) -> QueueDispatch:
        """Set a queue's dispatch mode."""
        body = update.model_dump_json(exclude_none=True).encode()
        response = await self._call("PUT", f"/v1/queues/{_q(queue)}/dispatch", body=body)
        return QueueDispatch.model_validate_json(response.content)

    async def bid(self, task_id: str, bid: BidSpec) -> Bid:
        """Bid for an announced task."""
        return await self._post(
            f"/v1/tasks/{_q(task_id)}/bids", Bid, bid.model_dump_json().encode()
        )

    async def list_agents(self) -> builtins.list[Agent]:
        """Every agent."""
        return (await self._get("/v1/agents", _Agents)).agents

    async def claim(self, req: ClaimRequest) -> builtins.list[Task]:
        """Lease up to ``req.max`` tasks."""
        exclude = {"tenant"} if req.tenant is None else None
        body = req.model_dump_json(exclude=exclude).encode()
        response = await self._call("POST", "/v1/claims", body=body)
        token = response.headers.get(CHANGE_TOKEN_HEADER)
        self._since = int(token) if token and token.isdigit() else None
        return _Tasks.model_validate_json(response.content).tasks

    async def wait_for_work(self, timeout: float) -> bool:
        """Until new work may be claimable (True) or ``timeout`` (False), one long poll;
        a submit that raced the last claim counts."""
        since, self._since = self._since, None
        params: dict[str, Any] = {"timeout": round(min(max(timeout, 0.0), 60.0), 3)}
        if since is not None:
            params["since"] = since
        answer = await self._get("/v1/changes", _Changed, params, timeout=timeout + self._timeout)
        return answer.changed

    async def heartbeat(
        self, leases: Sequence[LeaseRef], ttl_s: float
    ) -> builtins.list[LeaseState]:
        """Extend leases."""
        refs = [{"task_id": r.task_id, "lease_id": r.lease_id} for r in leases]
        body = orjson.dumps({"leases": refs, "ttl_s": ttl_s})
        return (await self._post("/v1/leases/heartbeat", _Leases, body)).leases

    async def progress(self, update: ProgressUpdate) -> LeaseState:
        """Report progress (``StaleLease`` when the lease is gone)."""
        body = update.model_dump_json(exclude={"task_id"}, exclude_none=True).encode()
        return await self._post(f"/v1/tasks/{_q(update.task_id)}/progress", LeaseState, body)

    async def complete(self, items: Sequence[Completion]) -> builtins.list[Ack]:
        """Report successful attempts."""
        return await self._outcomes("/v1/tasks/complete", builtins.list(items))

    async def fail(self, items: Sequence[Failure]) -> builtins.list[Ack]:
        """Report failed attempts."""
        return await self._outcomes("/v1/tasks/fail", builtins.list(items))

    async def _outcomes(
        self, path: str, items: builtins.list[Completion] | builtins.list[Failure]
    ) -> builtins.list[Ack]:
        acks: builtins.list[Ack] = []
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start : start + MAX_BATCH]
            encoded: builtins.list[bytes] = []
            refused: dict[str, Ack] = {}
            for item in chunk:
                try:
                    encoded.append(item.model_dump_json().encode())
                except PydanticSerializationError as exc:
                    refused[item.task_id] = Ack(
                        task_id=item.task_id, ok=False, code="invalid_input",
                        message=f"result is not JSON-serialisable: {exc}",
                    )  # fmt: skip
            sent: builtins.list[Ack] = []
            for group in _by_size(encoded, OUTCOME_BODY_BYTES):
                body = b'{"items":[' + b",".join(group) + b"]}"
                sent += (await self._post(path, _Acks, body)).acks
            by_id = {a.task_id: a for a in sent} | refused
            acks += [by_id[i.task_id] for i in chunk if i.task_id in by_id]
        return acks

    async def release(self, leases: Sequence[LeaseRef]) -> builtins.list[Ack]:
        """Hand leases back without spending an attempt."""
        refs = [{"task_id": r.task_id, "lease_id": r.lease_id} for r in leases]
        if not refs:
            return []
        return (await self._post("/v1/leases/release", _Acks, orjson.dumps({"leases": refs}))).acks

    async def maintain(self) -> dict[str, int]:
        """One maintenance pass on the server."""
        response = await self._call("POST", "/v1/maintenance")
        return _COUNTS.validate_json(response.content)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- beyond the protocol: server administration -------------------------------------------
    async def create_token(
        self, user: str, role: Role | str = Role.USER, name: str | None = None
    ) -> NewToken:
        """A new API token (admin); the secret is shown once."""
        body = orjson.dumps({"user": user, "role": str(Role(role).value), "name": name})
        return await self._post("/v1/tokens", NewToken, body)

    async def list_tokens(self) -> builtins.list[TokenInfo]:
        """Token records (admin)."""
        return (await self._get("/v1/tokens", _Tokens)).tokens

    async def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke a token (admin)."""
        response = await self._call("DELETE", f"/v1/tokens/{_q(token_id)}")
        return TokenInfo.model_validate_json(response.content)

    async def list_audit(
        self, limit: int = 100, offset: int = 0, actor: str | None = None
    ) -> tuple[builtins.list[AuditEntry], int]:
        """Audit entries, newest first, and the total (admin)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if actor is not None:
            params["actor"] = actor
        page = await self._get("/v1/audit", _Audit, params)
        return page.entries, page.total


def _retry_after(response: httpx.Response) -> float:
    raw = response.headers.get("Retry-After", "1")
    try:
        return min(max(float(raw), 0.05), 10.0)
    except ValueError:
        return 1.0
