"""Background duties of a worker: keep leases alive, keep the agent alive, reap.

Each is a small loop over the :class:`~offload.client.base.AsyncClient` protocol, so they
work the same against the local database and over HTTP. Errors are logged and retried on
the next round: a worker rides out a busy or briefly unreachable database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from offload.client.base import AsyncClient
from offload.domain.models import Agent, LeaseRef, LeaseState

log = logging.getLogger("offload.worker")

#: Agents heartbeat every 10 s; one that misses three is offline (PRODUCT.md §5).
AGENT_HEARTBEAT_S = 10.0
#: How often a worker runs the (idempotent) maintenance pass.
MAINTAIN_EVERY_S = 1.0
#: Lease refreshes also carry cancel and pause requests, so a running task notices one within
#: about this long. Holding many leases stretches the interval (at most REFRESHES_PER_S lease
#: updates a second), never beyond a third of the TTL.
REFRESH_S = 1.0
REFRESHES_PER_S = 1000


def refresh_interval(lease_ttl_s: float, held: int = 0) -> float:
    """Seconds between lease refreshes for ``held`` leases: at most a third of the TTL."""
    return max(0.05, min(lease_ttl_s / 3, max(REFRESH_S, held / REFRESHES_PER_S)))


async def keep_leases(
    client: AsyncClient,
    lease_ttl_s: float,
    held: Callable[[], list[LeaseRef]],
    on_state: Callable[[LeaseState], None],
) -> None:
    """Extend every held lease each :func:`refresh_interval`; pass each answer to ``on_state``.

    The answers carry ``cancel_requested``/``pause_requested`` and ``valid=False`` for a
    lease that was lost (expired and re-claimed).
    """
    interval = refresh_interval(lease_ttl_s)
    while True:
        await asyncio.sleep(interval)
        leases = held()
        interval = refresh_interval(lease_ttl_s, len(leases))
        if not leases:
            continue
        try:
            states = await client.heartbeat(leases, lease_ttl_s)
        except Exception as exc:  # retried next round; leases last ttl_s
            log.warning("lease refresh of %d tasks failed: %s", len(leases), exc)
            continue
        for state in states:
            on_state(state)


async def keep_agent_alive(
    client: AsyncClient,
    agent_id: str,
    metadata: Callable[[], dict[str, Any]],
    every_s: float = AGENT_HEARTBEAT_S,
    on_agent: Callable[[Agent], None] | None = None,
) -> None:
    """Heartbeat the agent record every ``every_s`` seconds; pass each answer (the record,
    whose ``status`` says e.g. ``draining``) to ``on_agent``."""
    while True:
        await asyncio.sleep(every_s)
        try:
            agent = await client.agent_heartbeat(agent_id, metadata())
        except Exception as exc:  # the next beat retries
            log.warning("agent heartbeat failed: %s", exc)
            continue
        if on_agent is not None:
            on_agent(agent)


async def maintain_forever(client: AsyncClient, every_s: float = MAINTAIN_EVERY_S) -> None:
    """Run the maintenance pass (expired leases, due tasks, deadlines) every ``every_s``."""
    while True:
        try:
            done = await client.maintain()
        except Exception as exc:  # idempotent; the next pass catches up
            log.warning("maintenance pass failed: %s", exc)
        else:
            if any(done.values()):
                log.debug("maintenance: %s", done)
        await asyncio.sleep(every_s)
