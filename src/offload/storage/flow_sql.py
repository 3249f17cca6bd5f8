"""Flow control in the database: limits, rate buckets, resources and the limited claim.

:class:`FlowSql` is a mixin of :class:`offload.storage.sql.SqlStore`. While no limit and no
resource exists, claims take the shared fast path and never come here. Once one does, a
claim (:meth:`FlowSql._claim_limited`), inside its own transaction:

1. locks every limit and resource row (PostgreSQL; SQLite serialises writers anyway), so
   two claimers never both count the same free slot;
2. counts usage from the tasks that hold live leases — slots and units come back on every
   outcome (complete, fail, cancel, release, lease expiry) without counters to keep right;
3. refills the token buckets of rate-limited keys;
4. picks candidates in queue order, leaving out keys at their concurrency limit, keys out of
   tokens and tasks needing an exhausted resource, so a saturated key never starves others;
5. admits them one by one while slots, tokens and units last.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, TypeVar

from offload.domain.errors import Conflict, NotFound
from offload.domain.flow import (
    KEY_SEPARATOR,
    ConcurrencyStrategy,
    Fairness,
    Limit,
    LimitSpec,
    QueueSettings,
    QueueSettingsSpec,
    Resource,
    WaitingOn,
    check_resource_name,
    format_rate,
    key_label,
    parse_rate,
)
from offload.storage.hooks import BackendHooks
from offload.storage.rows import loads

R = TypeVar("R")

_LIVE = "('assigned', 'running')"
#: How long a process trusts "no limits and no resources exist" before asking again.
FLOW_RECHECK_S = 1.0
#: Owners a fair claim considers at once (the scan rotates through the rest).
FAIR_OWNERS = 64

# The index a fair claim walks (queued tasks by queue, owner and queue order) exists only
# while some queue has ``fairness: owner``: every queued task in it costs its submit an
# index entry, 6-8% of a bulk submit on PostgreSQL, and no other claim reads it. Only speed
# depends on it: a fair claim without it (while it is being built) scans its queue instead.
# Each backend makes and drops it (_fit_fair_index) when settings change and when it opens.
FAIR_INDEX = "tasks_ready_owner"
#: Whether the index is wanted.
FAIR_WANTED = "SELECT EXISTS (SELECT 1 FROM queue_settings WHERE fairness = 'owner')"
#: The index (``{how}``: the backend's way to build it, e.g. CONCURRENTLY).
FAIR_INDEX_CREATE = (
    f"CREATE INDEX {{how}} IF NOT EXISTS {FAIR_INDEX} "
    "ON tasks (queue, coalesce(owner, ''), sort_key) WHERE status = 'queued'"
)


def _limit(r: dict[str, Any]) -> Limit:
    rate = None
    if r["rate_count"] is not None:
        rate = format_rate(int(r["rate_count"]), float(r["rate_period_s"]))
    return Limit(
        type=r["type"],
        concurrency=r["concurrency"],
        concurrency_key=r["key_path"],
        strategy=ConcurrencyStrategy(r["strategy"]),
        rate_limit=rate,
        updated_at=datetime.fromtimestamp(r["updated_at"], UTC),
    )


def burst(count: int, period_s: float) -> float:
    """A key's bucket holds at most one second's worth of starts (at least one): "10/s"
    may start 10 at once after a pause, "100/m" spreads its starts 0.6 s apart."""
    return max(1.0, count * min(1.0, 1.0 / period_s))


def _refill(tokens: float, updated_at: float, count: int, period_s: float, now: float) -> float:
    return min(burst(count, period_s), tokens + max(0.0, now - updated_at) * count / period_s)


class FlowSql(BackendHooks):
    """Flow-control store operations (see :class:`offload.ports.store.Store`)."""

    #: Monotonic time until which "flow control is off" may be trusted (see FLOW_RECHECK_S).
    _flow_off_until: float = 0.0
    #: When a rate-limited key gets its next token (epoch seconds); workers sleep until then.
    flow_wake_at: float | None = None
    #: Per fair queue: the owner the next claim's owner scan starts after.
    _fair_cursor: dict[str, str]

    # ------------------------------------------------------------------ limits
    async def set_limit(self, task_type: str, spec: LimitSpec, now: float) -> Limit:
        """Create or replace a type's limits. Tasks submitted from now on count against
        them; a changed key path applies to new tasks only."""
        rate = parse_rate(spec.rate_limit) if spec.rate_limit else None

        def w(cur: Any) -> Limit:
            cur.execute(
                "INSERT INTO task_limits (type, concurrency, key_path, strategy, rate_count, "
                "rate_period_s, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (type) DO UPDATE SET concurrency = excluded.concurrency, "
                "key_path = excluded.key_path, strategy = excluded.strategy, "
                "rate_count = excluded.rate_count, rate_period_s = excluded.rate_period_s, "
                "updated_at = excluded.updated_at",
                (task_type, spec.concurrency, spec.concurrency_key, spec.strategy.value,
                 rate[0] if rate else None, rate[1] if rate else None, now),
            )  # fmt: skip
            row = cur.execute("SELECT * FROM task_limits WHERE type = ?", (task_type,)).fetchone()
            return _limit(row)

        self._flow_off_until = 0.0
        return await self._run(self._write, w)

    async def delete_limit(self, task_type: str) -> None:
        """Remove a type's limits (:class:`NotFound` when it has none)."""

        def w(cur: Any) -> None:
            cur.execute("DELETE FROM task_limits WHERE type = ?", (task_type,))
            if cur.rowcount == 0:
                raise NotFound("limit", task_type)
            # Unfinished tasks of the type are no longer limited: claims take them freely.
            prefix = task_type + KEY_SEPARATOR
            cur.execute(
                "UPDATE tasks SET limit_key = NULL WHERE limit_key IS NOT NULL AND status NOT IN "
                "('completed', 'failed', 'cancelled') AND (limit_key = ? OR "
                "substr(limit_key, 1, ?) = ?)",
                (task_type, len(prefix), prefix),
            )

        await self._run(self._write, w)

    async def list_limits(self) -> list[Limit]:
        """Every type's limits."""

        def q(cur: Any) -> list[Limit]:
            return [_limit(r) for r in cur.execute("SELECT * FROM task_limits ORDER BY type")]

        return await self._run(self._read, q)

    # ------------------------------------------------------------------ queues
    async def set_queue_settings(
        self, queue: str, spec: QueueSettingsSpec, now: float
    ) -> QueueSettings:
        """Create or replace a queue's options."""

        def w(cur: Any) -> QueueSettings:
            cur.execute(
                "INSERT INTO queue_settings (queue, fairness, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (queue) DO UPDATE SET fairness = excluded.fairness, "
                "updated_at = excluded.updated_at",
                (queue, spec.fairness.value, now),
            )
            return QueueSettings(
                queue=queue, fairness=spec.fairness, updated_at=datetime.fromtimestamp(now, UTC)
            )

        self._flow_off_until = 0.0
        settings: QueueSettings = await self._run(self._write, w)
        await self._run(self._fit_fair_index)
        return settings

    async def list_queue_settings(self) -> list[QueueSettings]:
        """Every queue with options set."""

        def q(cur: Any) -> list[QueueSettings]:
            return [
                QueueSettings(
                    queue=r["queue"],
                    fairness=Fairness(r["fairness"]),
                    updated_at=datetime.fromtimestamp(r["updated_at"], UTC),
                )
                for r in cur.execute("SELECT * FROM queue_settings ORDER BY queue")
            ]

        return await self._run(self._read, q)

    # ------------------------------------------------------------------ resources
    async def set_resource(self, name: str, capacity: int, now: float) -> Resource:
        """Create a resource or change its capacity."""
        check_resource_name(name)

        def w(cur: Any) -> Resource:
            cur.execute(
                "INSERT INTO resources (name, capacity, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET capacity = excluded.capacity, "
                "updated_at = excluded.updated_at",
                (name, capacity, now),
            )
            return self._resources(cur, name)[0]

        self._flow_off_until = 0.0
        return await self._run(self._write, w)

    async def delete_resource(self, name: str) -> None:
        """Remove a resource; refused while unfinished tasks need it."""

        def w(cur: Any) -> None:
            if cur.execute("SELECT 1 FROM resources WHERE name = ?", (name,)).fetchone() is None:
                raise NotFound("resource", name)
            needing = cur.execute(
                "SELECT count(*) FROM tasks WHERE resources IS NOT NULL AND status NOT IN "
                f"('completed', 'failed', 'cancelled') AND {self.d.json_text('resources', name)} "
                "IS NOT NULL"
            ).scalar()
            if needing:
                raise Conflict(
                    f"{needing} unfinished task(s) need resource {name!r}; cancel them or "
                    "let them finish first (or set its capacity to 0 to hold them)",
                    details={"resource": name, "tasks": needing},
                )
            cur.execute("DELETE FROM resources WHERE name = ?", (name,))

        await self._run(self._write, w)

    async def list_resources(self) -> list[Resource]:
        """Every resource with units in use and tasks waiting for it."""
        return await self._run(self._read, self._resources, None)

    def _resources(self, cur: Any, name: str | None) -> list[Resource]:
        rows = cur.execute(
            "SELECT * FROM resources" + (" WHERE name = ?" if name else "") + " ORDER BY name",
            (name,) if name else (),
        ).fetchall()
        used: Counter[str] = Counter()
        waiting: Counter[str] = Counter()
        for r in cur.execute(
            "SELECT resources, status FROM tasks WHERE resources IS NOT NULL AND status IN "
            "('queued', 'assigned', 'running')"
        ):
            need = loads(r["resources"]) or {}
            if r["status"] == "queued":
                waiting.update(dict.fromkeys(need, 1))
            else:
                used.update(need)
        return [
            Resource(
                name=r["name"],
                capacity=r["capacity"],
                in_use=used[r["name"]],
                waiting=waiting[r["name"]],
                updated_at=datetime.fromtimestamp(r["updated_at"], UTC),
            )
            for r in rows
        ]

    async def resource_names(self) -> set[str]:
        """Names of the defined resources (submit checks against them)."""

        def q(cur: Any) -> set[str]:
            return {r["name"] for r in cur.execute("SELECT name FROM resources")}

        return await self._run(self._read, q)

    # ------------------------------------------------------------------ claims
    def _flow_active(self, cur: Any) -> bool:
        """Whether any limit or resource exists (cached while the answer is "no")."""
        if time.monotonic() < self._flow_off_until:
            return False
        active = bool(
            cur.execute(
                "SELECT (SELECT count(*) FROM task_limits) + (SELECT count(*) FROM resources) "
                "+ (SELECT count(*) FROM queue_settings WHERE fairness = 'owner') AS n"
            ).scalar()
        )
        if not active:
            self._flow_off_until = time.monotonic() + FLOW_RECHECK_S
        return active

    def _claim_limited(
        self, cur: Any, where: str, base_args: list[Any], queues: list[str], want: int, now: float
    ) -> list[str]:
        """Ids to lease, in claim order, within every limit (see the module docstring)."""
        if self.d.flow_lock:
            # One lock for every limited claim in the cluster: whoever holds it counts
            # usage after the previous holder committed, so no slot is handed out twice.
            # Held back, it travels with the read below: one round trip for both.
            cur.hold(self.d.flow_lock)
        j = self.d.json_rows
        state = cur.execute(
            "SELECT "
            + j("SELECT type, concurrency, rate_count, rate_period_s FROM task_limits",
                ("type", "concurrency", "rate_count", "rate_period_s")) + " AS limits, "
            + j("SELECT name, capacity FROM resources", ("name", "capacity")) + " AS caps, "
            + j("SELECT limit_key, count(*) AS n FROM tasks WHERE limit_key IS NOT NULL "
                f"AND status IN {_LIVE} GROUP BY limit_key", ("limit_key", "n")) + " AS running, "
            + j(f"SELECT resources FROM tasks WHERE resources IS NOT NULL AND status IN {_LIVE}",
                ("resources",)) + " AS used, "
            + j("SELECT limit_key, tokens, updated_at FROM rate_buckets",
                ("limit_key", "tokens", "updated_at")) + " AS buckets, "
            + j("SELECT queue FROM queue_settings WHERE fairness = 'owner'", ("queue",))
            + " AS fair"
        ).fetchone()  # fmt: skip
        limits = {r["type"]: r for r in loads(state["limits"])}
        capacity = {r["name"]: int(r["capacity"]) for r in loads(state["caps"])}
        running: Counter[str] = Counter(
            {r["limit_key"]: int(r["n"]) for r in loads(state["running"])}
        )
        used: Counter[str] = Counter()
        for r in loads(state["used"]):
            used.update(loads(r["resources"]) or {})
        buckets: dict[str, float] = {}
        for r in loads(state["buckets"]):
            lim = limits.get(r["limit_key"].split(KEY_SEPARATOR, 1)[0])
            if lim is not None and lim["rate_count"] is not None:
                buckets[r["limit_key"]] = _refill(
                    r["tokens"], r["updated_at"], lim["rate_count"], lim["rate_period_s"], now
                )
        fair = {r["queue"] for r in loads(state["fair"])}

        def limit_of(key: str) -> Any:
            return limits.get(key.split(KEY_SEPARATOR, 1)[0])

        def conc_full(key: str) -> bool:
            lim = limit_of(key)
            return bool(lim and lim["concurrency"] and running[key] >= lim["concurrency"])

        def tokens(key: str) -> float:
            lim = limit_of(key)
            if lim is None or lim["rate_count"] is None:
                return float("inf")
            # A key seen for the first time starts with one token, not a full bucket, so a
            # cold start admits the rate, not a burst on top of it.
            return buckets.get(key, 1.0)

        blocked_keys = sorted(
            {k for k in running if conc_full(k)} | {k for k, t in buckets.items() if t < 1.0}
        )
        exhausted = sorted(n for n, cap in capacity.items() if used[n] >= cap)
        extra = ""
        args = list(base_args)
        if blocked_keys:
            marks = ", ".join("?" * len(blocked_keys))
            extra += f" AND (limit_key IS NULL OR limit_key NOT IN ({marks}))"
            args += blocked_keys
        for name in exhausted:
            extra += f" AND (resources IS NULL OR {self.d.json_text('resources', name)} IS NULL)"
        # Over-pick: some candidates may still not fit (units short, a key filling up).
        cap = want * 2 + 16
        candidates: list[tuple[Any, ...]] = []
        for queue in queues:
            if queue in fair:
                candidates += self._fair_pick(cur, queue, f"{where}{extra}", args, cap)
                continue
            rows = cur.execute(
                f"SELECT id, sort_key, limit_key, resources FROM tasks WHERE {where}{extra} "
                f"ORDER BY sort_key LIMIT ?{self.d.skip_locked}",
                (queue, *args, cap),
            ).fetchall()
            candidates += [
                ((0, 0, r["sort_key"]), r["id"], r["limit_key"], r["resources"]) for r in rows
            ]
        candidates.sort(key=lambda c: c[0])
        chosen: list[str] = []
        spent: Counter[str] = Counter()
        for _, task_id, key, res in candidates:
            if len(chosen) >= want:
                break
            if key is not None and (conc_full(key) or tokens(key) - spent[key] < 1.0):
                continue
            need: dict[str, int] = loads(res) if res else {}
            if any(used[n] + u > capacity.get(n, 0) for n, u in need.items()):
                continue
            chosen.append(task_id)
            used.update(need)
            if key is not None:
                running[key] += 1
                if tokens(key) != float("inf"):
                    spent[key] += 1
        # Write back the buckets this claim drew on or refilled.
        wake: float | None = None
        for key in set(spent) | set(buckets):
            lim = limit_of(key)
            if lim is None or lim["rate_count"] is None:
                continue
            left = tokens(key) - spent[key]
            cur.hold(
                "INSERT INTO rate_buckets (limit_key, tokens, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (limit_key) DO UPDATE SET tokens = excluded.tokens, "
                "updated_at = excluded.updated_at",
                (key, left, now),
            )
            if left < 1.0:
                at = now + (1.0 - left) * lim["rate_period_s"] / lim["rate_count"]
                wake = at if wake is None else min(wake, at)
        self.flow_wake_at = wake
        return chosen

    def _fair_pick(
        self, cur: Any, queue: str, where: str, args: list[Any], cap: int
    ) -> list[tuple[Any, ...]]:
        """Candidates of a ``fairness: owner`` queue, alternating across owners.

        Owners with queued work are found by a skip scan of the (queue, owner, sort_key)
        index — one short query per owner, up to FAIR_OWNERS per claim, the starting point
        rotating so every owner gets its turn — then each owner's best few are interleaved:
        higher priority first, then round robin across owners, then queue order. One
        tenant's flood therefore delays another's tasks by one turn, not by the flood.
        """

        def scan(after: str | None, upto: str | None, room: int) -> list[str]:
            found: list[str] = []
            while len(found) < room:
                cond, arg = (">= ?", "") if after is None else ("> ?", after)
                row = cur.execute(
                    "SELECT coalesce(owner, '') AS o FROM tasks WHERE status = 'queued' AND "
                    f"queue = ? AND coalesce(owner, '') {cond} ORDER BY coalesce(owner, '') "
                    "LIMIT 1",
                    (queue, arg),
                ).fetchone()
                if row is None or (upto is not None and row["o"] > upto):
                    break
                found.append(row["o"])
                after = row["o"]
            return found

        cursor = self._fair_cursor.get(queue)
        owners = scan(cursor, None, FAIR_OWNERS)
        if cursor is not None and len(owners) < FAIR_OWNERS:
            owners += scan(None, cursor, FAIR_OWNERS - len(owners))
        if not owners:
            return []
        if len(owners) >= FAIR_OWNERS:
            self._fair_cursor[queue] = owners[-1]
        else:
            self._fair_cursor.pop(queue, None)
        per = cap // len(owners) + 1
        out: list[tuple[Any, ...]] = []
        for owner in owners:
            rows = cur.execute(
                f"SELECT id, sort_key, priority, limit_key, resources FROM tasks WHERE {where} "
                f"AND coalesce(owner, '') = ? ORDER BY sort_key LIMIT ?{self.d.skip_locked}",
                (queue, *args, owner, per),
            ).fetchall()
            out += [
                ((-r["priority"], rank, r["sort_key"]), r["id"], r["limit_key"], r["resources"])
                for rank, r in enumerate(rows)
            ]
        return out

    # ------------------------------------------------------------------ submit strategies
    def _apply_strategy(self, cur: Any, t: Any, now: float, pending: int = 0) -> str | None:
        """For a new task over its key's concurrency limit under a cancel strategy: cancel
        it (``cancel_newest``, returns the reason) or cancel the oldest unfinished tasks of
        the key (``cancel_in_progress``, returns None)."""
        if t.limit_key is None:
            return None
        lim = cur.execute(
            "SELECT concurrency, strategy FROM task_limits WHERE type = ?",
            (t.limit_key.split(KEY_SEPARATOR, 1)[0],),
        ).fetchone()
        if lim is None or lim["concurrency"] is None or lim["strategy"] == "queue":
            return None
        active = cur.execute(
            "SELECT id, status FROM tasks WHERE limit_key = ? AND status IN "
            "('blocked', 'scheduled', 'queued', 'assigned', 'running', 'paused') "
            "ORDER BY created_at, id",
            (t.limit_key,),
        ).fetchall()
        # ``pending``: earlier tasks of the same key in this very submit batch.
        over = len(active) + pending + 1 - int(lim["concurrency"])
        if over <= 0:
            return None
        if lim["strategy"] == ConcurrencyStrategy.CANCEL_NEWEST.value:
            return (
                f"concurrency limit {lim['concurrency']} reached for {key_label(t.limit_key)} "
                "(strategy cancel_newest)"
            )
        for victim in active[:over]:
            self._cancel_for_limit(cur, victim["id"], victim["status"], now)
        return None

    def _cancel_for_limit(self, cur: Any, task_id: str, status: str, now: float) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ why not running
    async def limit_wait(self, task_id: str, now: float) -> WaitingOn | None:
        """For a queued task: the limit or resource that holds it back right now, if any."""

        def q(cur: Any) -> WaitingOn | None:
            row = cur.execute(
                "SELECT status, limit_key, resources FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
            if row is None or row["status"] != "queued":
                return None
            return self._limit_wait(cur, row, now)

        return await self._run(self._read, q)

    def _limit_wait(self, cur: Any, row: dict[str, Any], now: float) -> WaitingOn | None:
        if row.get("resources"):
            need: dict[str, int] = loads(row["resources"]) or {}
            caps = {
                r["name"]: int(r["capacity"])
                for r in cur.execute("SELECT name, capacity FROM resources")
            }
            used: Counter[str] = Counter()
            for r in cur.execute(
                f"SELECT resources FROM tasks WHERE resources IS NOT NULL AND status IN {_LIVE}"
            ):
                used.update(loads(r["resources"]) or {})
            if any(used[n] + u > caps.get(n, 0) for n, u in need.items()):
                return WaitingOn.RESOURCE
        key = row.get("limit_key")
        if key:
            lim = cur.execute(
                "SELECT * FROM task_limits WHERE type = ?", (key.split(KEY_SEPARATOR, 1)[0],)
            ).fetchone()
            if lim is not None:
                if lim["concurrency"] is not None:
                    n = cur.execute(
                        f"SELECT count(*) FROM tasks WHERE limit_key = ? AND status IN {_LIVE}",
                        (key,),
                    ).scalar()
                    if n >= lim["concurrency"]:
                        return WaitingOn.CONCURRENCY
                if lim["rate_count"] is not None:
                    b = cur.execute(
                        "SELECT * FROM rate_buckets WHERE limit_key = ?", (key,)
                    ).fetchone()
                    if (
                        b is not None
                        and _refill(
                            b["tokens"],
                            b["updated_at"],
                            lim["rate_count"],
                            lim["rate_period_s"],
                            now,
                        )
                        < 1.0
                    ):
                        return WaitingOn.RATE_LIMIT
        return None

    async def flow_stats(self) -> dict[str, Any]:
        """Queued tasks held back by each kind of limit, and resource usage (metrics)."""

        def q(cur: Any) -> dict[str, Any]:
            return {
                "limited_queued": int(
                    cur.execute(
                        "SELECT count(*) FROM tasks WHERE status = 'queued' AND "
                        "(limit_key IS NOT NULL OR resources IS NOT NULL)"
                    ).scalar()
                    or 0
                ),
                "resources": {r.name: (r.in_use, r.capacity) for r in self._resources(cur, None)},
            }

        return await self._run(self._read, q)
