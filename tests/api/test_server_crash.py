"""PRODUCT.md §11: kill the server while clients submit; every acknowledged submit is in
the database afterwards, and the server starts again on the same database.

The real ``offload serve`` in a subprocess, SIGKILLed while 16 clients keep submitting
over loopback; on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

import offload
from offload.domain.status import Status
from tests.api.conftest import Processes, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLIENTS = 16
#: The kill comes once this many submits are acknowledged and this long has passed (at
#: most MAX_BEFORE_KILL_S, a slow machine's bound); the clients stop at most AFTER_KILL_S
#: after it.
ACKED_BEFORE_KILL = 50
BEFORE_KILL_S = 1.5
MAX_BEFORE_KILL_S = 30.0
AFTER_KILL_S = 10.0


async def _submit_through_a_kill(url: str, proc: subprocess.Popen[bytes]) -> tuple[list[str], int]:
    """Clients submit one task at a time; the server is SIGKILLed meanwhile. Returns the ids
    acknowledged (201 with the task) and how many calls got no answer."""
    acked: list[str] = []
    unanswered = 0
    killed = asyncio.Event()

    async def client(n: int) -> None:
        nonlocal unanswered
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            for i in range(1_000_000):
                body = {"type": "util.echo", "input": {"client": n, "i": i}}
                try:
                    r = await http.post("/v1/tasks", json=body)
                except httpx.HTTPError:
                    unanswered += 1
                    if killed.is_set():
                        return  # the server is gone: this client is done
                    continue
                assert r.status_code == 201, r.text
                acked.append(r.json()["id"])

    async def kill() -> None:
        await asyncio.sleep(BEFORE_KILL_S)
        waited = BEFORE_KILL_S
        while len(acked) < ACKED_BEFORE_KILL and waited < MAX_BEFORE_KILL_S:
            await asyncio.sleep(0.05)
            waited += 0.05
        os.kill(proc.pid, signal.SIGKILL)
        killed.set()

    await asyncio.wait_for(
        asyncio.gather(kill(), *(client(n) for n in range(CLIENTS))),
        MAX_BEFORE_KILL_S + AFTER_KILL_S,
    )
    return acked, unanswered


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_mid_submits_loses_no_acknowledged_task(
    backend: str, tmp_path: Path, procs: Processes, request: pytest.FixtureRequest
) -> None:
    db_url = (
        str(request.getfixturevalue("pg_server").new_database())
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'crash.db'}"
    )
    env = clean_env(tmp_path, OFFLOAD_DATABASE_URL=db_url)
    proc, url = procs.serve(env, "--no-worker", "--log-level", "warning")

    acked, unanswered = asyncio.run(_submit_through_a_kill(url, proc))
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert len(acked) >= ACKED_BEFORE_KILL, f"only {len(acked)} submits before the kill"
    assert unanswered >= CLIENTS  # every client saw the server go

    # Every acknowledged task is stored, whole.
    with offload.Client(database_url=db_url) as local:
        for task_id in acked:
            task = local.get(task_id)
            assert (task.status, task.type) == (Status.QUEUED, "util.echo")

    # The server starts again on the same database and serves what was there.
    _, url = procs.serve(env, "--no-worker", "--log-level", "warning", name="serve-again")
    got = httpx.get(f"{url}/v1/tasks/{acked[-1]}", timeout=10)
    assert got.status_code == 200 and got.json()["input"] is not None
    print(f"\n[crash] {backend}: {len(acked)} acknowledged before SIGKILL, all stored")
