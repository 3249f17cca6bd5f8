"""``offload mcp``: the MCP server on stdin/stdout with one client for the whole process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from offload.client.base import AsyncClient
from offload.client.factory import connect
from offload.domain.errors import OffloadError, Unavailable
from offload.mcp.server import build_server


class SharedClient:
    """A client factory that opens one client on first use and hands it to every request.

    Opening lazily lets the server answer ``initialize`` at once (clients time start-up
    out), and a database or server that cannot be reached becomes a tool error the agent
    can report, instead of a process that exits before the client sees why. A failed open
    is retried on the next call.
    """

    def __init__(self, open_client: Callable[[], Awaitable[AsyncClient]]) -> None:
        self._open = open_client
        self._client: AsyncClient | None = None
        self._lock = anyio.Lock()

    async def __call__(self, request: Any = None) -> AsyncClient:
        """The shared client (``request`` is ignored: stdio has one user)."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._open_or_explain()
        return self._client

    async def _open_or_explain(self) -> AsyncClient:
        try:
            return await self._open()
        except OffloadError as exc:
            # The agent cannot fix this itself; say who can and where.
            raise Unavailable(
                f"Offload cannot open its database or server: {exc.message}",
                details={
                    "hint": "ask the user to fix the Offload MCP server's environment "
                    "(OFFLOAD_DATABASE_URL, or OFFLOAD_URL and OFFLOAD_TOKEN) in the MCP "
                    "client's configuration; see docs/mcp.md",
                    "cause": exc.to_dict(),
                },
            ) from exc

    async def aclose(self) -> None:
        """Close the client if it was opened."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()


async def serve_stdio(
    *, url: str | None = None, token: str | None = None, database_url: str | None = None
) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin.

    The client is ``connect(url, token=…, database_url=…)``: a server when ``url`` (or
    ``$OFFLOAD_URL`` without ``database_url``) is set, else the local database.
    """
    shared = SharedClient(lambda: connect(url, token=token, database_url=database_url))
    server = build_server(shared)
    try:
        await server.run_stdio_async()
    finally:
        with anyio.CancelScope(shield=True):
            await shared.aclose()


def run_stdio(
    *, url: str | None = None, token: str | None = None, database_url: str | None = None
) -> None:
    """Blocking :func:`serve_stdio`, for the command line."""
    anyio.run(lambda: serve_stdio(url=url, token=token, database_url=database_url))
