"""The store logic shared by the SQL backends (SQLite, PostgreSQL).

Every public method is one transaction. Status changes are conditional updates checked
against the domain's transition table; retry and dependency rules come from the domain;
each change appends to the task event log in the same transaction. Backends differ only
in connections, migrations, change notification and a few SQL fragments (:class:`Dialect`).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from offload.domain.errors import (
    Conflict,
    DependencyError,
    IllegalTransition,
    NotFound,
    StaleLease,
)
from offload.domain.ids import new_id
from offload.domain.models import (
    Ack,
    Agent,
    AgentRegistration,
    AgentStatus,
    AuditEntry,
    ClaimRequest,
    Completion,
    Condition,
    DependencyOn,
    ErrorInfo,
    EventFilter,
    Failure,
    LeaseRef,
    LeaseState,
    ProgressUpdate,
    RetryPolicy,
    Stats,
    Task,
    TaskEvent,
    TaskFilter,
    TokenInfo,
)
from offload.domain.rules import (
    DEFAULT_AGING_INTERVAL_S,
    EdgeState,
    Outcome,
    decide_failure,
    edge_state,
    find_refs,
    resolve_refs,
    sort_key,
)
from offload.domain.stats import build_stats
from offload.domain.status import (
    LEASED,
    PAUSABLE,
    RETRYABLE,
    TERMINAL,
    Status,
    check_transition,
    expand_statuses,
)
from offload.storage.agents_sql import AgentsSql
from offload.storage.cache_sql import CacheSql
from offload.storage.flow_sql import FlowSql
from offload.storage.review_sql import ReviewSql
from offload.storage.rows import (
    ALIKE_VARYING,
    TASK_INSERT_COLUMNS,
    alike_key,
    dt,
    dumps,
    loads,
    row_to_agent,
    row_to_event,
    row_to_task,
    task_to_row,
    varying_row,
)
from offload.storage.schedules_sql import SchedulesSql

R = TypeVar("R")

_TERMINAL_SQL = "('completed', 'failed', 'cancelled')"
_LEASED_SQL = "('assigned', 'running')"
#: Completions of up to this many tasks at once are prepared statements (one per size).
PREPARED_COMPLETIONS = 4
_EVENT_SQL = "INSERT INTO task_events (task_id, at, kind, actor, data) VALUES (?, ?, ?, ?, ?)"


#: The columns an event append writes.
EVENT_COLUMNS = ("task_id", "at", "kind", "actor", "data")
#: A claim's lease (arguments: lease_id, holder, expires_at, started_at, updated_at,
#: assignment, assigned_agent), followed by its WHERE.
_CLAIM_SET = (
    "UPDATE tasks SET status = 'running', lease_id = ?, lease_holder = ?, "
    "lease_expires_at = ?, attempt = attempt + 1, started_at = ?, updated_at = ?, "
    "assignment = ?, assigned_agent = ?, cancel_requested = 0 "
)
#: A claim's SQL for one shape of request: filter, pick, whole statement (or None).
_ClaimSql = tuple[str, str, str | None]


def insert_events(cur: Cursor, rows: Sequence[Sequence[Any]]) -> None:
    """Append many events (one COPY on PostgreSQL for big batches)."""
    if rows:
        cur.insert_rows("task_events", EVENT_COLUMNS, rows)
        cur.appended({r[2] for r in rows})


Row = dict[str, Any]
#: A 'created' event's time, actor and data (see :meth:`Cursor.insert_alike`).
CreatedEvent = tuple[float, str | None, str]


class CommittedBefore(Exception):
    """Raised by a backend that replays a transaction after losing its connection, when the
    replay meets the very rows it inserts: the earlier attempt committed, and only its
    acknowledgement was lost."""


class Cursor(Protocol):
    """The slice of a DB-API cursor the shared logic uses; rows come back as dicts."""

    rowcount: int

    def execute(self, sql: str, args: Sequence[Any] = ..., *, prepare: bool = ...) -> Cursor:
        """Run one statement (``?`` placeholders). ``prepare``: a statement run often whose
        planning costs more than its execution; a backend may prepare it once per
        connection (each parameter's type must then follow from its context or a cast)."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement per row."""
        ...

    def hold(self, sql: str, args: Sequence[Any] = ...) -> None:
        """Run a statement whose result nobody reads. A backend may defer it until the next
        statement of the transaction (PostgreSQL sends both in one round trip)."""
        ...

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Append many rows to ``table`` the backend's fastest way (PostgreSQL: COPY)."""
        ...

    def insert_alike(
        self, shared: Mapping[str, Any], rows: Sequence[Sequence[Any]], created: CreatedEvent
    ) -> None:
        """Append new tasks that have every column but :data:`ALIKE_VARYING` in common
        (``shared``, by column name; ``rows`` hold each task's :func:`varying_row`), each
        with its 'created' event (``created``: time, actor, data). PostgreSQL sends the
        shared values once instead of once per task."""
        ...

    def finish(self, sql: str, args: Sequence[Any] = ..., *, prepare: bool = ...) -> Cursor:
        """Run the transaction's last statement; a backend may send COMMIT with it (one
        round trip). Nothing may be executed on this cursor afterwards but reads of its
        rows."""
        ...

    def appended(self, kinds: Iterable[str]) -> None:
        """Events of these kinds were appended in this transaction: a backend that wakes
        other processes at commit (PostgreSQL's NOTIFY) announces what kind of change
        it was. Every event append must report here."""
        ...

    def fetchone(self) -> Row | None:
        """The next row or None."""
        ...

    def fetchall(self) -> list[Row]:
        """Every remaining row."""
        ...

    def scalar(self) -> Any:
        """The first column of the next row (None if there is no row)."""
        ...

    def __iter__(self) -> Iterator[Row]: ...


class Dialect:
    """SQL that differs between backends. The default is SQLite's."""

    greatest = "max"
    #: Row locks (PostgreSQL); SQLite serialises writers with BEGIN IMMEDIATE instead.
    for_update = ""
    skip_locked = ""
    #: Re-check on the claim UPDATE. SQLite serialises writers, so the candidates cannot
    #: have changed, but the check is free; PostgreSQL's candidates are row-locked by
    #: ``FOR UPDATE SKIP LOCKED`` (which re-checks after locking), and the predicate there
    #: would steer the planner to the partial ready index, a scan of every queued task.
    claim_recheck = " AND status = 'queued'"
    #: Whether event numbers can become visible out of order (concurrent writers).
    seq_gaps = False
    #: A float parameter where the statement gives its type no context (a CASE branch,
    #: arithmetic): PostgreSQL needs the cast to prepare the statement.
    real = "?"

    def complete_statement(self, update: str) -> str | None:
        """``update`` (a completion ``UPDATE … RETURNING``) made to also append the
        'completed' events of the tasks it finished (one more parameter: the time); None
        where the backend cannot (the completion then appends them from Python)."""
        return None

    #: Whether plain completions go with their COMMIT in one statement (see
    #: :meth:`complete_commit_statement`); an embedded database saves nothing so.
    one_trip_completions = False

    def complete_commit_statement(self, update: str) -> str | None:
        """Like :meth:`complete_statement`, made to also announce the change, for a
        completion sent with its COMMIT (one round trip); None where
        :attr:`one_trip_completions` is off."""
        return None

    #: What the one-trip completion's UPDATE returns: ``tasks.*`` where
    #: :meth:`complete_commit_statement` announces a finished task's whole record.
    completion_returning: str | None = None

    def lease_statement(self, set_sql: str, n_ids: int) -> str | None:
        """Like :meth:`claim_statement` for ``n_ids`` tasks picked already (their ids are
        parameters after the SET's)."""
        return None

    def claim_statement(self, pick: str, set_sql: str) -> str | None:
        """One statement that picks (``pick``), leases (``set_sql``), appends the 'claimed'
        events and announces them, returning the claimed rows; None where the backend
        cannot (the claim then appends its events from Python)."""
        return None

    def append_json(self, column: str) -> str:
        """Expression appending the JSON value of the next parameter to a JSON array column."""
        return f"json_insert({column}, '$[#]', json(?))"

    def json_text(self, column: str, key: str) -> str:
        """Expression for a top-level text field of a JSON column."""
        return f"json_extract({column}, '$.{key}')"

    def json_array_has(self, column: str) -> str:
        """Condition: the JSON array column contains the next parameter."""
        return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE value = ?)"

    def json_array_within(self, column: str) -> str:
        """Condition: every element of the JSON array column is in the next parameter's."""
        return (
            f"NOT EXISTS (SELECT 1 FROM json_each({column}) c "
            "WHERE c.value NOT IN (SELECT value FROM json_each(?)))"
        )

    #: Runs of at least this many alike tasks in one insert (a bulk submit of one shape)
    #: go through :meth:`Cursor.insert_alike`; None: every task as a whole row.
    alike_min_rows: int | None = 16

    #: A statement that serialises limited claims (PostgreSQL); SQLite's writers already are.
    flow_lock = ""

    def json_rows(self, select: str, columns: Sequence[str]) -> str:
        """Expression: the rows of ``select`` as the text of a JSON array of objects."""
        fields = ", ".join(f"'{c}', {c}" for c in columns)
        return f"(SELECT json_group_array(json_object({fields})) FROM ({select}))"

    def children_json(self, alias: str) -> str:
        """Expression: JSON array text of the ids of the tasks whose parent is ``alias``."""
        return (
            "(SELECT json_group_array(id) FROM (SELECT id FROM tasks "
            f"WHERE parent_id = {alias}.id ORDER BY id))"
        )

    def values(self, rows: int, columns: int) -> str:
        """A VALUES list aliased ``c`` whose columns are ``column1``, ``column2``, …"""
        row = "(" + ", ".join("?" * columns) + ")"
        return f"(VALUES {', '.join([row] * rows)}) AS c"


class SqlStore(AgentsSql, CacheSql, FlowSql, ReviewSql, SchedulesSql):
    """The store logic shared by every SQL backend (see :class:`offload.ports.store.Store`).

    Each public method runs one transaction through :meth:`_write` or :meth:`_read`, which a
    backend provides together with connections, migrations and change notification.
    """

    url: str
    d: Dialect = Dialect()

    def __init__(
        self,
        url: str,
        *,
        aging_interval_s: float = DEFAULT_AGING_INTERVAL_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.aging = aging_interval_s
        self.rng = rng
        #: How long a hole in the event numbering holds a feed back (see :meth:`_open_gap`).
        self.gap_wait_s = 2.0
        self._gaps: dict[int, float] = {}
        self._fair_cursor: dict[str, str] = {}
        self._claim_sqls: dict[tuple[Dialect, bool, int | None, bool], _ClaimSql] = {}

    # ------------------------------------------------------------------ backend hooks
    # _run, _write and _read come from each backend (see storage.hooks.BackendHooks).
    def _write_lax(self, fn: Callable[..., R], *args: Any) -> R:
        """A write whose loss in a database crash loses nothing: claims and lease renewals.

        If such a commit vanished, the task is simply still queued (or its lease expires)
        and runs again, which at-least-once delivery allows. Backends may commit these
        without waiting for the disk; the default is an ordinary write.
        """
        return self._write(fn, *args)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _event(
        cur: Cursor,
        task_id: str,
        at: float,
        kind: str,
        actor: str | None = None,
        data: Any = None,
    ) -> None:
        cur.hold(_EVENT_SQL, (task_id, at, kind, actor, dumps(data) if data is not None else None))
        cur.appended((kind,))

    def _fetch(self, cur: Cursor, task_id: str, *, lock: bool = False) -> Row | None:
        # `lock` takes the row lock (PostgreSQL) before a read-then-decide step, so two
        # transactions resolving the same dependent or parent cannot both miss the other.
        return cur.execute(
            f"SELECT * FROM tasks WHERE id = ?{self.d.for_update if lock else ''}", (task_id,)
        ).fetchone()

    def heard_finished(self, task_id: str, since: int) -> Task | None:
        """A finished record carried by a notification (see the protocol); by default no
        notification carries one (an embedded database reads its rows cheaply)."""
        return None

    def _task(self, cur: Cursor, task_id: str, owner: str | None = None) -> Task:
        # One statement (one round trip on PostgreSQL) for the record and its children.
        row = cur.execute(
            f"SELECT t.*, {self.d.children_json('t')} AS children_ids FROM tasks t WHERE id = ?",
            (task_id,),
            prepare=True,
        ).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise NotFound("task", task_id)
        return row_to_task(row, loads(row.pop("children_ids")) or [])

    def _ready_status(self, run_at: float | None, now: float) -> Status:
        return Status.SCHEDULED if run_at is not None and run_at > now else Status.QUEUED

    def _set_ready(
        self,
        cur: Cursor,
        task_id: str,
        row: Row,
        now: float,
        kind: str = "status_changed",
        actor: str | None = None,
        extra_sql: str = "",
        extra_args: tuple[Any, ...] = (),
    ) -> Status:
        """Move a task to queued (or scheduled when its run_at is ahead)."""
        target = self._ready_status(row["run_at"], now)
        ready_at = max(row["run_at"] or now, now)
        cur.execute(
            f"UPDATE tasks SET status = ?, queued_at = ?, sort_key = ?, updated_at = ?, "
            f"paused_from = NULL{extra_sql} WHERE id = ?",
            (
                target.value,
                ready_at,
                sort_key(ready_at, row["priority"], self.aging),
                now,
                *extra_args,
                task_id,
            ),
        )
        self._event(cur, task_id, now, kind, actor, {"from": row["status"], "to": target.value})
        return target

    # ------------------------------------------------------------------ insert
    async def insert_tasks(self, tasks: Sequence[Task], now: float) -> list[Task]:
        """Insert all or none (see the protocol)."""
        tasks = list(tasks)
        try:
            return await self._run(self._write, self._insert_tasks, tasks, now)
        except CommittedBefore:
            # The insert landed though the connection dropped before saying so: answer
            # with what is stored rather than an error that would make the caller submit
            # the same work again.
            return await self._run(self._read, self._stored, tasks)

    def _stored(self, cur: Cursor, tasks: list[Task]) -> list[Task]:
        """The stored records of an insert that committed (idempotent ones by their key)."""
        out = []
        for t in tasks:
            task_id = t.id
            if t.idempotency_key is not None:
                task_id = cur.execute(
                    "SELECT id FROM tasks WHERE coalesce(owner, '') = ? AND idempotency_key = ?",
                    (t.owner or "", t.idempotency_key),
                ).scalar()
            out.append(self._task(cur, task_id))
        return out

    def _insert_tasks(self, cur: Cursor, tasks: list[Task], now: float) -> list[Task]:
        out: list[Task] = []
        batch: dict[str, Task] = {}
        edge_states: dict[str, dict[str, str]] = {}
        new: list[tuple[Task, float]] = []
        batch_keys: Counter[str] = Counter()
        upstream = sorted({d.task_id for t in tasks for d in t.depends_on} - {t.id for t in tasks})
        if upstream and self.d.for_update:
            # Lock the existing upstream rows before reading them: a completion running now
            # either waits and then sees the new dependents (n_dependents, raised below) or
            # has committed and is seen. Read unlocked, an upstream could complete in
            # between, unaware of a dependent that would then wait for it forever. Id order,
            # as completions lock theirs: concurrent submits and completions rarely deadlock.
            marks = ", ".join("?" * len(upstream))
            cur.execute(
                f"SELECT id FROM tasks WHERE id IN ({marks}) ORDER BY id{self.d.for_update}",
                upstream,
            )
        for given in tasks:
            t = given
            if t.idempotency_key is not None:
                existing = cur.execute(
                    "SELECT id FROM tasks WHERE coalesce(owner, '') = ? AND idempotency_key = ?",
                    (t.owner or "", t.idempotency_key),
                ).fetchone()
                prior = next(
                    (
                        b
                        for b in batch.values()
                        if b.owner == t.owner and b.idempotency_key == t.idempotency_key
                    ),
                    None,
                )
                if prior is not None:
                    out.append(prior)
                    continue
                if existing is not None:
                    out.append(self._task(cur, existing["id"]))
                    continue
            if t.cache_key is not None and t.status is Status.QUEUED:
                hit, cached = self._cache_get(cur, t.cache_key, now)
                if hit:
                    # Created already done: same result, no handler run.
                    t.status, t.result, t.cache_hit, t.progress = (
                        Status.COMPLETED,
                        loads(cached),
                        True,
                        100.0,
                    )
                    t.queued_at, t.started_at, t.finished_at = None, dt(now), dt(now)
                    t.actual_duration_s = 0.0
            if t.status is Status.QUEUED:
                t, edge_states[t.id] = self._initial_state(cur, t, batch, now)
                if t.limit_key is not None and t.status is not Status.CANCELLED:
                    reason = self._apply_strategy(cur, t, now, batch_keys[t.limit_key])
                    if reason is not None:
                        err = ErrorInfo(
                            type="ConcurrencyLimit", message=reason, retryable=False, at=dt(now)
                        )
                        t.status, t.error, t.errors = Status.CANCELLED, err, [err]
                        t.finished_at, t.queued_at = dt(now), None
            order = 0.0
            if t.status in (Status.QUEUED, Status.SCHEDULED):
                order = sort_key(max(ts_or(t.run_at, now), now), t.priority, self.aging)
            new.append((t, order))
            batch[t.id] = t
            if t.limit_key is not None and t.status is not Status.CANCELLED:
                batch_keys[t.limit_key] += 1
            out.append(t)
        if new:
            self._append_new(cur, new, now)
        edges: list[tuple[Any, ...]] = []
        upstream_counts: dict[str, int] = {}
        for t in batch.values():
            for d in t.depends_on:
                state = edge_states.get(t.id, {}).get(d.task_id, EdgeState.WAIT.value)
                edges.append(
                    (
                        t.id,
                        d.task_id,
                        d.on.value,
                        d.when.model_dump_json() if d.when else None,
                        state,
                    )
                )
                upstream_counts[d.task_id] = upstream_counts.get(d.task_id, 0) + 1
        if edges:
            cur.executemany("INSERT INTO task_deps VALUES (?, ?, ?, ?, ?)", edges)
            cur.executemany(
                "UPDATE tasks SET n_dependents = n_dependents + ? WHERE id = ?",
                [(n, i) for i, n in upstream_counts.items()],
            )
        return out

    def _append_new(self, cur: Cursor, new: list[tuple[Task, float]], now: float) -> None:
        """The rows and 'created' events of new tasks (each with its ``sort_key``), in order.

        A run of tasks alike (a bulk submit of one shape: equal in all but the
        :data:`ALIKE_VARYING` columns) goes as its shared values and what differs per task
        where the backend takes that (:attr:`Dialect.alike_min_rows`)."""
        least = self.d.alike_min_rows
        memo: dict[Any, Any] = {}
        created_data: dict[tuple[Status, str, bool], str] = {}
        rows: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []

        def created(t: Task) -> str:
            # One text per (status, type, cache hit) in a batch, not one dumps per task.
            shape = (t.status, t.type, t.cache_hit)
            data = created_data.get(shape)
            if data is None:
                data = created_data[shape] = dumps(
                    {"status": t.status.value, "type": t.type, "cache_hit": True}
                    if t.cache_hit
                    else {"status": t.status.value, "type": t.type}
                )
            return data

        def flush() -> None:
            if rows:
                cur.insert_rows("tasks", TASK_INSERT_COLUMNS, rows)
                insert_events(cur, events)
                rows.clear()
                events.clear()

        i, n = 0, len(new)
        while i < n:
            end = i + 1
            if least is not None and n - i >= least:
                key = alike_key(*new[i])
                while end < n and alike_key(*new[end]) == key:
                    end += 1
            first, order = new[i]
            if least is not None and end - i >= least:
                flush()
                whole = task_to_row(first, memo, order)
                shared = {
                    c: v for c, v in zip(TASK_INSERT_COLUMNS, whole, strict=True)
                    if c not in ALIKE_VARYING
                }  # fmt: skip
                cur.insert_alike(
                    shared,
                    [varying_row(t) for t, _ in new[i:end]],
                    (now, first.requester.id, created(first)),
                )
            else:
                for t, order in new[i:end]:
                    rows.append(task_to_row(t, memo, order))
                    events.append((t.id, now, "created", t.requester.id, created(t)))
            i = end
        flush()

    def _initial_state(
        self, cur: Cursor, t: Task, batch: dict[str, Task], now: float
    ) -> tuple[Task, dict[str, str]]:
        """Blocked, scheduled, queued, or cancelled when a dependency already cannot hold.

        Also returns each dependency edge's state, keyed by upstream id.
        """
        waiting = False
        states: dict[str, str] = {}
        if not t.depends_on:
            # The common case, without pydantic's attribute hooks (the service built these
            # records for this insert; setting fields in place is safe).
            at = ts_or(t.run_at, None)
            t.__dict__["status"] = self._ready_status(at, now)
            t.__dict__["queued_at"] = dt(now if at is None or at <= now else at)
            return t, states
        for d in t.depends_on:
            if d.task_id == t.id:
                raise DependencyError(f"task {t.id} depends on itself", field="depends_on")
            if d.task_id in batch:
                upstream = batch[d.task_id]
                if upstream.owner != t.owner:
                    raise DependencyError(
                        f"unknown dependency {d.task_id!r}",
                        field="depends_on",
                        details={"task_id": d.task_id},
                    )
                state = edge_state(d.on, d.when, upstream.status, upstream.result)
            else:
                # Locked by _insert_tasks already (see there).
                row = cur.execute(
                    "SELECT status, owner, result FROM tasks WHERE id = ?", (d.task_id,)
                ).fetchone()
                if row is None or (row["owner"] or None) != (t.owner or None):
                    raise DependencyError(
                        f"unknown dependency {d.task_id!r}: no such task (of yours)",
                        field="depends_on",
                        details={"task_id": d.task_id},
                    )
                state = edge_state(d.on, d.when, Status(row["status"]), loads(row["result"]))
            states[d.task_id] = state.value
            if state is EdgeState.IMPOSSIBLE:
                err = ErrorInfo(
                    type="DependencyFailed",
                    message=f"dependency {d.task_id} can no longer satisfy "
                    f"on={d.on.value}" + (" with its condition" if d.when else ""),
                    retryable=False,
                    at=dt(now),
                )
                t.status, t.error, t.errors, t.finished_at = Status.CANCELLED, err, [err], dt(now)
                return t, states
            if state is EdgeState.WAIT:
                waiting = True
        if waiting:
            t.status, t.queued_at = Status.BLOCKED, None
            return t, states
        # The service built these records for this insert; setting fields in place is safe.
        t.status = self._ready_status(ts_or(t.run_at, None), now)
        t.queued_at = dt(max(ts_or(t.run_at, now), now))
        return t, states

    # ------------------------------------------------------------------ reads
    async def get_task(self, task_id: str, owner: str | None = None) -> Task | None:
        """One task with its children ids."""

        def q(cur: Cursor) -> Task | None:
            try:
                return self._task(cur, task_id, owner)
            except NotFound:
                return None

        return await self._run(self._read, q)

    async def list_tasks(self, flt: TaskFilter) -> tuple[list[Task], int]:
        """Newest first, filtered, with the total."""
        where: list[str] = []
        args: list[Any] = []
        # Blank names (`?status=`) select nothing to filter by, not an empty IN ().
        statuses = expand_statuses(flt.status or ())
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args += sorted(s.value for s in statuses)
        for col, val in (
            ("type", flt.type),
            ("assigned_agent", flt.agent_id),
            ("owner", flt.owner),
            ("queue", flt.queue),
            ("parent_id", flt.parent_id),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if flt.tag is not None:
            where.append(self.d.json_array_has("tasks.tags"))
            args.append(flt.tag)
        if flt.search:
            where.append("(title LIKE ? ESCAPE '\\' OR description LIKE ? ESCAPE '\\')")
            pat = (
                "%" + flt.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
            args += [pat, pat]
        clause = ("WHERE " + " AND ".join(where)) if where else ""

        def q(cur: Cursor) -> tuple[list[Task], int]:
            total = cur.execute(f"SELECT count(*) FROM tasks {clause}", args).scalar()
            if flt.limit == 0:
                return [], int(total)
            cur.execute(
                f"SELECT * FROM tasks {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*args, flt.limit, flt.offset],
            )
            return [row_to_task(r) for r in cur.fetchall()], int(total)

        return await self._run(self._read, q)

    async def events(self, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[TaskEvent]:
        """A task's events, oldest first."""

        def q(cur: Cursor) -> list[TaskEvent]:
            rows = cur.execute(
                "SELECT * FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (task_id, after_seq, limit),
            ).fetchall()
            return [row_to_event(r) for r in rows]

        return await self._run(self._read, q)

    async def events_since(
        self, after_seq: int, limit: int = 1000, flt: EventFilter | None = None
    ) -> list[TaskEvent]:
        """Events after ``after_seq`` (every task's, or those ``flt`` selects), oldest first."""
        where = ["e.seq > ?"]
        args: list[Any] = [after_seq]
        if flt is not None:
            for col, val in (("e.task_id", flt.task_id), ("t.type", flt.type),
                             ("t.owner", flt.owner)):  # fmt: skip
                if val is not None:
                    where.append(f"{col} = ?")
                    args.append(val)
            statuses = sorted(s.value for s in expand_statuses(flt.status or ()))
            if statuses:
                where.append(f"t.status IN ({', '.join('?' * len(statuses))})")
                args += statuses

        def q(cur: Cursor) -> list[TaskEvent]:
            cur.execute(
                "SELECT e.*, t.type AS task_type, t.status AS task_status FROM task_events e "
                # LEFT: agent events (agent.registered, agent.offline) name no task.
                f"LEFT JOIN tasks t ON t.id = e.task_id WHERE {' AND '.join(where)} "
                "ORDER BY e.seq LIMIT ?",
                (*args, limit),
            )
            rows = cur.fetchall()
            if rows and self.d.seq_gaps:
                stop = self._open_gap(cur, after_seq, rows[-1]["seq"])
                if stop is not None:
                    rows = [r for r in rows if r["seq"] < stop]
            return [row_to_event(r) for r in rows]

        return await self._run(self._read, q)

    def _open_gap(self, cur: Cursor, after_seq: int, upto: int) -> int | None:
        """The first seq in ``(after_seq, upto]`` that may still appear, if any.

        Where transactions commit concurrently, an event can become visible after one with a
        higher seq: a reader that moved past the hole would never see it. So a feed stops
        before a hole until the hole fills (its transaction commits) or has stayed open for
        :attr:`gap_wait_s`, which means its transaction rolled back and the number is lost.
        """
        gaps = cur.execute(
            "SELECT seq + 1 AS start FROM (SELECT seq, lead(seq) OVER (ORDER BY seq) AS nxt "
            "FROM task_events WHERE seq >= ? AND seq <= ?) s WHERE nxt > seq + 1 ORDER BY seq",
            (after_seq, upto),
        ).fetchall()
        now = time.monotonic()
        for g in gaps:
            first_seen = self._gaps.setdefault(g["start"], now)
            if now - first_seen < self.gap_wait_s:
                return int(g["start"])
        if len(self._gaps) > 10_000:
            # Forget the oldest holes: long decided, they lie behind every live reader.
            for key in sorted(self._gaps)[:5_000]:
                self._gaps.pop(key, None)
        return None

    async def last_event_seq(self) -> int:
        """The newest event's ``seq`` (0 when there are none)."""

        def q(cur: Cursor) -> int:
            return int(cur.execute("SELECT coalesce(max(seq), 0) FROM task_events").scalar())

        return await self._run(self._read, q)

    # ------------------------------------------------------------------ claim
    async def claim(self, req: ClaimRequest, now: float) -> list[Task]:
        """Lease the best eligible tasks (see the protocol)."""
        return await self._run(self._write_lax, self._claim, req, now)

    def _claim_sql(self, tenant: bool, n_types: int | None, limited: bool) -> _ClaimSql:
        """The claim's filter, pick and (where the dialect has one) whole statement for a
        request of this shape, built once: an idle worker claims for every task, and
        building them each time was a fifth of its Python on the way to the database."""
        key = (self.d, tenant, n_types, limited)
        found = self._claim_sqls.get(key)
        if found is not None:
            return found
        filters = ["status = 'queued'", "queue = ?", "(agent_id IS NULL OR agent_id = ?)"]
        if tenant:
            filters.append("owner = ?")
        if n_types is not None:
            filters.append(f"type IN ({', '.join('?' * n_types)})")
        filters.append(f"(caps_key = '' OR {self.d.json_array_within('tasks.capabilities')})")
        # Agents whose work on the task was rejected in review (NULL for nearly every task).
        filters.append(
            f"(excluded_agents IS NULL OR NOT {self.d.json_array_has('tasks.excluded_agents')})"
        )
        where = " AND ".join(filters)
        if not limited:
            # Tasks under limits or needing resources exist only while limits or resources
            # do; a limit created in another process within FLOW_RECHECK_S waits, never leaks.
            where += " AND limit_key IS NULL AND resources IS NULL"
        pick = f"SELECT id FROM tasks WHERE {where} ORDER BY sort_key LIMIT ?{self.d.skip_locked}"
        found = self._claim_sqls[key] = (where, pick, self.d.claim_statement(pick, _CLAIM_SET))
        return found

    def _claim(self, cur: Cursor, req: ClaimRequest, now: float) -> list[Task]:
        self._promote_before_claim(cur, now)
        if req.types is not None and not req.types:
            return []
        base_args: list[Any] = [req.agent_id]
        if req.tenant is not None:
            base_args.append(req.tenant)
        if req.types is not None:
            base_args += req.types
        base_args.append(dumps(req.capabilities))
        base_args.append(req.agent_id)
        queues = list(dict.fromkeys(req.queues))
        lease_id = new_id()
        expires = now + req.lease_ttl_s
        assignment = dumps(
            {
                "agent_id": req.agent_id,
                "collaborators": [],
                "assigned_at": dt(now).isoformat(),  # type: ignore[union-attr]
                "method": "claimed",
            }
        )
        set_sql = _CLAIM_SET
        set_args = (lease_id, req.agent_id, expires, now, now, assignment, req.agent_id)
        limited = self._flow_active(cur)
        where, pick, whole = self._claim_sql(
            req.tenant is not None, None if req.types is None else len(req.types), limited
        )
        event_args = (now, req.agent_id, lease_id, req.agent_id, expires)
        if limited:
            ids = self._claim_limited(cur, where, base_args, queues, req.max, now)
            return self._lease_ids(cur, ids, set_sql, set_args, event_args)
        elif len(queues) == 1 and whole:
            # The usual case on PostgreSQL: pick, lease and log in one statement, sent with
            # the rest of the transaction and its COMMIT: the claim is one round trip.
            rows = cur.finish(
                whole,
                prepare=True,
                args=(queues[0], *base_args, req.max, *set_args, *event_args),
            ).fetchall()
            rows.sort(key=lambda r: (r["sort_key"], r["id"]))
            return [row_to_task(r) for r in rows]
        elif len(queues) == 1:
            # The usual case on SQLite: pick and lease in one statement.
            rows = cur.execute(
                f"WITH c AS ({pick}) {set_sql}WHERE id IN (SELECT id FROM c)"
                f"{self.d.claim_recheck} RETURNING *",
                (queues[0], *base_args, req.max, *set_args),
            ).fetchall()
            rows.sort(key=lambda r: (r["sort_key"], r["id"]))
        else:
            candidates: list[tuple[float, str]] = []
            # One index walk per queue, merged: each walk is O(log n + max).
            for queue in queues:
                found = cur.execute(
                    f"SELECT id, sort_key FROM tasks WHERE {where} "
                    f"ORDER BY sort_key LIMIT ?{self.d.skip_locked}",
                    (queue, *base_args, req.max),
                ).fetchall()
                candidates += [(r["sort_key"], r["id"]) for r in found]
            if not candidates:
                return []
            candidates.sort()
            ids = [c[1] for c in candidates[: req.max]]
            return self._lease_ids(cur, ids, set_sql, set_args, event_args)
        self._log_claims(cur, rows, event_args)
        return [row_to_task(r) for r in rows]

    def _lease_ids(
        self,
        cur: Cursor,
        ids: list[str],
        set_sql: str,
        set_args: tuple[Any, ...],
        event_args: tuple[Any, ...],
    ) -> list[Task]:
        """Lease tasks picked already (in the order of ``ids``) and log their claims."""
        if not ids:
            return []
        leased = self.d.lease_statement(set_sql, len(ids))
        if leased is not None:
            # One statement leases and logs, sent with the COMMIT.
            rows = cur.finish(leased, (*set_args, *ids, *event_args)).fetchall()
        else:
            rows = cur.execute(
                f"{set_sql}WHERE id IN ({', '.join('?' * len(ids))}){self.d.claim_recheck} "
                "RETURNING *",
                (*set_args, *ids),
            ).fetchall()
            self._log_claims(cur, rows, event_args)
        order = {i: n for n, i in enumerate(ids)}
        rows.sort(key=lambda r: order[r["id"]])
        return [row_to_task(r) for r in rows]

    @staticmethod
    def _log_claims(cur: Cursor, rows: list[Row], event_args: tuple[Any, ...]) -> None:
        """The 'claimed' events of leased rows, appended from Python."""
        now, agent_id, lease_id, _, expires = event_args
        insert_events(
            cur,
            [
                (
                    r["id"],
                    now,
                    "claimed",
                    agent_id,
                    dumps(
                        {
                            "lease_id": lease_id,
                            "agent_id": agent_id,
                            "attempt": r["attempt"],
                            "expires_at": expires,
                        }
                    ),
                )
                for r in rows
            ],
        )

    def _promote_before_claim(self, cur: Cursor, now: float) -> None:
        """Make due scheduled tasks claimable; a backend may do it without waiting."""
        self._promote_due(cur, now)

    def _promote_due(self, cur: Cursor, now: float) -> int:
        rows = cur.execute(
            "SELECT * FROM tasks WHERE status = 'scheduled' AND run_at <= ? "
            f"LIMIT 1000{self.d.skip_locked}",
            (now,),
        ).fetchall()
        for r in rows:
            self._set_ready(cur, r["id"], r, now)
        return len(rows)

    # ------------------------------------------------------------------ leases
    async def heartbeat(
        self, leases: Sequence[LeaseRef], ttl_s: float, now: float
    ) -> list[LeaseState]:
        """Extend live leases."""

        def w(cur: Cursor) -> list[LeaseState]:
            live: dict[str, Row] = {}
            refs = list(leases)
            # One fenced UPDATE per chunk: a worker may hold thousands of leases, and one
            # statement per lease costs a round trip each on PostgreSQL.
            for start in range(0, len(refs), 500):
                chunk = refs[start : start + 500]
                values = [v for ref in chunk for v in (ref.task_id, ref.lease_id)]
                rows = cur.execute(
                    f"UPDATE tasks SET lease_expires_at = ? FROM {self.d.values(len(chunk), 2)} "
                    f"WHERE tasks.id = c.column1 AND tasks.lease_id = c.column2 "
                    f"AND tasks.status IN {_LEASED_SQL} "
                    "RETURNING tasks.id, tasks.cancel_requested, tasks.pause_requested",
                    (now + ttl_s, *values),
                ).fetchall()
                for row in rows:
                    live[row["id"]] = row
            expires = dt(now + ttl_s)
            out = []
            for ref in refs:
                hit = live.get(ref.task_id)
                if hit is None:
                    out.append(LeaseState(task_id=ref.task_id, lease_id=ref.lease_id, valid=False))
                else:
                    out.append(
                        LeaseState(
                            task_id=ref.task_id,
                            lease_id=ref.lease_id,
                            valid=True,
                            expires_at=expires,
                            cancel_requested=bool(hit["cancel_requested"]),
                            pause_requested=bool(hit["pause_requested"]),
                        )
                    )
            return out

        return await self._run(self._write_lax, w)

    def _find_leased(self, cur: Cursor, task_id: str, lease_id: str) -> Row | None:
        """The task if ``lease_id`` is its live lease (row-locked on PostgreSQL), else None."""
        return cur.execute(
            "SELECT * FROM tasks WHERE id = ? AND lease_id = ? "
            f"AND status IN {_LEASED_SQL}{self.d.for_update}",
            (task_id, lease_id),
        ).fetchone()

    def _leased_row(self, cur: Cursor, task_id: str, lease_id: str) -> Row:
        row = self._find_leased(cur, task_id, lease_id)
        if row is None:
            if self._fetch(cur, task_id) is None:
                raise NotFound("task", task_id)
            raise StaleLease(task_id, lease_id)
        return row

    async def progress(self, update: ProgressUpdate, now: float) -> LeaseState:
        """Progress, log lines, checkpoints and artifacts."""

        def w(cur: Cursor) -> LeaseState:
            row = self._leased_row(cur, update.task_id, update.lease_id)
            sets: list[str] = ["updated_at = ?"]
            args: list[Any] = [now]
            actor = row["lease_holder"]
            if update.progress is not None or update.current_step is not None:
                if update.progress is not None:
                    sets.append("progress = ?")
                    args.append(update.progress)
                if update.current_step is not None:
                    sets.append("current_step = ?")
                    args.append(update.current_step)
                self._event(
                    cur,
                    update.task_id,
                    now,
                    "progress",
                    actor,
                    {"progress": update.progress, "current_step": update.current_step},
                )
            if update.log is not None:
                self._event(
                    cur,
                    update.task_id,
                    now,
                    "log",
                    actor,
                    {"message": update.log, "level": update.level},
                )
            if update.checkpoint is not None:
                cps = [c for c in loads(row["checkpoints"]) if c["name"] != update.checkpoint.name]
                cps.append(update.checkpoint.model_dump(mode="json"))
                sets.append("checkpoints = ?")
                args.append(dumps(cps))
                self._event(
                    cur, update.task_id, now, "checkpoint", actor, {"name": update.checkpoint.name}
                )
            if update.artifact is not None:
                arts = [*loads(row["artifacts"]), update.artifact.model_dump(mode="json")]
                sets.append("artifacts = ?")
                args.append(dumps(arts))
                self._event(
                    cur,
                    update.task_id,
                    now,
                    "artifact",
                    actor,
                    {"name": update.artifact.name, "size": update.artifact.size},
                )
            cur.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE id = ?", (*args, update.task_id))
            return LeaseState(
                task_id=update.task_id,
                lease_id=update.lease_id,
                valid=True,
                expires_at=dt(row["lease_expires_at"]),
                cancel_requested=bool(row["cancel_requested"]),
                pause_requested=bool(row["pause_requested"]),
            )

        return await self._run(self._write, w)

    # ------------------------------------------------------------------ outcomes
    async def complete(self, items: Sequence[Completion], now: float) -> list[Ack]:
        """Successful attempts, batched."""
        items = list(items)
        if not self.d.one_trip_completions:
            return await self._run(self._write, self._complete, items, now)
        # Client/server: first the completions that need nothing but their own row (no
        # dependents, parent, review or cache entry), sent with COMMIT in one round trip;
        # then the rest, if any, the full way. Each acknowledgement follows its own commit.
        acks = await self._run(self._write, self._complete_plain, items, now)
        rest = [c for c in items if c.task_id not in acks]
        if rest:
            for ack in await self._run(self._write, self._complete, rest, now):
                acks[ack.task_id] = ack
        return [acks[c.task_id] for c in items]

    def _completion_update(self, rows: int, where: str = "", returning: str | None = None) -> str:
        # A task that requires review (stored `review` non-NULL) goes to `reviewing`,
        # keeping its result; it is not finished until a reviewer approves.
        real = self.d.real
        return (
            "UPDATE tasks SET status = CASE WHEN tasks.review IS NULL THEN 'completed' "
            "ELSE 'reviewing' END, result = c.column3, error = NULL, "
            f"progress = 100, finished_at = CASE WHEN tasks.review IS NULL THEN {real} END, "
            f"actual_duration_s = {real} - started_at, "
            f"updated_at = {real}, lease_id = NULL, lease_expires_at = NULL "
            f"FROM {self.d.values(rows, 3)} "
            f"WHERE tasks.id = c.column1 AND tasks.lease_id = c.column2 "
            f"AND tasks.status IN {_LEASED_SQL}{where} "
            "RETURNING "
            + (
                returning
                or "tasks.id, tasks.parent_id, tasks.n_dependents, tasks.lease_holder, "
                "tasks.attempt, tasks.review, tasks.type, tasks.cache_key, tasks.cache_ttl_s, "
                "tasks.limit_key, tasks.resources"
            )
        )

    def _complete_plain(self, cur: Cursor, items: list[Completion], now: float) -> dict[str, Ack]:
        """Complete the tasks of ``items`` that need no follow-up, committing in the same
        statement; acknowledgements by task id (the others are left for :meth:`_complete`).

        The conditions are checked under the UPDATE's row locks, so a dependent inserted
        concurrently either raised ``n_dependents`` first (and this skips the task) or
        sees it completed."""
        values: list[Any] = []
        # In id order, the order a submit locks upstream rows in (see _insert_tasks): two
        # transactions locking the same rows then rarely wait for each other (a deadlock
        # is retried, but costs PostgreSQL's deadlock_timeout first).
        for c in sorted(items, key=lambda c: c.task_id):
            try:
                values += (c.task_id, c.lease_id, dumps(c.result) if c.result is not None else None)
            except TypeError:
                continue  # refused with its reason by the full path
        if not values:
            return {}
        update = self._completion_update(
            len(values) // 3,
            " AND tasks.review IS NULL AND tasks.cache_key IS NULL "
            "AND tasks.n_dependents = 0 AND tasks.parent_id IS NULL",
            self.d.completion_returning,
        )
        whole = self.d.complete_commit_statement(update)
        assert whole is not None
        # An idle worker completes one task at a time: planning that statement afresh cost
        # more than running it. Batches vary in size; each size would be its own statement.
        small = len(values) <= 3 * PREPARED_COMPLETIONS
        rows = cur.finish(whole, (now, now, now, *values, now), prepare=small).fetchall()
        return {r["id"]: Ack.accepted(r["id"], Status.COMPLETED) for r in rows}

    def _complete(self, cur: Cursor, items: list[Completion], now: float) -> list[Ack]:
        values: list[Any] = []
        refused: dict[str, Ack] = {}
        for c in sorted(items, key=lambda c: c.task_id):
            try:
                result = dumps(c.result) if c.result is not None else None
            except TypeError as exc:
                refused[c.task_id] = Ack(
                    task_id=c.task_id,
                    ok=False,
                    code="invalid_input",
                    message=f"result is not JSON-serialisable: {exc}",
                )
                continue
            values += (c.task_id, c.lease_id, result)
        done: dict[str, Row] = {}
        logged_in_sql = False
        # One fenced UPDATE per chunk (SQLite caps bound parameters at 32,766).
        for start in range(0, len(values), 900):
            chunk = values[start : start + 900]
            update = self._completion_update(len(chunk) // 3)
            whole = self.d.complete_statement(update)
            rows = cur.execute(
                whole or update, (now, now, now, *chunk, *((now,) if whole else ()))
            ).fetchall()
            logged_in_sql = whole is not None
            for row in rows:
                done[row["id"]] = row
        cacheable = [r for r in done.values() if r["cache_key"] and r["review"] is None]
        if cacheable:
            results = {values[i]: values[i + 2] for i in range(0, len(values), 3)}
            self._cache_put(cur, cacheable, results, now)
        reviewing = [r for r in done.values() if r["review"] is not None]
        if reviewing:
            self._request_reviews(cur, reviewing, now)
        finished = [r for r in done.values() if r["review"] is None]
        if logged_in_sql:
            if finished:
                cur.appended(("completed",))
        else:
            insert_events(
                cur,
                [
                    (r["id"], now, "completed", r["lease_holder"], dumps({"attempt": r["attempt"]}))
                    for r in finished
                ],
            )
        acks: list[Ack] = []
        for c in items:
            hit = done.get(c.task_id)
            if hit is not None:
                # Plain construction: pydantic's model_construct is slower for small models.
                status = Status.COMPLETED if hit["review"] is None else Status.REVIEWING
                acks.append(Ack.accepted(c.task_id, status))
            else:
                acks.append(refused.get(c.task_id) or self._refusal(cur, c.task_id, c.lease_id))
        for row in done.values():
            # Dependents of a task under review wait for the decision.
            if (row["n_dependents"] or row["parent_id"]) and row["review"] is None:
                self._after_terminal(cur, row["id"], now)
        return acks

    def _refusal(self, cur: Cursor, task_id: str, lease_id: str) -> Ack:
        row = cur.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return Ack(
                task_id=task_id, ok=False, code="not_found", message=f"task {task_id!r} not found"
            )
        err = StaleLease(task_id, lease_id)
        return Ack(
            task_id=task_id,
            ok=False,
            status=Status(row["status"]),
            code=err.code,
            message=err.message,
        )

    async def fail(self, items: Sequence[Failure], now: float) -> list[Ack]:
        """Failed attempts, batched; the retry rule decides."""

        def w(cur: Cursor) -> list[Ack]:
            acks = []
            for f in items:
                row = self._find_leased(cur, f.task_id, f.lease_id)
                if row is None:
                    acks.append(self._refusal(cur, f.task_id, f.lease_id))
                    continue
                status = self._end_attempt(
                    cur, row, f.error, now, f.retry_delay_s, actor=row["lease_holder"]
                )
                acks.append(Ack.accepted(f.task_id, status))
            return acks

        return await self._run(self._write, w)

    def _end_attempt(
        self,
        cur: Cursor,
        row: Row,
        error: ErrorInfo,
        now: float,
        delay_s: float | None,
        actor: str | None,
        lease_lost: bool = False,
    ) -> Status:
        """Decide and apply what follows a failed, expired or handed-back attempt."""
        task_id = row["id"]
        current = Status(row["status"])
        err = error.model_copy(update={"attempt": row["attempt"], "at": dt(now)})
        errors = [*loads(row["errors"]), err.model_dump(mode="json")][-50:]
        clear = "lease_id = NULL, lease_expires_at = NULL, updated_at = ?, errors = ?, error = ?"
        clear_args = (now, dumps(errors), err.model_dump_json())
        if row["cancel_requested"]:
            check_transition(task_id, current, Status.CANCELLED)
            cur.execute(
                f"UPDATE tasks SET status = 'cancelled', finished_at = ?, {clear} WHERE id = ?",
                (now, *clear_args, task_id),
            )
            self._event(cur, task_id, now, "cancelled", actor, {"reason": "cancel requested"})
            self._after_terminal(cur, task_id, now)
            return Status.CANCELLED
        if row["pause_requested"]:
            check_transition(task_id, current, Status.PAUSED)
            # A pause does not spend an attempt.
            cur.execute(
                f"UPDATE tasks SET status = 'paused', paused_from = 'queued', "
                f"pause_requested = 0, attempt = {self.d.greatest}(attempt - 1, 0), {clear} "
                "WHERE id = ?",
                (*clear_args, task_id),
            )
            self._event(
                cur, task_id, now, "status_changed", actor, {"from": current.value, "to": "paused"}
            )
            return Status.PAUSED
        if lease_lost:
            self._event(
                cur,
                task_id,
                now,
                "lease_expired",
                actor,
                {"lease_id": row["lease_id"], "attempt": row["attempt"]},
            )
        decision = decide_failure(
            attempt=row["attempt"],
            max_retries=row["max_retries"],
            policy=RetryPolicy.model_validate(loads(row["retry"]) or {}),
            retryable=error.retryable,
            now=now,
            deadline=row["deadline"],
            requested_delay_s=delay_s,
            rng=self.rng,
        )
        if decision.outcome is Outcome.RETRY:
            run_at = now + decision.delay_s
            target = Status.SCHEDULED if decision.delay_s > 0 else Status.QUEUED
            check_transition(task_id, current, target)
            cur.execute(
                f"UPDATE tasks SET status = ?, run_at = ?, queued_at = ?, sort_key = ?, {clear} "
                "WHERE id = ?",
                (
                    target.value,
                    run_at if decision.delay_s > 0 else row["run_at"],
                    run_at,
                    sort_key(run_at, row["priority"], self.aging),
                    *clear_args,
                    task_id,
                ),
            )
            self._event(
                cur,
                task_id,
                now,
                "retry_scheduled",
                actor,
                {
                    "attempt": row["attempt"],
                    "delay_s": round(decision.delay_s, 3),
                    "error": err.type,
                },
            )
            return target
        check_transition(task_id, current, Status.FAILED)
        cur.execute(
            f"UPDATE tasks SET status = 'failed', finished_at = ?, "
            f"actual_duration_s = ? - started_at, {clear} WHERE id = ?",
            (now, now, *clear_args, task_id),
        )
        self._event(
            cur,
            task_id,
            now,
            "failed",
            actor,
            {
                "attempt": row["attempt"],
                "error": err.type,
                "message": err.message,
                "reason": decision.reason,
            },
        )
        self._after_terminal(cur, task_id, now)
        return Status.FAILED

    async def release(self, leases: Sequence[LeaseRef], now: float) -> list[Ack]:
        """Hand leases back without spending an attempt."""

        def w(cur: Cursor) -> list[Ack]:
            acks = []
            for ref in leases:
                row = self._find_leased(cur, ref.task_id, ref.lease_id)
                if row is None:
                    acks.append(self._refusal(cur, ref.task_id, ref.lease_id))
                    continue
                if row["cancel_requested"] or row["pause_requested"]:
                    err = ErrorInfo(
                        type="Cancelled", message="released while stopping", retryable=False
                    )
                    status = self._end_attempt(cur, row, err, now, None, row["lease_holder"])
                else:
                    cur.execute(
                        "UPDATE tasks SET lease_id = NULL, lease_expires_at = NULL, "
                        f"attempt = {self.d.greatest}(attempt - 1, 0) WHERE id = ?",
                        (ref.task_id,),
                    )
                    status = self._set_ready(
                        cur, ref.task_id, row, now, "released", row["lease_holder"]
                    )
                acks.append(Ack.accepted(ref.task_id, status))
            return acks

        return await self._run(self._write, w)

    # ------------------------------------------------------------------ cascades
    def _after_terminal(self, cur: Cursor, task_id: str, now: float) -> None:
        """Resolve dependents and the workflow parent of a task that just became terminal."""
        pending = [task_id]
        while pending:
            tid = pending.pop()
            row = cur.execute(
                "SELECT id, status, result, parent_id, n_dependents FROM tasks WHERE id = ?", (tid,)
            ).fetchone()
            if row is None:
                continue
            if row["n_dependents"]:
                pending += self._resolve_dependents(cur, row, now)
            if row["parent_id"]:
                parent = self._maybe_finish_parent(cur, row["parent_id"], now)
                if parent is not None:
                    pending.append(parent)

    def _resolve_dependents(self, cur: Cursor, up: Row, now: float) -> list[str]:
        """Update edges from ``up``; promote or cancel dependents. Returns newly terminal ids."""
        status = Status(up["status"])
        result = loads(up["result"])
        newly_terminal: list[str] = []
        # Dependents are locked below in id order, the order submits and completions lock
        # tasks in: two upstreams finishing at once do not wait for each other in a cycle.
        edges = cur.execute(
            "SELECT task_id, on_status, cond FROM task_deps "
            "WHERE depends_on_id = ? AND state = 'wait' ORDER BY task_id",
            (up["id"],),
        ).fetchall()
        for e in edges:
            cond = Condition.model_validate_json(e["cond"]) if e["cond"] else None
            state = edge_state(DependencyOn(e["on_status"]), cond, status, result)
            if state is EdgeState.WAIT:
                continue
            cur.execute(
                "UPDATE task_deps SET state = ? WHERE task_id = ? AND depends_on_id = ?",
                (state.value, e["task_id"], up["id"]),
            )
            down = self._fetch(cur, e["task_id"], lock=True)
            if down is None or Status(down["status"]) in TERMINAL:
                continue
            if state is EdgeState.IMPOSSIBLE:
                why = (
                    f"dependency {up['id']} ended {status.value}; this task needed "
                    f"on={e['on_status']}" + (" with its condition" if cond else "")
                )
                if self._cancel_now(
                    cur, down, now, "system", why, "DependencyFailed", upstream=up["id"]
                ):
                    newly_terminal.append(down["id"])
                continue
            still = cur.execute(
                "SELECT count(*) FROM task_deps WHERE task_id = ? AND state != 'satisfied'",
                (down["id"],),
            ).scalar()
            if still == 0 and down["status"] == Status.BLOCKED.value:
                self._promote_blocked(cur, down, now)
        return newly_terminal

    def _promote_blocked(self, cur: Cursor, down: Row, now: float) -> None:
        """All dependencies hold: resolve ``$ref`` inputs and make the task ready."""
        task_input = loads(down["input"])
        extra_sql: str = ""
        extra_args: tuple[Any, ...] = ()
        if down["parent_id"] and find_refs(task_input):
            siblings = {
                r["ref"]: {"result": loads(r["result"]), "status": r["status"], "id": r["id"]}
                for r in cur.execute(
                    "SELECT id, ref, status, result FROM tasks "
                    "WHERE parent_id = ? AND ref IS NOT NULL",
                    (down["parent_id"],),
                )
            }
            resolved = resolve_refs(task_input, siblings.get)
            extra_sql, extra_args = ", input = ?", (dumps(resolved),)
        self._set_ready(cur, down["id"], down, now, extra_sql=extra_sql, extra_args=extra_args)

    def _cancel_now(
        self,
        cur: Cursor,
        row: Row,
        now: float,
        actor: str | None,
        reason: str,
        error_type: str = "Cancelled",
        upstream: str | None = None,
    ) -> bool:
        """Cancel a non-terminal task now (or ask its holder). True when it became terminal."""
        current = Status(row["status"])
        if current in TERMINAL:
            return False
        if current in LEASED and row["lease_id"] is not None:
            cur.execute(
                "UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                (now, row["id"]),
            )
            self._event(cur, row["id"], now, "cancel_requested", actor, {"reason": reason})
            return False
        err = ErrorInfo(
            type=error_type, message=reason, retryable=False, at=dt(now), upstream=upstream
        )
        details = err.model_dump(mode="json")
        cur.execute(
            "UPDATE tasks SET status = 'cancelled', finished_at = ?, updated_at = ?, "
            f"error = ?, errors = {self.d.append_json('errors')}, "
            "lease_id = NULL, lease_expires_at = NULL WHERE id = ?",
            (now, now, dumps(details), dumps(details), row["id"]),
        )
        self._event(
            cur,
            row["id"],
            now,
            "cancelled",
            actor,
            {"reason": reason, "error": error_type, "from": current.value},
        )
        # A cancelled workflow parent takes its unfinished children with it.
        for child in cur.execute(
            f"SELECT * FROM tasks WHERE parent_id = ? AND status NOT IN {_TERMINAL_SQL}",
            (row["id"],),
        ).fetchall():
            if self._cancel_now(cur, child, now, actor, f"workflow {row['id']} was cancelled"):
                self._after_terminal(cur, child["id"], now)
        return True

    def _cancel_for_limit(self, cur: Cursor, task_id: str, status: str, now: float) -> None:
        row = self._fetch(cur, task_id, lock=True)
        if row is not None and self._cancel_now(
            cur, row, now, "system",
            "cancelled in favour of a newer task (concurrency strategy cancel_in_progress)",
            error_type="ConcurrencyLimit",
        ):  # fmt: skip
            self._after_terminal(cur, task_id, now)

    def _maybe_finish_parent(self, cur: Cursor, parent_id: str, now: float) -> str | None:
        """Complete or fail a workflow parent once every child is terminal."""
        parent = self._fetch(cur, parent_id, lock=True)
        if parent is None or Status(parent["status"]) in TERMINAL:
            return None
        open_children = cur.execute(
            f"SELECT count(*) FROM tasks WHERE parent_id = ? AND status NOT IN {_TERMINAL_SQL}",
            (parent_id,),
        ).scalar()
        done = cur.execute(
            "SELECT ref, id, status, result, error FROM tasks WHERE parent_id = ? ORDER BY id",
            (parent_id,),
        ).fetchall()
        total = len(done)
        finished = total - open_children
        progress = round(100.0 * finished / total, 1) if total else 100.0
        if open_children:
            cur.execute(
                "UPDATE tasks SET progress = ?, updated_at = ? WHERE id = ?",
                (progress, now, parent_id),
            )
            return None
        results = {
            (r["ref"] or r["id"]): loads(r["result"])
            for r in done
            if r["status"] == Status.COMPLETED.value
        }
        failed = [r for r in done if r["status"] == Status.FAILED.value]
        if failed:
            first = failed[0]
            child_err = loads(first["error"]) or {}
            err = ErrorInfo(
                type="ChildFailed",
                retryable=False,
                at=dt(now),
                message=f"child {first['ref'] or first['id']} failed: "
                f"{child_err.get('message', '')}",
            )
            cur.execute(
                "UPDATE tasks SET status = 'failed', result = ?, error = ?, "
                f"errors = {self.d.append_json('errors')}, finished_at = ?, "
                "actual_duration_s = ? - created_at, updated_at = ?, progress = ? "
                "WHERE id = ?",
                (
                    dumps(results),
                    err.model_dump_json(),
                    err.model_dump_json(),
                    now,
                    now,
                    now,
                    progress,
                    parent_id,
                ),
            )
            self._event(
                cur,
                parent_id,
                now,
                "failed",
                "system",
                {"error": "ChildFailed", "child": first["id"]},
            )
        else:
            cur.execute(
                "UPDATE tasks SET status = 'completed', result = ?, finished_at = ?, "
                "actual_duration_s = ? - created_at, updated_at = ?, progress = 100 "
                "WHERE id = ?",
                (dumps(results), now, now, now, parent_id),
            )
            self._event(cur, parent_id, now, "completed", "system", {"children": total})
        return parent_id

    # ------------------------------------------------------------------ control
    async def cancel(
        self, task_id: str, now: float, *, owner: str | None, actor: str | None, reason: str | None
    ) -> Task:
        """Cancel now, or ask the holder."""

        def w(cur: Cursor) -> Task:
            row = self._owned(cur, task_id, owner)
            current = Status(row["status"])
            if current is Status.CANCELLED:
                return self._task(cur, task_id)
            check_transition(task_id, current, Status.CANCELLED)
            if self._cancel_now(cur, row, now, actor, reason or "cancelled by request"):
                self._after_terminal(cur, task_id, now)
            return self._task(cur, task_id)

        return await self._run(self._write, w)

    def _owned(self, cur: Cursor, task_id: str, owner: str | None) -> Row:
        row = self._fetch(cur, task_id, lock=True)
        if row is None or (owner is not None and row["owner"] != owner):
            raise NotFound("task", task_id)
        return row

    async def pause(
        self, task_id: str, now: float, *, owner: str | None, actor: str | None
    ) -> Task:
        """Pause now, or ask the holder."""

        def w(cur: Cursor) -> Task:
            row = self._owned(cur, task_id, owner)
            current = Status(row["status"])
            if current is Status.PAUSED:
                return self._task(cur, task_id)
            if current not in PAUSABLE:
                raise IllegalTransition(task_id, current.value, Status.PAUSED.value)
            if current in LEASED and row["lease_id"] is not None:
                cur.execute(
                    "UPDATE tasks SET pause_requested = 1, updated_at = ? WHERE id = ?",
                    (now, task_id),
                )
                self._event(cur, task_id, now, "pause_requested", actor, None)
            else:
                cur.execute(
                    "UPDATE tasks SET status = 'paused', paused_from = ?, updated_at = ? "
                    "WHERE id = ?",
                    (current.value, now, task_id),
                )
                self._event(
                    cur,
                    task_id,
                    now,
                    "status_changed",
                    actor,
                    {"from": current.value, "to": "paused"},
                )
            return self._task(cur, task_id)

        return await self._run(self._write, w)

    async def resume(
        self, task_id: str, now: float, *, owner: str | None, actor: str | None
    ) -> Task:
        """Back to blocked/scheduled/queued."""

        def w(cur: Cursor) -> Task:
            row = self._owned(cur, task_id, owner)
            current = Status(row["status"])
            if current in LEASED and row["pause_requested"]:
                cur.execute("UPDATE tasks SET pause_requested = 0 WHERE id = ?", (task_id,))
                self._event(cur, task_id, now, "resumed", actor, None)
                return self._task(cur, task_id)
            if current is not Status.PAUSED:
                raise Conflict(
                    f"task {task_id} is {current.value}, not paused",
                    details={"task_id": task_id, "status": current.value},
                )
            waiting = cur.execute(
                "SELECT count(*) FROM task_deps WHERE task_id = ? AND state != 'satisfied'",
                (task_id,),
            ).scalar()
            if waiting:
                cur.execute(
                    "UPDATE tasks SET status = 'blocked', paused_from = NULL, "
                    "updated_at = ? WHERE id = ?",
                    (now, task_id),
                )
                self._event(
                    cur, task_id, now, "status_changed", actor, {"from": "paused", "to": "blocked"}
                )
            else:
                self._set_ready(cur, task_id, row, now, actor=actor)
            return self._task(cur, task_id)

        return await self._run(self._write, w)

    async def retry(
        self, task_ids: Sequence[str], now: float, *, owner: str | None, actor: str | None
    ) -> list[Task]:
        """Dead-letter retry with a fresh attempt budget; revives DependencyFailed dependents."""

        def w(cur: Cursor) -> list[Task]:
            out = []
            for task_id in task_ids:
                row = self._owned(cur, task_id, owner)
                current = Status(row["status"])
                if current not in RETRYABLE:
                    raise IllegalTransition(
                        task_id,
                        current.value,
                        Status.QUEUED.value,
                        "only failed or cancelled tasks (the dead-letter queue) can be retried",
                    )
                self._revive(cur, row, now, actor)
                out.append(self._task(cur, task_id))
            return out

        return await self._run(self._write, w)

    def _revive(self, cur: Cursor, row: Row, now: float, actor: str | None) -> None:
        task_id = row["id"]
        reset = (
            "attempt = 0, error = NULL, result = NULL, finished_at = NULL, "
            "actual_duration_s = NULL, cancel_requested = 0, pause_requested = 0, "
            "progress = 0, current_step = NULL, lease_id = NULL, lease_expires_at = NULL"
        )
        self._reset_review(cur, row)
        cur.execute(
            "UPDATE task_deps SET state = 'wait' WHERE task_id = ? AND state = 'impossible'",
            (task_id,),
        )
        # Re-evaluate edges against the upstreams' current state.
        edges = cur.execute(
            "SELECT d.depends_on_id, d.on_status, d.cond, t.status, t.result "
            "FROM task_deps d JOIN tasks t ON t.id = d.depends_on_id "
            "WHERE d.task_id = ?",
            (task_id,),
        ).fetchall()
        waiting = False
        for e in edges:
            cond = Condition.model_validate_json(e["cond"]) if e["cond"] else None
            state = edge_state(
                DependencyOn(e["on_status"]), cond, Status(e["status"]), loads(e["result"])
            )
            if state is EdgeState.IMPOSSIBLE:
                raise Conflict(
                    f"task {task_id} depends on {e['depends_on_id']}, which ended "
                    f"{e['status']}; retry that task first",
                    details={"task_id": task_id, "upstream": e["depends_on_id"]},
                )
            cur.execute(
                "UPDATE task_deps SET state = ? WHERE task_id = ? AND depends_on_id = ?",
                (state.value, task_id, e["depends_on_id"]),
            )
            waiting = waiting or state is EdgeState.WAIT
        if waiting:
            cur.execute(
                f"UPDATE tasks SET status = 'blocked', {reset}, updated_at = ? WHERE id = ?",
                (now, task_id),
            )
            self._event(cur, task_id, now, "retried", actor, {"to": "blocked"})
        else:
            cur.execute(f"UPDATE tasks SET {reset} WHERE id = ?", (task_id,))
            self._set_ready(cur, task_id, row, now, "retried", actor)
        # Dependents cancelled because this task failed wait for it again.
        for dep in cur.execute(
            "SELECT t.* FROM task_deps d JOIN tasks t ON t.id = d.task_id "
            "WHERE d.depends_on_id = ? AND t.status = 'cancelled' "
            f"AND {self.d.json_text('t.error', 'type')} = 'DependencyFailed'",
            (task_id,),
        ).fetchall():
            cur.execute(
                "UPDATE task_deps SET state = 'wait' WHERE task_id = ? AND depends_on_id = ?",
                (dep["id"], task_id),
            )
            self._revive(cur, dep, now, actor)
        # A failed workflow runs again while one of its children does.
        if row["parent_id"]:
            cur.execute(
                "UPDATE tasks SET status = 'running', finished_at = NULL, error = NULL, "
                "updated_at = ? WHERE id = ? AND status IN ('failed', 'cancelled')",
                (now, row["parent_id"]),
            )

    async def maintain(self, now: float) -> dict[str, int]:
        """Reap expired leases, promote due tasks, enforce deadlines, mark silent agents."""

        def w(cur: Cursor) -> dict[str, int]:
            expired = cur.execute(
                f"SELECT * FROM tasks WHERE lease_id IS NOT NULL AND lease_expires_at < ? "
                f"AND status IN {_LEASED_SQL} LIMIT 1000{self.d.skip_locked}",
                (now,),
            ).fetchall()
            for row in expired:
                err = ErrorInfo(
                    type="LeaseExpired",
                    retryable=True,
                    message=f"lease held by {row['lease_holder']} expired "
                    "(worker lost or too slow to heartbeat)",
                )
                # A lost worker says nothing about the task: requeue at once, no backoff.
                self._end_attempt(cur, row, err, now, 0.0, "reaper", lease_lost=True)
            promoted = self._promote_due(cur, now)
            late = cur.execute(
                f"SELECT * FROM tasks WHERE deadline IS NOT NULL AND deadline < ? "
                f"AND status NOT IN {_TERMINAL_SQL} AND type != 'workflow' "
                f"LIMIT 1000{self.d.skip_locked}",
                (now,),
            ).fetchall()
            for row in late:
                err = ErrorInfo(
                    type="DeadlineExceeded",
                    retryable=False,
                    message=f"deadline {dt(row['deadline'])} passed",
                    at=dt(now),
                )
                cur.execute(
                    "UPDATE tasks SET status = 'failed', error = ?, "
                    f"errors = {self.d.append_json('errors')}, finished_at = ?, "
                    "updated_at = ?, lease_id = NULL, lease_expires_at = NULL WHERE id = ?",
                    (err.model_dump_json(), err.model_dump_json(), now, now, row["id"]),
                )
                self._event(
                    cur,
                    row["id"],
                    now,
                    "failed",
                    "system",
                    {"error": "DeadlineExceeded", "from": row["status"]},
                )
                self._after_terminal(cur, row["id"], now)
            # Silent agents are taken offline by reap_agents (agents_sql), which the
            # service runs first with the configured heartbeat interval.
            return {
                "lease_expired": len(expired),
                "promoted": promoted,
                "deadline_failed": len(late),
                "cache_purged": self._purge_cache(cur, now),
            }

        return await self._run(self._write, w)

    # ------------------------------------------------------------------ insight
    async def stats(self, now: float, owner: str | None = None) -> Stats:
        """Counts by status; per-type figures over the last day."""

        def q(cur: Cursor) -> Stats:
            own = " AND owner = ?" if owner is not None else ""
            own_args: tuple[Any, ...] = (owner,) if owner is not None else ()
            counts = {s.value: 0 for s in Status}
            for r in cur.execute(
                f"SELECT status, count(*) AS n FROM tasks WHERE 1=1{own} GROUP BY status",
                own_args,
            ):
                counts[r["status"]] = r["n"]
            rows = cur.execute(
                "SELECT type, status, actual_duration_s AS run_s, started_at - queued_at AS wait_s "
                f"FROM tasks WHERE finished_at > ?{own} ORDER BY finished_at DESC LIMIT 200000",
                (now - 86400, *own_args),
            ).fetchall()
            per_type_counts = {
                r["type"]: r["n"]
                for r in cur.execute(
                    f"SELECT type, count(*) AS n FROM tasks WHERE 1=1{own} GROUP BY type", own_args
                )
            }
            agents = {
                r["status"]: r["n"]
                for r in cur.execute("SELECT status, count(*) AS n FROM agents GROUP BY status")
            }
            finished = [(r["type"], r["status"], r["run_s"], r["wait_s"]) for r in rows]
            return build_stats(counts, per_type_counts, finished, agents, now)

        return await self._run(self._read, q)

    async def mean_durations(self) -> dict[str, float]:
        """Mean run time per type over recent completions."""

        def q(cur: Cursor) -> dict[str, float]:
            rows = cur.execute(
                "SELECT type, avg(actual_duration_s) AS mean FROM (SELECT type, actual_duration_s "
                "FROM tasks WHERE finished_at IS NOT NULL AND status = 'completed' "
                "ORDER BY finished_at DESC LIMIT 5000) recent GROUP BY type"
            ).fetchall()
            return {r["type"]: float(r["mean"]) for r in rows if r["mean"] is not None}

        return await self._run(self._read, q)

    # ------------------------------------------------------------------ agents
    _AGENT_SELECT = (
        "SELECT a.*, "
        "(SELECT count(*) FROM tasks t WHERE t.assigned_agent = a.id "
        f" AND t.status IN {_LEASED_SQL}) AS load, "
        "(SELECT count(*) FROM tasks t WHERE t.assigned_agent = a.id "
        " AND t.status = 'completed') AS completed, "
        "(SELECT count(*) FROM tasks t WHERE t.assigned_agent = a.id "
        " AND t.status = 'failed') AS failed, "
        "(SELECT avg(actual_duration_s) FROM tasks t WHERE t.assigned_agent = a.id "
        " AND t.status = 'completed') AS mean_duration_s "
        "FROM agents a"
    )

    async def register_agent(self, reg: AgentRegistration, now: float) -> Agent:
        """Create or update an agent."""
        agent_id = reg.id or new_id()

        def w(cur: Cursor) -> Agent:
            cur.execute(
                "INSERT INTO agents (id, name, kind, capabilities, max_concurrency, queues, "
                "status, last_heartbeat, endpoint, metadata, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'online', ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET name = excluded.name, kind = excluded.kind, "
                "capabilities = excluded.capabilities, "
                "max_concurrency = excluded.max_concurrency, queues = excluded.queues, "
                "status = 'online', last_heartbeat = excluded.last_heartbeat,"
                " endpoint = excluded.endpoint, metadata = excluded.metadata, "
                "updated_at = excluded.updated_at",
                (
                    agent_id,
                    reg.name,
                    reg.kind.value,
                    dumps(reg.capabilities),
                    reg.max_concurrency,
                    dumps(reg.queues),
                    now,
                    reg.endpoint,
                    dumps(reg.metadata),
                    now,
                    now,
                ),
            )
            self._event(cur, agent_id, now, "agent.registered", agent_id,
                        {"agent_id": agent_id, "name": reg.name, "endpoint": reg.endpoint,
                         "capabilities": reg.capabilities})  # fmt: skip
            return self._agent(cur, agent_id)

        return await self._run(self._write, w)

    def _agent(self, cur: Cursor, agent_id: str) -> Agent:
        row = cur.execute(f"{self._AGENT_SELECT} WHERE a.id = ?", (agent_id,)).fetchone()
        if row is None:
            raise NotFound("agent", agent_id)
        return row_to_agent(row)

    async def agent_heartbeat(
        self, agent_id: str, metadata: dict[str, object] | None, now: float
    ) -> Agent:
        """Mark alive; merge metadata."""

        def w(cur: Cursor) -> Agent:
            row = cur.execute(
                "SELECT metadata, status FROM agents WHERE id = ?", (agent_id,)
            ).fetchone()
            if row is None:
                raise NotFound("agent", agent_id)
            meta = {**(loads(row["metadata"]) or {}), **(metadata or {})}
            status = row["status"] if row["status"] in ("busy", "draining") else "online"
            cur.execute(
                "UPDATE agents SET last_heartbeat = ?, metadata = ?, status = ?, "
                "updated_at = ? WHERE id = ?",
                (now, dumps(meta), status, now, agent_id),
            )
            return self._agent(cur, agent_id)

        return await self._run(self._write, w)

    async def deregister_agent(self, agent_id: str, now: float) -> None:
        """Mark offline."""

        def w(cur: Cursor) -> None:
            cur.execute(
                "UPDATE agents SET status = ?, updated_at = ? WHERE id = ?",
                (AgentStatus.OFFLINE.value, now, agent_id),
            )

        await self._run(self._write, w)

    # ------------------------------------------------------------------ tokens, audit
    async def create_token(self, info: TokenInfo, token_hash: str) -> TokenInfo:
        """Store a token under its hash."""

        def w(cur: Cursor) -> TokenInfo:
            cur.execute(
                "INSERT INTO api_tokens (id, user_id, role, token_hash, name, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, info.user, info.role.value, token_hash, info.name,
                 info.created_at.timestamp()),
            )  # fmt: skip
            return info

        return await self._run(self._write, w)

    async def find_token(self, token_hash: str, now: float) -> TokenInfo | None:
        """A live token by hash; ``last_used_at`` is refreshed at most once a minute."""

        def w(cur: Cursor) -> TokenInfo | None:
            row = cur.execute(
                "SELECT * FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
            if row is None:
                return None
            if row["last_used_at"] is None or now - row["last_used_at"] > 60:
                cur.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
                            (now, row["id"]))  # fmt: skip
            return _token(row)

        return await self._run(self._write, w)

    async def list_tokens(self) -> list[TokenInfo]:
        """All tokens."""

        def q(cur: Cursor) -> list[TokenInfo]:
            rows = cur.execute("SELECT * FROM api_tokens ORDER BY created_at").fetchall()
            return [_token(r) for r in rows]

        return await self._run(self._read, q)

    async def revoke_token(self, token_id: str, now: float) -> TokenInfo:
        """Revoke."""

        def w(cur: Cursor) -> TokenInfo:
            cur.execute("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                        (now, token_id))  # fmt: skip
            row = cur.execute("SELECT * FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                raise NotFound("token", token_id)
            return _token(row)

        return await self._run(self._write, w)

    async def append_audit(self, entry: AuditEntry) -> None:
        """One audit row."""

        def w(cur: Cursor) -> None:
            cur.execute(
                "INSERT INTO audit_log (at, actor, role, action, target, status, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (entry.at.timestamp(), entry.actor, entry.role, entry.action, entry.target,
                 entry.status, dumps(entry.details)),
            )  # fmt: skip

        await self._run(self._write, w)

    async def list_audit(
        self, limit: int = 100, offset: int = 0, actor: str | None = None
    ) -> tuple[list[AuditEntry], int]:
        """Newest first."""

        def q(cur: Cursor) -> tuple[list[AuditEntry], int]:
            where, args = ("WHERE actor = ?", [actor]) if actor else ("", [])
            total = cur.execute(f"SELECT count(*) FROM audit_log {where}", args).scalar()
            rows = cur.execute(
                f"SELECT * FROM audit_log {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            out = [
                AuditEntry(seq=r["seq"], at=dt(r["at"]), actor=r["actor"], role=r["role"],
                           action=r["action"], target=r["target"], status=r["status"],
                           details=loads(r["details"]) or {})
                for r in rows
            ]  # fmt: skip
            return out, int(total)

        return await self._run(self._read, q)

    async def list_agents(self) -> list[Agent]:
        """All agents with load and history."""

        def q(cur: Cursor) -> list[Agent]:
            rows = cur.execute(f"{self._AGENT_SELECT} ORDER BY a.name, a.id").fetchall()
            return [row_to_agent(r) for r in rows]

        return await self._run(self._read, q)


def _token(r: Any) -> TokenInfo:
    return TokenInfo(
        id=r["id"],
        user=r["user_id"],
        role=r["role"],
        name=r["name"],
        created_at=dt(r["created_at"]),
        last_used_at=dt(r["last_used_at"]),
        revoked=r["revoked_at"] is not None,
    )


def ts_or(value: Any, default: Any) -> Any:
    """Epoch seconds of an optional datetime, or ``default``."""
    return value.timestamp() if value is not None else default


def split_sql(sql: str) -> Iterable[str]:
    """Split a migration into statements (no semicolons inside our literals)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    for stmt in "\n".join(lines).split(";"):
        if stmt.strip():
            yield stmt
