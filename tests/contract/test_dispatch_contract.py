"""The push dispatcher over both backends: routing by score, busy and unreachable agents,
hybrid thresholds, auctions and their fallback. Deliveries go to a scripted pusher (the
real HTTP path is covered by the agent-service integration tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from offload.core.dispatch import Delivery, Dispatcher
from offload.domain.agents import BidSpec, DispatchMode, QueueDispatchUpdate
from offload.domain.models import Agent, AgentRegistration, AgentStatus, Task, TaskSpec
from offload.domain.status import Status

from .conftest import Harness


@dataclass
class ScriptedPusher:
    """Answers per agent id (default: accept); records every call."""

    answers: dict[str, Delivery] = field(default_factory=dict)
    executed: list[tuple[str, str]] = field(default_factory=list)
    invited: list[tuple[str, str]] = field(default_factory=list)

    async def execute(self, agent: Agent, task: Task) -> Delivery:
        assert task.lease is not None and task.lease.holder == agent.id
        self.executed.append((agent.id, task.id))
        return self.answers.get(agent.id, Delivery.ACCEPTED)

    async def invite_bid(self, agent: Agent, task: Task) -> None:
        self.invited.append((agent.id, task.id))


def push_agent(h: Harness, name: str, caps: dict[str, float], **kw: object) -> None:
    reg = AgentRegistration.model_validate(
        {"id": name, "name": name, "capabilities": caps, "endpoint": f"http://{name}.invalid",
         "max_concurrency": 2, "queues": ["jobs"], **kw}
    )  # fmt: skip
    h(h.service.register_agent(reg))


def submit(h: Harness, caps: list[str] | None = None, **kw: object) -> Task:
    spec = {"type": "t.num", "input": {"n": 1}, "queue": "jobs", "capabilities": caps, **kw}
    return h(h.service.submit(TaskSpec.model_validate(spec)))


def mode(h: Harness, m: DispatchMode, **kw: object) -> None:
    h(h.service.agents.set_dispatch("jobs", QueueDispatchUpdate(mode=m, **kw)))


def test_pull_queues_are_left_alone(svc: Harness) -> None:
    pusher = ScriptedPusher()
    push_agent(svc, "a", {"x": 1.0})
    task = submit(svc)
    assert svc(Dispatcher(svc.service, pusher).dispatch_once()) is None
    assert pusher.executed == [] and svc(svc.service.get(task.id)).status is Status.QUEUED


def test_push_routes_to_capable_best_agent(svc: Harness) -> None:
    pusher = ScriptedPusher()
    push_agent(svc, "generalist", {"data": 0.5, "code": 0.5})
    push_agent(svc, "specialist", {"data": 0.95})
    push_agent(svc, "coder", {"code": 1.0})
    mode(svc, DispatchMode.PUSH)
    data_task = submit(svc, ["data"])
    code_task = submit(svc, ["code"])
    nobody = submit(svc, ["gpu"])
    svc(Dispatcher(svc.service, pusher).dispatch_once())
    assert dict((t, a) for a, t in pusher.executed) == {
        data_task.id: "specialist",
        code_task.id: "coder",
    }
    got = svc(svc.service.get(data_task.id))
    assert got.status is Status.RUNNING and got.assignment.agent_id == "specialist"
    assert got.assignment.method.value == "assigned"
    assert svc(svc.service.get(nobody.id)).status is Status.QUEUED
    assert "task.assigned" in [e.kind for e in svc(svc.service.events(data_task.id))]


def test_busy_agent_means_next_candidate(svc: Harness) -> None:
    pusher = ScriptedPusher(answers={"best": Delivery.BUSY})
    push_agent(svc, "best", {"data": 1.0})
    push_agent(svc, "second", {"data": 0.4})
    mode(svc, DispatchMode.PUSH)
    task = submit(svc, ["data"])
    svc(Dispatcher(svc.service, pusher).dispatch_once())
    assert [a for a, _ in pusher.executed] == ["best", "second"]
    got = svc(svc.service.get(task.id))
    assert got.assignment.agent_id == "second" and got.attempt == 1
    assert svc(svc.service.agents.get("best")).status is AgentStatus.ONLINE


def test_unreachable_agent_is_marked_offline(svc: Harness) -> None:
    pusher = ScriptedPusher(answers={"gone": Delivery.UNREACHABLE})
    push_agent(svc, "gone", {"data": 1.0})
    push_agent(svc, "there", {"data": 0.2})
    mode(svc, DispatchMode.PUSH)
    task = submit(svc, ["data"])
    svc(Dispatcher(svc.service, pusher).dispatch_once())
    assert svc(svc.service.agents.get("gone")).status is AgentStatus.OFFLINE
    assert svc(svc.service.get(task.id)).assignment.agent_id == "there"


def test_nobody_accepts_leaves_it_queued(svc: Harness) -> None:
    pusher = ScriptedPusher(answers={"a": Delivery.BUSY})
    push_agent(svc, "a", {})
    mode(svc, DispatchMode.PUSH)
    task = submit(svc)
    svc(Dispatcher(svc.service, pusher).dispatch_once())
    got = svc(svc.service.get(task.id))
    assert got.status is Status.QUEUED and got.attempt == 0 and got.lease is None


def test_hybrid_pushes_only_high_priority(svc: Harness) -> None:
    pusher = ScriptedPusher()
    push_agent(svc, "a", {}, max_concurrency=10)
    mode(svc, DispatchMode.HYBRID, hybrid_threshold=7)
    high, low = submit(svc, priority=7), submit(svc, priority=6)
    svc(Dispatcher(svc.service, pusher).dispatch_once())
    assert [t for _, t in pusher.executed] == [high.id]
    assert svc(svc.service.get(low.id)).status is Status.QUEUED


def test_respects_concurrency_limit(svc: Harness) -> None:
    pusher = ScriptedPusher()
    push_agent(svc, "a", {}, max_concurrency=2)
    mode(svc, DispatchMode.PUSH)
    for _ in range(3):
        submit(svc)
    svc(Dispatcher(svc.service, pusher).dispatch_once())
    assert len(pusher.executed) == 2


def test_auction_lowest_cost_wins(svc: Harness) -> None:
    pusher = ScriptedPusher()
    push_agent(svc, "cheap", {"data": 0.5})
    push_agent(svc, "dear", {"data": 1.0})
    push_agent(svc, "coder", {"code": 1.0})
    mode(svc, DispatchMode.AUCTION, auction_window_ms=200)
    task = submit(svc, ["data"])
    dispatcher = Dispatcher(svc.service, pusher)
    assert svc(dispatcher.dispatch_once()) == pytest.approx(0.2)
    assert sorted(a for a, _ in pusher.invited) == ["cheap", "dear"]
    assert svc(svc.service.get(task.id)).status is Status.QUEUED
    svc(svc.service.agents.bid(task.id, BidSpec(agent_id="dear", cost=5, eta_s=1)))
    svc(svc.service.agents.bid(task.id, BidSpec(agent_id="cheap", cost=2, eta_s=3)))
    svc(dispatcher.dispatch_once())  # window still open: nothing happens
    assert pusher.executed == []
    svc.clock.advance(0.25)
    svc(dispatcher.dispatch_once())
    got = svc(svc.service.get(task.id))
    assert got.assignment.agent_id == "cheap" and got.assignment.method.value == "auction"
    assert pusher.executed == [("cheap", task.id)]


def test_auction_without_bids_falls_back_to_push(svc: Harness) -> None:
    pusher = ScriptedPusher()
    push_agent(svc, "a", {})
    mode(svc, DispatchMode.AUCTION, auction_window_ms=100)
    task = submit(svc)
    dispatcher = Dispatcher(svc.service, pusher)
    svc(dispatcher.dispatch_once())
    svc.clock.advance(0.2)
    svc(dispatcher.dispatch_once())
    got = svc(svc.service.get(task.id))
    assert got.assignment.agent_id == "a" and got.assignment.method.value == "assigned"
    # Not announced again afterwards.
    assert [e.kind for e in svc(svc.service.events(task.id))].count("auction.announced") == 1


def test_auction_without_bids_or_push_agents_falls_back_to_pull(svc: Harness) -> None:
    from offload.domain.models import ClaimRequest

    pusher = ScriptedPusher()
    mode(svc, DispatchMode.AUCTION, auction_window_ms=100)
    task = submit(svc)
    dispatcher = Dispatcher(svc.service, pusher)
    svc(dispatcher.dispatch_once())
    svc.clock.advance(0.2)
    svc(dispatcher.dispatch_once())
    svc(dispatcher.dispatch_once())
    assert svc(svc.service.get(task.id)).status is Status.QUEUED
    got = svc(svc.service.claim(ClaimRequest(agent_id="puller", queues=["jobs"])))
    assert [t.id for t in got] == [task.id]
