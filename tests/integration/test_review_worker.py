"""The review stage with a real worker subprocess: its handler reads the reviewer's
feedback from ``ctx.review_feedback`` on the attempt after a rejection."""

from __future__ import annotations

import offload
from offload.domain.models import ReviewStatus
from offload.domain.status import Status
from tests.integration.conftest import WorkerProcesses, wait_status


def test_rejected_work_is_redone_with_the_feedback(
    client: offload.Client, workers: WorkerProcesses
) -> None:
    proc = workers.spawn("--concurrency", "2")
    # The type asks for review (wt.draft is registered with review=…).
    task = client.submit("wt.draft", {"topic": "queues"})
    assert task.review is not None and task.review.reviewer == "capability:editing"

    first = wait_status(client, task.id, {Status.REVIEWING}, 20)
    assert first.result["feedback"] is None and first.result["attempt"] == 1
    assert first.result["pid"] == proc.pid, workers.log(proc)
    assert [t.id for t in client.list_reviews(capabilities=["editing"]).tasks] == [task.id]

    client.review(task.id, "reject", feedback="mention leases", quality_score=0.4)
    # The worker claims it again; the handler saw the feedback in its context.
    second = wait_status(client, task.id, {Status.REVIEWING}, 20)
    assert second.result["attempt"] == 2, workers.log(proc)
    assert second.result["feedback"] == "mention leases"
    assert second.result["text"] == "notes on queues, revised: mention leases"
    assert second.review is not None and second.review.rounds == 1

    done = client.review(task.id, "approve", quality_score=0.95, feedback="good")
    assert done.status is Status.COMPLETED and done.result == second.result
    assert done.review is not None and done.review.status is ReviewStatus.PASSED
    assert [r.decision.value for r in done.review.history] == ["reject", "approve"]
    assert done.review.history[0].result == first.result
    kinds = [e.kind for e in client.events(task.id)]
    assert kinds.count("claimed") == 2 and kinds.count("review.requested") == 2
    assert kinds[-2:] == ["review.decided", "completed"]
