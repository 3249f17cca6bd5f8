"""Push agents for real: an ``offload serve`` subprocess and ``offload agent serve``
subprocesses on loopback. Tasks are routed to capable agents, a busy agent's 503 sends the
task to the next one, a SIGKILLed agent is marked offline and its task finished by another,
and auctions pick the cheapest bid (or fall back to pull)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import offload
from offload.domain.agents import DispatchMode
from offload.domain.models import AgentStatus, ClaimRequest
from offload.domain.status import Status
from tests.api.conftest import COMMAND, Processes, clean_env, wait_until

pytestmark = pytest.mark.slow

#: The server expects a heartbeat every 2 s (offline after 6 s of silence).
SERVER_HEARTBEAT = "2"


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def env_for(tmp: Path, heartbeat: str) -> dict[str, str]:
    return clean_env(tmp, OFFLOAD_IMPORTS="tests.agent_tasks", OFFLOAD_AGENT_HEARTBEAT=heartbeat)


def start_agent(
    procs: Processes,
    tmp: Path,
    url: str,
    agent_id: str,
    caps: str,
    heartbeat: str = "0.3",
    *extra: str,
) -> tuple[subprocess.Popen[bytes], str]:
    """``offload agent serve --port 0``; returns the process and its endpoint."""
    proc = procs.spawn(
        [*COMMAND, "agent", "serve", "--port", "0", "--id", agent_id, "-c", caps,
         "--server", url, "--log-level", "warning", "--grace", "1", *extra],
        env_for(tmp, heartbeat), agent_id,
    )  # fmt: skip
    endpoint: list[str] = []

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"agent {agent_id} exited: {procs.log(proc)}")
        found = re.search(r"http://127\.0\.0\.1:(\d+)", procs.log(proc))
        if found and not endpoint:
            endpoint.append(found.group(0))
        if not endpoint:
            return False
        try:
            return bool(httpx.get(endpoint[0] + "/health", timeout=2).json()["is_available"])
        except httpx.HTTPError:
            return False

    wait_until(healthy, 30, f"agent {agent_id} to be available")
    return proc, endpoint[0]


def test_routing_busy_agent_and_failover(tmp_path: Path, procs: Processes) -> None:
    _, url = procs.serve(env_for(tmp_path, SERVER_HEARTBEAT), "--no-worker")
    # "slowbeat" hears about status changes only every 4 s: after a drain is lifted on the
    # server it still refuses work for a moment, which is how it comes to answer 503.
    _, best = start_agent(procs, tmp_path, url, "analyst", "data_analysis:0.9")
    _, _ = start_agent(procs, tmp_path, url, "junior", "data_analysis:0.5")
    _, _ = start_agent(procs, tmp_path, url, "coder", "code_generation:1.0")
    with offload.Client(url) as client:
        assert client.set_dispatch("default", mode="push").mode is DispatchMode.PUSH
        health = httpx.get(best + "/health").json()
        assert health == {"status": "ok", "agent_id": "analyst", "is_available": True,
                          "current_task": None, "version": offload.__version__}  # fmt: skip
        status = httpx.get(best + "/status").json()
        assert 0 <= status["cpu_percent"] <= 100 and 0 < status["memory_percent"] <= 100
        assert status["tasks_completed"] == 0 and status["last_heartbeat"] is not None

        # Routing: each task goes to an agent with its capability.
        code = [client.submit("ag.codegen", {"spec": f"f{i}"}) for i in range(2)]
        data = [client.submit("ag.analyze", {"values": [i, i + 2]}) for i in range(2)]
        for t in code:
            done = client.wait(t.id, timeout=30)
            assert done.status is Status.COMPLETED and done.assignment.agent_id == "coder"
            assert done.assignment.method.value == "assigned"
        for t in data:
            done = client.wait(t.id, timeout=30)
            assert done.status is Status.COMPLETED
            assert done.assignment.agent_id in {"analyst", "junior"}
        assert client.agent_workload("coder").agent.completed == 2
        assert httpx.get(best + "/status").json()["tasks_completed"] >= 0

        # Failover: the best agent takes a slow task and is SIGKILLed half way.
        slow = client.submit("ag.slow", {"seconds": 3.0})
        wait_until(lambda: client.get(slow.id).progress > 0, 30, "the slow task to start")
        first = client.get(slow.id)
        assert first.assignment.agent_id == "analyst" and first.status is Status.RUNNING
        victim = next(p for p, log in procs.procs if log.name == "analyst.log")
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(
            lambda: client.get_agent("analyst").status is AgentStatus.OFFLINE,
            30, "the killed agent to be marked offline",
        )  # fmt: skip
        offline_after = time.monotonic() - killed_at
        print(f"agent offline {offline_after:.1f}s after SIGKILL")
        assert offline_after < 30
        done = client.wait(slow.id, timeout=60)
        assert done.status is Status.COMPLETED and done.assignment.agent_id == "junior"
        assert done.attempt == 2 and done.errors[0].type == "LeaseExpired"
        kinds = [e.kind for e in client.events(slow.id)]
        assert kinds.count("task.assigned") == 2 and "lease_expired" in kinds


def test_busy_agent_answers_503_and_the_next_one_gets_the_task(
    tmp_path: Path, procs: Processes
) -> None:
    _, url = procs.serve(env_for(tmp_path, SERVER_HEARTBEAT), "--no-worker")
    # This agent learns about status changes only every 4 s (its heartbeat interval).
    _, slow_ear = start_agent(procs, tmp_path, url, "expert", "data_analysis:1.0", "4")
    _, _ = start_agent(procs, tmp_path, url, "backup", "data_analysis:0.3")
    with offload.Client(url) as client:
        client.set_dispatch("default", mode="push")
        client.set_agent_status("expert", "draining")
        wait_until(lambda: not httpx.get(slow_ear + "/health").json()["is_available"], 15,
                   "the expert to hear it is draining")  # fmt: skip
        # Online again on the server, but the agent still refuses work until its next beat.
        client.set_agent_status("expert", "online")
        task = client.submit("ag.analyze", {"values": [1, 2, 3]})
        done = client.wait(task.id, timeout=30)
    assert done.status is Status.COMPLETED and done.assignment.agent_id == "backup"
    events = client_events(url, task.id)
    assigned = [e.data["agent_id"] for e in events if e.kind == "task.assigned"]
    assert assigned == ["expert", "backup"]
    assert any(e.kind == "unassigned" and e.data["reason"] == "busy" for e in events)
    assert done.attempt == 1  # the refused assignment spent no attempt


def client_events(url: str, task_id: str) -> list:
    with offload.Client(url) as client:
        return client.events(task_id)


def test_auction_lowest_cost_wins_and_no_bids_falls_back(tmp_path: Path, procs: Processes) -> None:
    _, url = procs.serve(env_for(tmp_path, SERVER_HEARTBEAT), "--no-worker")
    start_agent(procs, tmp_path, url, "keen", "data_analysis:0.9")
    start_agent(procs, tmp_path, url, "meh", "data_analysis:0.4")
    with offload.Client(url) as client:
        client.set_dispatch("bazaar", mode="auction", auction_window_ms=1500)
        for agent_id in ("keen", "meh"):  # both agents serve the auction queue too
            agent = client.get_agent(agent_id)
            client.register_agent(agent_registration(agent, ["default", "bazaar"]))
        task = client.submit("ag.analyze", {"values": [4, 6]}, queue="bazaar")
        done = client.wait(task.id, timeout=30)
        assert done.status is Status.COMPLETED
        assert done.assignment.method.value == "auction" and done.assignment.agent_id == "keen"
        events = client.events(task.id)
        kinds = [e.kind for e in events]
        assert kinds.index("auction.announced") < kinds.index("auction.bid")
        assert kinds.count("auction.bid") == 2
        # Settled as the window closes, not at some later pass.
        at = {e.kind: e.at for e in events}
        settled_after = (at["task.assigned"] - at["auction.announced"]).total_seconds()
        assert 1.5 <= settled_after < 2.5, settled_after

        # Nobody can do this one: no bids, no push agent, so a puller takes it.
        orphan = client.submit("ag.codegen", {"spec": "g"}, queue="bazaar")
        wait_until(
            lambda: "auction.announced" in [e.kind for e in client.events(orphan.id)],
            10, "the announcement",
        )  # fmt: skip
        time.sleep(2.0)  # the window closes with no bids
        assert client.get(orphan.id).status is Status.QUEUED
        claimed = client._run(client.aio.claim(
            ClaimRequest(agent_id="puller", capabilities=["code_generation"], queues=["bazaar"])
        ))  # fmt: skip
        assert [t.id for t in claimed] == [orphan.id]
        assert "auction.bid" not in [e.kind for e in client.events(orphan.id)]


def agent_registration(agent, queues: list[str]):  # type: ignore[no-untyped-def]
    from offload.domain.models import AgentRegistration

    return AgentRegistration(
        id=agent.id, name=agent.name, kind=agent.kind, capabilities=agent.capabilities,
        max_concurrency=agent.max_concurrency, queues=queues, endpoint=agent.endpoint,
    )  # fmt: skip


def test_swarm_and_team_on_real_agents(tmp_path: Path, procs: Processes) -> None:
    _, url = procs.serve(env_for(tmp_path, SERVER_HEARTBEAT), "--no-worker")
    start_agent(procs, tmp_path, url, "ant-1", "data_analysis:0.9")
    start_agent(procs, tmp_path, url, "ant-2", "data_analysis:0.7")
    with offload.Client(url) as client:
        client.set_dispatch("default", mode="push")
        parent = client.submit("ag.analyze", {"values": [1, 3]},
                               team={"mode": "swarm", "size": 2})  # fmt: skip
        done = client.wait(parent.id, timeout=30)
        assert done.status is Status.COMPLETED and set(done.result) == {"ant-1", "ant-2"}
        assert done.result["ant-1"]["mean"] == 2 == done.result["ant-2"]["mean"]
        assert done.result["ant-1"]["pid"] != done.result["ant-2"]["pid"]

        team = client.submit("ag.analyze", {"values": [5]},
                             team={"size": 2, "roles": ["analyst", "checker"]})  # fmt: skip
        done = client.wait(team.id, timeout=30)
        assert done.status is Status.COMPLETED
        assert done.assignment.agent_id == "ant-1" and done.assignment.collaborators == ["ant-2"]
        assert done.assignment.roles == {"ant-1": "analyst", "ant-2": "checker"}
