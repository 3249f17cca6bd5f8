"""Agent registry, failover, push assignment and auctions: the SQL half of PRODUCT.md §5.

:class:`AgentsSql` is a mixin of :class:`offload.storage.sql.SqlStore`; it uses only the
backend hooks (``_run``/``_write``/``_read``) and SQL both backends accept. Agent events
(``agent.registered``, ``agent.offline``) go to the task event log with the agent's id in
``task_id``, so the live stream carries them in order with task events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from offload.domain.agents import (
    AgentWorkload,
    Bid,
    BidSpec,
    DispatchMode,
    QueueDispatch,
    QueueDispatchUpdate,
)
from offload.domain.errors import Conflict, NotFound
from offload.domain.ids import new_id
from offload.domain.models import Agent, AgentStatus, AssignmentMethod, Task
from offload.domain.status import Status
from offload.storage.hooks import BackendHooks
from offload.storage.rows import dt, dumps, loads, row_to_agent, row_to_task

R = TypeVar("R")

_LEASED = "('assigned', 'running')"
_EVENT_SQL = "INSERT INTO task_events (task_id, at, kind, actor, data) VALUES (?, ?, ?, ?, ?)"
#: Only this much history feeds the specialization score (recent work says the most).
HISTORY_WINDOW_S = 7 * 86400.0
HISTORY_ROWS = 20_000


def _event(cur: Any, subject: str, at: float, kind: str, actor: str | None, data: Any) -> None:
    cur.execute(_EVENT_SQL, (subject, at, kind, actor, dumps(data)))
    cur.appended((kind,))


class AgentsSql(BackendHooks):
    """Agent-side store operations (see :class:`offload.ports.store.Store`)."""

    _AGENT_SELECT: str

    # ------------------------------------------------------------------ registry
    async def get_agent(self, agent_id: str) -> Agent:
        """One agent with live load and history, or :class:`NotFound`."""

        def q(cur: Any) -> Agent:
            row = cur.execute(f"{self._AGENT_SELECT} WHERE a.id = ?", (agent_id,)).fetchone()
            if row is None:
                raise NotFound("agent", agent_id)
            return row_to_agent(row)

        return await self._run(self._read, q)

    async def agent_workload(self, agent_id: str) -> AgentWorkload:
        """An agent, the tasks it holds now and its history."""

        def q(cur: Any) -> AgentWorkload:
            row = cur.execute(f"{self._AGENT_SELECT} WHERE a.id = ?", (agent_id,)).fetchone()
            if row is None:
                raise NotFound("agent", agent_id)
            agent = row_to_agent(row)
            rows = cur.execute(
                f"SELECT * FROM tasks WHERE assigned_agent = ? AND status IN {_LEASED} "
                "ORDER BY id LIMIT 1000",
                (agent_id,),
            ).fetchall()
            return AgentWorkload(
                agent=agent, tasks=[row_to_task(r) for r in rows], success_rate=agent.success_rate
            )

        return await self._run(self._read, q)

    async def set_agent_status(self, agent_id: str, status: AgentStatus, now: float) -> Agent:
        """Set an agent's status (draining, online, offline); offline expires its leases."""

        def w(cur: Any) -> Agent:
            cur.execute(
                "UPDATE agents SET status = ?, updated_at = ? WHERE id = ? RETURNING id",
                (status.value, now, agent_id),
            )
            if cur.fetchone() is None:
                raise NotFound("agent", agent_id)
            if status is AgentStatus.OFFLINE:
                self._expire_agent_leases(cur, [agent_id], now)
            _event(cur, agent_id, now, f"agent.{status.value}", agent_id, {"agent_id": agent_id})
            row = cur.execute(f"{self._AGENT_SELECT} WHERE a.id = ?", (agent_id,)).fetchone()
            return row_to_agent(row)

        return await self._run(self._write, w)

    async def reap_agents(self, now: float, offline_after_s: float) -> list[str]:
        """Mark agents silent for ``offline_after_s`` offline and expire their leases, so the
        next reaper pass re-queues their tasks. Returns the agents this call took offline:
        the conditional UPDATE makes concurrent passes on several servers report each once.
        """

        def w(cur: Any) -> list[str]:
            rows = cur.execute(
                "UPDATE agents SET status = 'offline', updated_at = ? "
                "WHERE status != 'offline' AND last_heartbeat < ? RETURNING id, last_heartbeat",
                (now, now - offline_after_s),
            ).fetchall()
            ids = [r["id"] for r in rows]
            if ids:
                self._expire_agent_leases(cur, ids, now)
            for r in rows:
                _event(
                    cur,
                    r["id"],
                    now,
                    "agent.offline",
                    "system",
                    {"agent_id": r["id"], "reason": "missed heartbeats",
                     "last_heartbeat": r["last_heartbeat"]},
                )  # fmt: skip
            return ids

        def silent(cur: Any) -> bool:
            row = cur.execute(
                "SELECT 1 FROM agents WHERE status != 'offline' AND last_heartbeat < ? LIMIT 1",
                (now - offline_after_s,),
            ).fetchone()
            return row is not None

        # Every maintenance pass asks; a read first keeps the usual answer (nobody is
        # silent) from taking the write lock.
        if not await self._run(self._read, silent):
            return []
        return await self._run(self._write, w)

    async def draining_agents(self) -> set[str]:
        """Ids of the agents now draining."""

        def q(cur: Any) -> set[str]:
            rows = cur.execute("SELECT id FROM agents WHERE status = 'draining'").fetchall()
            return {r["id"] for r in rows}

        return await self._run(self._read, q)

    @staticmethod
    def _expire_agent_leases(cur: Any, agent_ids: Sequence[str], now: float) -> int:
        # Expired, not re-queued here: the reaper applies the one failed-attempt rule to them.
        marks = ", ".join("?" * len(agent_ids))
        return int(
            cur.execute(
                "UPDATE tasks SET lease_expires_at = ? "
                f"WHERE assigned_agent IN ({marks}) AND lease_holder = assigned_agent "
                f"AND lease_id IS NOT NULL AND status IN {_LEASED}",
                (now - 1e-3, *agent_ids),
            ).rowcount
        )

    # ------------------------------------------------------------------ dispatch settings
    async def get_queue_dispatch(self, queue: str) -> QueueDispatch:
        """A queue's dispatch settings (``pull`` when never set)."""

        def q(cur: Any) -> QueueDispatch:
            row = cur.execute("SELECT * FROM queue_dispatch WHERE queue = ?", (queue,)).fetchone()
            return _dispatch(row) if row is not None else QueueDispatch(queue=queue)

        return await self._run(self._read, q)

    async def set_queue_dispatch(
        self, queue: str, update: QueueDispatchUpdate, now: float
    ) -> QueueDispatch:
        """Change a queue's dispatch settings; omitted fields keep their value."""

        def w(cur: Any) -> QueueDispatch:
            row = cur.execute("SELECT * FROM queue_dispatch WHERE queue = ?", (queue,)).fetchone()
            current = _dispatch(row) if row is not None else QueueDispatch(queue=queue)
            new = current.model_copy(update=update.model_dump(exclude_none=True))
            cur.execute(
                "INSERT INTO queue_dispatch (queue, mode, hybrid_threshold, auction_window_ms, "
                "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (queue) DO UPDATE SET "
                "mode = excluded.mode, hybrid_threshold = excluded.hybrid_threshold, "
                "auction_window_ms = excluded.auction_window_ms, updated_at = excluded.updated_at",
                (queue, new.mode.value, new.hybrid_threshold, new.auction_window_ms, now),
            )
            return new

        return await self._run(self._write, w)

    async def list_queue_dispatch(self) -> list[QueueDispatch]:
        """Every queue whose mode is not ``pull``: the dispatcher's work list."""

        def q(cur: Any) -> list[QueueDispatch]:
            rows = cur.execute(
                "SELECT * FROM queue_dispatch WHERE mode != 'pull' ORDER BY queue"
            ).fetchall()
            return [_dispatch(r) for r in rows]

        return await self._run(self._read, q)

    # ------------------------------------------------------------------ push assignment
    async def dispatchable(self, queue: str, min_priority: int, limit: int) -> list[Task]:
        """Queued tasks of ``queue`` the dispatcher may place, best first, leaving out
        tasks that are or were up for auction, and tasks under a concurrency/rate limit or
        needing a resource: only claims enforce those, so such tasks are always pulled."""

        def q(cur: Any) -> list[Task]:
            rows = cur.execute(
                "SELECT * FROM tasks WHERE status = 'queued' AND queue = ? AND priority >= ? "
                "AND limit_key IS NULL AND resources IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM auctions au WHERE au.task_id = tasks.id) "
                "ORDER BY sort_key LIMIT ?",
                (queue, min_priority, limit),
            ).fetchall()
            return [row_to_task(r) for r in rows]

        return await self._run(self._read, q)

    async def push_candidates(self) -> list[Agent]:
        """Agents that may receive work now (online) with their live load; history columns
        are left empty (see :meth:`agent_history`)."""

        def q(cur: Any) -> list[Agent]:
            # Load from live leases only (the tasks_leases index): counting an agent's rows
            # by assigned_agent would walk its whole history on every pass.
            held = {
                r["holder"]: int(r["n"])
                for r in cur.execute(
                    "SELECT lease_holder AS holder, count(*) AS n FROM tasks "
                    f"WHERE lease_id IS NOT NULL AND status IN {_LEASED} GROUP BY lease_holder"
                ).fetchall()
            }
            rows = cur.execute(
                "SELECT a.*, 0 AS load, 0 AS completed, 0 AS failed, NULL AS mean_duration_s "
                "FROM agents a WHERE a.status = 'online'"
            ).fetchall()
            for r in rows:
                r["load"] = held.get(r["id"], 0)
            return [row_to_agent(r) for r in rows]

        return await self._run(self._read, q)

    async def agent_history(self, now: float) -> dict[tuple[str, str], tuple[int, int, float]]:
        """Per ``(agent, task type)`` over recent work (the last week, at most the newest
        :data:`HISTORY_ROWS` finished tasks): completed, failed, mean seconds."""

        def q(cur: Any) -> dict[tuple[str, str], tuple[int, int, float]]:
            rows = cur.execute(
                "SELECT assigned_agent, type, "
                "sum(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS ok, "
                "sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS bad, "
                "avg(CASE WHEN status = 'completed' THEN actual_duration_s END) AS mean_s "
                "FROM (SELECT assigned_agent, type, status, actual_duration_s FROM tasks "
                "WHERE finished_at > ? ORDER BY finished_at DESC LIMIT ?) recent "
                "WHERE assigned_agent IS NOT NULL GROUP BY assigned_agent, type",
                (now - HISTORY_WINDOW_S, HISTORY_ROWS),
            ).fetchall()
            return {
                (r["assigned_agent"], r["type"]): (
                    int(r["ok"] or 0), int(r["bad"] or 0), float(r["mean_s"] or 0.0)
                )
                for r in rows
            }  # fmt: skip

        return await self._run(self._read, q)

    async def assign(
        self,
        task_id: str,
        agent_id: str,
        method: AssignmentMethod,
        lease_ttl_s: float,
        now: float,
        collaborators: Sequence[str] = (),
        roles: Mapping[str, str] | None = None,
    ) -> Task | None:
        """Move a queued task to ``assigned`` for ``agent_id`` with a fresh lease. None when
        the task is no longer queued (claimed or assigned elsewhere meanwhile)."""

        def w(cur: Any) -> Task | None:
            lease_id = new_id()
            assignment = {
                "agent_id": agent_id,
                "collaborators": list(collaborators),
                "assigned_at": dt(now).isoformat(),  # type: ignore[union-attr]
                "method": method.value,
                "roles": dict(roles or {}),
            }
            row = cur.execute(
                "UPDATE tasks SET status = 'assigned', lease_id = ?, lease_holder = ?, "
                "lease_expires_at = ?, attempt = attempt + 1, started_at = ?, updated_at = ?, "
                "assignment = ?, assigned_agent = ?, cancel_requested = 0 "
                "WHERE id = ? AND status = 'queued' RETURNING *",
                (lease_id, agent_id, now + lease_ttl_s, now, now, dumps(assignment), agent_id,
                 task_id),
            ).fetchone()  # fmt: skip
            if row is None:
                return None
            _event(
                cur,
                task_id,
                now,
                "task.assigned",
                "dispatcher",
                {"agent_id": agent_id, "method": method.value, "lease_id": lease_id,
                 "attempt": row["attempt"], "collaborators": list(collaborators)},
            )  # fmt: skip
            return row_to_task(row)

        return await self._run(self._write, w)

    async def set_team(
        self,
        task_id: str,
        lease_id: str,
        collaborators: Sequence[str],
        roles: Mapping[str, str],
        now: float,
    ) -> Task | None:
        """Record a claimed task's collaborators and roles (event ``team.formed``), fenced
        by the lease; None if the lease is no longer live."""

        def w(cur: Any) -> Task | None:
            row = cur.execute(
                "SELECT assignment FROM tasks WHERE id = ? AND lease_id = ? "
                f"AND status IN {_LEASED}",
                (task_id, lease_id),
            ).fetchone()
            if row is None:
                return None
            assignment = loads(row["assignment"]) or {}
            assignment["collaborators"] = list(collaborators)
            assignment["roles"] = dict(roles)
            updated = cur.execute(
                "UPDATE tasks SET assignment = ?, updated_at = ? WHERE id = ? RETURNING *",
                (dumps(assignment), now, task_id),
            ).fetchone()
            _event(cur, task_id, now, "team.formed", "dispatcher",
                   {"primary": assignment.get("agent_id"), "collaborators": list(collaborators),
                    "roles": dict(roles)})  # fmt: skip
            return row_to_task(updated)

        return await self._run(self._write, w)

    async def start_assigned(self, task_id: str, lease_id: str, now: float) -> bool:
        """The push agent accepted: ``assigned`` → ``running`` (fenced by the lease)."""

        def w(cur: Any) -> bool:
            rows = cur.execute(
                "UPDATE tasks SET status = 'running', updated_at = ? "
                "WHERE id = ? AND lease_id = ? AND status = 'assigned'",
                (now, task_id, lease_id),
            ).rowcount
            if rows:
                _event(cur, task_id, now, "status_changed", None,
                       {"from": "assigned", "to": "running"})  # fmt: skip
            return bool(rows)

        return await self._run(self._write, w)

    async def unassign(self, task_id: str, lease_id: str, now: float, reason: str) -> bool:
        """Take back an assignment the agent refused (503) or could not receive: the task is
        queued again and the attempt not spent."""

        def w(cur: Any) -> bool:
            row = cur.execute(
                "UPDATE tasks SET status = 'queued', lease_id = NULL, lease_holder = NULL, "
                "lease_expires_at = NULL, assigned_agent = NULL, assignment = NULL, "
                "attempt = attempt - 1, started_at = NULL, updated_at = ? "
                "WHERE id = ? AND lease_id = ? AND status = 'assigned' RETURNING id",
                (now, task_id, lease_id),
            ).fetchone()
            if row is not None:
                _event(cur, task_id, now, "unassigned", "dispatcher", {"reason": reason})
            return row is not None

        return await self._run(self._write, w)

    # ------------------------------------------------------------------ swarms
    async def pinned_queued(self, agent_ids: Sequence[str]) -> list[Task]:
        """Queued workflow children pinned to one of ``agent_ids`` (swarm members waiting
        for an agent that went offline)."""
        if not agent_ids:
            return []
        marks = ", ".join("?" * len(agent_ids))

        def q(cur: Any) -> list[Task]:
            rows = cur.execute(
                f"SELECT * FROM tasks WHERE status IN ('queued', 'scheduled') "
                f"AND agent_id IN ({marks}) AND parent_id IS NOT NULL LIMIT 1000",
                tuple(agent_ids),
            ).fetchall()
            return [row_to_task(r) for r in rows]

        return await self._run(self._read, q)

    async def repin(
        self, task_id: str, old_agent: str, new_agent: str, new_ref: str | None, now: float
    ) -> bool:
        """Move a waiting pinned task from ``old_agent`` to ``new_agent`` (and rename its
        ``ref``); False if it is no longer waiting for ``old_agent``."""

        def w(cur: Any) -> bool:
            changed = cur.execute(
                "UPDATE tasks SET agent_id = ?, ref = coalesce(?, ref), updated_at = ? "
                "WHERE id = ? AND agent_id = ? AND status IN ('queued', 'scheduled')",
                (new_agent, new_ref, now, task_id, old_agent),
            ).rowcount
            if changed:
                _event(cur, task_id, now, "swarm.repinned", "system",
                       {"from": old_agent, "to": new_agent})  # fmt: skip
            return bool(changed)

        return await self._run(self._write, w)

    # ------------------------------------------------------------------ auctions
    async def open_auction(self, task_id: str, now: float, window_s: float) -> bool:
        """Announce a queued task (event ``auction.announced``); False if already open or
        the task is no longer queued."""

        def w(cur: Any) -> bool:
            row = cur.execute(
                "SELECT status, type, capabilities, priority FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
            if row is None or row["status"] != Status.QUEUED.value:
                return False
            inserted = cur.execute(
                "INSERT INTO auctions (task_id, opened_at, closes_at) VALUES (?, ?, ?) "
                "ON CONFLICT (task_id) DO NOTHING",
                (task_id, now, now + window_s),
            ).rowcount
            if not inserted:
                return False
            _event(
                cur,
                task_id,
                now,
                "auction.announced",
                "dispatcher",
                {"type": row["type"], "capabilities": loads(row["capabilities"]),
                 "priority": row["priority"], "closes_at": dt(now + window_s).isoformat()},  # type: ignore[union-attr]
            )  # fmt: skip
            return True

        return await self._run(self._write, w)

    async def place_bid(self, task_id: str, bid: BidSpec, now: float) -> Bid:
        """Record (or replace) an agent's bid while the task's auction is open."""

        def w(cur: Any) -> Bid:
            # Locked: a close running now waits for this bid and then counts it; read
            # unlocked, a bid accepted in the instant of closing was never considered.
            row = cur.execute(
                f"SELECT closes_at, closed FROM auctions WHERE task_id = ?{self.d.for_update}",
                (task_id,),
            ).fetchone()
            if row is None:
                if cur.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() is None:
                    raise NotFound("task", task_id)
                raise Conflict(
                    f"task {task_id} is not up for auction", details={"task_id": task_id}
                )
            if row["closed"] or row["closes_at"] < now:
                raise Conflict(
                    f"the auction for task {task_id} is closed", details={"task_id": task_id}
                )
            if cur.execute("SELECT 1 FROM agents WHERE id = ?", (bid.agent_id,)).fetchone() is None:
                raise NotFound("agent", bid.agent_id)
            cur.execute(
                "INSERT INTO auction_bids (task_id, agent_id, cost, eta_s, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (task_id, agent_id) DO UPDATE SET "
                "cost = excluded.cost, eta_s = excluded.eta_s, at = excluded.at",
                (task_id, bid.agent_id, bid.cost, bid.eta_s, now),
            )
            _event(cur, task_id, now, "auction.bid", bid.agent_id,
                   {"agent_id": bid.agent_id, "cost": bid.cost, "eta_s": bid.eta_s})  # fmt: skip
            return Bid(task_id=task_id, agent_id=bid.agent_id, cost=bid.cost, eta_s=bid.eta_s,
                       at=dt(now))  # fmt: skip

        return await self._run(self._write, w)

    async def due_auctions(self, now: float) -> list[str]:
        """Open auctions whose window has passed."""

        def q(cur: Any) -> list[str]:
            rows = cur.execute(
                "SELECT task_id FROM auctions WHERE closed = 0 AND closes_at <= ? "
                "ORDER BY closes_at LIMIT 100",
                (now,),
            ).fetchall()
            return [r["task_id"] for r in rows]

        return await self._run(self._read, q)

    async def next_auction_close(self) -> float | None:
        """When the soonest open auction closes (epoch seconds), or None."""

        def q(cur: Any) -> float | None:
            value = cur.execute("SELECT min(closes_at) FROM auctions WHERE closed = 0").scalar()
            return None if value is None else float(value)

        return await self._run(self._read, q)

    async def close_auction(self, task_id: str, now: float) -> list[Bid] | None:
        """Close an auction and return its bids, cheapest first; None if another process
        closed it first."""

        def w(cur: Any) -> list[Bid] | None:
            closed = cur.execute(
                "UPDATE auctions SET closed = 1 WHERE task_id = ? AND closed = 0", (task_id,)
            ).rowcount
            if not closed:
                return None
            return _bids(cur, task_id)

        return await self._run(self._write, w)

    async def bids(self, task_id: str) -> list[Bid]:
        """A task's bids, cheapest first."""

        return await self._run(self._read, _bids, task_id)


def _dispatch(row: Any) -> QueueDispatch:
    return QueueDispatch(
        queue=row["queue"],
        mode=DispatchMode(row["mode"]),
        hybrid_threshold=row["hybrid_threshold"],
        auction_window_ms=row["auction_window_ms"],
    )


def _bids(cur: Any, task_id: str) -> list[Bid]:
    """A task's bids, cheapest first (then soonest, then earliest)."""
    rows = cur.execute(
        "SELECT * FROM auction_bids WHERE task_id = ? ORDER BY cost, eta_s, at", (task_id,)
    ).fetchall()
    return [
        Bid(task_id=r["task_id"], agent_id=r["agent_id"], cost=r["cost"], eta_s=r["eta_s"],
            at=dt(r["at"]))
        for r in rows
    ]  # fmt: skip
