"""PostgreSQL with real worker processes: many workers, SIGKILLs, a server restart, NOTIFY.

Every run checks the two guarantees from the event log: each task has exactly one
``completed`` event (its result was recorded once), and no claim happened while another
lease on the same task was still live.
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
from offload.domain.status import Status
from tests.pgcluster import PgCluster, binaries_present

from .conftest import WorkerProcesses, wait_until

pytestmark = pytest.mark.slow

#: Events that end a lease.
LEASE_ENDS = {"completed", "failed", "cancelled", "retry_scheduled", "lease_expired", "released"}


@pytest.fixture
def pg_client(pg_url: str) -> Iterator[offload.Client]:
    with offload.Client(database_url=pg_url) as c:
        yield c


@pytest.fixture
def pg_workers(pg_url: str, tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(pg_url, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def submit(
    client: offload.Client, n: int, task_type: str = "util.echo", **input_: object
) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 1000):
        specs = [
            TaskSpec(
                type=task_type,
                input={**input_, "i": i} if task_type == "util.echo" else dict(input_),
            )
            for i in range(start, min(n, start + 1000))
        ]
        ids += [t.id for t in client.submit_many(specs)]
    return ids


def done_count(client: offload.Client) -> int:
    return client.list(TaskFilter(status=["done"], type=None, limit=1)).total


def check_event_log(client: offload.Client, ids: list[str]) -> None:
    """Exactly one completion per task; no claim while another lease was live."""
    for task_id in ids:
        events: list[TaskEvent] = client.events(task_id)
        completed = [e for e in events if e.kind == "completed"]
        assert len(completed) == 1, (task_id, [e.kind for e in events])
        live = False
        for e in events:
            if e.kind == "claimed":
                assert not live, f"task {task_id} claimed while a lease was live"
                live = True
            elif e.kind in LEASE_ENDS:
                live = False


def test_four_workers_race_on_5000_tasks(
    pg_client: offload.Client, pg_workers: WorkerProcesses
) -> None:
    for _ in range(4):
        pg_workers.spawn("--concurrency", "8", imports=False)
    # All four are idle and listening before the work arrives, so they really race.
    wait_until(lambda: len(pg_client.list_agents()) >= 4, 60, "4 workers to register", 0.1)
    ids = submit(pg_client, 5000)
    wait_until(lambda: done_count(pg_client) >= 5000, 120, "5000 tasks to finish", 0.2)
    assert pg_client.list(TaskFilter(status=["completed"], limit=1)).total == 5000
    agents: set[str | None] = set()
    for offset in range(0, 5000, 1000):
        page = pg_client.list(TaskFilter(limit=1000, offset=offset)).tasks
        assert all(t.result == t.input for t in page)
        agents |= {t.assignment.agent_id for t in page if t.assignment}
    check_event_log(pg_client, ids)
    assert len(agents) >= 2, "work should spread over several workers"


def test_sigkill_two_of_four_workers(
    pg_client: offload.Client, pg_workers: WorkerProcesses
) -> None:
    ids = submit(pg_client, 400, "util.sleep", seconds=0.05)
    procs = [
        pg_workers.spawn("--concurrency", "8", "--lease-ttl", "2", imports=False) for _ in range(4)
    ]
    wait_until(lambda: done_count(pg_client) >= 40, 60, "work to start", 0.05)
    for p in procs[:2]:
        os.kill(p.pid, signal.SIGKILL)
    wait_until(lambda: done_count(pg_client) >= 400, 120, "all tasks after SIGKILL", 0.2)
    assert pg_client.list(TaskFilter(status=["completed"], limit=1)).total == 400
    check_event_log(pg_client, ids)


@pytest.mark.skipif(
    not binaries_present() and not os.environ.get("CI"),
    reason="needs PostgreSQL binaries to restart a server",
)
def test_server_restart_mid_run(tmp_path: Path) -> None:
    # A cluster of its own, with fsync on: a restart must lose nothing acknowledged.
    cluster = PgCluster.start(fsync=True)
    try:
        cluster.make_template()
        url = cluster.new_database()
        with offload.Client(database_url=url) as client:
            ids = submit(client, 3000)
            procs = WorkerProcesses(url, tmp_path)
            try:
                for _ in range(2):
                    procs.spawn("--concurrency", "8", imports=False)
                wait_until(lambda: done_count(client) >= 300, 60, "work to start", 0.05)
                cluster.pg_ctl("restart")
                wait_until(lambda: done_count(client) >= 3000, 120, "all tasks after restart", 0.2)
            finally:
                procs.stop_all()
            assert client.list(TaskFilter(status=["completed"], limit=1)).total == 3000
            check_event_log(client, ids)
    finally:
        cluster.stop()


def test_notify_wakes_an_idle_worker_fast(
    pg_client: offload.Client, pg_workers: WorkerProcesses
) -> None:
    pg_workers.spawn("--concurrency", "4", imports=False)
    warm = pg_client.submit("util.echo", {"warm": True})
    pg_client.wait(warm.id, timeout=30)
    time.sleep(1.5)  # let the worker go idle (blocked in LISTEN, not polling)
    delays = []
    for _ in range(5):
        t = pg_client.submit("util.echo", {"x": 1})
        done = pg_client.wait(t.id, timeout=10)
        assert done.status is Status.COMPLETED
        events = pg_client.events(t.id)
        created = next(e for e in events if e.kind == "created")
        claimed = next(e for e in events if e.kind == "claimed")
        delays.append((claimed.at - created.at).total_seconds())
        time.sleep(0.3)
    delays.sort()
    print(f"NOTIFY pickup delays (s): {[round(d, 4) for d in delays]}")
    assert delays[len(delays) // 2] < 0.05


def test_idle_workers_stay_quiet(
    pg_url: str, pg_client: offload.Client, pg_workers: WorkerProcesses
) -> None:
    """An empty claim appends no events and so must not NOTIFY: otherwise every idle worker's
    empty claim wakes the others, which claim again, and idle workers spin at half a core."""
    import psycopg

    for _ in range(2):
        pg_workers.spawn("--concurrency", "4", imports=False)
    warm = pg_client.submit("util.echo", {"warm": True})
    pg_client.wait(warm.id, timeout=30)
    time.sleep(1.0)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for channel in ("offload_work", "offload_done", "offload_other"):
            conn.execute(f"LISTEN {channel}")
        heard = sum(1 for _ in conn.notifies(timeout=2.0))
        cpu = [_cpu_seconds(p.pid) for p in pg_workers.procs]
        time.sleep(2.0)
        used = [_cpu_seconds(p.pid) - c for p, c in zip(pg_workers.procs, cpu, strict=True)]
        # A change still wakes them.
        t = pg_client.submit("util.echo", {"x": 1})
        assert pg_client.wait(t.id, timeout=10).status is Status.COMPLETED
        woke = sum(1 for _ in conn.notifies(timeout=0.5))
    assert heard == 0, f"{heard} notifications in 2 s with only idle workers"
    assert max(used) < 0.4, f"idle workers used {used} CPU seconds in 2 s"
    assert woke >= 1


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
