"""Auth and tenancy (PRODUCT.md §9): users see and act on their own tasks only (others'
are 404), agents claim only their tenant's work, admins see all; no token is 401 and the
wrong role 403."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import offload
from offload.core.auth import Forbidden, Unauthenticated
from offload.domain.errors import NotFound
from tests.api.conftest import LiveServer, unique

pytestmark = pytest.mark.timeout(60)


def status(r: httpx.Response) -> tuple[int, str | None]:
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    return r.status_code, (body.get("error") or {}).get("code")


@pytest.fixture
def clients(api: LiveServer) -> Any:
    names = ("admin", "alice", "bob", "alice-agent", "bob-agent")
    opened = {name: api.http(name) for name in names}
    try:
        yield opened
    finally:
        for c in opened.values():
            c.close()


def test_no_token_or_a_bad_one_is_401(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url) as anonymous:
        for method, path in (("GET", "/v1/tasks"), ("POST", "/v1/tasks"), ("GET", "/v1/stats"),
                             ("POST", "/v1/claims"), ("GET", "/v1/events")):  # fmt: skip
            r = anonymous.request(method, path, json={})
            assert status(r) == (401, "unauthenticated"), (method, path, r.text)
            assert r.headers["WWW-Authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer ofk_not-a-real-token"}
        assert status(anonymous.get("/v1/tasks", headers=bad)) == (401, "unauthenticated")
        basic = {"Authorization": "Basic dXNlcjpwYXNz"}
        assert status(anonymous.get("/v1/tasks", headers=basic)) == (401, "unauthenticated")
        # Probes stay open for load balancers.
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200


def test_users_cannot_read_list_control_or_follow_others_tasks(clients: Any) -> None:
    alice, bob, admin = clients["alice"], clients["bob"], clients["admin"]
    tag = unique("mine")
    task = alice.post("/v1/tasks", json={"type": "util.echo", "tags": [tag],
                                         "queue": unique()}).json()  # fmt: skip
    tid = task["id"]
    assert alice.get(f"/v1/tasks/{tid}").status_code == 200
    for method, path in (
        ("GET", f"/v1/tasks/{tid}"), ("GET", f"/v1/tasks/{tid}/events"),
        ("GET", f"/v1/tasks/{tid}/wait?timeout=0"), ("POST", f"/v1/tasks/{tid}/cancel"),
        ("POST", f"/v1/tasks/{tid}/pause"), ("POST", f"/v1/tasks/{tid}/resume"),
        ("POST", f"/v1/tasks/{tid}/retry"),
    ):  # fmt: skip
        assert status(bob.request(method, path)) == (404, "not_found"), (method, path)
    assert bob.get("/v1/tasks", params={"tag": tag}).json()["total"] == 0
    assert status(bob.get("/v1/tasks", params={"owner": "alice"})) == (403, "forbidden")
    assert bob.get("/v1/tasks", params={"owner": "bob"}).status_code == 200
    assert alice.get("/v1/tasks", params={"tag": tag}).json()["total"] == 1
    # Admins see everyone's, and may filter by owner.
    assert admin.get(f"/v1/tasks/{tid}").json()["owner"] == "alice"
    assert admin.get("/v1/tasks", params={"tag": tag, "owner": "alice"}).json()["total"] == 1
    assert admin.get("/v1/tasks", params={"tag": tag, "owner": "bob"}).json()["total"] == 0
    # Bob's retry-by-filter does not reach alice's dead letters.
    assert bob.post("/v1/dlq/retry", json={"tag": tag, "status": ["queued"]}).json() == {
        "tasks": []
    }
    # Still alice's and untouched.
    assert alice.get(f"/v1/tasks/{tid}").json()["status"] == "queued"


def test_stats_are_per_tenant(clients: Any) -> None:
    alice, bob, admin = clients["alice"], clients["bob"], clients["admin"]
    queue = unique()
    bob.post("/v1/tasks", json={"type": "util.echo", "queue": queue})
    before = bob.get("/v1/stats").json()["total"]
    alice.post("/v1/tasks", json={"type": "util.echo", "queue": queue})
    assert bob.get("/v1/stats").json()["total"] == before
    assert admin.get("/v1/stats").json()["total"] > alice.get("/v1/stats").json()["total"]


def test_agents_claim_only_their_tenants_work(clients: Any) -> None:
    queue = unique()
    mine = clients["alice"].post("/v1/tasks", json={"type": "util.echo", "queue": queue}).json()
    claim = {"agent_id": "w", "queues": [queue], "max": 10}
    assert clients["bob-agent"].post("/v1/claims", json=claim).json()["tasks"] == []
    # A tenant named in the body is ignored for non-admins.
    assert clients["bob-agent"].post("/v1/claims", json=claim | {"tenant": "alice"}).json() == {
        "tasks": []
    }
    assert clients["bob"].post("/v1/claims", json=claim).json()["tasks"] == []
    (got,) = clients["alice-agent"].post("/v1/claims", json=claim).json()["tasks"]
    assert got["id"] == mine["id"]
    lease = got["lease"]["id"]
    # Knowing the lease id is not enough for another tenant.
    r = clients["bob-agent"].post(f"/v1/tasks/{got['id']}/complete", json={"lease_id": lease})
    assert status(r) == (404, "not_found")
    items = {"items": [{"task_id": got["id"], "lease_id": lease, "result": 1}]}
    acks = clients["bob-agent"].post("/v1/tasks/complete", json=items).json()["acks"]
    assert acks[0]["ok"] is False and acks[0]["code"] == "not_found"
    beat = {"leases": [{"task_id": got["id"], "lease_id": lease}]}
    states = clients["bob-agent"].post("/v1/leases/heartbeat", json=beat).json()["leases"]
    assert states[0]["valid"] is False
    r = clients["bob-agent"].post(f"/v1/tasks/{got['id']}/progress",
                                  json={"lease_id": lease, "progress": 5})  # fmt: skip
    assert status(r) == (404, "not_found")
    # Its own tenant's agent completes it.
    ack = clients["alice-agent"].post(f"/v1/tasks/{got['id']}/complete",
                                      json={"lease_id": lease, "result": 1}).json()  # fmt: skip
    assert ack["ok"] is True


def test_admins_claim_any_tenant_or_one_they_name(clients: Any) -> None:
    queue = unique()
    a = clients["alice"].post("/v1/tasks", json={"type": "util.echo", "queue": queue}).json()
    b = clients["bob"].post("/v1/tasks", json={"type": "util.echo", "queue": queue}).json()
    claim = {"agent_id": "pool", "queues": [queue], "max": 10}
    only_bob = clients["admin"].post("/v1/claims", json=claim | {"tenant": "bob"}).json()
    assert [t["id"] for t in only_bob["tasks"]] == [b["id"]]
    rest = clients["admin"].post("/v1/claims", json=claim).json()
    assert [t["id"] for t in rest["tasks"]] == [a["id"]]


def test_wrong_role_is_403(clients: Any) -> None:
    cases = [
        ("alice", "GET", "/v1/audit"), ("alice", "GET", "/v1/tokens"),
        ("alice", "POST", "/v1/tokens"), ("alice", "DELETE", "/v1/tokens/x"),
        ("alice", "POST", "/v1/maintenance"), ("alice", "GET", "/metrics"),
        ("alice-agent", "GET", "/v1/audit"), ("alice-agent", "POST", "/v1/tokens"),
        ("alice-agent", "GET", "/metrics"),
    ]  # fmt: skip
    for name, method, path in cases:
        body = {"user": "x"} if method == "POST" else None
        r = clients[name].request(method, path, json=body)
        assert status(r) == (403, "forbidden"), (name, method, path, r.text)


def test_the_sdk_sees_the_same_exceptions_as_locally(api: LiveServer) -> None:
    with api.sdk("alice") as alice, api.sdk("bob") as bob:
        task = alice.submit("util.echo", {"a": 1}, queue=unique())
        with pytest.raises(NotFound):
            bob.get(task.id)
        with pytest.raises(NotFound):
            bob.cancel(task.id)
        with pytest.raises(Forbidden):
            bob.list(owner="alice")
    with offload.Client(api.url) as anonymous, pytest.raises(Unauthenticated):
        anonymous.stats()
