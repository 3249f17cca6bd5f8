"""MCP over streamable HTTP, mounted into the API app at ``/mcp`` (``offload serve``).

    from offload.mcp.http import mount_http

    async def client_for(request):            # starlette Request (None never comes over HTTP)
        principal = await authenticate(request.headers.get("authorization"))  # raise to refuse
        return LocalClient(service, owner=principal.owner)   # that tenant's view

    mount_http(app, client_for)               # FastAPI or Starlette; before the app starts

Each request is stateless (no MCP session to pin to one server process) and answered
with plain JSON, so any number of API processes can serve ``/mcp`` behind a load balancer.
The factory is called per MCP request, so every tool, resource and prompt sees only what
that request's token may see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

from offload.mcp.scope import ClientFactory
from offload.mcp.server import build_server


def mount_http(
    app: Starlette,
    client_for: ClientFactory,
    *,
    path: str = "/mcp",
    host: str = "127.0.0.1",
    transport_security: TransportSecuritySettings | None = None,
) -> StreamableHTTPSessionManager:
    """Serve MCP at ``path`` of ``app`` and run its session manager in ``app``'s lifespan.

    ``host`` is the address the server binds: on loopback (the default) the SDK refuses
    requests whose Host/Origin header is not local (DNS rebinding); for another bind pass
    ``transport_security`` listing the public host names. Call before the app starts; the
    app's existing lifespan keeps running inside the MCP one.
    """
    server = build_server(client_for)
    sub_app = server.streamable_http_app(
        streamable_http_path=path,
        stateless_http=True,
        json_response=True,
        host=host,
        transport_security=transport_security,
    )
    app.router.routes.extend(sub_app.routes)
    manager = server.session_manager
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with manager.run(), inner(a) as state:
            yield state

    app.router.lifespan_context = lifespan
    return manager
