"""The task lifecycle: one enum, one transition table, one check (PRODUCT.md §3).

Every backend and the worker go through :func:`check_transition`; the databases back it
with conditional updates (``UPDATE … WHERE status IN (…)``) and a CHECK constraint whose
values a test compares with :class:`Status`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from offload.domain.errors import IllegalTransition, InvalidInput


class Status(StrEnum):
    """Where a task is in its life."""

    BLOCKED = "blocked"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    REVIEWING = "reviewing"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = Status

TERMINAL: frozenset[Status] = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
PENDING: frozenset[Status] = frozenset({S.BLOCKED, S.SCHEDULED, S.QUEUED})
ACTIVE: frozenset[Status] = frozenset({S.ASSIGNED, S.RUNNING, S.REVIEWING})
LEASED: frozenset[Status] = frozenset({S.ASSIGNED, S.RUNNING})
PAUSABLE: frozenset[Status] = frozenset({S.BLOCKED, S.SCHEDULED, S.QUEUED, S.ASSIGNED, S.RUNNING})
CANCELLABLE: frozenset[Status] = frozenset(Status) - TERMINAL
RETRYABLE: frozenset[Status] = frozenset({S.FAILED, S.CANCELLED})

#: Filter aliases accepted wherever a status filter is.
ALIASES: dict[str, frozenset[Status]] = {
    "pending": PENDING,
    "active": ACTIVE,
    "done": TERMINAL,
    "terminal": TERMINAL,
    # Friendly synonyms a new user (or an LLM) reaches for.
    "executing": frozenset({S.RUNNING}),
    "dead": frozenset({S.FAILED}),
    "dlq": frozenset({S.FAILED}),
}

#: The one transition table. Key: from; value: the statuses it may move to.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.BLOCKED: frozenset({S.SCHEDULED, S.QUEUED, S.PAUSED, S.CANCELLED, S.FAILED}),
    S.SCHEDULED: frozenset({S.QUEUED, S.PAUSED, S.CANCELLED, S.FAILED}),
    S.QUEUED: frozenset({S.ASSIGNED, S.PAUSED, S.CANCELLED, S.FAILED}),
    # assigned -> queued: lease expired, agent lost or the lease was handed back.
    S.ASSIGNED: frozenset({S.RUNNING, S.QUEUED, S.SCHEDULED, S.PAUSED, S.CANCELLED, S.FAILED}),
    # running -> queued/scheduled: a retry (now or after backoff) or a lost lease.
    S.RUNNING: frozenset(
        {S.COMPLETED, S.REVIEWING, S.QUEUED, S.SCHEDULED, S.FAILED, S.CANCELLED, S.PAUSED}
    ),
    S.REVIEWING: frozenset({S.COMPLETED, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.PAUSED: frozenset({S.BLOCKED, S.SCHEDULED, S.QUEUED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    # The dead-letter queue: retry moves a failed (or cancelled) task back to queued.
    S.FAILED: frozenset({S.QUEUED, S.BLOCKED}),
    S.CANCELLED: frozenset({S.QUEUED, S.BLOCKED}),
}


def can_transition(current: Status, target: Status) -> bool:
    """True when the table allows ``current -> target``."""
    return target in TRANSITIONS[current]


def sources_of(target: Status) -> frozenset[Status]:
    """Every status from which ``target`` may be reached (for conditional updates)."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def check_transition(task_id: str, current: Status, target: Status) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> target`` is allowed."""
    if not can_transition(current, target):
        raise IllegalTransition(task_id, current.value, target.value)


def expand_statuses(names: Iterable[str]) -> frozenset[Status]:
    """Turn status names and aliases (``pending``, ``active``, ``done``) into statuses."""
    out: set[Status] = set()
    for raw in names:
        for name in str(raw).split(","):
            key = name.strip().lower()
            if not key:
                continue
            if key in ALIASES:
                out |= ALIASES[key]
                continue
            try:
                out.add(Status(key))
            except ValueError:
                allowed = sorted([s.value for s in Status] + list(ALIASES))
                raise InvalidInput(
                    f"unknown status {name!r}; use one of: {', '.join(allowed)}",
                    field="status",
                ) from None
    return frozenset(out)
