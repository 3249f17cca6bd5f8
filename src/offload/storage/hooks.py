"""What every store mixin may call on the backend: the dialect and the transaction runners.

:class:`~offload.storage.sql.SqlStore` combines the mixins (agents, cache, flow control,
schedules, …); each backend (SQLite, PostgreSQL) supplies the runners.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")


class BackendHooks:
    """The backend's side of every store mixin."""

    #: The backend's SQL dialect (an :class:`offload.storage.sql.Dialect`).
    d: Any

    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(*args)`` off the event loop (database calls block)."""
        raise NotImplementedError

    def _write(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(cur, *args)`` in one write transaction (called on a store thread)."""
        raise NotImplementedError

    def _read(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(cur, *args)`` in one read transaction (called on a store thread)."""
        raise NotImplementedError

    def _fit_fair_index(self) -> None:
        """Make the owner-fair claim's index exist exactly while some queue is owner-fair
        (see :data:`offload.storage.flow_sql.FAIR_INDEX`; called on a store thread)."""
        raise NotImplementedError
