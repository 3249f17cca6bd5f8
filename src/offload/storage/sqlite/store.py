"""The embedded SQLite backend (default): one file, WAL, many processes.

Every transaction runs on one dedicated thread per process (SQLite calls block, and one
connection per thread is what the module supports). Writes use ``BEGIN IMMEDIATE`` so a
transaction never has to upgrade its lock half way; ``busy_timeout`` lets several
processes share the file. The logic itself is shared with PostgreSQL (:mod:`..sql`).
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import orjson

from offload.domain.errors import InvalidInput, Unavailable
from offload.domain.rules import DEFAULT_AGING_INTERVAL_S
from offload.domain.status import Status
from offload.ports.store import ChangeKind
from offload.storage.flow_sql import FAIR_INDEX, FAIR_INDEX_CREATE, FAIR_WANTED
from offload.storage.rows import TASK_INSERT_COLUMNS, expand_alike
from offload.storage.sql import EVENT_COLUMNS, CreatedEvent, Row, SqlStore, split_sql

R = TypeVar("R")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def path_from_url(url: str) -> str:
    """The file path in ``sqlite:///path`` (``sqlite:////abs`` works too) or a bare path."""
    if not url.startswith("sqlite:"):
        return url
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    path = rest.split("?", 1)[0]
    if path.startswith("//"):
        path = "/" + path.lstrip("/")  # sqlite:////abs: one leading slash is the same file
    if not path:
        raise InvalidInput(f"no file path in database URL {url!r}", field="database_url")
    return path


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration file, in order."""
    out = []
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version = int(f.name.split("_", 1)[0])
        out.append((version, f.stem, f.read_text()))
    return out


_INSERTS: dict[tuple[str, tuple[str, ...]], str] = {}

#: Batches at least this big are inserted column-wise (see :func:`_insert_columnar`).
COLUMNAR_MIN_ROWS = 16
#: Types that round-trip through SQLite's JSON functions exactly (floats are checked for
#: NaN/infinity, which JSON cannot carry).
_JSON_EXACT = frozenset({str, int, float, type(None)})


def _insert_columnar(
    cur: sqlite3.Cursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> bool:
    """Insert ``rows`` as one ``INSERT … SELECT`` over ``json_each``: False if they do not fit.

    Binding every value of a 45-column task row costs sqlite3 about 30 µs a row, most of a
    bulk submit. Rows of one batch mostly share their values (type, queue, policy, times),
    so each column that holds one value is bound once, and the columns that vary travel as
    one JSON array of arrays that SQLite unpacks in C: a third of the cost.
    """
    exprs: list[str] = []
    shared: list[Any] = []
    varying: list[int] = []
    for i, values in enumerate(zip(*rows, strict=True)):
        first = values[0]
        # Equal values of one type are bound once (1, 1.0 and True are equal: check types
        # only for numbers, where that can happen).
        if values.count(first) == len(values) and (
            type(first) is str or first is None or len(set(map(type, values))) == 1
        ):
            exprs.append("?")
            shared.append(first)
            continue
        kinds = set(map(type, values))
        if not kinds <= _JSON_EXACT:
            return False
        if float in kinds and not all(math.isfinite(v) for v in values if type(v) is float):
            return False
        exprs.append(f"j.value ->> {len(varying)}")
        varying.append(i)
    try:
        data = orjson.dumps([[row[i] for i in varying] for row in rows])
    except TypeError:  # e.g. an int beyond 64 bits
        return False
    cur.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(exprs)} "
        "FROM json_each(?) AS j ORDER BY j.key",
        (*shared, data.decode()),
    )
    return True


class _Cursor:
    """A sqlite3 cursor whose rows are plain dicts.

    ``sqlite3.Row`` looks names up linearly, which made decoding a 60-column task row cost
    more than the claim itself; zipping names once per row is several times cheaper.
    """

    __slots__ = ("_cur",)

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def execute(self, sql: str, args: Sequence[Any] = (), *, prepare: bool = False) -> _Cursor:
        # sqlite3 keeps its own cache of prepared statements.
        self._cur.execute(sql, args)
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._cur.executemany(sql, rows)

    def hold(self, sql: str, args: Sequence[Any] = ()) -> None:
        # In process: nothing to save by deferring.
        self._cur.execute(sql, args)

    def finish(self, sql: str, args: Sequence[Any] = (), *, prepare: bool = False) -> _Cursor:
        # COMMIT follows in the store thread; nothing to save in process.
        return self.execute(sql, args)

    def appended(self, kinds: Iterable[str]) -> None:
        # Other processes see commits through PRAGMA data_version; nothing to announce.
        pass

    def insert_alike(
        self, shared: Mapping[str, Any], rows: Sequence[Sequence[Any]], created: CreatedEvent
    ) -> None:
        # The columnar insert binds the shared columns once by itself.
        at, actor, data = created
        self.insert_rows("tasks", TASK_INSERT_COLUMNS, expand_alike(shared, rows))
        events = [(r[0], at, "created", actor, data) for r in rows]
        self.insert_rows("task_events", EVENT_COLUMNS, events)
        self.appended(("created",))  # as insert_events does (nothing to announce here)

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if len(rows) >= COLUMNAR_MIN_ROWS and _insert_columnar(self._cur, table, columns, rows):
            return
        # executemany reuses one prepared statement.
        sql = _INSERTS.get((table, tuple(columns)))
        if sql is None:
            sql = _INSERTS[(table, tuple(columns))] = (
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})"
            )
        self._cur.executemany(sql, rows)

    def _names(self) -> list[str]:
        return [d[0] for d in self._cur.description]

    def fetchone(self) -> Row | None:
        row = self._cur.fetchone()
        return None if row is None else dict(zip(self._names(), row, strict=True))

    def fetchall(self) -> list[Row]:
        rows = self._cur.fetchall()
        if not rows:
            return []
        names = self._names()
        return [dict(zip(names, r, strict=True)) for r in rows]

    def scalar(self) -> Any:
        row = self._cur.fetchone()
        return None if row is None else row[0]

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class SQLiteStore(SqlStore):
    """Store backed by one SQLite file (see :class:`offload.ports.store.Store`)."""

    def __init__(
        self,
        url: str,
        *,
        aging_interval_s: float = DEFAULT_AGING_INTERVAL_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(url, aging_interval_s=aging_interval_s, rng=rng)
        self.path = path_from_url(url)
        query = parse_qs(urlparse(url).query) if "?" in url else {}
        self.synchronous = (query.get("synchronous", ["NORMAL"])[0]).upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidInput(
                "synchronous must be off, normal, full or extra", field="database_url"
            )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offload-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._watch: sqlite3.Connection | None = None
        self._last_change = time.monotonic()

    # ------------------------------------------------------------------ plumbing
    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=30.0, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection (store thread only)."""
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    def _write(self, fn: Callable[..., R], *args: Any) -> R:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            out = fn(_Cursor(cur), *args)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        return out

    def _read(self, fn: Callable[..., R], *args: Any) -> R:
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        try:
            return fn(_Cursor(cur), *args)
        finally:
            cur.execute("COMMIT")

    async def open(self) -> None:
        """Open the file, enable WAL and apply pending migrations."""

        def _open() -> None:
            try:
                self._conn = self._connect()
                self._migrate()
                self._fit_fair_index()
            except (sqlite3.Error, OSError) as exc:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                raise Unavailable(f"cannot open the SQLite database {self.path}: "
                                  f"{self._open_failure(exc)}") from None  # fmt: skip

        await self._run(_open)
        self._watch = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    def _open_failure(self, exc: BaseException) -> str:
        """Why the file could not be opened, and what to do about it."""
        path = Path(self.path)
        if path.is_dir():
            return "that is a directory; give the path of a database file in it"
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            return "the file is not an SQLite database; give a new or existing Offload database"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) or "unable to open" in reason:
            return f"{reason}; check that its directory exists or can be created, and is writable"
        return reason

    def _migrate(self) -> int:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                for statement in split_sql(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time.time())
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    async def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        return await self._run(self._migrate)

    def _fit_fair_index(self) -> None:
        conn = self.conn

        def fits() -> tuple[bool, bool]:
            wanted = bool(conn.execute(FAIR_WANTED).fetchone()[0])
            has = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (FAIR_INDEX,)
            ).fetchone()
            return wanted, wanted == (has is not None)

        # Read first: the write lock is taken only for a change (every open passes here).
        if fits()[1]:
            return
        # One write transaction: the settings read and the index change cannot interleave
        # with another process's (writers take the database lock in turn).
        conn.execute("BEGIN IMMEDIATE")
        try:
            wanted, fine = fits()
            if not fine:
                conn.execute(
                    FAIR_INDEX_CREATE.format(how="")
                    if wanted
                    else f"DROP INDEX IF EXISTS {FAIR_INDEX}"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Close connections and the thread."""

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(_close)
        self._executor.shutdown(wait=True)
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    async def schema_version(self) -> int:
        """Newest applied migration."""

        def q() -> int:
            row = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)

        return await self._run(q)

    async def allowed_statuses(self) -> set[str]:
        """Probe the CHECK constraint: which status values does the table accept?"""

        def probe() -> set[str]:
            ok: set[str] = set()
            candidates = [s.value for s in Status] + ["bogus", "pending", "done"]
            for value in candidates:
                cur = self.conn.cursor()
                cur.execute("SAVEPOINT probe")
                try:
                    cur.execute(
                        "INSERT INTO tasks (id, type, status, created_at, updated_at) "
                        "VALUES ('probe', 'probe', ?, 0, 0)",
                        (value,),
                    )
                    ok.add(value)
                except sqlite3.IntegrityError:
                    pass
                finally:
                    cur.execute("ROLLBACK TO probe")
                    cur.execute("RELEASE probe")
            return ok

        return await self._run(probe)

    def _data_version(self) -> int:
        assert self._watch is not None
        return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def change_token(self, kind: ChangeKind = "any") -> int:
        """``PRAGMA data_version`` of the watch connection: it moves whenever any other
        connection (another process, or this process's store thread) commits. SQLite cannot
        say what changed, so every kind is the same counter."""
        if self._watch is None:
            return 0
        return self._data_version()

    async def wait_for_change(
        self, timeout: float, since: int | None = None, kind: ChangeKind = "any"
    ) -> bool:
        """Poll ``PRAGMA data_version`` (microseconds, no lock) until it moves past ``since``.
        The interval stays at 1 ms while the queue is busy and backs off when idle."""
        if self._watch is None:
            await asyncio.sleep(timeout)
            return False
        start = self._data_version() if since is None else since
        deadline = time.monotonic() + timeout
        while True:
            version = self._data_version()
            now = time.monotonic()
            if version != start:
                self._last_change = now
                return True
            remaining = deadline - now
            if remaining <= 0:
                return False
            idle = now - self._last_change
            interval = 0.001 if idle < 10 else 0.005 if idle < 60 else 0.02
            await asyncio.sleep(min(interval, remaining))
