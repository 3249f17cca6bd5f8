"""Delivering work to push agents over HTTP (the dispatcher's :class:`Pusher`).

``POST {endpoint}/execute`` with the task (and its lease) as JSON: 200 means accepted,
503 busy; any other answer counts as busy too (the agent is there but will not take it),
while a connection failure or timeout means unreachable. ``POST {endpoint}/bid-request``
invites a bid; its answer does not matter (the agent bids through the API).
"""

from __future__ import annotations

import logging

import httpx

from offload.core.dispatch import Delivery
from offload.domain.models import Agent, Task

log = logging.getLogger("offload.dispatch")


class HttpPusher:
    """An httpx client shared by every delivery of one server."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=2.0))

    async def execute(self, agent: Agent, task: Task) -> Delivery:
        """Offer ``task`` to ``agent``."""
        url = f"{(agent.endpoint or '').rstrip('/')}/execute"
        try:
            response = await self._http.post(
                url,
                content=task.model_dump_json(),
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            log.info("push to %s failed: %r", url, exc)
            return Delivery.UNREACHABLE
        if response.status_code == 200:
            return Delivery.ACCEPTED
        if response.status_code != 503:
            log.warning("push agent %s answered %s to /execute", agent.id, response.status_code)
        return Delivery.BUSY

    async def invite_bid(self, agent: Agent, task: Task) -> None:
        """Tell ``agent`` about an auction (best effort)."""
        url = f"{(agent.endpoint or '').rstrip('/')}/bid-request"
        try:
            await self._http.post(
                url, content=task.model_dump_json(), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            log.info("bid invitation to %s failed: %r", url, exc)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
