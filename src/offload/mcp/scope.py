"""Which client serves an MCP request: the client factory and the request it is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from offload.client.base import AsyncClient

#: ``client_for(request)``: the client to serve one MCP request with. ``request`` is the
#: transport's request (a Starlette ``Request`` over HTTP) or ``None`` (stdio, in-process).
#: Raise an :class:`~offload.domain.errors.OffloadError` (e.g. unauthorized) to refuse; it
#: reaches the agent as a tool error. An HTTP factory must refuse ``None``.
ClientFactory = Callable[[Any], Awaitable[AsyncClient]]

_request: ContextVar[Any] = ContextVar("offload_mcp_request", default=None)


def current_request() -> Any:
    """The transport request of the MCP request being handled (``None`` on stdio)."""
    return _request.get()


async def bind_request(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: make the transport request visible to :func:`current_request`.

    Tools and resource templates could read it from their ``Context``, but static
    resources get none; one way for every handler keeps the tenancy rule in one place.
    """
    token = _request.set(ctx.request)
    try:
        return await call_next(ctx)
    finally:
        _request.reset(token)
