"""Schedules on both backends: timetables, catch-up, pause, exactly-once firing."""

from __future__ import annotations

import asyncio

import pytest

from offload.core.service import QueueService
from offload.domain.errors import Conflict, InvalidInput, NotFound, UnknownTaskType
from offload.domain.models import TaskFilter, TaskSpec
from offload.domain.schedules import ScheduleSpec
from offload.storage import open_store

from .conftest import Harness, make_registry


def every(name: str = "tick", seconds: float = 10, **kw: object) -> ScheduleSpec:
    return ScheduleSpec.model_validate(
        {"name": name, "every_s": seconds, "task": {"type": "t.num", "input": {"n": 1}}, **kw}
    )


def fired(h: Harness, name: str = "tick") -> list:
    tasks = h(h.service.list(TaskFilter(type="t.num", limit=1000))).tasks
    return sorted(
        (t for t in tasks if t.metadata.get("schedule") == name),
        key=lambda t: t.metadata["scheduled_for"],
    )


def test_every_interval_fires_once_per_time(svc: Harness) -> None:
    sch = svc(svc.service.create_schedule(every()))
    assert sch.next_fire_at.timestamp() == pytest.approx(svc.clock.now() + 10)
    svc(svc.service.maintain())
    assert fired(svc) == []
    svc.clock.advance(10)
    svc(svc.service.maintain())
    svc(svc.service.maintain())  # a second pass at the same time fires nothing more
    (task,) = fired(svc)
    assert task.metadata["schedule_id"] == sch.id and task.input == {"n": 1}
    assert svc(svc.service.get_schedule("tick")).last_fired_at is not None


def test_catchup_policies_after_an_outage(svc: Harness) -> None:
    for policy in ("skip", "one", "all"):
        svc(svc.service.create_schedule(every(policy, catchup=policy)))
    svc.clock.advance(64)  # due at +10 … +60: five missed, +60 is on time (4 s late)
    svc(svc.service.maintain())
    assert len(fired(svc, "skip")) == 1
    assert len(fired(svc, "one")) == 2
    assert len(fired(svc, "all")) == 6
    # The timetable resumes from the next time after now.
    assert svc(svc.service.get_schedule("all")).next_fire_at.timestamp() == pytest.approx(
        svc(svc.service.get_schedule("skip")).next_fire_at.timestamp()
    )


def test_cron_in_a_timezone(svc: Harness) -> None:
    svc.clock.t = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    sch = svc(
        svc.service.create_schedule(
            ScheduleSpec(
                name="hourly", cron="0 * * * *", timezone="Asia/Kolkata",  # UTC+5:30
                task=TaskSpec(type="t.num", input={"n": 2}),
            )
        )
    )  # fmt: skip
    # On the hour in Kolkata is half past in UTC: 22:30:00 UTC.
    assert sch.next_fire_at.timestamp() == 1_700_001_000.0
    svc.clock.t = 1_700_001_000.0
    svc(svc.service.maintain())
    assert len(fired(svc, "hourly")) == 1


def test_pause_resume_and_remove(svc: Harness) -> None:
    svc(svc.service.create_schedule(every()))
    svc(svc.service.pause_schedule("tick"))
    svc.clock.advance(30)
    svc(svc.service.maintain())
    assert fired(svc) == []
    resumed = svc(svc.service.pause_schedule("tick", paused=False))
    assert not resumed.paused
    assert resumed.next_fire_at.timestamp() == pytest.approx(svc.clock.now() + 10)
    svc.clock.advance(10)
    svc(svc.service.maintain())
    assert len(fired(svc)) == 1
    svc(svc.service.delete_schedule("tick"))
    with pytest.raises(NotFound):
        svc(svc.service.get_schedule("tick"))
    assert svc(svc.service.list_schedules()) == []


def test_bad_schedules_are_refused(svc: Harness) -> None:
    with pytest.raises(InvalidInput, match="cron"):
        ScheduleSpec.model_validate({"name": "x", "cron": "every day", "task": {"type": "t.num"}})
    with pytest.raises(InvalidInput, match="timezone"):
        ScheduleSpec.model_validate(
            {"name": "x", "cron": "* * * * *", "timezone": "Mars/Base", "task": {"type": "t.num"}}
        )
    with pytest.raises(InvalidInput, match="exactly one"):
        ScheduleSpec.model_validate({"name": "x", "task": {"type": "t.num"}})
    with pytest.raises(UnknownTaskType):
        svc(svc.service.create_schedule(every(task={"type": "t.nope"})))
    with pytest.raises(InvalidInput):
        svc(svc.service.create_schedule(every(task={"type": "t.num", "input": {"n": "x"}})))
    svc(svc.service.create_schedule(every()))
    with pytest.raises(Conflict, match="exists"):
        svc(svc.service.create_schedule(every()))


def test_two_servers_fire_each_time_exactly_once(svc: Harness, backend_url: str) -> None:
    async def second() -> QueueService:
        return QueueService(await open_store(backend_url), make_registry(), clock=svc.clock)

    other = svc(second())
    try:
        svc(svc.service.create_schedule(every(seconds=1, catchup="all")))
        for _ in range(5):
            svc.clock.advance(1)

            async def race() -> None:
                await asyncio.gather(svc.service.maintain(), other.maintain())

            svc(race())
        times = [t.metadata["scheduled_for"] for t in fired(svc)]
        assert len(times) == 5 and len(set(times)) == 5
    finally:
        svc(other.store.close())
