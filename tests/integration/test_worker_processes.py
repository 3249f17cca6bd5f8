"""Worker processes (``python -m offload.worker``) on one SQLite file: signals, crashes, races.

Each test SIGKILLs whatever worker is still alive when it ends (the ``workers`` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import offload
from offload.domain.models import AgentStatus, TaskEvent, TaskSpec
from offload.domain.status import Status
from tests.integration.conftest import WorkerProcesses, wait_status, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

#: Event kinds that end a lease (the next "claimed" may follow only after one of them).
LEASE_ENDS = {"completed", "failed", "lease_expired", "released", "retry_scheduled", "cancelled"}


def exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker {proc.pid} still running after {timeout}s") from None


def assert_no_overlapping_leases(task_id: str, events: list[TaskEvent]) -> None:
    """Walk a task's log: a "claimed" is only legal when no other lease is live."""
    live: str | None = None
    for event in sorted(events, key=lambda e: e.seq):
        if event.kind == "claimed":
            assert live is None, f"task {task_id}: claimed under {event.data} while {live} live"
            live = event.data["lease_id"]
        elif event.kind in LEASE_ENDS or (
            event.kind == "status_changed" and event.data.get("to") == "paused"
        ):
            live = None


def test_sigterm_lets_the_running_task_finish_then_exits_0(
    client: offload.Client, workers: WorkerProcesses
) -> None:
    proc = workers.spawn("--grace", "10")
    task = client.submit("wt.sleep", {"seconds": 1.5})
    wait_status(client, task.id, {Status.RUNNING}, 15)
    os.kill(proc.pid, signal.SIGTERM)
    assert exit_code(proc, 15) == 0, workers.log(proc)
    done = client.get(task.id)
    assert done.status is Status.COMPLETED, workers.log(proc)
    assert done.result["pid"] == proc.pid
    # The worker deregistered its agent on the way out.
    (agent,) = [a for a in client.list_agents() if a.metadata.get("pid") == proc.pid]
    assert agent.status is AgentStatus.OFFLINE


def test_sigterm_past_the_grace_period_hands_the_task_back_unspent(
    client: offload.Client, workers: WorkerProcesses
) -> None:
    first = workers.spawn("--grace", "0.3")
    task = client.submit("wt.patient", {"seconds": 2})
    wait_status(client, task.id, {Status.RUNNING}, 15)
    os.kill(first.pid, signal.SIGTERM)
    assert exit_code(first, 10) == 0, workers.log(first)
    back = client.get(task.id)
    assert back.status is Status.QUEUED
    assert back.attempt == 0 and back.errors == []
    assert "released" in [e.kind for e in client.events(task.id)]

    second = workers.spawn()
    done = client.wait(task.id, timeout=20)
    assert done.status is Status.COMPLETED
    assert done.result == {"stopped": False, "pid": second.pid}
    assert done.attempt == 1


def test_sigkill_mid_task_loses_nothing(
    client: offload.Client, workers: WorkerProcesses, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    record.mkdir()
    env = {"WT_RECORD_DIR": str(record)}
    tasks = client.submit_many(
        [TaskSpec(type="wt.record", input={"i": i, "hold_s": 30}) for i in range(10)]
    )
    doomed = workers.spawn(
        "--lease-ttl", "2", "--concurrency", "4", "--prefetch", "2", env={**env, "WT_HOLD": "1"}
    )
    wait_until(
        lambda: client.list(status=["running"], limit=1).total == 6,
        15,
        "the first worker to lease 6 tasks",
    )
    wait_until(
        lambda: (
            (record / str(doomed.pid)).exists()
            and len((record / str(doomed.pid)).read_text().splitlines()) == 4
        ),
        15,
        "4 handlers started",
    )
    os.kill(doomed.pid, signal.SIGKILL)
    assert exit_code(doomed, 5) == -signal.SIGKILL

    rescuer = workers.spawn("--lease-ttl", "2", env=env)
    for t in tasks:
        done = client.wait(t.id, timeout=30)
        assert done.status is Status.COMPLETED, done.error
        assert done.result == {"i": t.input["i"], "pid": rescuer.pid}

    started_by_doomed = {
        line.split()[0] for line in (record / str(doomed.pid)).read_text().splitlines()
    }
    finished = Counter(
        line.split()[0] for line in (record / str(rescuer.pid)).read_text().splitlines()
    )
    assert set(finished) == {t.id for t in tasks}
    assert set(finished.values()) == {1}
    expired = 0
    for t in tasks:
        events = client.events(t.id)
        kinds = [e.kind for e in events]
        assert kinds.count("completed") == 1
        assert_no_overlapping_leases(t.id, events)
        if "lease_expired" in kinds:
            expired += 1
            assert client.get(t.id).attempt == 2
    # The 4 running and the 2 prefetched leases expired; none was lost.
    assert expired == 6
    assert started_by_doomed <= set(finished)


def test_three_workers_racing_complete_every_task_exactly_once(
    client: offload.Client, workers: WorkerProcesses, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    record.mkdir()
    procs = [
        workers.spawn("--concurrency", "4", env={"WT_RECORD_DIR": str(record)}) for _ in range(3)
    ]
    wait_until(
        lambda: sum(a.status is not AgentStatus.OFFLINE for a in client.list_agents()) == 3,
        20,
        "3 workers online",
    )
    n = 600
    tasks = [
        t
        for start in range(0, n, 200)
        for t in client.submit_many(
            [TaskSpec(type="wt.record", input={"i": i}) for i in range(start, start + 200)]
        )
    ]
    wait_until(lambda: client.stats().counts["completed"] == n, 40, f"{n} completed", interval=0.1)

    runs = Counter(line.split()[0] for f in record.iterdir() for line in f.read_text().splitlines())
    assert len(runs) == n and set(runs.values()) == {1}, "a task ran twice or never"
    pids = Counter()
    for t in tasks:
        done = client.get(t.id)
        assert done.status is Status.COMPLETED and done.result["i"] == t.input["i"]
        pids[done.result["pid"]] += 1
        events = client.events(t.id)
        kinds = Counter(e.kind for e in events)
        assert kinds["claimed"] == 1 and kinds["completed"] == 1, kinds
        assert_no_overlapping_leases(t.id, events)
    assert set(pids) <= {p.pid for p in procs}
    assert len(pids) >= 2, f"only one worker got work: {pids}"

    for p in procs:
        os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        assert exit_code(p, 15) == 0, workers.log(p)


def test_imports_come_from_env_and_a_bad_one_fails_in_one_line(
    client: offload.Client, workers: WorkerProcesses
) -> None:
    bad = workers.spawn("--import", "no_such_module_xyz", imports=False)
    assert exit_code(bad, 20) == 2
    out = workers.log(bad).strip()
    assert out.splitlines()[-1].startswith("error: cannot import 'no_such_module_xyz'"), out

    from_env = workers.spawn(imports=False, env={"OFFLOAD_IMPORTS": "tests.worker_tasks"})
    task = client.submit("wt.add", {"a": 2, "b": 3})
    assert client.wait(task.id, timeout=20).result == 5
    os.kill(from_env.pid, signal.SIGINT)
    assert exit_code(from_env, 15) == 0


def test_a_worker_process_exempts_its_startup_heap_from_collection(
    client: offload.Client, workers: WorkerProcesses
) -> None:
    # Full collections of a busy worker walked every module and schema it had loaded: the
    # process freezes its start-up heap once, so they walk only what it made since.
    proc = workers.spawn("--concurrency", "2")
    task = client.submit("wt.heap", {})
    done = wait_status(client, task.id, {Status.COMPLETED}, 30)
    assert done.result["pid"] == proc.pid
    # Tens of thousands of start-up objects (modules, classes, the task modules' types).
    assert done.result["frozen"] > 10_000, done.result
