"""The Offload MCP server: tools, resources and a prompt over any :class:`AsyncClient`.

:func:`build_server` takes a *client factory*, called once per MCP request with the
transport's request object (a Starlette ``Request`` over streamable HTTP, ``None`` on stdio
and in-process). Over stdio the factory hands out one shared client; the HTTP API's factory
authenticates the request and returns a client scoped to that token's tenant, so tenancy is
whatever the client enforces. The server never touches the store: everything goes through
the client, exactly as the CLI and SDK do.
"""

from __future__ import annotations

import inspect
import json
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer, UserMessage
from mcp.server.mcpserver.exceptions import (
    ResourceError,
    ResourceNotFoundError,
    ToolError,
    UnexpectedToolError,
)
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import Field, ValidationError

from offload import __version__
from offload.client.base import AsyncClient
from offload.domain.errors import NotFound, OffloadError
from offload.mcp.errors import argument_error_result, unknown_arguments_result, unknown_tool_result
from offload.mcp.guide import INSTRUCTIONS, guide_for
from offload.mcp.scope import ClientFactory, bind_request, current_request
from offload.mcp.tools import TOOLS, OffloadTools

#: Events shown in ``offload://tasks/{id}``.
RECENT_EVENTS = 50


class OffloadMCPServer(MCPServer[Any]):
    """An :class:`MCPServer` whose argument errors name each bad field and its meaning.

    The SDK reports schema violations as raw pydantic text and silently drops arguments a
    tool does not take; agents fix their calls faster when told which field, why, and what
    it should hold.
    """

    _input_schemas: dict[str, dict[str, Any]] | None = None

    async def _schemas(self) -> dict[str, dict[str, Any]]:
        if self._input_schemas is None:
            self._input_schemas = {t.name: t.input_schema for t in await self.list_tools()}
        return self._input_schemas

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        """Call a tool; argument mistakes come back as tool errors that say how to fix them."""
        schemas = await self._schemas()
        schema = schemas.get(name)
        if schema is None:
            return unknown_tool_result(name, list(schemas))
        unknown = sorted(set(arguments) - set(schema.get("properties", {})))
        if unknown:
            return unknown_arguments_result(name, unknown, schema)
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(exc, UnexpectedToolError) and isinstance(cause, ValidationError):
                return argument_error_result(name, cause, schema)
            raise


def build_server(
    client_for: ClientFactory,
    *,
    name: str = "offload",
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING",
) -> OffloadMCPServer:
    """The MCP server: every tool, resource and prompt goes through ``client_for(request)``.

    Over stdio pass a factory that returns one shared client (see
    :func:`offload.mcp.stdio.serve_stdio`); over HTTP one that authenticates the request
    and returns that tenant's client (see :func:`offload.mcp.http.mount_http`).
    """
    server = OffloadMCPServer(
        name=name,
        title="Offload",
        description="A durable task queue for AI agents: exact math, data crunching, long jobs.",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level=log_level,
        middleware=[bind_request],
    )
    tools = OffloadTools(client_for)
    for tool_name, (title, hints) in TOOLS.items():
        fn = getattr(tools, tool_name)
        server.add_tool(
            fn,
            name=tool_name,
            title=title,
            description=inspect.cleandoc(fn.__doc__ or ""),
            annotations=hints.model_copy(update={"title": title}),
        )

    async def client() -> AsyncClient:
        try:
            return await client_for(current_request())
        except OffloadError as exc:
            raise ResourceError(exc.message) from None

    @server.resource(
        "offload://task-types",
        name="task-types",
        title="Task type catalogue",
        description="Every task type with its description, capabilities and input JSON Schema.",
        mime_type="application/json",
    )
    async def task_types_resource() -> str:
        infos = await (await client()).task_types()
        return json.dumps({"task_types": [i.model_dump(mode="json") for i in infos]}, indent=1)

    @server.resource(
        "offload://tasks/{task_id}",
        name="task",
        title="A task with its result and recent events",
        description=f"The full task record (result included, never truncated) and its last "
        f"{RECENT_EVENTS} events.",
        mime_type="application/json",
    )
    async def task_resource(task_id: str) -> str:
        c = await client()
        try:
            task = await c.get(task_id)
            events = await c.events(task_id)
        except NotFound as exc:
            raise ResourceNotFoundError(exc.message) from None
        except OffloadError as exc:
            raise ResourceError(exc.message) from None
        recent = [e.model_dump(mode="json") for e in events[-RECENT_EVENTS:]]
        body = {"task": task.model_dump(mode="json"), "events": recent, "events_total": len(events)}
        return json.dumps(body, indent=1, ensure_ascii=False)

    @server.resource(
        "offload://tasks/{task_id}/result",
        name="task-result",
        title="A task's full result",
        description="The result of a task as JSON, whole (tools page long results).",
        mime_type="application/json",
    )
    async def task_result_resource(task_id: str) -> str:
        try:
            task = await (await client()).get(task_id)
        except NotFound as exc:
            raise ResourceNotFoundError(exc.message) from None
        except OffloadError as exc:
            raise ResourceError(exc.message) from None
        return json.dumps(task.result, ensure_ascii=False)

    @server.prompt(
        name="offload_guide",
        title="When and how to offload work",
        description="Teaches an agent when to hand work to Offload (exact math, data over many "
        "rows, long jobs) and how (submit_agent_task -> wait_for_task -> read result).",
    )
    def offload_guide(
        job: Annotated[
            str | None,
            Field(description="Optional: the job at hand, to decide what to offload."),
        ] = None,
    ) -> list[UserMessage]:
        return [UserMessage(guide_for(job))]

    return server


__all__ = ["ClientFactory", "OffloadMCPServer", "build_server"]
