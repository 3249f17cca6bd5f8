"""The PostgreSQL backend: many servers and workers on many machines, one database.

The transaction logic is the same as SQLite's (:mod:`offload.storage.sql`); what differs:

- connections come from a psycopg 3 pool and each transaction runs on a pool thread, so
  one process can have several transactions in flight;
- claims pick candidates with ``FOR UPDATE SKIP LOCKED`` and read-then-decide steps lock the
  row first, so concurrent workers, reapers and resolvers never double-claim or double-fire;
- each transaction that appends events sends a ``NOTIFY`` before its COMMIT on the channel
  of each kind of change it made (:data:`CHANNELS`), and a ``LISTEN`` connection on the
  channels this process waits on wakes idle workers (new work), waiters (finished tasks)
  and live streams (anything) within milliseconds (polling stays as the fallback:
  :meth:`wait_for_change` simply times out);
- the claim and the task read are prepared once per connection; the claim is one round
  trip (see docs/deploy.md for each operation's);
- lost connections and a restarting server are retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import orjson

from offload.domain.errors import InvalidInput, Unavailable
from offload.domain.models import Task
from offload.domain.rules import DEFAULT_AGING_INTERVAL_S
from offload.domain.status import Status
from offload.ports.store import CHANGE_KINDS, ChangeKind
from offload.storage.flow_sql import FAIR_INDEX, FAIR_INDEX_CREATE, FAIR_WANTED
from offload.storage.rows import ALIKE_VARYING, TASK_INSERT_COLUMNS, dumps, row_to_task
from offload.storage.sql import (
    EVENT_COLUMNS,
    CommittedBefore,
    CreatedEvent,
    Cursor,
    Dialect,
    Row,
    SqlStore,
)

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.adapt import Transformer
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from offload.storage.postgres import bridge
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise InvalidInput(
        "the PostgreSQL backend needs psycopg: pip install 'offload[postgres]'",
        field="database_url",
    ) from exc

R = TypeVar("R")
log = logging.getLogger("offload.postgres")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: One channel per kind of change ('w' work may be claimable, 'd' a task may have finished,
#: '-' anything else), so a process hears only what it waits for: an idle worker the work
#: channel, a waiter for results the done channel, a live stream all three. The payload
#: still carries the flags.
CHANNELS: dict[str, str] = {"w": "offload_work", "d": "offload_done", "-": "offload_other"}
_KIND_CHANNELS: dict[ChangeKind, frozenset[str]] = {
    "work": frozenset({CHANNELS["w"]}),
    "done": frozenset({CHANNELS["d"]}),
    "any": frozenset(CHANNELS.values()),
}


def notify_calls(flags: str) -> str:
    """The ``pg_notify`` calls announcing a change with these flags ("wd", "w", "-"…): one
    per channel concerned, each with the flags as payload."""
    return ", ".join(f"pg_notify('{CHANNELS[flag]}', '{flags}')" for flag in flags)


#: The longest record a completion NOTIFY carries (the payload limit is 8,000 bytes).
MAX_RECORD_PAYLOAD = 7800
#: Records heard this way that a process keeps for its waiters (the oldest go first).
HEARD_RECORDS = 256
#: ``tasks`` columns of type float8: JSON writes 100.0 as 100, read back as an int.
FLOAT_COLUMNS = (
    "timeout_s", "run_at", "deadline", "lease_expires_at", "progress", "created_at",
    "updated_at", "queued_at", "started_at", "finished_at", "estimated_duration_s",
    "actual_duration_s", "cache_ttl_s", "sort_key",
)  # fmt: skip

#: The NOTIFY payload flag of each kind of change (migration 0011).
_FLAGS: dict[ChangeKind, str] = {"any": "", "work": "w", "done": "d"}


def _flags_of(kinds: Iterable[str], flags: str = "") -> str:
    """The NOTIFY payload for events of these kinds (added to ``flags``): 'w' when work may
    have become claimable, 'd' when a task may have finished; "-" when events were appended
    that neither workers nor result waiters care about (live streams still do)."""
    for kind in kinds:
        if "w" not in flags and kind not in _QUIET:
            flags += "w"
        if "d" not in flags and kind not in _NOT_FINISHING:
            flags += "d"
    return flags or "-"


#: Events that make no work claimable: a claim and an attempt's own reports.
_QUIET = frozenset({"claimed", "progress", "log", "checkpoint", "artifact"})
#: Events that finish no task: those, and a task's creation.
_NOT_FINISHING = _QUIET | {"created"}
#: Any number of processes may start at once; one applies migrations, the others wait.
MIGRATION_LOCK = 0x0FF10AD
#: Held by each transaction that claims or releases flow-limited work (PgDialect.flow_lock).
FLOW_LOCK = 0x0FF10AE
#: Held while a process makes or drops the owner-fair index (see _fit_fair_index). Its
#: own key: a flow claim waiting on it would also hold up the CONCURRENTLY build.
FAIR_INDEX_LOCK = 0x0FF10B0
#: Held shared by every connection that listens on the 'other' channel, for as long as it
#: listens (see _listen): a claim announces itself there only while someone holds it.
OTHER_LISTENERS_LOCK = 0x0FF10AF
#: This process's idea of a connection's prepared statements was wrong (a pooler reset
#: the session, say): they are dropped and the transaction runs again.
_PREPARED_MISMATCH = (pg_errors.InvalidSqlStatementName, pg_errors.DuplicatePreparedStatement)
#: Unique indexes whose rows a transaction looks up before it inserts: losing a race on one
#: means running the transaction again, which then sees the winner's row.
_CHECKED_FIRST = frozenset({"tasks_idempotency", "schedules_name"})
#: What a transaction (or a claim's, see _write_lax) sends first.
_TX_HEAD = ("BEGIN",)
_LAX_HEAD = ("BEGIN", "SET LOCAL synchronous_commit TO OFF", "SET LOCAL enable_seqscan TO OFF")
#: The store's ways of running shared SQL, by name, with their first and last statements:
#: what can run on the loop's thread (see PostgresStore._run).
_LOOP_MODES: dict[str, tuple[Sequence[str], str | None]] = {
    "_tx": (_TX_HEAD, "COMMIT"), "_write_lax": (_LAX_HEAD, "COMMIT"), "_read": ((), None),
}  # fmt: skip


class _InThread(Exception):
    """An attempt on the loop failed in a way worth repeating: repeat it in a thread."""

    def __init__(self, lost: bool) -> None:
        super().__init__()
        self.lost = lost


def _quietly(fut: Any) -> None:
    """Done callback for work nobody awaits: fetch its exception so none is reported."""
    if not fut.cancelled():
        fut.exception()


_RETRYABLE = (
    psycopg.OperationalError,  # connection lost, server restarting
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    *_PREPARED_MISMATCH,
)


#: Batches at least this big are appended with COPY (its own round trips pay off only for big
#: batches: bulk submits, not the events of a claimed or completed batch).
COPY_MIN_ROWS = 200


class PgDialect(Dialect):
    """PostgreSQL spellings of the fragments that differ from SQLite."""

    greatest = "GREATEST"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    claim_recheck = ""
    seq_gaps = True
    real = "?::float8"
    alike_min_rows: int | None = COPY_MIN_ROWS

    def append_json(self, column: str) -> str:
        return f"({column}::jsonb || jsonb_build_array(?::jsonb))::text"

    def json_text(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}')"

    def json_array_has(self, column: str) -> str:
        return f"{column}::jsonb @> jsonb_build_array(?::text)"

    def json_array_within(self, column: str) -> str:
        return f"{column}::jsonb <@ ?::jsonb"

    flow_lock = f"SELECT pg_advisory_xact_lock({FLOW_LOCK})"

    def complete_statement(self, update: str) -> str:
        # Tasks waiting for review are not finished: no 'completed' event for them yet.
        return (
            f"WITH u AS ({update}), e AS (INSERT INTO task_events (task_id, at, kind, actor, "
            "data) SELECT id, ?, 'completed', lease_holder, "
            "json_build_object('attempt', attempt)::text FROM u WHERE review IS NULL) "
            "SELECT * FROM u"
        )

    one_trip_completions = True

    #: The one-trip completion returns whole rows: one finished alone is announced with it.
    completion_returning = "tasks.*"

    def complete_commit_statement(self, update: str) -> str:
        # As complete_statement, announcing the change when anything completed: 'd', a task
        # finished; 'w' only when a completed task held a concurrency limit's slot or a
        # resource, which frees capacity for queued work. Nothing else a plain completion
        # does makes work claimable, so idle workers (their own completions included) are
        # not woken to claim nothing.
        # A task completed on its own (what an idle worker does) is announced with its
        # record and children ('d|<id>|[row, children]'): its waiter then answers without
        # reading it back, 0.3-0.7 ms of an idle round trip. JSON, not JSONB: the text of a
        # float8 is its shortest exact form, while JSONB rounds to 15 digits. Payloads stay
        # under NOTIFY's 8,000-byte limit; a bigger record is announced plainly. The record's
        # text is built once (MATERIALIZED): inlined, PostgreSQL built it for the size test
        # and again for the payload, 45 µs of a completion.
        return (
            f"WITH u AS ({update}), e AS (INSERT INTO task_events (task_id, at, kind, actor, "
            "data) SELECT id, ?, 'completed', lease_holder, "
            "json_build_object('attempt', attempt)::text FROM u WHERE review IS NULL), "
            "r AS MATERIALIZED (SELECT u.id, json_build_array(row_to_json(u), (SELECT "
            "coalesce(json_agg(c.id ORDER BY c.id), '[]'::json) FROM tasks c "
            "WHERE c.parent_id = u.id))::text AS j FROM u WHERE (SELECT count(*) FROM u) = 1), "
            f"n AS (SELECT pg_notify('{CHANNELS['d']}', coalesce((SELECT 'd|' || r.id || '|' "
            f"|| r.j FROM r WHERE octet_length(r.j) <= {MAX_RECORD_PAYLOAD}), 'd')) "
            "FROM (SELECT 1 FROM u LIMIT 1) AS one), "
            f"m AS (SELECT {notify_calls('w')} FROM (SELECT 1 FROM u WHERE "
            "limit_key IS NOT NULL OR resources IS NOT NULL LIMIT 1) AS one) "
            "SELECT u.id FROM u LEFT JOIN n ON true LEFT JOIN m ON true"
        )

    def claim_statement(self, pick: str, set_sql: str) -> str:
        # Pick, lease, append the 'claimed' events and announce them, in one statement.
        return f"WITH c AS ({pick}), {self._leased(set_sql, 'IN (SELECT id FROM c)')}"

    def lease_statement(self, set_sql: str, n_ids: int) -> str:
        marks = ", ".join("?" * n_ids)
        return f"WITH {self._leased(set_sql, f'IN ({marks})')}"

    @staticmethod
    def _leased(set_sql: str, ids: str) -> str:
        # Parameters after the SET's (and the ids'): at, actor, lease_id, agent_id,
        # expires_at. The NOTIFY ('-': nothing claimable, nothing finished, but live
        # streams want claims) is joined in so it runs only when something was claimed,
        # and only while a live stream listens: PostgreSQL wakes every listening session
        # of the database for every notification, whatever its channel, so an idle
        # round trip's claim woke the worker's and the waiter's listeners for nothing,
        # about 0.1 ms of it. Listeners hold OTHER_LISTENERS_LOCK shared; when the claim
        # gets it exclusively, nobody listens, and a listener that comes now waits for
        # this commit before it reads what changed (see _listen).
        return (
            f"u AS ({set_sql}WHERE id {ids} RETURNING *), "
            "e AS (INSERT INTO task_events (task_id, at, kind, actor, data) "
            "SELECT id, ?::float8, 'claimed', ?::text, json_build_object('lease_id', ?::text, "
            "'agent_id', ?::text, 'attempt', attempt, 'expires_at', ?::float8)::text FROM u), "
            f"n AS (SELECT {notify_calls('-')} FROM (SELECT 1 FROM u LIMIT 1) AS one "
            f"WHERE NOT pg_try_advisory_xact_lock({OTHER_LISTENERS_LOCK})) "
            "SELECT u.* FROM u LEFT JOIN n ON true"
        )

    def json_rows(self, select: str, columns: Sequence[str]) -> str:
        fields = ", ".join(f"'{c}', {c}" for c in columns)
        return (
            f"(SELECT coalesce(json_agg(json_build_object({fields})), '[]')::text "
            f"FROM ({select}) AS x)"
        )

    def children_json(self, alias: str) -> str:
        return (
            "(SELECT coalesce(json_agg(c.id ORDER BY c.id), '[]')::text FROM tasks c "
            f"WHERE c.parent_id = {alias}.id)"
        )

    def values(self, rows: int, columns: int) -> str:
        row = "(" + ", ".join("?" * columns) + ")"
        names = ", ".join(f"column{i + 1}" for i in range(columns))
        return f"(VALUES {', '.join([row] * rows)}) AS c({names})"


class _WholeRowsDialect(PgDialect):
    """PostgreSQL for a role that may not create temporary tables (no staging)."""

    alike_min_rows = None


_WHOLE_ROWS = _WholeRowsDialect()


#: SQL texts split at their ``?`` placeholders (our SQL has no other ``?``).
_fragments: dict[str, list[str]] = {}
#: Prepared statement name and ``$n`` text of each SQL text that is prepared.
_prepared_forms: dict[str, tuple[str, str]] = {}


def _prepared_form(sql: str) -> tuple[str, str]:
    form = _prepared_forms.get(sql)
    if form is None:
        parts = sql.split("?")
        numbered = "".join(f"{p}${i}" for i, p in enumerate(parts[:-1], 1)) + parts[-1]
        name = "offload_" + hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()
        form = _prepared_forms[sql] = (name, numbered)
    return form


def sql_literal(value: Any, fallback: Callable[[Any], bytes]) -> str:
    """``value`` as an SQL literal, exactly as psycopg writes it (``fallback``, its
    ``as_literal``), written here for the types of nearly every argument.

    A claim or submit renders a few dozen arguments; through psycopg each costs 0.3-0.7 µs
    (an adapter lookup, a dumper, bytes made and decoded), about half of the Python the
    worker spends building its statements. Strings are quoted by doubling quotes: exact
    whatever ``standard_conforming_strings`` says, since only a backslash reads otherwise
    when it is off, and a string holding one (or a NUL, refused) goes to psycopg.
    """
    kind = type(value)
    if kind is str:
        text: str = value
        if "\\" in text or "\x00" in text:
            return fallback(value).decode()
        return "'" + text.replace("'", "''") + "'"
    if value is None:
        return "NULL"
    if kind is float:
        if not math.isfinite(value):
            return fallback(value).decode()
        text = repr(value)
        # The leading space keeps "x- -3" from reading as a comment, as psycopg's does.
        return " " + text if text[0] == "-" else text
    if kind is int:
        return f" {value}" if value < 0 else str(value)
    if kind is bool:
        return "true" if value else "false"
    return fallback(value).decode()


def _prepared_on(conn: psycopg.Connection[Any]) -> set[str]:
    """The statements this connection has prepared (they last as long as its session)."""
    names: set[str] | None = conn.__dict__.get("_offload_prepared")
    if names is None:
        names = conn.__dict__["_offload_prepared"] = set()
    return names


#: Where :meth:`_Cursor.insert_alike` stages rows: a temporary table of the varying
#: columns, typed as in ``tasks``, emptied at each commit.
_STAGE = "pg_temp.offload_new_tasks"
_STAGE_SQL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ON COMMIT DELETE ROWS AS "
    f"SELECT {', '.join(ALIKE_VARYING)} FROM tasks WITH NO DATA"
)
_STAGE_COPY = f"COPY {_STAGE} ({', '.join(ALIKE_VARYING)}) FROM STDIN"
_TASK_COLUMNS = ", ".join(TASK_INSERT_COLUMNS)
_EVENT_COLUMNS = ", ".join(EVENT_COLUMNS)


class _Cursor:
    """A psycopg cursor speaking the shared logic's dialect (``?`` placeholders, dict rows)
    that spends as few network round trips as it can.

    Parameters are bound client side (:class:`psycopg.ClientCursor`), so several statements
    can travel as one simple query. Statements whose results nobody reads (``BEGIN``,
    ``SET LOCAL``, event appends, ``executemany``) are held back and sent in front of the
    next statement whose result is needed, or in front of ``COMMIT``. A submit is then one
    round trip (``BEGIN; WITH … INSERT …; COMMIT``: see _settle) instead of four; on a
    loopback link where a round trip costs 0.1–0.3 ms, that is most of an operation's
    latency. A held-back statement that fails raises from the statement that carries it,
    inside the same transaction, so errors still abort the transaction they belong to.
    """

    __slots__ = (
        "_cur", "_flags", "_held", "_literal", "_may_prepare", "_one_rows", "_preparing",
        "finished", "tail",
    )  # fmt: skip

    def __init__(
        self, cur: psycopg.ClientCursor[Row], tail: str | None = None, prepare: bool = True
    ) -> None:
        self._cur = cur
        self._held: list[str] = []
        #: Single-row inserts not yet written out, each into another table (see _settle).
        self._one_rows: list[tuple[str, str, Sequence[Any]]] = []
        self._flags = ""
        self._literal = Transformer.from_context(cur).as_literal
        #: The statement that ends the transaction (COMMIT), and whether it has been sent.
        self.tail = tail
        self.finished = False
        #: Statements PREPAREd by the batch being sent (known to the connection once sent).
        self._preparing: list[str] = []
        self._may_prepare = prepare

    def _render(self, sql: str, args: Sequence[Any]) -> str:
        """``sql`` with each ``?`` replaced by its argument as a literal.

        What ``mogrify`` does, without its regex pass over the query text, which psycopg
        caches only for short queries: a claim or completion of a few hundred tasks spent
        a tenth of the worker's time re-parsing its own VALUES list.
        """
        if not args:
            return sql
        parts = _fragments.get(sql)
        if parts is None:
            if len(_fragments) > 2048:
                _fragments.clear()
            parts = _fragments[sql] = sql.split("?")
        if len(parts) != len(args) + 1:
            # Our own SQL and arguments disagree: a bug, not a caller's mistake.
            raise RuntimeError(f"{len(args)} arguments for {len(parts) - 1} placeholders")
        literal = self._literal
        out = [parts[0]]
        for arg, part in zip(args, parts[1:], strict=True):
            out.append(sql_literal(arg, literal))
            out.append(part)
        return "".join(out)

    def appended(self, kinds: Iterable[str]) -> None:
        """Note what kind of change the transaction's events make (see :meth:`announce`)."""
        kinds = tuple(kinds)
        if kinds:
            self._flags = _flags_of(kinds, self._flags)

    def announce(self) -> None:
        """Before COMMIT: one NOTIFY saying what changed (delivered only if it commits)."""
        if self._flags:
            flags, self._flags = self._flags, ""
            self._settle(f"SELECT {notify_calls(flags)}")

    def _settle(self, then: str | None = None) -> None:
        """Write out the single-row inserts held back, as one prepared statement, with
        ``then`` (a constant statement) as its last part, or ``then`` alone.

        A submit's task row, its 'created' event and its NOTIFY went as three statements
        of one query; as one (``WITH i0 AS (INSERT …), i1 AS (INSERT …) SELECT pg_notify(…)``)
        the server spends 50 µs less on it. Only inserts into different tables are
        joined: the parts of one statement run in no set order, and events keep theirs.
        """
        rows = self._one_rows
        if not rows:
            if then is not None:
                self._held.append(then)
            return
        self._one_rows = []
        parts = [
            f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})"
            for table, cols, row in rows
        ]
        if then is not None:
            parts.append(then)
        *ctes, last = parts
        sql = last
        if ctes:
            sql = "WITH " + ", ".join(f"i{n} AS ({c})" for n, c in enumerate(ctes)) + f" {last}"
        args = [a for _, _, row in rows for a in row]
        self._held.append(self._statement(sql, args, True))

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def hold(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Queue a statement whose result is not needed; it travels with the next one."""
        self._settle()
        self._held.append(self._render(sql, args))

    def _run(self, stmt: str) -> None:
        try:
            self._cur.execute(stmt)
        finally:
            preparing, self._preparing = self._preparing, []
        if preparing:
            _prepared_on(self._cur.connection).update(preparing)

    def _send(self, stmt: str) -> None:
        # (Held single-row inserts were settled by _statement, which made ``stmt``.)
        if self._held:
            self._held.append(stmt)
            stmt = "; ".join(self._held)
            self._held.clear()
            self._run(stmt)
            # One result per statement: the caller wants the last one.
            while self._cur.nextset():
                pass
        else:
            self._run(stmt)

    def flush(self) -> None:
        """Send what is held back (before a COPY, or at the end of a read)."""
        self._settle()
        if self._held:
            stmt = "; ".join(self._held)
            self._held.clear()
            self._run(stmt)

    def _statement(self, sql: str, args: Sequence[Any], prepare: bool) -> str:
        self._settle()
        if not (prepare and self._may_prepare):
            return self._render(sql, args)
        # A prepared statement is planned once per connection, not at every call: the
        # claim's plan alone cost half a millisecond. ``PREPARE`` travels in front of the
        # first ``EXECUTE`` on each connection.
        name, numbered = _prepared_form(sql)
        if name not in _prepared_on(self._cur.connection) and name not in self._preparing:
            self._held.append(f"PREPARE {name} AS {numbered}")
            self._preparing.append(name)
        literal = self._literal
        return f"EXECUTE {name}({', '.join([sql_literal(a, literal) for a in args])})"

    def execute(self, sql: str, args: Sequence[Any] = (), *, prepare: bool = False) -> _Cursor:
        self._send(self._statement(sql, args, prepare and bool(args)))
        return self

    def finish(self, sql: str, args: Sequence[Any] = (), *, prepare: bool = False) -> _Cursor:
        """The transaction's last statement, sent with what is held and with COMMIT: the
        whole transaction in one round trip. Its rows are then read as usual."""
        if self.tail is None:
            return self.execute(sql, args, prepare=prepare)
        self.announce()
        stmt = self._statement(sql, args, prepare and bool(args))
        skip = len(self._held)
        batch = [*self._held, stmt, self.tail]
        self._held.clear()
        self._run("; ".join(batch))
        # One result per statement: step to this statement's.
        for _ in range(skip):
            self._cur.nextset()
        self.finished = True
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._settle()
        for row in rows:
            self._held.append(self._render(sql, row))

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if not rows:
            return
        cols = ", ".join(columns)
        if len(rows) == 1:
            # One task or event (a single submit, a claim's event): a prepared INSERT skips
            # parsing and planning its few dozen columns at every call. Held back, to be
            # joined with what follows it (see _settle), unless its table has one waiting.
            if any(t == table for t, _, _ in self._one_rows):
                self._settle()
            self._one_rows.append((table, cols, rows[0]))
            return
        self._settle()
        if len(rows) < COPY_MIN_ROWS:
            row_sql = "(" + ", ".join("?" * len(columns)) + ")"
            values = ", ".join(self._render(row_sql, r) for r in rows)
            self._held.append(f"INSERT INTO {table} ({cols}) VALUES {values}")
            return
        # COPY streams rows without per-row parsing:
        # several times faster for a 1,000-task batch. It cannot share a query string.
        self.flush()
        with self._cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def insert_alike(
        self, shared: Mapping[str, Any], rows: Sequence[Sequence[Any]], created: CreatedEvent
    ) -> None:
        """COPY only what differs per task into a session's temporary table, then one
        statement moves the rows into ``tasks`` with the shared values and appends their
        'created' events. The client formats a tenth of the values, in one COPY instead of
        two: formatting every value of every row made it the bottleneck of a bulk submit."""
        # The table is made once per session (a rolled back first use drops it again,
        # hence IF NOT EXISTS rather than remembering it); its rows go at commit.
        self._settle()
        self._held.append(_STAGE_SQL)
        self.flush()
        with self._cur.copy(_STAGE_COPY) as copy:
            for row in rows:
                copy.write_row(row)
        literal = self._literal
        picks = ", ".join(
            f"s.{c}" if c in ALIKE_VARYING else sql_literal(shared[c], literal)
            for c in TASK_INSERT_COLUMNS
        )
        at, actor, data = created
        # DELETE … RETURNING hands the staged rows over in the order they were copied
        # and empties the table for the next run of the same transaction.
        self._held.append(
            f"WITH s AS (DELETE FROM {_STAGE} RETURNING *), "
            f"t AS (INSERT INTO tasks ({_TASK_COLUMNS}) SELECT {picks} FROM s RETURNING id) "
            f"INSERT INTO task_events ({_EVENT_COLUMNS}) SELECT id, "
            f"{literal(at).decode()}, 'created', {literal(actor).decode()}, "
            f"{literal(data).decode()} FROM t"
        )
        self.appended(("created",))

    def fetchone(self) -> Row | None:
        return self._cur.fetchone()

    def fetchall(self) -> list[Row]:
        return self._cur.fetchall()

    def scalar(self) -> Any:
        row = self._cur.fetchone()
        return None if row is None else next(iter(row.values()))

    def __iter__(self) -> Iterator[Row]:
        return iter(self._cur.fetchall())


#: How long opening a store waits for a PostgreSQL server that is not reachable yet.
CONNECT_WAIT_S = 30.0
#: Server refusals that pass by themselves (the rest of "FATAL" refusals do not).
_PASSING_REFUSALS = ("starting up", "shutting down", "in recovery", "too many clients",
                     "remaining connection slots")  # fmt: skip


def _connect_reason(exc: BaseException) -> str:
    """The useful part of a connection error, on one line."""
    text = " ".join(str(exc).split())
    if "FATAL:" in text:
        return text.split("FATAL:", 1)[1].strip()
    return text.removeprefix("connection failed: ").removeprefix("connection is bad: ")


def _refused_for_good(exc: BaseException) -> bool:
    """Whether retrying cannot help: the server refused us for a reason of ours (no such
    database or role, authentication), or the URL itself is invalid."""
    text = str(exc)
    if isinstance(exc, psycopg.ProgrammingError) or "connection is bad: invalid" in text:
        return True
    return "FATAL:" in text and not any(p in text for p in _PASSING_REFUSALS)


def _pool_size(opts: dict[str, str], name: str, default: int, least: int) -> int:
    raw = opts.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < least:
        raise InvalidInput(
            f"{name}={raw!r} in the database URL: use a whole number of at least {least}",
            field="database_url",
        )
    return value


def _conninfo(url: str) -> tuple[str, dict[str, str]]:
    """Split our own query options (pool sizes) from the libpq URL."""
    parsed = urlparse(url)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    ours: dict[str, str] = {
        k: query.pop(k) for k in ("pool_min", "pool_max", "prepare") if k in query
    }
    scheme = "postgresql"
    return urlunparse(parsed._replace(scheme=scheme, query=urlencode(query))), ours


# Scheduled → queued for every due task (function offload_promote, migration 0011).
_PROMOTE_SQL = "SELECT offload_promote(?, ?, ?)"
_PROMOTED_EVENT = dumps({"from": "scheduled", "to": "queued"})
#: A claim promotes due scheduled tasks first at most this often per store (by the clock
#: the claims are given); maintenance does it every second whatever claims do.
PROMOTE_EVERY_S = 0.05


class PostgresStore(SqlStore):
    """Store backed by PostgreSQL (see :class:`offload.ports.store.Store`)."""

    d = PgDialect()

    def __init__(
        self,
        url: str,
        *,
        aging_interval_s: float = DEFAULT_AGING_INTERVAL_S,
        rng: Callable[[], float] = random.random,
        pool_min: int = 1,
        pool_max: int = 8,
        retry_for_s: float = 60.0,
    ) -> None:
        super().__init__(url, aging_interval_s=aging_interval_s, rng=rng)
        self.conninfo, opts = _conninfo(url)
        self.pool_min = _pool_size(opts, "pool_min", pool_min, least=0)
        self.pool_max = max(_pool_size(opts, "pool_max", pool_max, least=1), self.pool_min)
        prepare = opts.get("prepare", "true").lower()
        if prepare not in ("true", "false", "on", "off", "1", "0"):
            raise InvalidInput(
                f"prepare={prepare!r} in the database URL: use prepare=true or prepare=false",
                field="database_url",
            )
        #: Whether hot statements are prepared per connection (off behind a pooler in
        #: transaction mode, where a session's prepared statements do not follow it).
        self.prepare = prepare in ("true", "on", "1")
        self.retry_for_s = retry_for_s
        self._executor = ThreadPoolExecutor(self.pool_max, thread_name_prefix="offload-pg")
        self._executor_closed = False
        #: Connections checked out of the pool for calls on the loop's thread (see bridge):
        #: the idle ones, how many there are in all, and at most how many (half the pool,
        #: the rest being the threads' for overflow, retries and the pool's own upkeep).
        self._loop_idle: list[Any] = []
        self._loop_held = 0
        self._loop_max = self.pool_max // 2 if bridge.AVAILABLE else 0
        #: The loop connection being checked out of the pool, if one is (see _grow_loop).
        self._loop_growth: asyncio.Future[Any] | None = None
        #: Big inserts under way (a bulk submit's batches).
        self._bulk_writes = 0
        self._pool: ConnectionPool | None = None
        self._listener: asyncio.Task[None] | None = None
        # One counter and one event per kind of change (see ChangeKind): NOTIFY payloads
        # carry flags, so a waiter for results does not wake for every claim.
        self._changed: dict[ChangeKind, asyncio.Event] = {}
        self._closing = False
        self._generation: dict[ChangeKind, int] = dict.fromkeys(CHANGE_KINDS, 0)
        #: Finished records heard in notifications: task id -> (done generation, JSON).
        self._heard: dict[str, tuple[int, str]] = {}
        #: The channels this process waits on (it listens to those alone), and the signal
        #: that makes the listener take up new ones.
        self._channels: set[str] = set()
        self._rewire: asyncio.Event | None = None
        #: When a claim last promoted due scheduled tasks (see _promote_before_claim).
        self._promoted_at = -math.inf

    def _promote_before_claim(self, cur: Cursor, now: float) -> None:
        # The shared version reads the due rows first: a round trip before every claim.
        # This one statement has the same effect (status, queue order, event) and rides
        # with the claim that follows it. Not before every claim, though: it costs the
        # server 40-80 µs, a twentieth of an idle round trip, while a due task waits for
        # the next promotion PROMOTE_EVERY_S at most (a clock set back promotes at once).
        if 0.0 <= now - self._promoted_at < PROMOTE_EVERY_S:
            return
        self._promoted_at = now
        cur.hold(_PROMOTE_SQL, (now, self.aging, _PROMOTED_EVENT))

    # ------------------------------------------------------------------ plumbing
    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        # A transaction or read goes on the loop's thread when a loop connection is free
        # (see bridge); anything else, and the overflow, on the store's threads.
        mode = _LOOP_MODES.get(getattr(fn, "__name__", "")) if self._loop_max else None
        if mode is not None and getattr(fn, "__self__", None) is self and not self._closing:
            if self._loop_idle:
                out: R = await self._run_on_loop(self._loop_idle.pop(), mode, args[0], args[1:])
                return out
            if self._loop_held < self._loop_max:
                self._grow_loop()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _run_on_loop(
        self, conn: Any, mode: tuple[Sequence[str], str | None], fn: Callable[..., R],
        args: tuple[Any, ...],
    ) -> R:  # fmt: skip
        head, tail = mode
        try:
            return await bridge.call(self._attempt_on_loop, conn, fn, args, head, tail)
        except _InThread as again:
            # Waiting out an outage blocks (backoff sleeps, the pool's reconnects): a thread's
            # job. It knows whether the first attempt may have committed.
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._retrying, fn, args, head, tail, again.lost
            )

    def _attempt_on_loop(
        self, conn: Any, fn: Callable[..., R], args: tuple[Any, ...], head: Sequence[str],
        tail: str | None,
    ) -> R:  # fmt: skip
        """One attempt in a bridged call; one worth repeating raises :class:`_InThread`."""
        try:
            return self._attempt(conn, fn, args, head, tail)
        except Exception as exc:
            _, lost = self._judge(exc, lost=False, replays=0)
            raise _InThread(lost) from exc
        finally:
            self._give_back(conn)

    async def insert_tasks(self, tasks: Sequence[Task], now: float) -> list[Task]:
        """Insert all or none (see the protocol)."""
        if len(tasks) < COPY_MIN_ROWS:
            return await super().insert_tasks(tasks, now)
        if (
            not self._bulk_writes and len(self._loop_idle) <= 1
            and self._loop_held < self._loop_max and not self._closing
        ):  # fmt: skip
            # A big batch is likely one of a bulk submit, whose next batch comes while this
            # one is written: connect a loop connection for it now.
            self._grow_loop()
        growth = self._loop_growth
        if not self._loop_idle and growth is not None:
            # Wait for that connection rather than take a thread: a batch written from a
            # thread contends with the loop for the GIL and took three times as long (the
            # thread would wait for a new connection from the pool all the same).
            await asyncio.wait({growth}, timeout=CONNECT_WAIT_S)
        self._bulk_writes += 1
        try:
            return await super().insert_tasks(tasks, now)
        finally:
            self._bulk_writes -= 1

    def _give_back(self, conn: Any) -> None:
        """A loop connection after a call: idle again, or (closed, broken, mid-transaction,
        or the store closing) returned to the pool, which mends or drops it."""
        if not (self._closing or conn.broken or conn.closed) and (
            conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ):
            self._loop_idle.append(conn)
            return
        self._loop_held -= 1
        pool = self._pool
        if pool is None or self._executor_closed:
            conn.close()
            return
        back = asyncio.get_running_loop().run_in_executor(self._executor, pool.putconn, conn)
        back.add_done_callback(_quietly)

    def _grow_loop(self) -> None:
        """Check one more connection out of the pool for the loop (in a thread: it may wait
        for the pool to connect). Until it arrives, calls take threads as before (big
        inserts wait for it instead: see insert_tasks)."""
        if self._loop_growth is not None:
            return
        self._loop_held += 1
        got = asyncio.get_running_loop().run_in_executor(self._executor, self.pool.getconn)
        self._loop_growth = got

        def grown(fut: asyncio.Future[Any]) -> None:
            self._loop_growth = None
            if fut.cancelled() or fut.exception() is not None:
                self._loop_held -= 1
                return
            self._give_back(fut.result())

        got.add_done_callback(grown)

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool (open stores only)."""
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    def _write_lax(self, fn: Callable[..., R], *args: Any) -> R:
        # Claims and lease renewals touch a handful of rows by key; right after a bulk
        # submit the table has no statistics yet and the planner picks a sequential scan.
        return self._retrying(fn, args, _LAX_HEAD, "COMMIT")

    def _tx(self, fn: Callable[..., R], *args: Any) -> R:
        """One transaction, retried with backoff while the server is unreachable.

        ``BEGIN`` and ``COMMIT`` ride along with the first and last statements (see
        :class:`_Cursor`). A retry after a lost COMMIT can replay a change that did land;
        every write is conditional (lease ids, statuses), so a replay is refused rather
        than doubled.
        """
        return self._retrying(fn, args, _TX_HEAD, "COMMIT")

    def _read(self, fn: Callable[..., R], *args: Any) -> R:
        """Reads run without BEGIN/COMMIT. Each statement sees its own snapshot, which the
        reads tolerate (a page and its total may differ by a task that changed in
        between, as with any paginated API)."""
        return self._retrying(fn, args, (), None)

    _write = _tx

    def _attempt(
        self, conn: Any, fn: Callable[..., R], args: tuple[Any, ...], head: Sequence[str],
        tail: str | None,
    ) -> R:  # fmt: skip
        cur = _Cursor(psycopg.ClientCursor(conn, row_factory=dict_row), tail, self.prepare)
        for stmt in head:
            cur.hold(stmt)
        try:
            out = fn(cur, *args)
            if tail is not None and not cur.finished:
                cur.announce()
                cur.hold(tail)
            cur.flush()
            return out
        except BaseException as exc:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
            if isinstance(exc, _PREPARED_MISMATCH):
                with contextlib.suppress(Exception):
                    conn.execute("DEALLOCATE ALL")
                _prepared_on(conn).clear()
            raise

    def _judge(self, exc: Exception, *, lost: bool, replays: int) -> tuple[bool, bool]:
        """What a failed attempt calls for: raises what is final, else returns (wait before
        the next attempt, whether an attempt so far may have committed unseen)."""
        if isinstance(exc, pg_errors.UniqueViolation):
            if lost and exc.diag.constraint_name == "tasks_pkey":
                raise CommittedBefore from exc
            # Two submits with one idempotency key (or two schedules with one name): the
            # other committed first, and the index made this one wait for it. Run again:
            # the transaction then finds that row, as if it had come second.
            if exc.diag.constraint_name not in _CHECKED_FIRST or replays >= 3:
                raise exc
            return False, lost
        if isinstance(exc, psycopg.DataError):
            # A value PostgreSQL cannot hold (NUL in text, say): the caller's to fix.
            raise InvalidInput(
                f"PostgreSQL cannot store or look up this value: {exc}".strip()
            ) from None
        if isinstance(exc, _RETRYABLE):
            return True, lost or (
                isinstance(exc, psycopg.OperationalError)
                and not isinstance(exc, pg_errors.TransactionRollback)
            )
        raise exc

    def _retrying(
        self, fn: Callable[..., R], args: tuple[Any, ...], head: Sequence[str],
        tail: str | None, lost: bool = False,
    ) -> R:  # fmt: skip
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.05
        replays = 0
        while True:
            try:
                with self.pool.connection() as conn:
                    return self._attempt(conn, fn, args, head, tail)
            except Exception as exc:
                wait, lost = self._judge(exc, lost=lost, replays=replays)
                if not wait:
                    replays += 1
                    continue
                if self._closing or time.monotonic() + delay > deadline:
                    raise Unavailable(f"PostgreSQL unavailable: {exc}".strip()) from exc
                log.warning("database error, retrying in %.2fs: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def open(self) -> None:
        """Open the pool, apply migrations, start listening for changes."""

        def _open() -> None:
            # jit=off: claims run with enable_seqscan off, which prices any scan of a tiny
            # table in the billions; above jit_above_cost PostgreSQL compiles the query, and
            # that took 100 ms for a statement that runs in 0.1 ms. OLTP never gains from JIT.
            self._probe()
            self._pool = ConnectionPool(
                self.conninfo, min_size=self.pool_min, max_size=self.pool_max, open=False,
                kwargs={"autocommit": True, "options": "-c jit=off"}, name="offload",
                connection_class=bridge.LoopConnection,
            )  # fmt: skip
            try:
                self._pool.open(wait=True, timeout=30)
            except Exception as exc:
                raise Unavailable(f"cannot connect to PostgreSQL at {self._redacted()}: "
                                  f"{exc}") from exc  # fmt: skip
            self._migrate()
            self._fit_fair_index()
            with self._pool.connection() as conn:
                row = conn.execute(
                    "SELECT has_database_privilege(current_database(), 'TEMPORARY')"
                ).fetchone()
            if row is not None and not row[0]:
                # A role refused temporary tables writes bulk submits as whole rows.
                log.info("no TEMPORARY privilege on the database: bulk submits send whole rows")
                self.d = _WHOLE_ROWS
            if self._loop_max:
                self._loop_idle.append(self._pool.getconn())
                self._loop_held = 1

        await self._run(_open)
        self._changed = {kind: asyncio.Event() for kind in CHANGE_KINDS}
        self._rewire = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(), name="offload-pg-listen")

    def _probe(self) -> None:
        """Connect once before the pool does: a refusal that waiting cannot cure (no such
        database or role, a bad password or URL option) fails at once with the server's
        reason, instead of after the pool's 30 s of silent retries. A server that is not
        up yet (just started beside its workers, say) is waited for, as before."""
        deadline = time.monotonic() + CONNECT_WAIT_S
        delay = 0.1
        warned = False
        while True:
            try:
                psycopg.connect(self.conninfo, autocommit=True).close()
                return
            except psycopg.Error as exc:
                reason = _connect_reason(exc)
                if _refused_for_good(exc) or time.monotonic() + delay > deadline:
                    raise Unavailable(
                        f"cannot connect to PostgreSQL at {self._redacted()}: {reason}"
                    ) from None
                if not warned:
                    log.warning(
                        "PostgreSQL at %s is not reachable yet (%s); retrying for up to %.0fs",
                        self._redacted(), reason, CONNECT_WAIT_S,
                    )  # fmt: skip
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _redacted(self) -> str:
        p = urlparse(self.conninfo)
        host = p.hostname or "localhost"
        return f"{host}:{p.port or 5432}{p.path}"

    def _migrate(self) -> int:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            cur.execute("SELECT version FROM schema_migrations")
            done = {r[0] for r in cur.fetchall()}
            for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
                version = int(f.name.split("_", 1)[0])
                if version in done:
                    continue
                # One file, one round trip: PL/pgSQL bodies contain semicolons.
                cur.execute(f.read_text().encode())
                cur.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                    (version, f.stem, time.time()),
                )
            cur.execute("SELECT max(version) FROM schema_migrations")
            row = cur.fetchone()
            return int(row[0] or 0) if row else 0

    async def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        return await self._run(self._migrate)

    def _fit_fair_index(self) -> None:
        # Built and dropped CONCURRENTLY, so submits and claims go on meanwhile; that
        # cannot run in a transaction, hence a session lock between processes, and a
        # check again under it. A build that failed half way leaves an invalid index,
        # which is dropped and built again.
        check = (
            f"SELECT ({FAIR_WANTED}), (SELECT indisvalid FROM pg_index "
            f"WHERE indexrelid = to_regclass('{FAIR_INDEX}'))"
        )

        def fits(conn: psycopg.Connection[Any]) -> tuple[bool, bool | None, bool]:
            row = conn.execute(check).fetchone()
            wanted, valid = (bool(row[0]), row[1]) if row else (False, None)
            return wanted, valid, (valid is True) == wanted

        with self.pool.connection() as conn:
            if fits(conn)[2]:
                return
            conn.execute("SELECT pg_advisory_lock(%s)", (FAIR_INDEX_LOCK,))
            try:
                wanted, valid, fine = fits(conn)
                if fine:
                    return
                if valid is not None:
                    conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {FAIR_INDEX}")
                if wanted:
                    log.info("building the index of owner-fair queues (%s)", FAIR_INDEX)
                    conn.execute(FAIR_INDEX_CREATE.format(how="CONCURRENTLY"))
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (FAIR_INDEX_LOCK,))

    async def close(self) -> None:
        """Stop listening; close the pool and the threads."""
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if self._pool is not None:
            pool = self._pool
            idle, self._loop_idle = self._loop_idle, []
            self._loop_held -= len(idle)
            for conn in idle:
                await self._run(pool.putconn, conn)
            await self._run(pool.close)
            self._pool = None
        self._executor_closed = True
        self._executor.shutdown(wait=True)

    async def schema_version(self) -> int:
        """Newest applied migration."""
        return await self._run(
            self._tx, lambda cur: int(cur.execute("SELECT max(version) FROM schema_migrations")
                                      .scalar() or 0))  # fmt: skip

    async def allowed_statuses(self) -> set[str]:
        """Probe the CHECK constraint: which status values does the table accept?"""

        def probe() -> set[str]:
            ok: set[str] = set()
            with self.pool.connection() as conn:
                for value in [s.value for s in Status] + ["bogus", "pending", "done"]:
                    try:
                        with conn.transaction(force_rollback=True), conn.cursor() as cur:
                            cur.execute(
                                "INSERT INTO tasks (id, type, status, created_at, updated_at) "
                                "VALUES ('probe', 'probe', %s, 0, 0)", (value,))  # fmt: skip
                            ok.add(value)
                    except pg_errors.CheckViolation:
                        pass
            return ok

        return await self._run(probe)

    # ------------------------------------------------------------------ LISTEN/NOTIFY
    async def _listen(self) -> None:
        """Hold a LISTEN connection on the channels waited for; wake waiters on each
        notification. Reconnects with backoff."""
        delay = 0.1
        while not self._closing:
            try:
                # UTF-8 whatever the URL asks: payloads carrying records are decoded as such.
                aconn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, client_encoding="utf8"
                )
                async with aconn:
                    # Notifications that arrive with the answer to a LISTEN come this way.
                    aconn.add_notify_handler(lambda note: self._wake(note.payload))
                    heard: set[str] = set()
                    connected = True
                    while True:
                        if self._rewire is not None:
                            self._rewire.clear()
                        wanted = set(self._channels)
                        for channel in sorted(wanted - heard):
                            await aconn.execute(f"LISTEN {channel}")
                        if CHANNELS["-"] in wanted - heard:
                            # After LISTEN, before waking the waiters below: a claim
                            # that found no listener commits before this lock is given,
                            # so the waiters' reads see it (see PgDialect._leased).
                            await aconn.execute(
                                f"SELECT pg_advisory_lock_shared({OTHER_LISTENERS_LOCK})"
                            )
                        if connected or wanted != heard:
                            # Changes may have happened while nobody listened for them.
                            self._wake("wd")
                        heard, connected, delay = wanted, False, 0.1
                        await self._hear(aconn.pgconn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: back off and reconnect
                if self._closing:
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _hear(self, pgconn: psycopg.pq.abc.PGconn) -> None:
        """Wake waiters as notifications arrive, until more channels are wanted (returns)
        or the connection fails (raises).

        The socket is watched directly: psycopg's ``notifies()`` registers and drops its
        reader for every notification, two system calls per wake-up in every process.
        """
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                pgconn.consume_input()  # raises when the connection is gone
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the LISTEN connection closed")
                while (note := pgconn.notifies()) is not None:
                    self._wake(note.extra.decode())
            except Exception as exc:  # the connection is gone: _listen reconnects
                if not lost.done():
                    lost.set_exception(exc)

        assert self._rewire is not None  # set by open(), before the listener starts
        fd = pgconn.socket
        loop.add_reader(fd, readable)
        rewire = asyncio.ensure_future(self._rewire.wait())
        try:
            readable()  # what arrived before the reader was in place
            await asyncio.wait((lost, rewire), return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                lost.result()
        finally:
            rewire.cancel()
            loop.remove_reader(fd)

    def _wake(self, payload: str) -> None:
        """One notification: every kind its flags name moves ("any" always does); a
        finished task's record, when it carries one, is kept for its waiters."""
        flags, carries, rest = payload.partition("|")
        for kind in CHANGE_KINDS:
            if kind == "any" or _FLAGS[kind] in flags:
                self._generation[kind] += 1
                event = self._changed.get(kind)
                if event is not None:
                    event.set()
                    self._changed[kind] = asyncio.Event()
        if carries:
            task_id, _, record = rest.partition("|")
            heard = self._heard
            heard.pop(task_id, None)
            if len(heard) >= HEARD_RECORDS:
                del heard[next(iter(heard))]
            heard[task_id] = (self._generation["done"], record)

    def heard_finished(self, task_id: str, since: int) -> Task | None:
        """The record a completion's notification carried, if it came after ``since``."""
        entry = self._heard.get(task_id)
        if entry is None or entry[0] <= since:
            return None
        try:
            row, children = orjson.loads(entry[1])
            for name in FLOAT_COLUMNS:
                value = row.get(name)
                if value is not None:
                    row[name] = float(value)
            return row_to_task(row, children)
        except (ValueError, TypeError, KeyError):
            # Not a record this version can read (another version wrote it): read the task.
            log.debug("unreadable record in a completion notification", exc_info=True)
            return None

    def change_token(self, kind: ChangeKind = "any") -> int:
        """How many notifications of ``kind`` this process has seen."""
        self._want(kind)
        return self._generation[kind]

    def _want(self, kind: ChangeKind) -> None:
        """Listen for ``kind`` from now on (the listener then wakes its waiters once, for
        what changed before it listened)."""
        channels = _KIND_CHANNELS[kind]
        if not channels <= self._channels:
            self._channels |= channels
            if self._rewire is not None:
                self._rewire.set()

    async def wait_for_change(
        self, timeout: float, since: int | None = None, kind: ChangeKind = "any"
    ) -> bool:
        """Until a NOTIFY of ``kind`` arrives after ``since`` (True) or ``timeout`` passes."""
        self._want(kind)
        if since is not None and since != self._generation[kind]:
            return True
        event = self._changed.get(kind)
        if event is None:
            await asyncio.sleep(timeout)
            return False
        # asyncio.timeout, not wait_for: wait_for runs the wait as a task of its own, two
        # more turns of the loop between a notification and its waiter.
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True
