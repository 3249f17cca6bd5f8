"""The review routes over real HTTP (live uvicorn, auth on): list, approve, reject with
feedback, the round limit, tenancy and every refusal as a 4xx ``{"error": …}``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, unique
from tests.api.test_routes import claim, error, submit

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def alice(api: LiveServer) -> Any:
    with api.http("alice") as http:
        yield http


@pytest.fixture
def bob(api: LiveServer) -> Any:
    with api.http("bob") as http:
        yield http


def work(http: httpx.Client, queue: str, result: Any, agent: str = "a1") -> dict[str, Any]:
    """Claim the queue's one task and complete it; answers the completion ack."""
    (task,) = claim(http, queue, agent_id=agent)
    body = {"lease_id": task["lease"]["id"], "result": result}
    r = http.post(f"/v1/tasks/{task['id']}/complete", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_reject_then_approve_over_http(alice: httpx.Client) -> None:
    queue = unique()
    reviewer = f"capability:{unique('cap')}"
    task = submit(alice, queue=queue, review={"reviewer": reviewer, "max_rounds": 3})
    assert task["review"]["required"] is True and task["review"]["reviewer"] == reviewer
    assert work(alice, queue, {"draft": 1})["status"] == "reviewing"

    pending = alice.get("/v1/reviews", params={"reviewer": reviewer}).json()
    assert [t["id"] for t in pending["tasks"]] == [task["id"]] and pending["total"] == 1
    assert pending["tasks"][0]["result"] == {"draft": 1}
    cap = reviewer.removeprefix("capability:")
    assert alice.get("/v1/reviews", params={"capability": cap}).json()["total"] == 1

    body = {"decision": "reject", "feedback": "too short", "quality_score": 0.3}
    back = alice.post(f"/v1/tasks/{task['id']}/review", json=body)
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "queued" and back.json()["review"]["feedback"] == "too short"
    (again,) = claim(alice, queue, agent_id="a2")
    assert again["review"]["feedback"] == "too short" and again["attempt"] == 2
    r = alice.post(
        f"/v1/tasks/{again['id']}/complete",
        json={"lease_id": again["lease"]["id"], "result": {"draft": 2}},
    )
    assert r.json()["status"] == "reviewing"
    done = alice.post(
        f"/v1/tasks/{task['id']}/review", json={"decision": "approve", "quality_score": 0.95}
    ).json()
    assert done["status"] == "completed" and done["result"] == {"draft": 2}
    assert done["review"]["status"] == "passed" and done["review"]["quality_score"] == 0.95
    assert [h["decision"] for h in done["review"]["history"]] == ["reject", "approve"]
    kinds = [e["kind"] for e in alice.get(f"/v1/tasks/{task['id']}/events").json()["events"]]
    assert kinds.count("review.requested") == 2 and kinds.count("review.decided") == 2
    passed = alice.get("/v1/reviews", params={"reviewer": reviewer, "status": "passed"}).json()
    assert [t["id"] for t in passed["tasks"]] == [task["id"]]
    stats = alice.get("/v1/stats").json()
    assert "reviewing" in stats["counts"]


def test_last_rejection_fails_the_task(alice: httpx.Client) -> None:
    queue = unique()
    task = submit(alice, queue=queue, review={"max_rounds": 1})
    work(alice, queue, 1)
    assert (
        alice.get("/v1/tasks", params={"status": "reviewing", "queue": queue}).json()["total"] == 1
    )
    failed = alice.post(
        f"/v1/tasks/{task['id']}/review", json={"decision": "reject", "feedback": "wrong"}
    ).json()
    assert failed["status"] == "failed" and failed["error"]["type"] == "ReviewRejected"


def test_review_refusals_are_4xx(alice: httpx.Client, bob: httpx.Client) -> None:
    queue = unique()
    task = submit(alice, queue=queue, review=True)
    tid = task["id"]
    # Not reviewing yet: 409 with the status named.
    err = error(alice.post(f"/v1/tasks/{tid}/review", json={"decision": "approve"}), 409)
    assert err["details"]["status"] == "queued" and "not reviewing" in err["message"]
    work(alice, queue, 1)
    # Bad bodies: 422 naming the field.
    assert error(alice.post(f"/v1/tasks/{tid}/review", json={"decision": "maybe"}), 422)
    bad_score = {"decision": "approve", "quality_score": 7}
    assert "quality_score" in str(error(alice.post(f"/v1/tasks/{tid}/review", json=bad_score), 422))
    error(alice.post(f"/v1/tasks/{tid}/review", json={"decision": "approve", "x": 1}), 422)
    error(alice.post(f"/v1/tasks/{tid}/review", json={}), 422)
    # Bad specs and listing parameters.
    r = alice.post("/v1/tasks", json={"type": "util.echo", "review": {"reviewer": "capability:"}})
    assert "capability name" in error(r, 422)["message"]
    r = alice.post("/v1/tasks", json={"type": "util.echo", "review": {"max_rounds": 0}})
    error(r, 422)
    error(alice.get("/v1/reviews", params={"status": "maybe"}), 422)
    error(alice.get("/v1/reviews", params={"owner": "bob"}), 403)
    repeated = error(alice.get("/v1/reviews", params=[("reviewer", "a"), ("reviewer", "b")]), 422)
    assert repeated["details"]["field"] == "reviewer"
    # Someone else's task is not found; a missing one too.
    error(bob.post(f"/v1/tasks/{tid}/review", json={"decision": "approve"}), 404, "not_found")
    assert tid not in [t["id"] for t in bob.get("/v1/reviews").json()["tasks"]]
    error(alice.post("/v1/tasks/nope/review", json={"decision": "approve"}), 404, "not_found")
    # Decided once: a second decision is a conflict.
    assert alice.post(f"/v1/tasks/{tid}/review", json={"decision": "approve"}).status_code == 200
    error(alice.post(f"/v1/tasks/{tid}/review", json={"decision": "reject"}), 409, "conflict")


def test_sdk_over_http(api: LiveServer) -> None:
    queue = unique()
    with api.sdk("alice") as client, api.http("alice") as http:
        task = client.submit("util.echo", {"x": 1}, queue=queue, review={"reviewer": "human"})
        work(http, queue, {"x": 1})
        page = client.list_reviews(reviewer="human")
        assert task.id in [t.id for t in page.tasks]
        back = client.review(task.id, "reject", feedback="again", exclude_previous_agent=True)
        assert back.status.value == "queued"
        assert claim(http, queue, agent_id="a1") == []  # a1's work was rejected
        work(http, queue, {"x": 2}, agent="a2")
        done = client.review(task.id, "approve", quality_score=1.0)
        assert done.status.value == "completed" and done.review.quality_score == 1.0
