"""Fixtures for integration tests: a temp SQLite database per test, a client on it, workers
in this process (on a thread) or as subprocesses (``python -m offload.worker``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import offload
import tests.worker_tasks  # noqa: F401 - registers the wt.* types the tests submit
from offload.domain.models import Task
from offload.domain.status import Status
from offload.worker.runtime import Worker
from tests.pgcluster import PgCluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite database for this test."""
    return f"sqlite:///{tmp_path / 'offload.db'}"


@pytest.fixture
def pg_url(pg_server: PgCluster) -> str:
    """A fresh database, migrated, on the session's throwaway PostgreSQL cluster."""
    return pg_server.new_database()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop of the test's own, for scenarios run with ``run_until_complete``."""
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture
def client(db_url: str) -> Iterator[offload.Client]:
    """A sync client on the test's database."""
    with offload.Client(database_url=db_url) as c:
        yield c


@pytest.fixture
def run_worker(client: offload.Client) -> Iterator[Callable[..., Worker]]:
    """Start ``Worker(client, **options)`` on a thread; stopped (and joined) at teardown."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(**options: Any) -> Worker:
        options.setdefault("lease_ttl_s", 3.0)
        options.setdefault("grace_s", 5.0)
        worker = Worker(client, **options)
        thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        worker.stop(force=True)
    for _, thread in started:
        thread.join(timeout=15)
        assert not thread.is_alive(), "worker thread did not stop"


class WorkerProcesses:
    """Worker subprocesses on the test's database; every one is killed at teardown."""

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.db_url = db_url
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        # ROOT for ``tests.worker_tasks``; any PYTHONPATH given (a worktree's src/) stays
        # first, so the subprocesses run the code under test.
        path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
        self.env = {**os.environ, "PYTHONPATH": path, "OFFLOAD_LOG_LEVEL": "INFO"}
        self.env.pop("OFFLOAD_URL", None)

    def spawn(
        self,
        *args: str,
        name: str | None = None,
        env: dict[str, str] | None = None,
        imports: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m offload.worker`` with ``args``; its output goes to a log file."""
        name = name or f"w{len(self.procs)}"
        path = self.tmp_path / f"{name}.log"
        cmd = [
            sys.executable,
            "-m",
            "offload.worker",
            "--database-url",
            self.db_url,
            "--name",
            name,
            *(["--import", "tests.worker_tasks"] if imports else []),
            *args,
        ]
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = path
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """What a worker printed so far."""
        return self.logs[proc.pid].read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Spawn worker subprocesses; all are SIGKILLed at teardown if still alive."""
    procs = WorkerProcesses(db_url, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_status(
    client: offload.Client, task_id: str, statuses: set[Status], timeout: float
) -> Task:
    """Poll a task until its status is one of ``statuses``."""
    box: list[Task] = []

    def check() -> bool:
        box[:] = [client.get(task_id)]
        return box[0].status in statuses

    wait_until(check, timeout, f"task {task_id} to become {sorted(statuses)}")
    return box[0]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each backend (the test runs once per backend)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'offload.db'}"
    return str(request.getfixturevalue("pg_server").new_database())
