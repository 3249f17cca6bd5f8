"""Offload: a durable task queue and orchestrator for AI agents.

import offload

@offload.task("math.factorial", capabilities=["math"])
def factorial(n: int) -> int: ...

client = offload.Client()
t = client.submit("math.factorial", {"n": 10}, priority="high")
client.wait(t.id, timeout=30).result
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from offload.core.registry import Registry, TaskContext, TaskType, default_registry, task
from offload.domain.errors import (
    Conflict,
    DependencyError,
    Fatal,
    IllegalTransition,
    InvalidInput,
    NotFound,
    OffloadError,
    Retry,
    StaleLease,
    TooLarge,
    Unavailable,
    UnknownTaskType,
    WaitTimeout,
)
from offload.domain.models import Artifact, Task, TaskFilter, TaskSpec, WorkflowSpec
from offload.domain.status import Status

if TYPE_CHECKING:
    from offload.client.base import AsyncClient, Client
    from offload.worker.runtime import Worker

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "AsyncClient",
    "Client",
    "Conflict",
    "DependencyError",
    "Fatal",
    "IllegalTransition",
    "InvalidInput",
    "NotFound",
    "OffloadError",
    "Registry",
    "Retry",
    "StaleLease",
    "Status",
    "Task",
    "TaskContext",
    "TaskFilter",
    "TaskSpec",
    "TaskType",
    "TooLarge",
    "Unavailable",
    "UnknownTaskType",
    "WaitTimeout",
    "Worker",
    "WorkflowSpec",
    "__version__",
    "default_registry",
    "task",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import offload` stays cheap and does not open a database or load the worker.
    if name in ("Client", "AsyncClient"):
        from offload.client import base

        return getattr(base, name)
    if name == "Worker":
        from offload.worker.runtime import Worker

        return Worker
    raise AttributeError(f"module 'offload' has no attribute {name!r}")
