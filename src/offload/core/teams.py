"""Teams (PRODUCT.md §5): who works with the primary agent, and swarms.

``team: {size, roles}`` on a task: whoever gets the task (a claim, a push, an auction) is
the primary; :func:`pick_collaborators` names ``size − 1`` collaborators, the best-scoring
other capable agents (:func:`offload.core.scoring.rank_agents`), and gives the roles out in
order (the first role is the primary's). The team is recorded in ``assignment``
(``collaborators``, ``roles``) and announced with the event ``team.formed``.

``team: {mode: "swarm", size: n}``: the same task runs on ``n`` different agents. The
submit becomes a workflow parent whose ``n`` children are copies of the task, each pinned
to one agent (the child's ``ref`` is the agent id), so the parent's result is the merge of
their results keyed by agent: ``{agent_id: result, …}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from offload.core.scoring import DEFAULT_WEIGHTS, TypeHistory, Weights, rank_agents
from offload.domain.models import Agent, AgentStatus, Task, Team


def pick_collaborators(
    primary: str,
    task: Task,
    team: Team,
    agents: Iterable[Agent],
    history: Mapping[tuple[str, str], TypeHistory] | None = None,
    *,
    weights: Weights = DEFAULT_WEIGHTS,
) -> tuple[list[str], dict[str, str]]:
    """Collaborators for ``primary`` (best first, at most ``team.size − 1``; fewer when
    fewer capable agents are available) and the role of each member."""
    others = [a for a in agents if a.id != primary]
    ranked = rank_agents(others, task.capabilities, task.type, history, weights=weights)
    collaborators = [a.id for _, a in ranked[: max(team.size - 1, 0)]]
    members = [primary, *collaborators]
    roles = {member: role for member, role in zip(members, team.roles, strict=False)}
    return collaborators, roles


def pick_swarm(
    required: Sequence[str],
    task_type: str,
    queue: str,
    size: int,
    agents: Iterable[Agent],
    history: Mapping[tuple[str, str], TypeHistory] | None = None,
) -> list[Agent]:
    """``size`` distinct online agents able to run the task, best first: agents with free
    capacity by score, then busy ones by load. Fewer when fewer exist."""
    online = [
        a
        for a in agents
        if a.status is AgentStatus.ONLINE
        and queue in a.queues
        and all(a.capabilities.get(c, 0.0) > 0 for c in required)
    ]
    ranked = [a for _, a in rank_agents(online, required, task_type, history)]
    chosen = {a.id for a in ranked}
    full = sorted((a for a in online if a.id not in chosen), key=lambda a: (a.load, a.id))
    return [*ranked, *full][:size]
