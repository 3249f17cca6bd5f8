"""``offload worker``: claim and run tasks from this process."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from offload.cli.common import DatabaseUrl, Imports, open_client, split_list, stderr, target_label


def worker(
    *,
    imports: Imports = None,
    capabilities: Annotated[
        list[str] | None,
        typer.Option(
            "--capabilities",
            "-c",
            help="Capabilities to claim for, e.g. math,data (default: all it can run).",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Tasks at once.")] = 8,
    queues: Annotated[
        list[str] | None, typer.Option("--queues", "-q", help="Queues to serve (comma list).")
    ] = None,
    lease_ttl: Annotated[
        float | None,
        typer.Option(
            "--lease-ttl",
            min=1.0,
            help="Lease length, seconds (default $OFFLOAD_LEASE_TTL or 30).",
            show_default=False,
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", min=0.0, help="Shutdown grace period, seconds.")
    ] = 30.0,
    name: Annotated[str | None, typer.Option("--name", help="Worker (agent) name.")] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Work for this server (http://host:8000; token in $OFFLOAD_TOKEN) instead "
            "of a database. Default: $OFFLOAD_URL, unless --database-url is given.",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run a worker: claim tasks and run their handlers until Ctrl-C / SIGTERM."""
    if url:
        # open_client talks to $OFFLOAD_URL when no database is named.
        os.environ["OFFLOAD_URL"] = url
        database_url = None
    from offload.core.heap import freeze_startup_heap
    from offload.core.registry import default_registry
    from offload.worker.runtime import Worker, load_imports

    # Unimportable modules raise InvalidInput, reported as one line by main().
    load_imports(split_list(imports) + split_list([os.environ.get("OFFLOAD_IMPORTS", "")]))
    caps = split_list(capabilities) or None
    queue_names = split_list(queues) or ["default"]
    with open_client(database_url) as client:
        runner = Worker(
            client,
            registry=default_registry,
            capabilities=caps,
            concurrency=concurrency,
            queues=queue_names,
            lease_ttl_s=lease_ttl,
            grace_s=grace,
            name=name,
        )
        n_types = len(default_registry.executable_names())
        caps_label = ", ".join(caps) if caps else f"those its {n_types} task types need"
        stderr().print(
            f"offload worker {runner.name} · database {target_label(database_url)}"
            f" · capabilities {caps_label} · concurrency {concurrency}"
            f" · queues {', '.join(queue_names)}",
            markup=False,
            soft_wrap=True,
        )
        freeze_startup_heap()
        runner.run()
