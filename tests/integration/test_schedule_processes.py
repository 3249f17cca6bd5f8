"""A cron schedule firing every second, with two processes running maintenance on one
database: every firing time creates exactly one task (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

import offload
from offload.domain.models import TaskFilter

from .conftest import WorkerProcesses, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def sc(url: str) -> Iterator[offload.Client]:
    with offload.Client(database_url=url) as c:
        yield c


def test_every_second_with_two_processes_fires_once_per_second(
    sc: offload.Client, url: str, tmp_path: Path
) -> None:
    procs = WorkerProcesses(url, tmp_path)
    try:
        # Two processes, each running the maintenance pass that fires schedules.
        for _ in range(2):
            procs.spawn("--concurrency", "4", imports=False)
        wait_until(lambda: len(sc.list_agents()) >= 2, 60, "two workers", 0.1)
        # Six fields: croniter's seconds field, so "every second" in cron terms.
        sch = sc.create_schedule("tick", "util.echo", {"from": "schedule"}, cron="* * * * * *")
        start = sch.next_fire_at.timestamp()
        time.sleep(5.6)
        sc.pause_schedule("tick")
        time.sleep(1.5)
        tasks = [
            t
            for t in sc.list(TaskFilter(type="util.echo", limit=1000)).tasks
            if t.metadata.get("schedule_id") == sch.id
        ]
        times = sorted(t.metadata["scheduled_for"] for t in tasks)
        assert len(times) == len(set(times)), "a firing time created two tasks"
        assert 4 <= len(times) <= 6, times
        # Consecutive seconds from the first firing time: none skipped, none doubled.
        secs = [datetime.fromisoformat(x).timestamp() - start for x in times]
        assert secs == pytest.approx(list(range(len(secs))))
        wait_until(lambda: all(sc.get(t.id).status.value == "completed" for t in tasks), 30, "runs")
    finally:
        procs.stop_all()
