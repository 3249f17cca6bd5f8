"""Teams and swarms on both backends (PRODUCT.md §5)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from offload.core.dispatch import Dispatcher
from offload.domain.agents import DispatchMode, QueueDispatchUpdate
from offload.domain.errors import InvalidInput
from offload.domain.models import (
    AgentRegistration,
    ClaimRequest,
    Completion,
    TaskFilter,
    TaskSpec,
    WorkflowSpec,
)
from offload.domain.status import Status

from .conftest import Harness
from .test_dispatch_contract import ScriptedPusher


def register(h: Harness, name: str, caps: dict[str, float], **kw: object) -> None:
    reg = AgentRegistration.model_validate({"id": name, "name": name, "capabilities": caps, **kw})
    h(h.service.register_agent(reg))


def spec(**kw: object) -> TaskSpec:
    return TaskSpec.model_validate({"type": "t.num", "input": {"n": 3}, **kw})


def test_team_on_claim_names_collaborators_and_roles(svc: Harness) -> None:
    for name, level in (("lead", 0.9), ("second", 0.8), ("third", 0.5)):
        register(svc, name, {"x": level})
    register(svc, "unrelated", {"y": 1.0})
    team = {"size": 3, "roles": ["author", "reviewer", "tester"]}
    task = svc(svc.service.submit(spec(capabilities=["x"], team=team)))
    assert task.team is not None and task.team.size == 3
    (got,) = svc(svc.service.claim(ClaimRequest(agent_id="lead", capabilities=["x"])))
    a = got.assignment
    assert a.agent_id == "lead" and a.collaborators == ["second", "third"]
    assert a.roles == {"lead": "author", "second": "reviewer", "third": "tester"}
    assert "team.formed" in [e.kind for e in svc(svc.service.events(task.id))]
    stored = svc(svc.service.get(task.id))
    assert stored.assignment.collaborators == ["second", "third"] and stored.team.size == 3


def test_team_smaller_when_fewer_agents_and_plain_claims_untouched(svc: Harness) -> None:
    register(svc, "solo", {"x": 1.0})
    register(svc, "other", {"x": 1.0})
    svc(svc.service.submit(spec(team={"size": 4})))
    svc(svc.service.submit(spec()))
    got = svc(svc.service.claim(ClaimRequest(agent_id="solo", max=2)))
    team_task = next(t for t in got if t.team is not None)
    plain = next(t for t in got if t.team is None)
    assert team_task.assignment.collaborators == ["other"]
    assert plain.assignment.collaborators == [] and plain.assignment.roles == {}


def test_team_on_push(svc: Harness) -> None:
    pusher = ScriptedPusher()
    for name in ("p1", "p2"):
        register(svc, name, {"x": 1.0}, endpoint=f"http://{name}.invalid", queues=["jobs"],
                 max_concurrency=2)  # fmt: skip
    register(svc, "helper", {"x": 0.7}, queues=["jobs"])  # no endpoint: a collaborator only
    svc(svc.service.agents.set_dispatch("jobs", QueueDispatchUpdate(mode=DispatchMode.PUSH)))
    task = svc(svc.service.submit(spec(queue="jobs", capabilities=["x"],
                                       team={"size": 3, "roles": ["lead"]})))  # fmt: skip
    svc(Dispatcher(svc.service, pusher).dispatch_once())
    got = svc(svc.service.get(task.id))
    assert got.assignment.agent_id == "p1" and got.assignment.collaborators == ["p2", "helper"]
    assert got.assignment.roles == {"p1": "lead"}


def test_swarm_runs_on_n_agents_and_merges_results(svc: Harness) -> None:
    for name in ("s1", "s2", "s3"):
        register(svc, name, {"x": 1.0})
    register(svc, "incapable", {"y": 1.0})
    parent = svc(svc.service.submit(spec(capabilities=["x"], team={"mode": "swarm", "size": 3})))
    assert parent.type == "workflow" and len(parent.children) == 3
    assert parent.metadata["team"]["mode"] == "swarm"
    kids = svc(svc.service.list(TaskFilter(parent_id=parent.id))).tasks
    assert sorted(k.agent_id for k in kids) == ["s1", "s2", "s3"]
    assert sorted(k.ref for k in kids) == ["s1", "s2", "s3"]
    # Each member claims only its own copy.
    for name in ("s1", "s2", "s3"):
        (mine,) = svc(svc.service.claim(ClaimRequest(agent_id=name, capabilities=["x"], max=5)))
        assert mine.agent_id == name
        svc(svc.service.complete([Completion(task_id=mine.id, lease_id=mine.lease.id,
                                             result={"by": name})]))  # fmt: skip
    done = svc(svc.service.get(parent.id))
    assert done.status is Status.COMPLETED
    assert done.result == {"s1": {"by": "s1"}, "s2": {"by": "s2"}, "s3": {"by": "s3"}}


def test_swarm_errors(svc: Harness) -> None:
    register(svc, "only", {"x": 1.0})
    with pytest.raises(InvalidInput, match="needs 2 online agents"):
        svc(svc.service.submit(spec(capabilities=["x"], team={"mode": "swarm", "size": 2})))
    with pytest.raises(InvalidInput, match="on its own"):
        svc(svc.service.submit_many([spec(team={"mode": "swarm", "size": 1}), spec()]))
    with pytest.raises(InvalidInput, match="on its own"):
        svc(svc.service.submit_workflow(WorkflowSpec(tasks=[spec(team={"mode": "swarm"})])))
    with pytest.raises(InvalidInput, match="pinned"):
        svc(svc.service.submit(spec(agent_id="only", team={"mode": "swarm", "size": 1})))
    with pytest.raises(ValidationError):
        spec(team={"size": 1, "roles": ["a", "b"]})
    with pytest.raises(ValidationError):
        spec(team={"size": 0})


def test_swarm_member_of_a_lost_agent_moves_to_another(svc: Harness) -> None:
    for name in ("s1", "s2", "s3"):
        register(svc, name, {"x": 1.0})
    parent = svc(svc.service.submit(spec(capabilities=["x"], team={"mode": "swarm", "size": 2})))
    kids = svc(svc.service.list(TaskFilter(parent_id=parent.id))).tasks
    assert sorted(k.agent_id for k in kids) == ["s1", "s2"]
    (lost,) = svc(svc.service.claim(ClaimRequest(agent_id="s1", capabilities=["x"])))
    svc.clock.advance(20)
    svc(svc.service.agent_heartbeat("s2"))
    svc(svc.service.agent_heartbeat("s3"))
    svc.clock.advance(11)
    done = svc(svc.service.maintain())
    assert done["agents_offline"] == 1 and done["swarm_repinned"] == 1
    moved = svc(svc.service.get(lost.id))
    assert moved.status is Status.QUEUED and moved.agent_id == "s3" and moved.ref == "s3"
    assert "swarm.repinned" in [e.kind for e in svc(svc.service.events(lost.id))]
    for name in ("s2", "s3"):
        (mine,) = svc(svc.service.claim(ClaimRequest(agent_id=name, capabilities=["x"])))
        svc(svc.service.complete([Completion(task_id=mine.id, lease_id=mine.lease.id,
                                             result=name)]))  # fmt: skip
    assert svc(svc.service.get(parent.id)).result == {"s2": "s2", "s3": "s3"}


def test_ordinary_pins_wait_for_their_agent(svc: Harness) -> None:
    register(svc, "p", {})
    register(svc, "q", {})
    wf = svc(svc.service.submit_workflow(WorkflowSpec(tasks=[spec(agent_id="p")])))
    svc.clock.advance(20)
    svc(svc.service.agent_heartbeat("q"))
    svc.clock.advance(11)
    done = svc(svc.service.maintain())
    assert done["agents_offline"] == 1 and done["swarm_repinned"] == 0
    (child,) = svc(svc.service.list(TaskFilter(parent_id=wf.id))).tasks
    assert child.agent_id == "p"
