"""Flow control: concurrency limits, rate limits and resources (PRODUCT.md §4.8).

Limits belong to a task type and, optionally, to a key taken from each task's input
(``input.user_id``): every task carries the resolved *limit key* (``type`` or
``type␟value``) so the store can count and admit per key at claim time, in the claim's own
transaction, across every worker and machine. Resources are named pools of units
(``gpu: 1``); a task that declares ``resources: {gpu: 1}`` is claimed only while a unit is
free, and its units come back on every outcome because usage is counted from the tasks
that hold live leases, not from counters that could drift.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from offload.domain.errors import InvalidInput

#: Separates a limit key's type from its key value (a character no JSON text contains raw).
KEY_SEPARATOR = "\x1f"

_PERIODS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+)\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


class ConcurrencyStrategy(StrEnum):
    """What happens to a task over its concurrency limit."""

    #: Wait in the queue; other keys go ahead meanwhile.
    QUEUE = "queue"
    #: The new task is cancelled at submit.
    CANCEL_NEWEST = "cancel_newest"
    #: The oldest unfinished tasks of the key are cancelled to make room for the new one.
    CANCEL_IN_PROGRESS = "cancel_in_progress"


def parse_rate(text: str) -> tuple[int, float]:
    """``"100/m"`` → ``(100, 60.0)``; also ``/s``, ``/h`` and ``10/5s``."""
    m = _RATE.match(text.lower())
    if m is None or m.group(3) not in _PERIODS:
        raise InvalidInput(
            f"rate limit {text!r} is not COUNT/PERIOD, e.g. '100/m' (periods: s, m, h)",
            field="rate_limit",
        )
    count = int(m.group(1))
    span = float(m.group(2)) if m.group(2) else 1.0
    period = span * _PERIODS[m.group(3)]
    if count < 1 or period <= 0:
        raise InvalidInput(
            f"rate limit {text!r} must allow at least 1 task per positive period",
            field="rate_limit",
        )
    return count, period


def format_rate(count: int, period_s: float) -> str:
    """``(100, 60.0)`` → ``"100/m"`` (the shortest exact spelling)."""
    for unit, secs in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if period_s == secs:
            return f"{count}/{unit}"
    return f"{count}/{period_s:g}s"


def check_key_path(path: str) -> str:
    """A concurrency key is a dot path into the input: ``input.user_id``."""
    parts = path.split(".")
    if len(parts) < 2 or parts[0] != "input" or not all(parts[1:]):
        raise InvalidInput(
            f"concurrency key {path!r} must be a dot path into the input, e.g. 'input.user_id'",
            field="concurrency_key",
        )
    return path


def check_resource_name(name: str) -> str:
    """Resource names: letters, digits and ``_ . : -``, up to 100 characters."""
    if not _NAME.match(name):
        raise InvalidInput(
            f"resource name {name!r} may use letters, digits and _ . : - (1-100 characters)",
            field="name",
        )
    return name


class LimitSpec(BaseModel):
    """The limits of one task type, as set through the API, the CLI or ``@offload.task``."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int | None = Field(None, ge=1, description="max tasks of one key running at once")
    concurrency_key: str | None = Field(
        None, description="dot path into the input that splits the type into keys"
    )
    strategy: ConcurrencyStrategy = ConcurrencyStrategy.QUEUE
    rate_limit: str | None = Field(None, description="COUNT/PERIOD per key, e.g. '100/m'")

    @field_validator("concurrency_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return None if v is None else check_key_path(v)

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is None:
            return None
        count, period = parse_rate(v)
        return format_rate(count, period)

    def is_empty(self) -> bool:
        """True when nothing is limited."""
        return self.concurrency is None and self.rate_limit is None


class Limit(LimitSpec):
    """A stored limit."""

    type: str
    updated_at: datetime

    @property
    def rate(self) -> tuple[int, float] | None:
        """``(count, period_s)`` or None."""
        return None if self.rate_limit is None else parse_rate(self.rate_limit)


class ResourceSpec(BaseModel):
    """A named pool of units."""

    model_config = ConfigDict(extra="forbid")

    capacity: int = Field(ge=0, le=1_000_000)


class Resource(BaseModel):
    """A resource with its live usage."""

    name: str
    capacity: int
    in_use: int = 0
    waiting: int = 0
    updated_at: datetime


def key_value(task_input: Any, path: str) -> Any:
    """The value at ``path`` (``input.a.b``) in a task's input, or None when absent."""
    value: Any = task_input
    for part in path.split(".")[1:]:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def limit_key(task_type: str, task_input: Any, key_path: str | None) -> str:
    """The group a task counts against: its type, or its type plus its key's value."""
    if key_path is None:
        return task_type
    value = orjson.dumps(key_value(task_input, key_path), option=orjson.OPT_SORT_KEYS).decode()
    return f"{task_type}{KEY_SEPARATOR}{value}"


def key_label(key: str) -> str:
    """A limit key for people: ``type[value]``."""
    task_type, _, value = key.partition(KEY_SEPARATOR)
    return f"{task_type}[{value}]" if value else task_type


class Fairness(StrEnum):
    """How a queue orders tasks of equal priority."""

    #: Queue order (priority with aging, then age).
    NONE = "none"
    #: Alternate across owners, so one tenant's flood cannot starve the others.
    OWNER = "owner"


class QueueSettingsSpec(BaseModel):
    """Options of one queue."""

    model_config = ConfigDict(extra="forbid")

    fairness: Fairness = Fairness.NONE


class QueueSettings(QueueSettingsSpec):
    """A queue's stored options."""

    queue: str
    updated_at: datetime


class WaitingOn(StrEnum):
    """Why a task that is not running is not running (shown on the task view)."""

    DEPENDENCY = "dependency"
    SCHEDULE = "schedule"
    CONCURRENCY = "concurrency"
    RATE_LIMIT = "rate_limit"
    RESOURCE = "resource"
    PAUSED = "paused"


def cache_key(task_type: str, version: int | str, task_input: Any, owner: str | None = None) -> str:
    """The result-cache key: type, type version, owner and the canonical input, hashed.

    The owner is part of it so one tenant is never handed another tenant's result.
    """
    import hashlib

    canonical = orjson.dumps([owner, task_input], option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).hexdigest()
    return f"{task_type}@{version}:{digest}"
