"""The flow-control part of the store port: limits and resources (PRODUCT.md §4.8)."""

from __future__ import annotations

from typing import Any, Protocol

from offload.domain.flow import (
    Limit,
    LimitSpec,
    QueueSettings,
    QueueSettingsSpec,
    Resource,
    WaitingOn,
)


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

    async def flow_stats(self) -> dict[str, Any]:
        """Queued tasks under limits, and resource usage (for metrics)."""
        ...
