"""Prometheus metrics (PRODUCT.md §8), on a registry of this app's own.

Counters and histograms follow the task event log from the event current when the server
started: ``created`` counts a submit, ``claimed`` ends a wait, ``completed``/``failed``/
``cancelled`` end a task (and a run), ``lease_expired`` and ``retry_scheduled`` count as they
say. Run and wait times are measured between those events. The log is read from the first
scrape on (that scrape catches up), so a server nobody scrapes pays nothing. Queue depth and
agents by status are read from the service when scraped (cached for a couple of seconds).

With several API servers on one database each reports the whole database: scrape one, or
aggregate with ``max``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from offload.core.service import QueueService
from offload.domain.models import AgentStatus, TaskEvent, TaskFilter
from offload.domain.status import TERMINAL, Status

log = logging.getLogger("offload.api")

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_BATCH = 2000
#: Bound on tasks remembered between their events (oldest forgotten first).
_MAX_TRACKED = 200_000
_GAUGES_TTL_S = 2.0
#: How often the event tail reads (counters lag the log by at most this much).
_TAIL_EVERY_S = 0.5
_QUEUED = Status.QUEUED.value


class Metrics:
    """The app's metrics and the loop that feeds them from the event log."""

    def __init__(self, service: QueueService) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submitted = Counter(
            "offload_tasks_submitted", "Tasks created, by type.", ["type"], registry=r
        )
        self.finished = Counter(
            "offload_tasks_finished",
            "Tasks that reached a terminal status, by type and status.",
            ["type", "status"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "offload_task_run_seconds",
            "Run time of finished attempts (claim to outcome), by type.",
            ["type"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.wait_seconds = Histogram(
            "offload_task_wait_seconds",
            "Time from ready (queued) to claimed, by type.",
            ["type"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "offload_queue_depth", "Unfinished tasks by status and queue.", ["status", "queue"],
            registry=r,
        )  # fmt: skip
        self.agents = Gauge("offload_agents", "Agents by status.", ["status"], registry=r)
        self.limited_queued = Gauge(
            "offload_tasks_limited_queued",
            "Queued tasks under a concurrency/rate limit or needing a resource.",
            registry=r,
        )
        self.resource_in_use = Gauge(
            "offload_resource_units_in_use", "Units held by running tasks.", ["resource"],
            registry=r,
        )  # fmt: skip
        self.resource_capacity = Gauge(
            "offload_resource_capacity", "Units a resource has.", ["resource"], registry=r
        )
        self.leases_expired = Counter(
            "offload_leases_expired", "Leases that expired (worker lost or too slow).", registry=r
        )
        self.retries = Counter("offload_retries", "Automatic retries scheduled.", registry=r)
        self.after = 0
        self._tail: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._ready: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._gauges_at = float("-inf")

    # -- the event tail ------------------------------------------------------------------
    async def start(self) -> None:
        """Note where the log stands: counting starts with the next event."""
        self.after = await self.service.last_event_seq()

    async def run(self, every_s: float = _TAIL_EVERY_S) -> None:
        """Follow the event log (a read every ``every_s`` at most, so a busy queue is not
        read once per change) until cancelled.

        Started by the first scrape, so a server nobody scrapes never reads its log for
        metrics; that scrape first catches up with everything since :meth:`start`.
        """
        while True:
            try:
                events = await self.service.events_since(self.after, None, _BATCH)
            except Exception as exc:  # the database is briefly unreachable
                log.warning("metrics: reading events failed: %s", exc)
                events = []
            for event in events:
                self.observe(event)
            if events:
                self.after = events[-1].seq
            if len(events) < _BATCH:
                self._caught_up.set()
                await asyncio.sleep(every_s)
            else:
                await asyncio.sleep(0)  # let requests in between large catch-up reads

    def observe(self, ev: TaskEvent) -> None:
        """Update the counters and histograms for one event."""
        at = ev.at.timestamp()
        data: dict[str, Any] = ev.data if isinstance(ev.data, dict) else {}
        type_ = ev.task_type or str(data.get("type") or "unknown")
        kind = ev.kind
        if kind == "created":
            self.submitted.labels(type_).inc()
            status = data.get("status")
            if status == _QUEUED:
                self._remember(self._ready, ev.task_id, at)
            elif status in _TERMINAL_NAMES:
                self.finished.labels(type_, status).inc()
        elif kind in ("claimed", "task.assigned"):  # pulled, or pushed by the dispatcher
            ready = self._ready.pop(ev.task_id, None)
            if ready is not None:
                self.wait_seconds.labels(type_).observe(max(at - ready, 0.0))
            self._remember(self._started, ev.task_id, at)
        elif kind in ("completed", "failed", "cancelled"):
            self.finished.labels(type_, kind).inc()
            started = self._started.pop(ev.task_id, None)
            if started is not None and kind != "cancelled":
                self.run_seconds.labels(type_).observe(max(at - started, 0.0))
            self._ready.pop(ev.task_id, None)
        elif kind == "lease_expired":
            self.leases_expired.inc()
            self._started.pop(ev.task_id, None)
        elif kind == "retry_scheduled":
            self.retries.inc()
            self._started.pop(ev.task_id, None)
            delay = data.get("delay_s")
            ready_at = at + (float(delay) if isinstance(delay, int | float) else 0.0)
            self._remember(self._ready, ev.task_id, ready_at)
        elif kind in ("released", "unassigned"):
            self._started.pop(ev.task_id, None)
            self._remember(self._ready, ev.task_id, at)
        elif kind in ("status_changed", "retried", "resumed") and data.get("to") == _QUEUED:
            self._remember(self._ready, ev.task_id, at)

    @staticmethod
    def _remember(table: dict[str, float], task_id: str, at: float) -> None:
        table.pop(task_id, None)
        table[task_id] = at
        if len(table) > _MAX_TRACKED:
            for key in list(table)[: _MAX_TRACKED // 4]:
                del table[key]

    # -- scrape ------------------------------------------------------------------------------
    async def refresh_gauges(self) -> None:
        """Queue depth and agents from the service (at most every couple of seconds)."""
        now = time.monotonic()
        if now - self._gauges_at < _GAUGES_TTL_S:
            return
        self._gauges_at = now
        stats = await self.service.stats()
        self.agents.clear()
        for agent_status in AgentStatus:
            self.agents.labels(agent_status.value).set(stats.agents.get(agent_status.value, 0))
        flow = await self.service.flow_stats()
        self.limited_queued.set(flow["limited_queued"])
        self.resource_in_use.clear()
        self.resource_capacity.clear()
        for name, (in_use, capacity) in flow["resources"].items():
            self.resource_in_use.labels(name).set(in_use)
            self.resource_capacity.labels(name).set(capacity)
        agents = await self.service.list_agents()
        queues = {"default"} | {t.queue for t in self.service.task_types()}
        queues |= {q for a in agents for q in a.queues}
        self.queue_depth.clear()
        for status in Status:
            if status in TERMINAL:
                continue
            total = stats.counts.get(status.value, 0)
            counted = 0
            for queue in sorted(queues):
                n = 0
                if total > counted:
                    flt = TaskFilter(status=[status.value], queue=queue, limit=1)
                    n = (await self.service.list(flt)).total
                self.queue_depth.labels(status.value, queue).set(n)
                counted += n
            if total > counted:
                self.queue_depth.labels(status.value, "(other)").set(total - counted)

    async def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if self._tail is None:
            self._tail = asyncio.create_task(self.run(), name="offload-metrics")
            self._tail.add_done_callback(_log_failure)
            await self._caught_up.wait()
        await self.refresh_gauges()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def stop(self) -> None:
        """Stop following the log (app shutdown)."""
        if self._tail is not None:
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail


_TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("metrics tail stopped: %r", task.exception())
