"""Contract tests for every route, over real HTTP against a live uvicorn server (auth on).

The module's server runs no worker: tests drive the worker protocol themselves, each in a
queue of its own so they never claim each other's tasks.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.api.conftest import TOKENS, LiveServer, running_server, unique

pytestmark = pytest.mark.timeout(60)


def submit(http: httpx.Client, **spec: Any) -> dict[str, Any]:
    spec.setdefault("type", "util.echo")
    spec.setdefault("input", {"x": 1})
    r = http.post("/v1/tasks", json=spec)
    assert r.status_code == 201, r.text
    return r.json()


def claim(http: httpx.Client, queue: str, **body: Any) -> list[dict[str, Any]]:
    body = {"agent_id": body.pop("agent_id", "test-agent"), "queues": [queue], "max": 10} | body
    r = http.post("/v1/claims", json=body)
    assert r.status_code == 200, r.text
    return r.json()["tasks"]


def error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


@pytest.fixture
def admin(api: LiveServer) -> Any:
    with api.http("admin") as http:
        yield http


@pytest.fixture
def alice(api: LiveServer) -> Any:
    with api.http("alice") as http:
        yield http


# -- submit -------------------------------------------------------------------------------
def test_submit_creates_a_task_owned_by_the_caller(alice: httpx.Client) -> None:
    task = submit(alice, type="math.factorial", input={"n": 5}, priority="high", tags=["t1"])
    assert task["status"] == "queued" and task["priority"] == 8
    assert task["owner"] == "alice" and task["tags"] == ["t1"]
    assert task["id"] and task["created_at"]


def test_submit_validation_names_the_field(alice: httpx.Client) -> None:
    err = error(alice.post("/v1/tasks", json={"type": "util.echo", "priority": "urgent"}), 422)
    assert err["details"]["field"] == "priority" and "priority" in err["message"]
    err = error(alice.post("/v1/tasks", json={"input": {}}), 422, "invalid_input")
    assert err["details"]["field"] == "type"
    err = error(alice.post("/v1/tasks", json={"type": "math.factorial", "input": {"n": "x"}}), 422)
    assert "n" in err["message"]
    err = error(alice.post("/v1/tasks", json={"type": "no.such"}), 422, "unknown_task_type")
    assert err["details"]["field"] == "type"
    err = error(alice.post("/v1/tasks", json={"type": "util.echo", "bogus": 1}), 422)
    assert err["details"]["field"] == "bogus"


def test_malformed_json_is_400_and_wrong_content_type_is_explained(alice: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    error(alice.post("/v1/tasks", content=b'{"type": ', headers=headers), 400, "invalid_json")
    err = error(alice.post("/v1/tasks", content=b'{"type": "util.echo"}'), 400, "invalid_json")
    assert "Content-Type: application/json" in err["message"]


def test_size_limits_are_413(alice: httpx.Client) -> None:
    big_input = {"blob": "x" * 1_100_000}  # over the service's 1 MB input limit
    err = error(alice.post("/v1/tasks", json={"type": "util.echo", "input": big_input}), 413)
    assert err["code"] == "too_large" and err["details"]["field"] == "input"
    huge = b'{"type": "util.echo", "input": {"b": "' + b"x" * 5_100_000 + b'"}}'
    r = alice.post("/v1/tasks", content=huge, headers={"Content-Type": "application/json"})
    error(r, 413, "too_large")


def test_users_cannot_submit_for_others_but_admins_can(
    alice: httpx.Client, admin: httpx.Client
) -> None:
    error(alice.post("/v1/tasks", json={"type": "util.echo", "owner": "bob"}), 403, "forbidden")
    assert submit(alice, owner="alice")["owner"] == "alice"
    assert submit(admin, owner="bob")["owner"] == "bob"
    assert submit(admin)["owner"] == "root"


def test_batch_is_atomic_and_ordered(alice: httpx.Client) -> None:
    tag = unique("batch")
    specs = [{"type": "util.echo", "input": {"i": i}, "tags": [tag]} for i in range(3)]
    r = alice.post("/v1/tasks/batch", json={"tasks": specs})
    assert r.status_code == 201, r.text
    assert [t["input"]["i"] for t in r.json()["tasks"]] == [0, 1, 2]
    bad_tag = unique("batch")
    bad = [{"type": "util.echo", "tags": [bad_tag]}, {"type": "no.such", "tags": [bad_tag]}]
    err = error(alice.post("/v1/tasks/batch", json={"tasks": bad}), 422, "unknown_task_type")
    assert err["details"]["index"] == 1
    assert alice.get("/v1/tasks", params={"tag": bad_tag}).json()["total"] == 0
    too_many = [{"type": "util.echo"}] * 1001
    error(alice.post("/v1/tasks/batch", json={"tasks": too_many}), 413, "too_large")
    assert alice.post("/v1/tasks/batch", json={"tasks": []}).json() == {"tasks": []}


def test_idempotency_key_returns_the_same_task(alice: httpx.Client) -> None:
    key = unique("idem")
    first = submit(alice, idempotency_key=key)
    assert submit(alice, idempotency_key=key)["id"] == first["id"]


# -- list, read, events, wait ------------------------------------------------------------------
def test_list_filters_and_paging(alice: httpx.Client) -> None:
    tag, queue = unique("tag"), unique("queue")
    ids = [submit(alice, tags=[tag], queue=queue, title=f"needle {i}")["id"] for i in range(5)]
    page = alice.get("/v1/tasks", params={"tag": tag, "limit": 2}).json()
    assert set(page) == {"tasks", "total", "limit", "offset"}
    assert page["total"] == 5 and page["limit"] == 2 and len(page["tasks"]) == 2
    assert [t["id"] for t in page["tasks"]] == ids[::-1][:2]  # newest first
    rest = alice.get("/v1/tasks", params={"tag": tag, "limit": 10, "offset": 2}).json()
    assert [t["id"] for t in rest["tasks"]] == ids[::-1][2:]
    assert alice.get("/v1/tasks", params={"queue": queue}).json()["total"] == 5
    assert alice.get("/v1/tasks", params={"tag": tag, "status": "pending"}).json()["total"] == 5
    both = [("tag", tag), ("status", "running,completed"), ("status", "queued")]
    assert alice.get("/v1/tasks", params=both).json()["total"] == 5
    assert alice.get("/v1/tasks", params={"tag": tag, "status": "done"}).json()["total"] == 0
    assert alice.get("/v1/tasks", params={"tag": tag, "type": "util.echo"}).json()["total"] == 5
    found = alice.get("/v1/tasks", params={"tag": tag, "search": "needle 3"}).json()
    assert [t["id"] for t in found["tasks"]] == [ids[3]]
    err = error(alice.get("/v1/tasks", params={"status": "exploded"}), 422)
    assert err["details"]["field"] == "status"
    count = alice.get("/v1/tasks", params={"tag": tag, "limit": 0}).json()
    assert count["total"] == 5 and count["tasks"] == []  # limit=0: the count alone
    assert error(alice.get("/v1/tasks", params={"limit": -1}), 422)["details"]["field"] == "limit"


def test_get_with_children_dependencies_and_recent_events(alice: httpx.Client) -> None:
    upstream = submit(alice)
    down = submit(alice, depends_on=[upstream["id"]])
    assert down["status"] == "blocked"
    detail = alice.get(f"/v1/tasks/{down['id']}").json()
    assert detail["dependencies"] == [
        {"task_id": upstream["id"], "on": "completed", "when": None, "status": "queued",
         "type": "util.echo"}
    ]  # fmt: skip
    assert [e["kind"] for e in detail["recent_events"]] == ["created"]
    plain = alice.get(f"/v1/tasks/{down['id']}", params={"detail": "false"}).json()
    assert "recent_events" not in plain and plain["id"] == down["id"]
    error(alice.get("/v1/tasks/does-not-exist"), 404, "not_found")


def test_events_long_poll_answers_when_an_event_arrives(alice: httpx.Client) -> None:
    task = submit(alice)
    events = alice.get(f"/v1/tasks/{task['id']}/events").json()["events"]
    assert [e["kind"] for e in events] == ["created"]
    last = events[-1]["seq"]
    timer = threading.Timer(0.3, lambda: alice.post(f"/v1/tasks/{task['id']}/cancel"))
    timer.start()
    start = time.monotonic()
    later = alice.get(f"/v1/tasks/{task['id']}/events", params={"after": last, "wait": 10})
    assert time.monotonic() - start < 5
    assert [e["kind"] for e in later.json()["events"]] == ["cancelled"]
    empty = alice.get(f"/v1/tasks/{task['id']}/events", params={"after": 10**9, "wait": 0.2})
    assert empty.json() == {"events": []}


def test_wait_returns_the_task_when_done_or_after_the_timeout(alice: httpx.Client) -> None:
    task = submit(alice, queue=unique())
    start = time.monotonic()
    pending = alice.get(f"/v1/tasks/{task['id']}/wait", params={"timeout": 0.3}).json()
    assert pending["status"] == "queued" and 0.25 < time.monotonic() - start < 3
    timer = threading.Timer(0.3, lambda: alice.post(f"/v1/tasks/{task['id']}/cancel"))
    timer.start()
    done = alice.get(f"/v1/tasks/{task['id']}/wait", params={"timeout": 10}).json()
    assert done["status"] == "cancelled"


# -- control -----------------------------------------------------------------------------------
def test_cancel_pause_resume_retry(alice: httpx.Client) -> None:
    task = submit(alice, queue=unique())
    tid = task["id"]
    assert alice.post(f"/v1/tasks/{tid}/pause").json()["status"] == "paused"
    assert alice.post(f"/v1/tasks/{tid}/resume").json()["status"] == "queued"
    cancelled = alice.post(f"/v1/tasks/{tid}/cancel", json={"reason": "not needed"}).json()
    assert cancelled["status"] == "cancelled" and cancelled["error"]["message"] == "not needed"
    error(alice.post(f"/v1/tasks/{tid}/pause"), 409, "illegal_transition")
    retried = alice.post(f"/v1/tasks/{tid}/retry").json()
    assert retried["status"] == "queued"
    error(alice.post("/v1/tasks/nope/cancel"), 404, "not_found")


def test_dlq_retry_by_filter(alice: httpx.Client) -> None:
    queue, tag = unique(), unique("dlq")
    task = submit(alice, queue=queue, tags=[tag], max_retries=0)
    (leased,) = claim(alice, queue)
    lease = leased["lease"]["id"]
    fail = {"lease_id": lease, "error": {"type": "Boom", "message": "no", "retryable": False}}
    ack = alice.post(f"/v1/tasks/{task['id']}/fail", json=fail).json()
    assert ack["ok"] and ack["status"] == "failed"
    retried = alice.post("/v1/dlq/retry", json={"tag": tag}).json()["tasks"]
    assert [t["id"] for t in retried] == [task["id"]] and retried[0]["status"] == "queued"


def test_workflow(alice: httpx.Client) -> None:
    spec = {
        "title": "two steps",
        "tasks": [
            {"ref": "a", "type": "math.factorial", "input": {"n": 4}},
            {"ref": "b", "type": "util.echo", "input": {"v": {"$ref": "a.result"}}},
        ],
    }
    r = alice.post("/v1/workflows", json=spec)
    assert r.status_code == 201, r.text
    parent = r.json()
    assert parent["type"] == "workflow" and len(parent["children"]) == 2
    detail = alice.get(f"/v1/tasks/{parent['id']}").json()
    assert {c["ref"]: c["status"] for c in detail["child_tasks"]} == {
        "a": "queued",
        "b": "blocked",
    }
    cyclic = {"tasks": [{"ref": "a", "type": "util.echo", "depends_on": ["a"]}]}
    error(alice.post("/v1/workflows", json=cyclic), 422, "invalid_dependency")


# -- worker protocol ----------------------------------------------------------------------------
def test_agents_register_heartbeat_read_available_and_deregister(alice: httpx.Client) -> None:
    name = unique("agent")
    reg = {"name": name, "capabilities": {"math": 0.9}, "max_concurrency": 2}
    r = alice.post("/v1/agents", json=reg)
    assert r.status_code == 201, r.text
    agent = r.json()
    assert agent["status"] == "online" and agent["capabilities"] == {"math": 0.9}
    beat = alice.post(f"/v1/agents/{agent['id']}/heartbeat", json={"metadata": {"cpu": 3}})
    assert beat.json()["metadata"]["cpu"] == 3
    assert alice.post(f"/v1/agents/{agent['id']}/heartbeat").status_code == 200
    assert agent["id"] in [a["id"] for a in alice.get("/v1/agents").json()["agents"]]
    assert alice.get(f"/v1/agents/{agent['id']}").json()["name"] == name
    available = alice.get("/v1/agents/available", params={"capability": "math"}).json()
    assert agent["id"] in [a["id"] for a in available["agents"]]
    none = alice.get("/v1/agents/available", params={"capability": unique("cap")}).json()
    assert none == {"agents": []}
    assert alice.delete(f"/v1/agents/{agent['id']}").status_code == 204
    assert alice.get(f"/v1/agents/{agent['id']}").json()["status"] == "offline"
    error(alice.get("/v1/agents/nope"), 404, "not_found")


def test_claim_lease_progress_complete_and_stale_lease(alice: httpx.Client) -> None:
    queue = unique()
    task = submit(alice, queue=queue, input={"v": 1})
    r = alice.post("/v1/claims", json={"agent_id": "a1", "queues": [queue], "max": 5})
    assert r.headers["X-Offload-Change-Token"].isdigit()
    (leased,) = r.json()["tasks"]
    assert leased["id"] == task["id"] and leased["status"] == "running"
    lease = leased["lease"]["id"]
    tid = task["id"]
    report = {"lease_id": lease, "progress": 40, "current_step": "half", "log": "hi"}
    state = alice.post(f"/v1/tasks/{tid}/progress", json=report)
    assert state.status_code == 200 and state.json()["valid"] is True
    refs = [{"task_id": tid, "lease_id": lease}]
    beat = alice.post("/v1/leases/heartbeat", json={"leases": refs, "ttl_s": 60})
    assert beat.json()["leases"][0]["valid"] is True
    ack = alice.post(f"/v1/tasks/{tid}/complete", json={"lease_id": lease, "result": {"ok": 1}})
    assert ack.json() == {"task_id": tid, "ok": True, "status": "completed", "code": None,
                          "message": None}  # fmt: skip
    done = alice.get(f"/v1/tasks/{tid}").json()
    assert done["result"] == {"ok": 1} and done["current_step"] == "half"
    # The lease is spent: every fenced call now refuses it.
    err = error(alice.post(f"/v1/tasks/{tid}/complete", json={"lease_id": lease}), 409)
    assert err["code"] == "stale_lease" and err["details"]["lease_id"] == lease
    error(alice.post(f"/v1/tasks/{tid}/progress", json={"lease_id": lease, "progress": 1}), 409,
          "stale_lease")  # fmt: skip
    fail = {"lease_id": lease, "error": {"type": "X", "message": "late"}}
    error(alice.post(f"/v1/tasks/{tid}/fail", json=fail), 409, "stale_lease")
    beat = alice.post("/v1/leases/heartbeat",
                      json={"leases": [{"task_id": tid, "lease_id": lease}]})  # fmt: skip
    assert beat.json()["leases"][0]["valid"] is False
    error(alice.post("/v1/tasks/nope/complete", json={"lease_id": lease}), 404, "not_found")


def test_batch_outcomes_and_release(alice: httpx.Client) -> None:
    queue = unique()
    for i in range(4):
        submit(alice, queue=queue, input={"i": i}, max_retries=0)
    leased = claim(alice, queue)
    assert len(leased) == 4
    (a, b, c, d) = [(t["id"], t["lease"]["id"]) for t in leased]
    items = [{"task_id": a[0], "lease_id": a[1], "result": 1},
             {"task_id": "unknown", "lease_id": a[1], "result": 2}]  # fmt: skip
    acks = alice.post("/v1/tasks/complete", json={"items": items}).json()["acks"]
    assert [(x["ok"], x["code"]) for x in acks] == [(True, None), (False, "not_found")]
    fails = [{"task_id": b[0], "lease_id": b[1], "error": {"type": "E", "message": "m",
                                                            "retryable": False}}]  # fmt: skip
    acks = alice.post("/v1/tasks/fail", json={"items": fails}).json()["acks"]
    assert acks[0]["ok"] and acks[0]["status"] == "failed"
    refs = [{"task_id": c[0], "lease_id": c[1]}, {"task_id": d[0], "lease_id": "stale"}]
    acks = alice.post("/v1/leases/release", json={"leases": refs}).json()["acks"]
    assert [x["ok"] for x in acks] == [True, False]
    assert alice.get(f"/v1/tasks/{c[0]}").json()["status"] == "queued"


def test_claim_long_poll_returns_when_work_arrives(alice: httpx.Client, api: LiveServer) -> None:
    queue = unique()

    def later() -> None:
        with api.http("alice") as other:
            submit(other, queue=queue)

    timer = threading.Timer(0.3, later)
    timer.start()
    start = time.monotonic()
    tasks = claim(alice, queue, wait_s=10)
    assert len(tasks) == 1 and time.monotonic() - start < 5
    start = time.monotonic()
    assert claim(alice, queue, wait_s=0.3) == []
    assert time.monotonic() - start >= 0.25


def test_changes_long_poll(alice: httpx.Client) -> None:
    r = alice.get("/v1/changes", params={"timeout": 0.2})
    assert r.status_code == 200 and set(r.json()) == {"changed", "token"}
    token = r.json()["token"]
    submit(alice, queue=unique())
    # A change after `since` answers at once, however long the timeout.
    start = time.monotonic()
    again = alice.get("/v1/changes", params={"timeout": 10, "since": token}).json()
    assert again["changed"] is True and time.monotonic() - start < 5


def test_maintenance_needs_admin_or_agent(api: LiveServer) -> None:
    for name, status in (("admin", 200), ("alice-agent", 200), ("alice", 403)):
        with api.http(name) as http:
            r = http.post("/v1/maintenance")
            assert r.status_code == status, (name, r.text)
    with api.http("admin") as http:
        assert set(http.post("/v1/maintenance").json()) >= {"lease_expired", "promoted"}


# -- system ------------------------------------------------------------------------------------
def test_probes_stats_and_types(alice: httpx.Client, api: LiveServer) -> None:
    with httpx.Client(base_url=api.url) as anonymous:
        assert anonymous.get("/healthz").json()["status"] == "ok"
        ready = anonymous.get("/readyz").json()
        assert ready["status"] == "ready" and ready["last_event_seq"] >= 0
    stats = alice.get("/v1/stats").json()
    assert set(stats["counts"]) >= {"queued", "completed"} and stats["total"] >= 0
    types = {t["name"]: t for t in alice.get("/v1/task-types").json()["task_types"]}
    assert {"util.echo", "util.sleep", "math.factorial"} <= set(types)
    assert types["math.factorial"]["input_schema"]["properties"]["n"]
    assert types["math.factorial"]["description"]


def test_metrics(admin: httpx.Client, alice: httpx.Client) -> None:
    submit(alice, type="math.factorial", input={"n": 3}, queue=unique())
    time.sleep(0.3)  # the metrics tail follows the event log
    r = admin.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in (
        'offload_tasks_submitted_total{type="math.factorial"}',
        "offload_queue_depth{",
        "offload_agents{",
        "offload_leases_expired_total",
        "offload_retries_total",
        "offload_task_run_seconds",
        "offload_task_wait_seconds",
        "offload_tasks_finished_total",
    ):
        assert name in text, name
    error(alice.get("/metrics"), 403, "forbidden")


def test_audit_log_records_state_changes(api: LiveServer, admin: httpx.Client) -> None:
    with api.http("alice") as alice:
        task = submit(alice)
        alice.post(f"/v1/tasks/{task['id']}/cancel")
        error(alice.get("/v1/audit"), 403, "forbidden")
    time.sleep(0.2)
    page = admin.get("/v1/audit", params={"actor": "alice", "limit": 50}).json()
    actions = {(e["action"], e["target"], e["status"]) for e in page["entries"]}
    assert ("POST /v1/tasks/{task_id}/cancel", task["id"], 200) in actions
    submits = [e for e in page["entries"] if e["action"] == "POST /v1/tasks"]
    assert any(e["details"].get("task_id") == task["id"] for e in submits)
    assert {e["role"] for e in page["entries"]} <= {"user", "agent"}
    assert page["total"] >= 2


def test_tokens_create_use_and_revoke(api: LiveServer, admin: httpx.Client) -> None:
    r = admin.post("/v1/tokens", json={"user": "dave", "role": "user", "name": "laptop"})
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["token"].startswith("ofk_") and new["info"]["user"] == "dave"
    listed = admin.get("/v1/tokens").json()["tokens"]
    assert new["info"]["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed)
    headers = {"Authorization": f"Bearer {new['token']}"}
    with httpx.Client(base_url=api.url, headers=headers) as dave:
        assert submit(dave)["owner"] == "dave"
        error(dave.post("/v1/tokens", json={"user": "x"}), 403, "forbidden")
        revoked = admin.delete(f"/v1/tokens/{new['info']['id']}").json()
        assert revoked["revoked"] is True
        error(dave.get("/v1/tasks"), 401, "unauthenticated")
    error(admin.delete("/v1/tokens/nope"), 404)


def test_openapi_documents_every_route_with_models(api: LiveServer) -> None:
    schema = httpx.get(api.url + "/openapi.json").json()
    ops = {(m.upper(), p) for p, item in schema["paths"].items() for m in item}
    expected = {
        ("POST", "/v1/tasks"), ("POST", "/v1/tasks/batch"), ("GET", "/v1/tasks"),
        ("GET", "/v1/tasks/{task_id}"), ("GET", "/v1/tasks/{task_id}/events"),
        ("GET", "/v1/tasks/{task_id}/wait"), ("POST", "/v1/tasks/{task_id}/cancel"),
        ("POST", "/v1/tasks/{task_id}/pause"), ("POST", "/v1/tasks/{task_id}/resume"),
        ("POST", "/v1/tasks/{task_id}/retry"), ("POST", "/v1/dlq/retry"),
        ("POST", "/v1/workflows"), ("GET", "/v1/task-types"), ("GET", "/v1/stats"),
        ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/events"),
        ("POST", "/v1/agents"), ("GET", "/v1/agents"), ("GET", "/v1/agents/{agent_id}"),
        ("GET", "/v1/agents/available"), ("POST", "/v1/agents/{agent_id}/heartbeat"),
        ("DELETE", "/v1/agents/{agent_id}"), ("POST", "/v1/claims"), ("GET", "/v1/changes"),
        ("POST", "/v1/leases/heartbeat"), ("POST", "/v1/leases/release"),
        ("POST", "/v1/tasks/{task_id}/progress"), ("POST", "/v1/tasks/{task_id}/complete"),
        ("POST", "/v1/tasks/{task_id}/fail"), ("POST", "/v1/tasks/complete"),
        ("POST", "/v1/tasks/fail"), ("POST", "/v1/maintenance"), ("GET", "/v1/audit"),
        ("POST", "/v1/tokens"), ("GET", "/v1/tokens"), ("DELETE", "/v1/tokens/{token_id}"),
    }  # fmt: skip
    assert expected <= ops, expected - ops
    for path, item in schema["paths"].items():
        for method, op in item.items():
            ok = [c for c in op["responses"] if c.startswith("2")]
            assert ok, (method, path)
            if path.startswith("/v1/") and method in ("post", "put") and "requestBody" in op:
                content = op["requestBody"]["content"]["application/json"]
                assert "$ref" in content["schema"] or content["schema"].get("anyOf"), path
            if path.startswith("/v1/"):
                assert "422" in op["responses"] and "401" in op["responses"], (method, path)
    assert "bearer" in schema["components"]["securitySchemes"]


def test_unknown_routes_and_methods_use_the_error_shape(admin: httpx.Client) -> None:
    error(admin.get("/v1/nothing-here"), 404, "not_found")
    error(admin.put("/v1/tasks"), 405, "method_not_allowed")


def test_rate_limit_is_429_with_retry_after(tmp_path: Any) -> None:
    with running_server(tmp_path, auth=True, submit_rate=0.5, submit_burst=2) as live:
        with live.http("alice") as http:
            assert http.post("/v1/tasks", json={"type": "util.echo"}).status_code == 201
            assert http.post("/v1/tasks/batch", json={"tasks": []}).status_code == 201
            r = http.post("/v1/tasks", json={"type": "util.echo"})
            err = error(r, 429, "rate_limited")
            assert int(r.headers["Retry-After"]) >= 1 and err["details"]["retry_after_s"] >= 1
        with live.http("bob") as other:  # a bucket per token
            assert other.post("/v1/tasks", json={"type": "util.echo"}).status_code == 201
        assert set(TOKENS) <= set(live.tokens)


# -- auth off (loopback) --------------------------------------------------------------------
def test_auth_off_acts_as_the_local_admin_and_the_embedded_worker_runs_tasks(
    open_api: LiveServer,
) -> None:
    with open_api.http() as http:
        task = submit(http, type="math.factorial", input={"n": 7})
        assert task["owner"] is None
        done = http.get(f"/v1/tasks/{task['id']}/wait", params={"timeout": 20}).json()
        assert done["status"] == "completed" and done["result"] == 5040
        assert http.get("/v1/audit").status_code == 200
        entries = http.get("/v1/audit", params={"limit": 5}).json()["entries"]
        assert entries and entries[0]["actor"] == "local" and entries[0]["role"] == "admin"
        agents = http.get("/v1/agents").json()["agents"]
        assert any(a["name"].startswith("server-") and a["status"] == "online" for a in agents)


def test_auth_off_answers_only_loopback_host_names(open_api: LiveServer) -> None:
    with open_api.http() as http:
        assert http.get("/v1/stats", headers={"Host": "localhost:8000"}).status_code == 200
        assert http.get("/v1/stats", headers={"Host": "[::1]:8000"}).status_code == 200
        err = error(http.get("/v1/stats", headers={"Host": "evil.example"}), 403, "forbidden")
        assert "--auth" in err["message"]


def test_a_chunked_body_over_the_limit_is_413(tmp_path: Any) -> None:
    with running_server(tmp_path, auth=False, max_body_bytes=10_000) as live, live.http() as http:

        def chunks() -> Any:
            yield b'{"type": "util.echo", "input": {"b": "'
            for _ in range(20):
                yield b"x" * 1000
            yield b'"}}'

        r = http.post("/v1/tasks", content=chunks(), headers={"Content-Type": "application/json"})
        error(r, 413, "too_large")
        assert http.post("/v1/tasks", json={"type": "util.echo"}).status_code == 201


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/reviews", {"offset": str(10**30)}),
        ("/v1/tasks", {"offset": str(10**30)}),
        ("/v1/events", {"type": "a\x00b", "timeout": "0.1"}),
        ("/v1/events", {"after": str(2**63)}),
        ("/v1/tasks", {"search": "a\x00b"}),
    ],
)
def test_out_of_range_and_nul_parameters_are_422_before_any_work(
    admin: httpx.Client, path: str, params: dict[str, str]
) -> None:
    error(admin.get(path, params=params), 422, "invalid_input")


def test_events_after_a_seq_beyond_the_database_range_is_422(alice: httpx.Client) -> None:
    task = submit(alice, type="util.echo", queue=unique())
    r = alice.get(f"/v1/tasks/{task['id']}/events", params={"after": str(2**63)})
    error(r, 422, "invalid_input")
