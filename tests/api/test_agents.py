"""The agent registry over real HTTP: register, read, workload, availability, drain,
dispatch settings and bids, with their errors (never a 500)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.domain.agents import DispatchMode
from offload.domain.errors import NotFound
from offload.domain.models import AgentRegistration, AgentStatus

from .conftest import LiveServer, running_server, unique


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("agents"), auth=True) as live:
        yield live


def test_register_read_workload_and_available(server: LiveServer) -> None:
    cap = unique("cap")
    with server.http("admin") as http:
        r = http.post(
            "/v1/agents",
            json={
                "id": unique("a"),
                "name": "analyst",
                "kind": "llm",
                "capabilities": {cap: 0.8},
                "max_concurrency": 2,
            },
        )
        assert r.status_code == 201, r.text
        agent = r.json()
        assert agent["status"] == "online" and agent["success_rate"] is None
        r = http.post(
            f"/v1/agents/{agent['id']}/heartbeat",
            json={"metadata": {"cpu_percent": 12.5, "memory_percent": 40}},
        )
        assert r.json()["metadata"]["cpu_percent"] == 12.5
        got = http.get(f"/v1/agents/{agent['id']}").json()
        assert got["capabilities"] == {cap: 0.8} and got["kind"] == "llm"
        avail = http.get("/v1/agents/available", params={"capability": cap}).json()["agents"]
        assert [a["id"] for a in avail] == [agent["id"]]
        work = http.get(f"/v1/agents/{agent['id']}/workload").json()
        assert work["agent"]["id"] == agent["id"] and work["tasks"] == []
        r = http.patch(f"/v1/agents/{agent['id']}", json={"status": "draining"})
        assert r.status_code == 200 and r.json()["status"] == "draining"
        assert http.get("/v1/agents/available", params={"capability": cap}).json()["agents"] == []
        # Errors are 4xx with the error envelope.
        for method, path, body in [
            ("GET", "/v1/agents/nope", None),
            ("GET", "/v1/agents/nope/workload", None),
            ("PATCH", "/v1/agents/nope", {"status": "online"}),
        ]:
            r = http.request(method, path, json=body)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = http.patch(f"/v1/agents/{agent['id']}", json={"status": "sleepy"})
        assert r.status_code == 422 and "error" in r.json()
        r = http.patch(f"/v1/agents/{agent['id']}", json={"status": "busy"})
        assert r.status_code == 422


def test_users_may_not_drain_or_set_dispatch(server: LiveServer) -> None:
    with server.http("admin") as http:
        agent = http.post("/v1/agents", json={"name": "w"}).json()
    with server.http("alice") as http:
        r = http.patch(f"/v1/agents/{agent['id']}", json={"status": "draining"})
        assert r.status_code == 403
        assert http.put("/v1/queues/x/dispatch", json={"mode": "push"}).status_code == 403


def test_dispatch_settings_and_bids_over_http(server: LiveServer) -> None:
    queue = unique()
    with server.http("admin") as http:
        assert http.get(f"/v1/queues/{queue}/dispatch").json()["mode"] == "pull"
        r = http.put(f"/v1/queues/{queue}/dispatch", json={"mode": "hybrid", "hybrid_threshold": 7})
        assert r.status_code == 200 and r.json()["hybrid_threshold"] == 7
        assert http.get(f"/v1/queues/{queue}/dispatch").json()["mode"] == "hybrid"
        r = http.put(f"/v1/queues/{queue}/dispatch", json={"mode": "lottery"})
        assert r.status_code == 422
        r = http.put(f"/v1/queues/{queue}/dispatch", json={"hybrid_threshold": 11})
        assert r.status_code == 422
        task = http.post(
            "/v1/tasks", json={"type": "util.echo", "input": {"value": 1}, "queue": unique()}
        ).json()
        agent = http.post("/v1/agents", json={"name": "bidder"}).json()
        r = http.post(f"/v1/tasks/{task['id']}/bids", json={"agent_id": agent["id"], "cost": 1})
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        r = http.post("/v1/tasks/nope/bids", json={"agent_id": agent["id"], "cost": 1})
        assert r.status_code == 404
        r = http.post(f"/v1/tasks/{task['id']}/bids", json={"agent_id": agent["id"], "cost": -1})
        assert r.status_code == 422
        assert http.get(f"/v1/tasks/{task['id']}/bids").json() == {"bids": []}


def test_sdk_agent_calls(server: LiveServer) -> None:
    queue = unique()
    with server.sdk("admin") as client:
        agent = client.register_agent(AgentRegistration(name="sdk", capabilities={"q": 1.0}))
        assert client.available_agents("q")[0].id == agent.id
        assert client.agent_workload(agent.id).agent.name == "sdk"
        assert client.set_agent_status(agent.id, "draining").status is AgentStatus.DRAINING
        assert client.set_dispatch(queue, mode="push").mode is DispatchMode.PUSH
        assert client.get_dispatch(queue).mode is DispatchMode.PUSH
        with pytest.raises(NotFound):
            client.agent_workload("nobody")


def test_agent_events_reach_the_stream(tmp_path: Path) -> None:
    with running_server(tmp_path, auth=False) as live, live.http() as http:
        http.post("/v1/agents", json={"id": "ev-agent", "name": "ev"})
        with http.stream("GET", "/v1/events", params={"after": 0, "timeout": 2}) as r:
            body = "".join(r.iter_text())
        assert "agent.registered" in body and "ev-agent" in body
