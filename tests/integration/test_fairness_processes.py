"""Fairness with a real worker: one tenant's flood does not hold back another's few tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import offload
from offload.domain.models import TaskSpec

from .conftest import WorkerProcesses, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def fair(url: str) -> Iterator[offload.Client]:
    with offload.Client(database_url=url) as c:
        yield c


def test_a_flood_does_not_starve_another_tenant(
    fair: offload.Client, url: str, tmp_path: Path
) -> None:
    fair.set_queue_settings("default", fairness="owner")
    flood = [TaskSpec(type="util.sleep", input={"seconds": 0.01}, owner="tenant-a")] * 1000
    for start in range(0, 1000, 500):
        fair.submit_many(flood[start : start + 500])
    few = [
        t.id
        for t in fair.submit_many(
            [TaskSpec(type="util.sleep", input={"seconds": 0.01}, owner="tenant-b")] * 10
        )
    ]
    procs = WorkerProcesses(url, tmp_path)
    try:
        procs.spawn("--concurrency", "4", imports=False)
        wait_until(lambda: all(fair.get(i).status.value == "completed" for i in few), 60, "B's ten")
        b_last = max(fair.get(i).finished_at for i in few)  # type: ignore[type-var]
        # Counted by finish time, not when this test looked: a slow poll (a loaded machine)
        # must not count A's tasks that finished after B's ten.
        page = fair.list(status=["completed"], owner="tenant-a", limit=1000)
        done_a = sum(1 for t in page.tasks if t.finished_at and t.finished_at <= b_last)
        # Alternating claims: B's ten ran within about ten turns of A's, not after 1,000.
        assert done_a <= 60, f"tenant A finished {done_a} tasks before B's ten"
    finally:
        procs.stop_all()
