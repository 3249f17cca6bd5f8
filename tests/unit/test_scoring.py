"""The push-assignment score: table-driven (PRODUCT.md §5)."""

from __future__ import annotations

import pytest

from offload.core.scoring import NO_HISTORY, TypeHistory, Weights, rank_agents, score_agent
from offload.domain.models import Agent, AgentStatus


def agent(
    id: str,
    caps: dict[str, float],
    load: int = 0,
    max_concurrency: int = 4,
    status: AgentStatus = AgentStatus.ONLINE,
) -> Agent:
    return Agent(id=id, name=id, capabilities=caps, load=load, max_concurrency=max_concurrency,
                 status=status)  # fmt: skip


# (case, better agent, its history, worse agent, its history, required capabilities)
BETTER_THAN = [
    ("capable beats incapable",
     agent("a", {"data": 0.3}), NO_HISTORY, agent("b", {"code": 1.0}), NO_HISTORY, ["data"]),
    ("idle beats loaded",
     agent("a", {"data": 0.8}), NO_HISTORY, agent("b", {"data": 0.8}, load=3), NO_HISTORY,
     ["data"]),
    ("specialist beats generalist",
     agent("a", {"data": 0.95}), NO_HISTORY,
     agent("b", {"data": 0.5, "code": 0.5, "math": 0.5}), NO_HISTORY, ["data"]),
    ("history matters: success",
     agent("a", {"data": 0.8}), TypeHistory(9, 1, 2.0),
     agent("b", {"data": 0.8}), TypeHistory(2, 8, 2.0), ["data"]),
    ("history matters: speed",
     agent("a", {"data": 0.8}), TypeHistory(10, 0, 1.0),
     agent("b", {"data": 0.8}), TypeHistory(10, 0, 9.0), ["data"]),
    ("history beats no history when it is good",
     agent("a", {"data": 0.8}), TypeHistory(10, 0, 5.0),
     agent("b", {"data": 0.8}), NO_HISTORY, ["data"]),
    ("no capabilities required: load decides",
     agent("a", {}, load=0), NO_HISTORY, agent("b", {}, load=2), NO_HISTORY, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("better", "h_better", "worse", "h_worse", "required"),
    [c[1:] for c in BETTER_THAN],
    ids=[c[0] for c in BETTER_THAN],
)
def test_better_candidate_ranks_first(
    better: Agent, h_better: TypeHistory, worse: Agent, h_worse: TypeHistory, required: list[str]
) -> None:
    history = {("a", "t"): h_better, ("b", "t"): h_worse}
    ranked = rank_agents([worse, better], required, "t", history)
    assert ranked[0][1].id == "a"


NOT_CANDIDATES = [
    ("missing capability", agent("x", {"code": 1.0}), ["data"]),
    ("zero proficiency", agent("x", {"data": 0.0}), ["data"]),
    ("one of two capabilities", agent("x", {"data": 1.0}), ["data", "code"]),
    ("full", agent("x", {"data": 1.0}, load=2, max_concurrency=2), ["data"]),
    ("offline", agent("x", {"data": 1.0}, status=AgentStatus.OFFLINE), ["data"]),
    ("draining", agent("x", {"data": 1.0}, status=AgentStatus.DRAINING), ["data"]),
    ("busy", agent("x", {"data": 1.0}, status=AgentStatus.BUSY), ["data"]),
]


@pytest.mark.parametrize(
    ("candidate", "required"), [c[1:] for c in NOT_CANDIDATES], ids=[c[0] for c in NOT_CANDIDATES]
)
def test_ineligible_agents_are_left_out(candidate: Agent, required: list[str]) -> None:
    assert score_agent(candidate, required) is None
    assert rank_agents([candidate], required, "t") == []


def test_score_is_in_unit_range_and_weights_steer_it() -> None:
    idle_novice = agent("a", {"data": 0.2})
    busy_expert = agent("b", {"data": 1.0}, load=3)
    for a in (idle_novice, busy_expert):
        s = score_agent(a, ["data"])
        assert s is not None and 0.0 <= s <= 1.0
    load_first = Weights(load=1, proficiency=0, success=0, speed=0)
    skill_first = Weights(load=0, proficiency=1, success=0, speed=0)
    assert (
        rank_agents([busy_expert, idle_novice], ["data"], "t", weights=load_first)[0][1].id == "a"
    )
    assert (
        rank_agents([idle_novice, busy_expert], ["data"], "t", weights=skill_first)[0][1].id == "b"
    )
    perfect = score_agent(agent("p", {"data": 1.0}), ["data"], TypeHistory(10**6, 0, 1.0),
                          typical_s=1e9)  # fmt: skip
    assert perfect is not None and perfect == pytest.approx(1.0, abs=1e-5)


def test_ties_are_deterministic() -> None:
    twins = [agent("b", {"x": 1.0}), agent("a", {"x": 1.0})]
    assert [a.id for _, a in rank_agents(twins, ["x"], "t")] == ["a", "b"]


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError):
        Weights(load=-1)
    with pytest.raises(ValueError):
        Weights(0, 0, 0, 0)
