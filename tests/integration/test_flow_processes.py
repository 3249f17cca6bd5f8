"""Flow control with real worker processes on SQLite and PostgreSQL.

Limits hold across processes because the database enforces them; the proof is read from
the event log: the intervals between a task's ``claimed`` and the end of that lease.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import offload
from offload.domain.models import TaskEvent, TaskFilter, TaskSpec

from .conftest import WorkerProcesses, wait_until

pytestmark = pytest.mark.slow

LEASE_ENDS = {"completed", "failed", "cancelled", "retry_scheduled", "lease_expired", "released"}


@pytest.fixture
def fc(url: str) -> Iterator[offload.Client]:
    with offload.Client(database_url=url) as c:
        yield c


@pytest.fixture
def procs(url: str, tmp_path: Path) -> Iterator[WorkerProcesses]:
    p = WorkerProcesses(url, tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def intervals(
    client: offload.Client, ids: list[str], by_time: bool = False
) -> list[tuple[float, float]]:
    """(start, end) of every lease, from each task's event log.

    By event ``seq`` unless ``by_time``: an event's time is taken before its transaction
    waits for locks, so times can cross by a millisecond where the database order cannot (a
    claim that saw a slot free appends its event after the completion that freed it)."""
    out: list[tuple[float, float]] = []
    for task_id in ids:
        events: list[TaskEvent] = client.events(task_id)
        start = None
        for e in events:
            mark = e.at.timestamp() if by_time else float(e.seq)
            if e.kind == "claimed":
                start = mark
            elif e.kind in LEASE_ENDS and start is not None:
                out.append((start, mark))
                start = None
    return out


def max_overlap(spans: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = level = 0
    for _, delta in points:
        level += delta
        best = max(best, level)
    return best


def done(client: offload.Client) -> int:
    return client.list(TaskFilter(status=["done"], limit=1)).total


def test_concurrency_limit_holds_across_three_workers(
    fc: offload.Client, procs: WorkerProcesses
) -> None:
    fc.set_limit("util.sleep", concurrency=2)
    ids = [
        t.id
        for t in fc.submit_many(
            [TaskSpec(type="util.sleep", input={"seconds": 0.25}) for _ in range(12)]
        )
    ]
    for _ in range(3):
        procs.spawn("--concurrency", "4", imports=False)
    wait_until(lambda: done(fc) >= 12, 90, "12 limited tasks")
    spans = intervals(fc, ids)
    assert len(spans) == 12
    assert max_overlap(spans) == 2, "the limit is 2: never more, and it is used"


def test_rate_limit_admits_the_rate(fc: offload.Client, procs: WorkerProcesses) -> None:
    fc.set_limit("util.echo", rate_limit="10/s")
    ids = [t.id for t in fc.submit_many([TaskSpec(type="util.echo") for _ in range(200)])]
    procs.spawn("--concurrency", "16", imports=False)
    wait_until(lambda: done(fc) >= 1, 60, "the first limited task")
    first = min(s for s, _ in intervals(fc, ids, by_time=True))
    time.sleep(3.2)
    starts = [s for s, _ in intervals(fc, ids, by_time=True) if s < first + 3.0]
    # 10 a second from a cold start: about 30 in 3 s (generous for a loaded machine).
    assert 22 <= len(starts) <= 36, len(starts)
    assert done(fc) < 60, "the limit did not hold"


def test_resource_serializes_and_returns_after_sigkill(
    fc: offload.Client, procs: WorkerProcesses
) -> None:
    fc.set_resource("gpu", 1)
    ids = [
        t.id
        for t in fc.submit_many(
            [
                TaskSpec(type="util.sleep", input={"seconds": 0.2}, resources={"gpu": 1})
                for _ in range(4)
            ]
        )
    ]
    # The holder that dies: no retries, so after its lease expires it fails for good.
    hang = fc.submit(
        "util.sleep", {"seconds": 60}, resources={"gpu": 1}, priority=10, max_retries=0
    )
    first = procs.spawn("--concurrency", "4", "--lease-ttl", "1.5", imports=False)
    wait_until(lambda: fc.get(hang.id).status.value == "running", 60, "the holder to start")
    time.sleep(0.5)
    assert all(fc.get(i).status.value == "queued" for i in ids), "a unit is held"
    assert fc.get(ids[0]).waiting_on is not None
    os.kill(first.pid, signal.SIGKILL)
    # The dead holder's lease expires; its unit comes back and the others run, one by one.
    procs.spawn("--concurrency", "4", "--lease-ttl", "1.5", imports=False)
    wait_until(lambda: all(fc.get(i).status.value == "completed" for i in ids), 90, "the rest")
    assert max_overlap(intervals(fc, ids)) == 1
    assert fc.get(hang.id).error.type == "LeaseExpired"
