"""A worker that is given work instead of claiming it: the engine of ``offload agent serve``.

:class:`PushWorker` is a :class:`~offload.worker.runtime.Worker` (same handlers, lease
refresh, timeouts, cancellation, outcome reporting and agent heartbeats) whose claim loop
does nothing: tasks arrive through :meth:`PushWorker.offer`, called by the agent's HTTP
service when the dispatcher posts ``/execute``. It registers with its ``endpoint`` and
proficiencies, reports cpu and memory in its heartbeats, and prices auction bids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the environment

from offload.client.base import AsyncClient, Client
from offload.domain.agents import BidSpec
from offload.domain.models import (
    Agent,
    AgentKind,
    AgentRegistration,
    AgentStatus,
    ClaimRequest,
    Task,
)
from offload.worker.runtime import Worker

log = logging.getLogger("offload.agent")


class PushWorker(Worker):
    """Runs tasks pushed to it, ``concurrency`` at a time (see the module docs).

    ``proficiency`` maps each capability to 0–1; ``endpoint`` is the URL the dispatcher
    reaches this agent at; ``agent_id`` stays the same across restarts, so a returning
    agent takes its old record (and history) back.
    """

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        endpoint: str,
        proficiency: dict[str, float],
        agent_id: str,
        kind: AgentKind = AgentKind.PROGRAM,
        **options: Any,
    ) -> None:
        super().__init__(client, capabilities=sorted(proficiency), **options)
        self.endpoint = endpoint
        self.proficiency = dict(proficiency)
        self.kind = kind
        self.fixed_id = agent_id
        #: The server's view of this agent as of the last heartbeat.
        self.status = AgentStatus.ONLINE
        self.last_heartbeat: float | None = None
        self.started_at = time.time()
        psutil.cpu_percent(None)  # the first reading primes the counter
        self.bids = 0

    # -- the worker's hooks ----------------------------------------------------
    def _registration(self, capabilities: list[str]) -> AgentRegistration:
        return AgentRegistration(
            id=self.fixed_id,
            name=self.name,
            kind=self.kind,
            capabilities=self.proficiency,
            max_concurrency=self.concurrency,
            queues=self.queues,
            endpoint=self.endpoint,
            metadata=self._agent_metadata(),
        )

    def _agent_metadata(self) -> dict[str, Any]:
        meta = super()._agent_metadata()
        meta.update(resource_usage())
        meta["endpoint"] = self.endpoint
        return meta

    def _on_agent_record(self, agent: Agent) -> None:
        # Draining: refuse new work (503) but stay up; online again takes work again.
        self.status = agent.status
        self.last_heartbeat = time.time()

    async def _claim_loop(self, client: AsyncClient, request: ClaimRequest) -> None:
        # Push agents never claim; they wait for work (offer) until told to stop.
        self.last_heartbeat = time.time()
        await self._stop_event.wait()

    # -- push ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while registered and serving."""
        return self._loop is not None and self.agent_id is not None and not self._stopping

    @property
    def is_available(self) -> bool:
        """Would :meth:`offer` accept a task now?"""
        return (
            self.running
            and self.status is not AgentStatus.DRAINING
            and self._active < self.concurrency
        )

    @property
    def load(self) -> int:
        """Tasks held now."""
        return len(self._held)

    @property
    def current_tasks(self) -> list[str]:
        """Ids of the tasks held now."""
        return list(self._held)

    def offer(self, task: Task) -> bool:
        """Take ``task`` (with its lease) if there is room: True accepted, False busy.
        Must be called on the worker's event loop."""
        if not self.is_available or task.lease is None or task.id in self._held:
            return False
        self._dispatch([task])
        return True

    def bid_for(self, task: Task) -> BidSpec | None:
        """This agent's price for ``task``, or None when it cannot take it.

        cost = load factor + (1 − mean proficiency on the required capabilities): idle
        specialists bid lowest. eta = the task's estimate, stretched by the load.
        """
        if not self.is_available:
            return None
        levels = [self.proficiency.get(c, 0.0) for c in task.capabilities]
        if any(level <= 0 for level in levels):
            return None
        proficiency = sum(levels) / len(levels) if levels else 1.0
        load = self._active / self.concurrency
        estimate = task.estimated_duration_s or 1.0
        return BidSpec(
            agent_id=self.agent_id or self.fixed_id,
            cost=round(load + (1.0 - proficiency), 6),
            eta_s=round(estimate * (1.0 + load), 3),
        )

    async def place_bid(self, task: Task) -> None:
        """Bid for an announced task through the API (best effort)."""
        bid = self.bid_for(task)
        if bid is None:
            return
        try:
            await self._client.bid(task.id, bid)
            self.bids += 1
        except Exception as exc:  # a closed auction or a hiccup: nothing to do
            log.info("bid for %s not placed: %s", task.id, exc)

    def status_report(self) -> dict[str, Any]:
        """``GET /status``: resources, counts and the last heartbeat."""
        usage = resource_usage()
        return {
            "agent_id": self.agent_id or self.fixed_id,
            "name": self.name,
            "status": self.status.value,
            "is_available": self.is_available,
            "cpu_percent": usage["cpu_percent"],
            "memory_percent": usage["memory_percent"],
            "tasks_completed": self.processed - self.failed,
            "tasks_failed": self.failed,
            "running": self.current_tasks,
            "max_concurrency": self.concurrency,
            "capabilities": self.proficiency,
            "bids": self.bids,
            "last_heartbeat": self.last_heartbeat,
            "uptime_s": round(time.time() - self.started_at, 3),
        }


def resource_usage() -> dict[str, float]:
    """Machine cpu and memory use, percent (psutil)."""
    return {
        "cpu_percent": float(psutil.cpu_percent(None)),
        "memory_percent": float(psutil.virtual_memory().percent),
    }


async def wait_registered(worker: PushWorker, timeout: float = 30.0) -> None:
    """Until ``worker`` has registered (for the service's start-up)."""
    deadline = time.monotonic() + timeout
    while not worker.running:
        if time.monotonic() > deadline:
            raise TimeoutError("the agent did not register in time")
        await asyncio.sleep(0.02)
