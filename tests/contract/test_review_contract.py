"""The review stage (PRODUCT.md §5) on every backend: approve, reject with feedback, the
round limit, exclusion of the rejected agent and refusals."""

from __future__ import annotations

import pytest

from offload.domain.errors import Conflict, NotFound
from offload.domain.models import ReviewStatus, TaskFilter, TaskSpec, WorkflowSpec
from offload.domain.review import ReviewDecision, ReviewFilter
from offload.domain.status import Status

from .conftest import Harness
from .test_store_contract import claim, complete, spec


def reviewed(reviewer: str = "human", **kw: object) -> TaskSpec:
    return spec(review={"reviewer": reviewer, **kw})


def decide(h: Harness, task_id: str, decision: str, **kw: object):
    body = ReviewDecision.model_validate({"decision": decision, **kw})
    return h(h.service.review(task_id, body, actor="rev-1"))


def run(h: Harness, result: object, agent: str = "w1"):
    """Claim the one queued task as ``agent`` and complete it with ``result``."""
    (task,) = claim(h, 1, agent_id=agent)
    ack = complete(h, task, result)
    return task, ack


def kinds(h: Harness, task_id: str) -> list[str]:
    return [e.kind for e in h(h.service.events(task_id))]


def test_approve_completes_and_keeps_score(svc: Harness) -> None:
    t = svc(svc.service.submit(reviewed("capability:review")))
    assert t.review is not None and t.review.required and t.review.rounds == 0
    _, ack = run(svc, {"answer": 42})
    assert ack.ok and ack.status is Status.REVIEWING
    got = svc(svc.service.get(t.id))
    assert got.status is Status.REVIEWING and got.result == {"answer": 42}
    assert got.finished_at is None and got.review.status is ReviewStatus.PENDING
    assert got.review.agent_id == "w1" and got.review.requested_at is not None
    assert "review.requested" in kinds(svc, t.id) and "completed" not in kinds(svc, t.id)
    # `active` includes reviewing; stats count it.
    assert svc(svc.service.list(TaskFilter(status=["active"]))).total == 1
    assert svc(svc.service.stats()).counts["reviewing"] == 1

    done = decide(svc, t.id, "approve", feedback="solid", quality_score=0.9)
    assert done.status is Status.COMPLETED and done.result == {"answer": 42}
    assert done.finished_at is not None
    assert done.review.status is ReviewStatus.PASSED and done.review.quality_score == 0.9
    assert done.review.feedback == "solid" and done.review.rounds == 1
    assert [r.decision.value for r in done.review.history] == ["approve"]
    assert done.review.history[0].reviewer == "rev-1"
    assert kinds(svc, t.id)[-2:] == ["review.decided", "completed"]


def test_no_review_stays_plain(svc: Harness) -> None:
    t = svc(svc.service.submit(spec(review={"required": False})))
    assert t.review is None
    _, ack = run(svc, 1)
    assert ack.status is Status.COMPLETED
    assert svc(svc.service.get(t.id)).status is Status.COMPLETED


def test_reject_then_approve_feedback_reaches_next_attempt(svc: Harness) -> None:
    t = svc(svc.service.submit(reviewed()))
    run(svc, "draft 1")
    back = decide(svc, t.id, "reject", feedback="cite your sources", quality_score=0.2)
    assert back.status is Status.QUEUED and back.result is None
    assert back.review.status is ReviewStatus.FAILED
    assert back.review.feedback == "cite your sources"
    assert back.review.history[0].result == "draft 1"
    # The next attempt's claimed record carries the feedback (the worker hands it to ctx).
    (second,) = claim(svc, 1)
    assert second.attempt == 2 and second.review.feedback == "cite your sources"
    assert complete(svc, second, "draft 2").status is Status.REVIEWING
    pending = svc(svc.service.list_reviews(ReviewFilter(reviewer="human")))
    assert [x.id for x in pending.tasks] == [t.id] and pending.total == 1
    done = decide(svc, t.id, "approve", quality_score=1)
    assert done.status is Status.COMPLETED and done.result == "draft 2"
    assert [r.decision.value for r in done.review.history] == ["reject", "approve"]
    assert done.review.rounds == 2
    decided = [e for e in svc(svc.service.events(t.id)) if e.kind == "review.decided"]
    assert [e.data["to"] for e in decided] == ["queued", "completed"]


def test_max_rounds_fails_and_dependents_get_dependency_failed(svc: Harness) -> None:
    t = svc(svc.service.submit(reviewed(max_rounds=2)))
    child = svc(svc.service.submit(spec(depends_on=[t.id])))
    run(svc, 1)
    # While the upstream is under review its dependents keep waiting.
    assert svc(svc.service.get(child.id)).status is Status.BLOCKED
    decide(svc, t.id, "reject", feedback="no")
    assert svc(svc.service.get(child.id)).status is Status.BLOCKED
    run(svc, 2)
    failed = decide(svc, t.id, "reject", feedback="still wrong")
    assert failed.status is Status.FAILED
    assert failed.error.type == "ReviewRejected" and not failed.error.retryable
    assert "still wrong" in failed.error.message and "2 time(s)" in failed.error.message
    down = svc(svc.service.get(child.id))
    assert down.status is Status.CANCELLED and down.error.type == "DependencyFailed"
    assert down.error.upstream == t.id
    # A dead-letter retry starts a fresh review budget and revives the dependent.
    again = svc(svc.service.retry(t.id))
    assert again.status is Status.QUEUED and again.review.rounds == 0
    assert svc(svc.service.get(child.id)).status is Status.BLOCKED


def test_approval_releases_dependents_and_workflow_parent(svc: Harness) -> None:
    steps = [spec(ref="a", review={"reviewer": "human"}), spec(ref="b", depends_on=["a"])]
    parent = svc(svc.service.submit_workflow(WorkflowSpec(tasks=steps)))
    run(svc, 10)
    assert svc(svc.service.get(parent.id)).status is not Status.COMPLETED
    assert claim(svc, 5) == []  # b waits for a's approval
    a = svc(svc.service.list_reviews(ReviewFilter())).tasks[0]
    decide(svc, a.id, "approve")
    run(svc, 20)
    assert svc(svc.service.get(parent.id)).status is Status.COMPLETED


def test_exclusion_of_the_rejected_agent_is_enforced_at_claim(svc: Harness) -> None:
    t = svc(svc.service.submit(reviewed(exclude_previous_agent=True)))
    run(svc, "by w1", agent="w1")
    decide(svc, t.id, "reject", feedback="let someone else try")
    assert claim(svc, 5, agent_id="w1") == []
    (task,) = claim(svc, 5, agent_id="w2")
    assert task.id == t.id
    complete(svc, task, "by w2")
    # Per-decision override: exclude w2 too (w1 stays excluded).
    decide(svc, t.id, "reject", exclude_previous_agent=True)
    assert claim(svc, 5, agent_id="w1") == [] and claim(svc, 5, agent_id="w2") == []
    assert claim(svc, 5, agent_id="w3")[0].id == t.id
    # Without exclusion the same agent may take it again.
    plain = svc(svc.service.submit(reviewed()))
    run(svc, 1, agent="w1")
    decide(svc, plain.id, "reject")
    assert claim(svc, 5, agent_id="w1")[0].id == plain.id


def test_decisions_refused_outside_reviewing(svc: Harness) -> None:
    t = svc(svc.service.submit(reviewed()))
    with pytest.raises(Conflict, match="not reviewing"):
        decide(svc, t.id, "approve")
    run(svc, 1)
    decide(svc, t.id, "approve")
    with pytest.raises(Conflict, match="completed, not reviewing"):
        decide(svc, t.id, "reject")
    with pytest.raises(NotFound):
        decide(svc, "missing", "approve")
    # Another owner's task is not found, not decided.
    mine = svc(svc.service.submit(reviewed(), owner="alice"))
    run(svc, 1)
    with pytest.raises(NotFound):
        svc(svc.service.review(mine.id, ReviewDecision(decision="approve"), owner="bob"))
    # Pinned to the only agent allowed: excluding it would strand the task.
    pinned_spec = reviewed(exclude_previous_agent=True).model_copy(update={"agent_id": "w1"})
    pinned = svc(svc.service.submit(pinned_spec))
    run(svc, 1, agent="w1")
    with pytest.raises(Conflict, match="pinned"):
        decide(svc, pinned.id, "reject")
    assert svc(svc.service.get(pinned.id)).status is Status.REVIEWING
    # A reviewing task can still be cancelled.
    assert svc(svc.service.cancel(pinned.id)).status is Status.CANCELLED


def test_listing_by_reviewer_capability_and_state(svc: Harness) -> None:
    from offload.domain.models import AgentRegistration

    critic = AgentRegistration(id="critic", name="critic", capabilities={"code_review": 0.9})
    svc(svc.service.register_agent(critic))
    a = svc(svc.service.submit(reviewed("capability:code_review")))
    run(svc, 1)
    b = svc(svc.service.submit(reviewed("critic")))
    run(svc, 2)
    c = svc(svc.service.submit(reviewed("human")))
    run(svc, 3)

    def ids(**kw: object) -> list[str]:
        return [t.id for t in svc(svc.service.list_reviews(ReviewFilter(**kw))).tasks]

    assert ids(reviewer="critic") == [a.id, b.id]  # its capability's reviews too
    assert ids(reviewer="human") == [c.id]
    assert ids(capabilities=["code_review"]) == [a.id]
    assert ids() == [a.id, b.id, c.id]
    decide(svc, c.id, "approve")
    assert ids(reviewer="human") == []
    assert ids(reviewer="human", status="passed") == [c.id]
    decide(svc, b.id, "reject")
    assert ids(status="failed") == [b.id]
    assert svc(svc.service.list_reviews(ReviewFilter(), owner="nobody")).total == 0


def test_review_spec_validation_and_type_default(svc: Harness) -> None:
    with pytest.raises(ValueError, match="capability name"):
        reviewed("capability:")
    with pytest.raises(ValueError):
        reviewed(max_rounds=0)
    with pytest.raises(ValueError):
        spec(review={"reviewer": "x", "history": []})
    with pytest.raises(ValueError):
        ReviewDecision.model_validate({"decision": "maybe"})
    with pytest.raises(ValueError):
        ReviewDecision.model_validate({"decision": "approve", "quality_score": 2})
    assert spec(review=True).review.reviewer == "human"
    # A type registered with review= reviews every task of that type.
    svc.service.registry.declare("t.reviewed", review={"reviewer": "capability:qa"})
    t = svc(svc.service.submit(TaskSpec(type="t.reviewed")))
    assert t.review is not None and t.review.reviewer == "capability:qa"
    # ... unless the submitter opts out.
    off = svc(svc.service.submit(TaskSpec(type="t.reviewed", review={"required": False})))
    assert off.review is None
    with pytest.raises(ValueError):  # pydantic ValidationError, raised at registration
        svc.service.registry.declare("t.bad", review={"max_rounds": -1})
