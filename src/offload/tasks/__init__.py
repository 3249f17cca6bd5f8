"""The built-in task library, one module per family.

Importing this package registers nothing anywhere: each family module keeps its types in
its own private :class:`~offload.core.registry.Registry`, and :func:`register_builtins`
copies them into the registry a service or worker was given.

Families: ``util`` (echo, sleep, fail), ``math`` (factorial, evaluate) and the schema-only
agent types (``general``, ``analysis``, ``coding``, ``research``, ``review``,
``documentation``).
"""

from __future__ import annotations

import dataclasses

from offload.core.registry import Registry, TaskType
from offload.tasks import agents, math, util

__all__ = ["builtin_types", "register_builtins"]

_FAMILIES: tuple[Registry, ...] = (util.registry, math.registry, agents.registry)


def builtin_types() -> list[TaskType]:
    """Every built-in task type, sorted by name (shared objects: copy before changing)."""
    return sorted((t for family in _FAMILIES for t in family), key=lambda t: t.name)


def register_builtins(registry: Registry) -> None:
    """Add every built-in task type to ``registry``; calling it again changes nothing.

    A type already registered under a built-in's name is kept, so an application can
    override a built-in whether it registers its own before or after this call.
    """
    for task_type in builtin_types():
        if task_type.name in registry:
            continue
        # A copy, so tuning a type in one registry (timeouts, queue) leaves others alone.
        registry.add(dataclasses.replace(task_type, capabilities=list(task_type.capabilities)))
