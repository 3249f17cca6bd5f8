"""``offload serve``: the HTTP API, the reaper and an embedded worker in one process."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from offload.cli.common import DatabaseUrl, Imports, split_list, stderr, target_label

if TYPE_CHECKING:
    import socket

    from offload.api.config import ApiSettings


def serve(
    *,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            envvar="OFFLOAD_HOST",
            help="Address to listen on. Anything but loopback needs --auth.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", "-p", envvar="OFFLOAD_PORT", min=0, max=65535, help="0: any free port."
        ),
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            help="Concurrency of the embedded worker (tasks run at once). For more "
            "processes, run `offload worker --url …` next to it.",
        ),
    ] = 8,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API only; workers run elsewhere.")
    ] = False,
    auth: Annotated[
        bool | None,
        typer.Option(
            "--auth/--no-auth",
            help="Require bearer tokens (default: $OFFLOAD_AUTH, else off). Create tokens "
            "with `offload token create`.",
            show_default=False,
        ),
    ] = None,
    imports: Imports = None,
    lease_ttl: Annotated[
        float | None,
        typer.Option(
            "--lease-ttl",
            min=1.0,
            help="Embedded worker's lease length, seconds.",
            show_default=False,
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option("--grace", min=0.0, help="Shutdown grace for running tasks, seconds."),
    ] = 10.0,
    log_level: Annotated[
        str, typer.Option("--log-level", envvar="OFFLOAD_LOG_LEVEL", help="debug, info, warning")
    ] = "info",
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the REST API (and /docs), the live event stream, metrics, the reaper and an
    embedded worker until Ctrl-C / SIGTERM."""
    import asyncio
    import contextlib
    import logging

    from offload.api.config import ApiSettings
    from offload.api.server import check_bind, listen
    from offload.worker.runtime import load_imports

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    load_imports(split_list(imports) + split_list([os.environ.get("OFFLOAD_IMPORTS", "")]))
    settings = ApiSettings.from_env(
        auth=auth,
        worker_concurrency=0 if no_worker else workers,
        worker_grace_s=grace,
        worker_lease_ttl_s=lease_ttl,
        host=host,
    )
    check_bind(host, settings.auth)
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    worker_label = "no worker" if no_worker else f"embedded worker ×{workers}"
    auth_label = "auth on" if settings.auth else "auth off (loopback only)"
    stderr().print(
        f"offload serve · http://{shown_host}:{bound_port} (docs /docs) · database "
        f"{target_label(database_url)} · {auth_label} · {worker_label}",
        markup=False,
        soft_wrap=True,
    )
    # A second Ctrl-C while stopping skips the rest of the graceful shutdown.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(database_url, settings, sock, log_level, access_log))


async def _run(
    database_url: str | None,
    settings: ApiSettings,
    sock: socket.socket,
    log_level: str,
    access_log: bool,
) -> None:
    from offload.api.server import serve
    from offload.client.factory import open_service

    service = await open_service(database_url)
    try:
        await serve(service, settings, sock, log_level=log_level, access_log=access_log)
    finally:
        await service.store.close()
        sock.close()
