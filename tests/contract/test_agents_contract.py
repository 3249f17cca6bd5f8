"""Agent registry, failover, dispatch settings, push assignment and auctions: the store
contract on SQLite and PostgreSQL (manual clock)."""

from __future__ import annotations

import pytest

from offload.domain.agents import BidSpec, DispatchMode, QueueDispatchUpdate
from offload.domain.errors import Conflict, InvalidInput, NotFound
from offload.domain.models import (
    AgentRegistration,
    AgentStatus,
    AssignmentMethod,
    ClaimRequest,
    Completion,
    TaskSpec,
)
from offload.domain.status import Status

from .conftest import Harness


def register(h: Harness, name: str, caps: dict[str, float] | None = None, **kw: object):
    reg = AgentRegistration.model_validate(
        {"id": name, "name": name, "capabilities": caps or {}, **kw}
    )
    return h(h.service.register_agent(reg))


def submit(h: Harness, **kw: object):
    return h(h.service.submit(TaskSpec.model_validate({"type": "t.num", "input": {"n": 1}, **kw})))


def claim(h: Harness, agent_id: str, n: int = 10):
    return h(h.service.claim(ClaimRequest(agent_id=agent_id, max=n)))


def kinds(h: Harness) -> list[str]:
    return [e.kind for e in h(h.service.events_since(0))]


def test_registry_record_workload_and_events(svc: Harness) -> None:
    agent = register(
        svc,
        "a1",
        {"math": 0.9, "data": 0.4},
        kind="llm",
        max_concurrency=2,
        endpoint="http://127.0.0.1:9/",
        metadata={"cpu_percent": 3.0},
    )
    assert agent.kind.value == "llm" and agent.capabilities == {"math": 0.9, "data": 0.4}
    assert agent.status is AgentStatus.ONLINE and agent.endpoint == "http://127.0.0.1:9/"
    events = svc(svc.service.events_since(0))
    assert [e.kind for e in events] == ["agent.registered"]
    assert events[0].task_id == "a1" and events[0].data["name"] == "a1"

    t1, t2 = submit(svc), submit(svc)
    got = claim(svc, "a1", 2)
    svc(svc.service.complete([Completion(task_id=got[0].id, lease_id=got[0].lease.id)]))
    work = svc(svc.service.agents.workload("a1"))
    assert [t.id for t in work.tasks] == [got[1].id] and work.agent.load == 1
    assert work.agent.completed == 1 and work.success_rate == 1.0
    assert {t1.id, t2.id} == {t.id for t in got}
    assert svc(svc.service.agents.get("a1")).success_rate == 1.0
    with pytest.raises(NotFound):
        svc(svc.service.agents.get("nobody"))
    with pytest.raises(NotFound):
        svc(svc.service.agents.workload("nobody"))


def test_available_filters_status_capacity_and_capability(svc: Harness) -> None:
    register(svc, "full", {"math": 1.0}, max_concurrency=1)
    register(svc, "idle", {"math": 0.5}, max_concurrency=4)
    register(svc, "other", {"data": 1.0}, max_concurrency=4)
    register(svc, "drained", {"math": 1.0}, max_concurrency=4)
    svc(svc.service.agents.set_status("drained", AgentStatus.DRAINING))
    submit(svc)
    claim(svc, "full", 1)
    assert [a.id for a in svc(svc.service.agents.available("math"))] == ["idle"]
    assert {a.id for a in svc(svc.service.agents.available())} == {"idle", "other"}


def test_silent_agent_goes_offline_and_its_task_is_requeued(svc: Harness) -> None:
    register(svc, "lost", {})
    register(svc, "alive", {})
    task = submit(svc)
    (held,) = claim(svc, "lost", 1)
    svc.clock.advance(20)
    svc(svc.service.agent_heartbeat("alive"))
    svc.clock.advance(11)  # "lost" has now missed three 10 s heartbeats, "alive" has not
    done = svc(svc.service.maintain())
    assert done["agents_offline"] == 1 and done["lease_expired"] == 1
    assert svc(svc.service.agents.get("lost")).status is AgentStatus.OFFLINE
    assert svc(svc.service.agents.get("alive")).status is AgentStatus.ONLINE
    again = svc(svc.service.get(task.id))
    assert again.status is Status.QUEUED and again.error.type == "LeaseExpired"
    assert "agent.offline" in kinds(svc)
    # Another pass (another server) reports nothing new.
    assert svc(svc.service.maintain())["agents_offline"] == 0
    assert kinds(svc).count("agent.offline") == 1
    # Another agent picks the task up; the late result of the lost one is refused.
    (retaken,) = claim(svc, "alive", 1)
    assert retaken.id == task.id and retaken.attempt == 2
    ack = svc(svc.service.complete([Completion(task_id=task.id, lease_id=held.lease.id)]))[0]
    assert not ack.ok and ack.code == "stale_lease"
    # The returning agent is online again.
    assert svc(svc.service.agent_heartbeat("lost")).status is AgentStatus.ONLINE


def test_heartbeat_interval_is_configurable(svc: Harness) -> None:
    from dataclasses import replace

    svc.service.settings = replace(svc.service.settings, agent_heartbeat_s=0.5)
    register(svc, "quick", {})
    svc.clock.advance(1.0)
    assert svc(svc.service.maintain())["agents_offline"] == 0
    svc.clock.advance(0.6)
    assert svc(svc.service.maintain())["agents_offline"] == 1


def test_status_changes(svc: Harness) -> None:
    register(svc, "a", {})
    task = submit(svc)
    claim(svc, "a", 1)
    assert svc(svc.service.agents.set_status("a", AgentStatus.DRAINING)).status.value == "draining"
    # A heartbeat keeps a draining agent draining.
    assert svc(svc.service.agent_heartbeat("a")).status is AgentStatus.DRAINING
    with pytest.raises(InvalidInput):
        svc(svc.service.agents.set_status("a", AgentStatus.BUSY))
    with pytest.raises(NotFound):
        svc(svc.service.agents.set_status("zzz", AgentStatus.ONLINE))
    # Retiring an agent expires its leases: the next pass re-queues its task.
    svc(svc.service.agents.set_status("a", AgentStatus.OFFLINE))
    svc(svc.service.maintain())
    assert svc(svc.service.get(task.id)).status is Status.QUEUED
    assert "agent.offline" in kinds(svc) and "agent.draining" in kinds(svc)


def test_queue_dispatch_settings(svc: Harness) -> None:
    agents = svc.service.agents
    assert svc(agents.dispatch_settings("q1")).mode is DispatchMode.PULL
    got = svc(
        agents.set_dispatch("q1", QueueDispatchUpdate(mode=DispatchMode.HYBRID, hybrid_threshold=7))
    )
    assert got.mode is DispatchMode.HYBRID and got.hybrid_threshold == 7
    got = svc(agents.set_dispatch("q1", QueueDispatchUpdate(auction_window_ms=500)))
    assert got.mode is DispatchMode.HYBRID and got.auction_window_ms == 500
    assert [d.queue for d in svc(svc.service.store.list_queue_dispatch())] == ["q1"]
    svc(agents.set_dispatch("q1", QueueDispatchUpdate(mode=DispatchMode.PULL)))
    assert svc(svc.service.store.list_queue_dispatch()) == []
    with pytest.raises(InvalidInput):
        svc(agents.dispatch_settings("  "))


def test_assign_start_unassign(svc: Harness) -> None:
    store, now = svc.service.store, svc.clock.now
    register(svc, "p", {})
    low, high = submit(svc, priority=2), submit(svc, priority=9)
    pinned = submit(svc, agent_id="p")
    # Pinned tasks are dispatchable too (the dispatcher sends them to their agent only).
    assert [t.id for t in svc(store.dispatchable("default", 1, 10))] == [high.id, pinned.id, low.id]
    assert [t.id for t in svc(store.dispatchable("default", 8, 10))] == [high.id]
    task = svc(store.assign(high.id, "p", AssignmentMethod.ASSIGNED, 30, now(), ["q"]))
    assert task.status is Status.ASSIGNED and task.assignment.method.value == "assigned"
    assert task.assignment.collaborators == ["q"] and task.attempt == 1
    assert svc(store.assign(high.id, "p", AssignmentMethod.ASSIGNED, 30, now())) is None
    assert svc(svc.service.agents.get("p")).load == 1
    assert svc(store.unassign(high.id, task.lease.id, now(), "busy"))
    back = svc(svc.service.get(high.id))
    assert back.status is Status.QUEUED and back.attempt == 0 and back.assignment is None
    task = svc(store.assign(high.id, "p", AssignmentMethod.ASSIGNED, 30, now()))
    assert svc(store.start_assigned(high.id, task.lease.id, now()))
    assert svc(svc.service.get(high.id)).status is Status.RUNNING
    assert not svc(store.unassign(high.id, task.lease.id, now(), "late"))
    ack = svc(
        svc.service.complete([Completion(task_id=high.id, lease_id=task.lease.id, result=1)])
    )[0]
    assert ack.ok and "task.assigned" in kinds(svc)


def test_auction_bids(svc: Harness) -> None:
    store, now = svc.service.store, svc.clock.now
    register(svc, "a", {})
    register(svc, "b", {})
    task = submit(svc)
    with pytest.raises(Conflict):
        svc(svc.service.agents.bid(task.id, BidSpec(agent_id="a", cost=1)))
    assert svc(store.open_auction(task.id, now(), 0.2))
    assert not svc(store.open_auction(task.id, now(), 0.2))
    assert task.id not in {t.id for t in svc(store.dispatchable("default", 1, 10))}
    svc(svc.service.agents.bid(task.id, BidSpec(agent_id="a", cost=5, eta_s=1)))
    svc(svc.service.agents.bid(task.id, BidSpec(agent_id="b", cost=2, eta_s=9)))
    with pytest.raises(NotFound):
        svc(svc.service.agents.bid(task.id, BidSpec(agent_id="ghost", cost=1)))
    with pytest.raises(NotFound):
        svc(svc.service.agents.bid("no-such-task", BidSpec(agent_id="a", cost=1)))
    assert svc(store.due_auctions(now())) == []
    svc.clock.advance(0.3)
    with pytest.raises(Conflict):
        svc(svc.service.agents.bid(task.id, BidSpec(agent_id="a", cost=0)))
    assert svc(store.due_auctions(now())) == [task.id]
    bids = svc(store.close_auction(task.id, now()))
    assert [b.agent_id for b in bids] == ["b", "a"]
    assert svc(store.close_auction(task.id, now())) is None
    assert [b.cost for b in svc(svc.service.agents.bids(task.id))] == [2, 5]
    assert kinds(svc).count("auction.bid") == 2 and "auction.announced" in kinds(svc)


def test_draining_agent_claims_nothing(svc: Harness) -> None:
    register(svc, "d", {})
    task = submit(svc)
    svc(svc.service.agents.set_status("d", AgentStatus.DRAINING))
    assert claim(svc, "d") == []
    assert [t.id for t in claim(svc, "other")] == [task.id]
    svc(svc.service.agents.set_status("d", AgentStatus.ONLINE))
    second = submit(svc)
    assert [t.id for t in claim(svc, "d")] == [second.id]
    # A drain set elsewhere (another server) is seen after the next maintenance pass.
    svc(svc.service.store.set_agent_status("d", AgentStatus.DRAINING, svc.clock.now()))
    third = submit(svc)
    svc(svc.service.maintain())
    assert claim(svc, "d") == []
    assert svc(svc.service.get(third.id)).status is Status.QUEUED
