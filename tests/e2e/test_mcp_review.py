"""The review tools through the official MCP client (in process, as in test_mcp.py): an LLM
reviewer lists the results awaiting it and approves or rejects them."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.e2e.test_mcp import _error, _finish, _in_process, _ok

from offload.domain.models import ClaimRequest, Completion

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_an_agent_reviews_through_mcp(tmp_path: Path) -> None:
    async with _in_process(f"sqlite:///{tmp_path / 'x.db'}") as (client, backend):
        task = await _ok(
            client,
            "submit_agent_task",
            {
                "task_type": "util.echo",
                "input": {"text": "draft"},
                "description": "write a haiku",
                "reviewer": "capability:poetry",
            },
        )
        tid = task["id"]
        # Nothing to review until the work is done; deciding now is refused with the reason.
        empty = await _ok(client, "list_reviews", {"reviewer": "capability:poetry"})
        assert empty["reviews"] == [] and empty["total"] == 0
        await _error(client, "review_task", {"task_id": tid, "decision": "approve"}, "queued")

        await _finish(backend, {"haiku": "one line"})
        status = await _ok(client, "get_task_status", {"task_id": tid})
        assert status["status"] == "reviewing" and not status["done"]
        assert "review_task" in status["next_step"]
        page = await _ok(client, "list_reviews", {"reviewer": "capability:poetry"})
        (item,) = page["reviews"]
        assert item["task_id"] == tid and item["result"] == {"haiku": "one line"}
        assert item["description"] == "write a haiku" and item["round"] == 1
        assert item["reviewer"] == "capability:poetry" and item["agent_id"] == "test"

        rejected = await _ok(
            client,
            "review_task",
            {"task_id": tid, "decision": "reject", "feedback": "three lines", "quality_score": 0.1},
        )
        assert rejected["status"] == "queued"
        # The next attempt (an agent claiming through the client protocol) sees the feedback.
        [again] = await backend.claim(ClaimRequest(agent_id="poet-2", max=1))
        assert again.review is not None and again.review.feedback == "three lines"
        assert again.lease is not None
        await backend.complete(
            [Completion(task_id=tid, lease_id=again.lease.id, result={"haiku": "a\nb\nc"})]
        )
        page = await _ok(client, "list_reviews", {"reviewer": "capability:poetry"})
        (item,) = page["reviews"]
        assert item["round"] == 2 and item["history"][0]["feedback"] == "three lines"

        approved = await _ok(
            client, "review_task", {"task_id": tid, "decision": "approve", "quality_score": 0.9}
        )
        assert approved["status"] == "completed" and approved["done"]
        assert approved["result"] == {"haiku": "a\nb\nc"}
        passed = await _ok(client, "list_reviews", {"status": "passed"})
        assert [r["task_id"] for r in passed["reviews"]] == [tid]

        # Bad calls are tool errors naming the field.
        await _error(client, "review_task", {"task_id": tid, "decision": "maybe"}, "decision")
        await _error(
            client,
            "review_task",
            {"task_id": tid, "decision": "approve", "quality_score": 5},
            "quality_score",
        )
        await _error(client, "review_task", {"task_id": tid, "decision": "reject"}, "completed")
        await _error(client, "review_task", {"task_id": "nope", "decision": "approve"}, "nope")
        await _error(
            client,
            "submit_agent_task",
            {"task_type": "util.echo", "reviewer": "capability:"},
            "capability",
        )
