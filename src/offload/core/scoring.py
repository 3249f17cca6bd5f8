"""Which agent should get a task: the one scoring function of push assignment (PRODUCT.md §5).

:func:`score_agent` is pure (no I/O, no clock) and decides in four steps:

1. **Capability match** — the agent must have every capability the task requires, with a
   proficiency above zero. Otherwise it is not a candidate (``None``).
2. **Availability** — the agent must be ``online`` with ``load < max_concurrency``.
   Otherwise ``None``.
3. **Load factor** — ``1 - load / max_concurrency``: an idle agent scores 1, a nearly full
   one close to 0.
4. **Specialization** — three parts:

   * *proficiency*: the mean proficiency (0–1) on the required capabilities (1 when the
     task requires none, so it does not separate agents);
   * *success*: the agent's success rate on this task type, smoothed towards 0.5 by one
     success and one failure (Laplace), so no history scores 0.5 and one lucky run does
     not score 1;
   * *speed*: ``typical / (typical + mean)``, the agent's mean run time on this type
     against the typical one: 0.5 when equal, towards 1 when faster; 0.5 without history.

The score is the weighted sum of load, proficiency, success and speed (:class:`Weights`,
normalised so the score stays in 0–1). :func:`rank_agents` sorts candidates by score,
breaking ties by lower load and then agent id, so the outcome is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from offload.domain.models import Agent, AgentStatus


@dataclass(frozen=True)
class Weights:
    """Tunable weights of the score's parts (any non-negative numbers; normalised)."""

    load: float = 0.35
    proficiency: float = 0.35
    success: float = 0.2
    speed: float = 0.1

    def __post_init__(self) -> None:
        parts = (self.load, self.proficiency, self.success, self.speed)
        if any(p < 0 for p in parts) or sum(parts) <= 0:
            raise ValueError("weights must be non-negative and not all zero")


DEFAULT_WEIGHTS = Weights()


@dataclass(frozen=True)
class TypeHistory:
    """An agent's record on one task type."""

    completed: int = 0
    failed: int = 0
    mean_s: float | None = None


NO_HISTORY = TypeHistory()


def score_agent(
    agent: Agent,
    required: Sequence[str],
    history: TypeHistory = NO_HISTORY,
    *,
    typical_s: float | None = None,
    weights: Weights = DEFAULT_WEIGHTS,
) -> float | None:
    """How well ``agent`` suits a task needing ``required`` capabilities, 0–1; ``None``
    when it cannot take it (missing capability, not online, or full)."""
    proficiencies = [agent.capabilities.get(cap, 0.0) for cap in required]
    if any(p <= 0.0 for p in proficiencies):
        return None
    if agent.status is not AgentStatus.ONLINE or agent.load >= agent.max_concurrency:
        return None
    load = 1.0 - agent.load / agent.max_concurrency
    proficiency = sum(proficiencies) / len(proficiencies) if proficiencies else 1.0
    success = (history.completed + 1) / (history.completed + history.failed + 2)
    speed = 0.5
    if history.mean_s is not None and typical_s is not None and history.completed:
        speed = typical_s / (typical_s + history.mean_s) if typical_s + history.mean_s > 0 else 0.5
    w = weights
    total = w.load + w.proficiency + w.success + w.speed
    return (
        w.load * load + w.proficiency * proficiency + w.success * success + w.speed * speed
    ) / total


def rank_agents(
    agents: Iterable[Agent],
    required: Sequence[str],
    task_type: str,
    history: Mapping[tuple[str, str], TypeHistory] | None = None,
    *,
    weights: Weights = DEFAULT_WEIGHTS,
) -> list[tuple[float, Agent]]:
    """Candidates for a task, best first (see the module docs); incapable or unavailable
    agents are left out. ``history`` maps ``(agent id, task type)`` to its record; the
    typical run time is the mean over the agents that have one."""
    history = history or {}
    means = [
        h.mean_s
        for (_, kind), h in history.items()
        if kind == task_type and h.mean_s is not None and h.completed
    ]
    typical = sum(means) / len(means) if means else None
    scored = []
    for agent in agents:
        s = score_agent(
            agent,
            required,
            history.get((agent.id, task_type), NO_HISTORY),
            typical_s=typical,
            weights=weights,
        )
        if s is not None:
            scored.append((s, agent))
    scored.sort(key=lambda pair: (-pair[0], pair[1].load, pair[1].id))
    return scored
