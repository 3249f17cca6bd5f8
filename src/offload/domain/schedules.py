"""Schedules: tasks created on a timetable (PRODUCT.md §4.9).

A schedule is a task template plus a timetable, ``cron`` (croniter, in an IANA timezone) or
``every_s``. Each firing time creates one task, exactly once however many servers run: the
firing is recorded under a unique ``(schedule_id, fire_time)`` key in the same transaction
that creates the task. Firings missed while nothing was running follow ``catchup``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from offload.domain.errors import InvalidInput
from offload.domain.models import TaskSpec

#: A firing this late is still on time (maintenance runs about once a second).
ON_TIME_S = 5.0
#: At most this many firings per schedule per pass (``catchup: all`` after a long outage).
MAX_FIRINGS = 1000


class Catchup(StrEnum):
    """What happens to firings missed while no server ran."""

    #: Missed firings are dropped; the timetable resumes with the next one.
    SKIP = "skip"
    #: One run stands for all the missed firings.
    ONE = "one"
    #: Every missed firing runs (up to MAX_FIRINGS per pass).
    ALL = "all"


def check_timezone(name: str) -> ZoneInfo:
    """An IANA timezone, or :class:`InvalidInput`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"unknown timezone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'",
            field="timezone",
        ) from None


def check_cron(expr: str) -> str:
    """A five-field cron expression (croniter syntax), or :class:`InvalidInput`."""
    from croniter import croniter

    if not croniter.is_valid(expr) or len(expr.split()) not in (5, 6):
        raise InvalidInput(
            f"cron expression {expr!r} is not valid: use five fields, e.g. '*/5 * * * *'",
            field="cron",
        )
    return expr


class ScheduleSpec(BaseModel):
    """What a caller provides to create a schedule."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    cron: str | None = Field(None, description="five-field cron expression, e.g. '0 * * * *'")
    every_s: float | None = Field(None, ge=1, le=366 * 86400, description="fixed interval")
    timezone: str = Field("UTC", description="IANA timezone the cron expression is read in")
    catchup: Catchup = Catchup.SKIP
    task: TaskSpec = Field(description="the template of the task each firing creates")

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return None if v is None else check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        check_timezone(v)
        return v

    @model_validator(mode="after")
    def _one_timetable(self) -> ScheduleSpec:
        if (self.cron is None) == (self.every_s is None):
            raise InvalidInput("give exactly one of cron or every_s", field="cron")
        return self


class Schedule(ScheduleSpec):
    """A stored schedule."""

    id: str
    owner: str | None = None
    paused: bool = False
    next_fire_at: datetime
    last_fired_at: datetime | None = None
    created_at: datetime


def next_fire(spec: ScheduleSpec, after: float) -> float:
    """The first firing time strictly after ``after`` (epoch seconds)."""
    if spec.every_s is not None:
        return after + spec.every_s
    from croniter import croniter

    assert spec.cron is not None
    start = datetime.fromtimestamp(after, UTC).astimezone(check_timezone(spec.timezone))
    nxt: datetime = croniter(spec.cron, start).get_next(datetime)
    return nxt.timestamp()


def first_fire(spec: ScheduleSpec, now: float) -> float:
    """When a new schedule fires first: the next cron time, or one interval from now."""
    return next_fire(spec, now)


def due_firings(spec: ScheduleSpec, next_at: float, now: float) -> tuple[list[float], float]:
    """The firing times to run now and the next firing time after them.

    Times within :data:`ON_TIME_S` of ``now`` always run; older ones (missed while nothing
    ran) follow ``catchup``: dropped, one run for all of them, or all of them.
    """
    times: list[float] = []
    t = next_at
    while t <= now:
        times.append(t)
        t = next_fire(spec, t)
        if len(times) > 10 * MAX_FIRINGS:
            # A long outage with a short interval: jump ahead instead of walking it.
            t = next_fire(spec, now - (spec.every_s or 0.0)) if spec.every_s else t
            break
    missed = [x for x in times if now - x > ON_TIME_S]
    on_time = [x for x in times if now - x <= ON_TIME_S]
    if spec.catchup is Catchup.ALL:
        run = missed[-MAX_FIRINGS:] + on_time
    elif spec.catchup is Catchup.ONE:
        run = missed[-1:] + on_time
    else:
        run = on_time
    return run[-MAX_FIRINGS:], t
