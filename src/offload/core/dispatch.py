"""The push dispatcher: places queued tasks of ``push``, ``hybrid`` and ``auction`` queues
on agents (PRODUCT.md §5). Queues without a dispatch row are ``pull`` and cost nothing here.

One pass (:meth:`Dispatcher.dispatch_once`):

* ``push`` (and ``hybrid`` at or above its priority threshold): for each dispatchable task,
  rank the online push agents (those with an ``endpoint``) serving that queue with
  :func:`offload.core.scoring.rank_agents`; assign the task to the best one (``queued`` →
  ``assigned`` with a lease, event ``task.assigned``), then deliver it
  (``POST {endpoint}/execute``). Accepted → ``running``. ``503`` (busy) → take the
  assignment back and try the next candidate. Unreachable → the agent is marked offline
  (its other leases expire) and the next candidate is tried. Nobody takes it → it stays
  queued for the next pass, or for pull workers.
* ``auction``: each dispatchable task is announced (event ``auction.announced``) and capable
  push agents are invited to bid; once the window closes the cheapest bid from an agent
  that can still take it wins (``assignment.method = "auction"``). No usable bid → the task
  is pushed as above, and if nobody takes it, left to pull workers.

Every state change is a conditional update in the store, so any number of servers may run
dispatchers side by side: a task is assigned to one agent at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from offload.core.scoring import DEFAULT_WEIGHTS, TypeHistory, Weights, rank_agents
from offload.core.teams import pick_collaborators
from offload.domain.agents import Bid, DispatchMode, QueueDispatch
from offload.domain.models import Agent, AgentStatus, AssignmentMethod, Task, TeamMode

if TYPE_CHECKING:
    from offload.core.service import QueueService

log = logging.getLogger("offload.dispatch")

#: Tasks considered per queue and pass.
BATCH = 100
#: History for the specialization score is re-read at most this often.
HISTORY_REFRESH_S = 10.0
#: With nothing to dispatch, queue modes are re-read at least this often.
IDLE_RECHECK_S = 2.0


class Delivery(Enum):
    """What a push agent answered to ``POST /execute``."""

    ACCEPTED = "accepted"
    BUSY = "busy"
    UNREACHABLE = "unreachable"


class Pusher(Protocol):
    """Delivers work to push agents (HTTP in the server, anything in tests)."""

    async def execute(self, agent: Agent, task: Task) -> Delivery:
        """Hand ``task`` (with its lease) to ``agent``."""
        ...

    async def invite_bid(self, agent: Agent, task: Task) -> None:
        """Tell ``agent`` that ``task`` is up for auction (best effort)."""
        ...


@dataclass
class _Pass:
    agents: dict[str, Agent]
    history: dict[tuple[str, str], TypeHistory]
    placed: int = 0
    busy: set[str] = field(default_factory=set)


class Dispatcher:
    """Runs push, hybrid and auction dispatch over ``service`` (see the module docs)."""

    def __init__(
        self,
        service: QueueService,
        pusher: Pusher,
        *,
        weights: Weights = DEFAULT_WEIGHTS,
        lease_ttl_s: float | None = None,
    ) -> None:
        self.service = service
        self.pusher = pusher
        self.weights = weights
        self.lease_ttl_s = lease_ttl_s or service.settings.lease_ttl_s
        self._history: dict[tuple[str, str], TypeHistory] = {}
        self._history_at = float("-inf")
        self._wake = asyncio.Event()
        #: Whether the last pass found a non-pull queue (else only re-check now and then).
        self._has_modes = False
        #: Tasks this dispatcher placed since it started (for tests and metrics).
        self.placed = 0

    def wake(self) -> None:
        """Look again now (new work, a changed mode)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, changes: ChangeWaiter | None = None) -> None:
        """Dispatch until ``stop`` is set; sleep between passes until new work may exist."""
        while not stop.is_set():
            mark = changes.mark() if changes is not None else 0
            try:
                until_close = await self.dispatch_once()
            except Exception:  # a passing database error must not end dispatch for good
                log.warning("dispatch pass failed; retrying", exc_info=True)
                until_close = None
            # Sleep until new work, a changed mode, or the next auction closing.
            timeout = IDLE_RECHECK_S
            if until_close is not None:
                timeout = min(max(until_close, 0.005), IDLE_RECHECK_S)
            waiters: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(stop.wait()),
            ]
            if changes is not None and self._has_modes:
                waiters.append(asyncio.ensure_future(changes.wait(timeout, mark)))
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                for w in waiters:
                    with contextlib.suppress(asyncio.CancelledError):
                        await w
            self._wake.clear()

    async def dispatch_once(self) -> float | None:
        """One pass over every non-pull queue; returns the seconds until the next open
        auction closes (None: no auction is open)."""
        store = self.service.store
        modes = await store.list_queue_dispatch()
        self._has_modes = bool(modes)
        now = self.service.clock.now()
        if not modes:
            return None
        due = await store.due_auctions(now)
        state = _Pass(
            agents={a.id: a for a in await store.push_candidates()},
            history=await self._load_history(now),
        )
        by_queue = {m.queue: m for m in modes}
        for task_id in due:
            await self._settle_auction(task_id, state, by_queue)
        for mode in modes:
            await self._dispatch_queue(mode, state)
        if not due and not any(m.mode is DispatchMode.AUCTION for m in modes):
            return None
        closes = await store.next_auction_close()
        return None if closes is None else closes - self.service.clock.now()

    async def _load_history(self, now: float) -> dict[tuple[str, str], TypeHistory]:
        if time.monotonic() - self._history_at > HISTORY_REFRESH_S:
            raw = await self.service.store.agent_history(now)
            self._history = {k: TypeHistory(*v) for k, v in raw.items()}
            self._history_at = time.monotonic()
        return self._history

    async def _dispatch_queue(self, mode: QueueDispatch, state: _Pass) -> None:
        min_priority = mode.hybrid_threshold if mode.mode is DispatchMode.HYBRID else 1
        tasks = await self.service.store.dispatchable(mode.queue, min_priority, BATCH)
        for task in tasks:
            if mode.mode is DispatchMode.AUCTION and task.agent_id is None:
                await self._announce(task, mode, state)
            else:
                await self._push(task, state, AssignmentMethod.ASSIGNED)

    def _candidates(
        self, task: Task, state: _Pass, only: Sequence[str] | None = None
    ) -> list[Agent]:
        agents = [
            a
            for a in state.agents.values()
            if a.endpoint
            and task.queue in a.queues
            and a.id not in state.busy
            and (only is None or a.id in only)
            # A pinned task (e.g. a swarm member) goes to its agent or waits for it.
            and (task.agent_id is None or a.id == task.agent_id)
        ]
        return [a for _, a in rank_agents(agents, task.capabilities, task.type, state.history,
                                          weights=self.weights)]  # fmt: skip

    async def _push(
        self,
        task: Task,
        state: _Pass,
        method: AssignmentMethod,
        candidates: Sequence[Agent] | None = None,
    ) -> bool:
        """Assign ``task`` to the first candidate that accepts it; True when one did."""
        store, clock = self.service.store, self.service.clock
        for agent in candidates if candidates is not None else self._candidates(task, state):
            collaborators: list[str] = []
            roles: dict[str, str] = {}
            if task.team is not None and task.team.mode is TeamMode.TEAM:
                collaborators, roles = pick_collaborators(
                    agent.id, task, task.team, state.agents.values(), state.history,
                    weights=self.weights,
                )  # fmt: skip
            assigned = await store.assign(
                task.id, agent.id, method, self.lease_ttl_s, clock.now(), collaborators, roles
            )
            if assigned is None or assigned.lease is None:
                return True  # someone else (a puller, another dispatcher) has it
            outcome = await self.pusher.execute(agent, assigned)
            if outcome is Delivery.ACCEPTED:
                await store.start_assigned(task.id, assigned.lease.id, clock.now())
                agent.load += 1
                if agent.load >= agent.max_concurrency:
                    state.busy.add(agent.id)
                state.placed += 1
                self.placed += 1
                return True
            await store.unassign(task.id, assigned.lease.id, clock.now(), outcome.value)
            state.busy.add(agent.id)
            if outcome is Delivery.UNREACHABLE:
                log.warning("agent %s at %s is unreachable: marking it offline",
                            agent.id, agent.endpoint)  # fmt: skip
                with contextlib.suppress(Exception):
                    await self.service.agents.set_status(agent.id, AgentStatus.OFFLINE)
                state.agents.pop(agent.id, None)
        return False

    # ------------------------------------------------------------------ auctions
    async def _announce(self, task: Task, mode: QueueDispatch, state: _Pass) -> None:
        store, clock = self.service.store, self.service.clock
        if not await store.open_auction(task.id, clock.now(), mode.auction_window_ms / 1000):
            return
        invited = [
            a for a in state.agents.values()
            if a.endpoint and task.queue in a.queues
            and all(a.capabilities.get(c, 0.0) > 0 for c in task.capabilities)
        ]  # fmt: skip
        await asyncio.gather(
            *(self.pusher.invite_bid(a, task) for a in invited), return_exceptions=True
        )

    async def _settle_auction(
        self, task_id: str, state: _Pass, modes: dict[str, QueueDispatch]
    ) -> None:
        store = self.service.store
        bids = await store.close_auction(task_id, self.service.clock.now())
        if bids is None:
            return  # another server settled it
        task = await store.get_task(task_id)
        if task is None or task.status.value != "queued":
            return
        winners = self._usable_bidders(task, bids, state)
        if winners and await self._push(task, state, AssignmentMethod.AUCTION, winners):
            return
        # No usable bid: push it, else it stays queued for pull workers.
        await self._push(task, state, AssignmentMethod.ASSIGNED)

    def _usable_bidders(self, task: Task, bids: list[Bid], state: _Pass) -> list[Agent]:
        eligible = {a.id for a in self._candidates(task, state)}
        return [state.agents[b.agent_id] for b in bids if b.agent_id in eligible]


class ChangeWaiter(Protocol):
    """Something that says when the database may have changed (the server's change feed)."""

    def mark(self) -> int:
        """A token to pass to :meth:`wait`."""
        ...

    async def wait(self, timeout: float, since: int | None = None) -> bool:
        """Until a change after ``since`` or ``timeout``."""
        ...
