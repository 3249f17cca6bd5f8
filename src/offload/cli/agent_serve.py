"""``offload agent serve``: run a push agent (HTTP service) for an Offload server."""

from __future__ import annotations

import os
import socket
from typing import Annotated, Any

import typer

from offload.cli.common import Imports, split_list, stderr
from offload.domain.models import AgentKind


def agent_serve(
    *,
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="0: any free port.")
    ] = 8001,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    capabilities: Annotated[
        list[str] | None,
        typer.Option(
            "--capabilities",
            "-c",
            help="Capabilities with optional proficiency 0-1: data_analysis:0.9,code_generation "
            "(default: those its task types need).",
            show_default=False,
        ),
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option("--max-concurrency", min=1, help="Tasks at once.")
    ] = 1,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="The Offload server (default $OFFLOAD_URL; token in $OFFLOAD_TOKEN).",
            show_default=False,
        ),
    ] = None,
    imports: Imports = None,
    agent_id: Annotated[
        str | None,
        typer.Option("--id", help="Agent id (default: agent-HOST-PORT; kept across restarts)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Agent name.")] = None,
    kind: Annotated[AgentKind, typer.Option("--kind", help="llm, program or human.")] = (
        AgentKind.PROGRAM
    ),
    queues: Annotated[
        list[str] | None, typer.Option("--queues", "-q", help="Queues served (comma list).")
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            help="URL the server reaches this agent at (default http://HOST:PORT).",
            show_default=False,
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", min=0.0, help="Shutdown grace for running tasks, s.")
    ] = 30.0,
    log_level: Annotated[
        str, typer.Option("--log-level", envvar="OFFLOAD_LOG_LEVEL", help="debug, info, warning")
    ] = "info",
) -> None:
    """Serve a push agent: /execute, /health, /status, /bid-request; it registers with the
    server, heartbeats and runs pushed tasks through its handlers until Ctrl-C / SIGTERM."""
    import asyncio
    import contextlib
    import logging

    from offload.api.server import listen
    from offload.cli.agents import parse_capabilities
    from offload.domain.errors import InvalidInput
    from offload.worker.runtime import load_imports

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    url = server or os.environ.get("OFFLOAD_URL")
    if not url:
        raise InvalidInput(
            "a push agent works for a server: pass --server http://host:8000 (or set OFFLOAD_URL)",
            field="server",
        )
    load_imports(split_list(imports) + split_list([os.environ.get("OFFLOAD_IMPORTS", "")]))
    proficiency = parse_capabilities(capabilities)
    sock = listen(host, port)
    bound_port = sock.getsockname()[1]
    ident = agent_id or f"agent-{socket.gethostname()}-{bound_port}"
    options = {
        "endpoint": advertise or f"http://{host}:{bound_port}",
        "agent_id": ident,
        "kind": kind,
        "concurrency": max_concurrency,
        "queues": split_list(queues) or ["default"],
        "name": name or ident,
        "grace_s": grace,
    }
    # A second Ctrl-C while stopping skips the rest of the graceful shutdown.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(url, proficiency, options, sock, log_level.lower()))


async def _run(
    url: str,
    proficiency: dict[str, float],
    options: dict[str, Any],
    sock: socket.socket,
    log_level: str,
) -> None:
    from offload.api.agent_service import serve_agent
    from offload.client.factory import connect
    from offload.core.registry import default_registry
    from offload.worker.push import PushWorker

    try:
        # connect() also registers the built-in task types next to --import's.
        client = await connect(url)
        if not proficiency:
            needed = {c for t in default_registry if t.executable for c in t.capabilities}
            proficiency = dict.fromkeys(sorted(needed), 1.0)
        worker = PushWorker(client, proficiency=proficiency, registry=default_registry, **options)
        stderr().print(
            f"offload agent {options['agent_id']} · {options['endpoint']} · server {url} · "
            f"capabilities {', '.join(f'{k}:{v:g}' for k, v in proficiency.items()) or 'none'}"
            f" · max concurrency {options['concurrency']}",
            markup=False,
            soft_wrap=True,
        )
        try:
            await serve_agent(worker, sock, log_level)
        finally:
            await client.close()
    finally:
        sock.close()
