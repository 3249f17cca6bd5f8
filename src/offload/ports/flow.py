"""The flow-control part of the store port: limits and resources (PRODUCT.md §4.8)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from offload.domain.flow import (
    Limit,
    LimitSpec,
    QueueSettings,
    QueueSettingsSpec,
    Resource,
    WaitingOn,
)
from offload.domain.models import Task
from offload.domain.schedules import Schedule, ScheduleSpec


class FlowStore(Protocol):
    """Limits and resources live in the database, so every claimer enforces the same ones."""

    #: When a rate-limited key gets its next token (epoch seconds), if a claim ran out.
    flow_wake_at: float | None

    async def set_limit(self, task_type: str, spec: LimitSpec, now: float) -> Limit:
        """Create or replace a type's limits."""
        ...

    async def delete_limit(self, task_type: str) -> None:
        """Remove a type's limits (:class:`NotFound` when it has none)."""
        ...

    async def list_limits(self) -> list[Limit]:
        """Every type's limits."""
        ...

    async def set_resource(self, name: str, capacity: int, now: float) -> Resource:
        """Create a resource or change its capacity."""
        ...

    async def delete_resource(self, name: str) -> None:
        """Remove a resource (:class:`Conflict` while unfinished tasks need it)."""
        ...

    async def list_resources(self) -> list[Resource]:
        """Every resource with units in use and tasks waiting for it."""
        ...

    async def resource_names(self) -> set[str]:
        """Names of the defined resources."""
        ...

    async def limit_wait(self, task_id: str, now: float) -> WaitingOn | None:
        """For a queued task: the limit or resource that holds it back right now, if any."""
        ...

    async def set_queue_settings(
        self, queue: str, spec: QueueSettingsSpec, now: float
    ) -> QueueSettings:
        """Create or replace a queue's options."""
        ...

    async def list_queue_settings(self) -> list[QueueSettings]:
        """Every queue with options set."""
        ...

    async def clear_cache(self, task_type: str | None = None) -> int:
        """Drop cached results (of one type, or all); returns how many."""
        ...

    async def cache_stats(self, now: float) -> dict[str, int]:
        """Live cached results per type."""
        ...

    async def create_schedule(
        self, schedule_id: str, spec: ScheduleSpec, owner: str | None, next_at: float, now: float
    ) -> Schedule:
        """Store a new schedule."""
        ...

    async def get_schedule(self, ident: str, owner: str | None = None) -> Schedule:
        """One schedule by id or name."""
        ...

    async def list_schedules(self, owner: str | None = None) -> list[Schedule]:
        """Every schedule (of ``owner`` when given)."""
        ...

    async def delete_schedule(self, ident: str, owner: str | None = None) -> Schedule:
        """Remove a schedule."""
        ...

    async def pause_schedule(
        self,
        ident: str,
        paused: bool,
        next_at: Callable[[Schedule], float] | None,
        owner: str | None,
        now: float,
    ) -> Schedule:
        """Pause or resume a schedule."""
        ...

    async def due_schedules(self, now: float) -> list[Schedule]:
        """Unpaused schedules whose next firing has come."""
        ...

    async def fire_schedule(
        self, schedule_id: str, firings: Sequence[tuple[float, Task]], next_at: float, now: float
    ) -> list[Task]:
        """Create each firing's task once, advance the timetable."""
        ...

    async def flow_stats(self) -> dict[str, Any]:
        """Queued tasks under limits, and resource usage (for metrics)."""
        ...
