"""A draining worker finishes what it runs and takes nothing new (PRODUCT.md §5)."""

from __future__ import annotations

import threading

import pytest

import offload
from offload.domain.models import AgentStatus
from offload.domain.status import Status
from offload.worker.runtime import Worker
from tests.integration.conftest import wait_status, wait_until


def test_draining_worker_finishes_its_task_then_stops(
    client: offload.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_AGENT_HEARTBEAT", "0.1")
    worker = Worker(client, concurrency=1, prefetch=0, lease_ttl_s=5.0, grace_s=10.0)
    assert worker.heartbeat_s == 0.1
    thread = threading.Thread(target=worker.run, name="drain-worker", daemon=True)
    thread.start()
    try:
        running = client.submit("wt.sleep", {"seconds": 1.0})
        wait_status(client, running.id, {Status.RUNNING}, 10)
        later = client.submit("wt.add", {"a": 1, "b": 2})
        assert worker.agent_id is not None
        client.set_agent_status(worker.agent_id, AgentStatus.DRAINING)
        thread.join(timeout=15)
        assert not thread.is_alive(), "a draining worker stops once its work is done"
        assert client.get(running.id).status is Status.COMPLETED
        waiting = client.get(later.id)
        assert waiting.status is Status.QUEUED and waiting.attempt == 0
        wait_until(
            lambda: client.get_agent(worker.agent_id or "").status is AgentStatus.OFFLINE,
            5, "the stopped worker deregistered",
        )  # fmt: skip
    finally:
        worker.stop(force=True)
        thread.join(timeout=15)


def test_bad_heartbeat_setting_is_one_clear_error(
    client: offload.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from offload.domain.errors import InvalidInput

    monkeypatch.setenv("OFFLOAD_AGENT_HEARTBEAT", "soon")
    with pytest.raises(InvalidInput, match="OFFLOAD_AGENT_HEARTBEAT"):
        Worker(client)
    monkeypatch.setenv("OFFLOAD_AGENT_HEARTBEAT", "0")
    with pytest.raises(InvalidInput, match="positive"):
        Worker(client)
