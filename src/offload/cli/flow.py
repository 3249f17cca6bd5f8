"""``offload limit …`` and ``offload resource …``: flow control (PRODUCT.md §4.8).

Limits and resources live in the database, so every worker and server enforces the ones
set here (against a server when ``$OFFLOAD_URL`` is set, admin token).
"""

from __future__ import annotations

from typing import Annotated

import typer

from offload.cli.common import DatabaseUrl, JsonOut, dump, open_client, print_json, stdout, table
from offload.cli.errors import CliError

limit_app = typer.Typer(
    help="Concurrency and rate limits per task type (enforced by every claim).",
    no_args_is_help=True,
)
cache_app = typer.Typer(help="The result cache (tasks with cache_ttl_s).", no_args_is_help=True)
resource_app = typer.Typer(
    help="Named resources with capacities (tasks declare resources: {NAME: units}).",
    no_args_is_help=True,
)


@limit_app.command("set")
def limit_set(
    task_type: Annotated[str, typer.Argument(help="Task type, e.g. api.call.")],
    *,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Max running at once.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", "-k", help="Limit per value of this input path: input.user_id."),
    ] = None,
    rate: Annotated[
        str | None, typer.Option("--rate", "-r", help="Max starts per period: 100/m, 5/s, 1000/h.")
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(help="Over the concurrency limit: queue, cancel_newest, cancel_in_progress."),
    ] = "queue",
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Set (replace) a task type's limits."""
    from offload.domain.flow import LimitSpec

    if concurrency is None and rate is None:
        raise CliError("give --concurrency and/or --rate", hint="e.g. --concurrency 2 --rate 10/s")
    spec = LimitSpec.model_validate(
        {"concurrency": concurrency, "concurrency_key": key, "rate_limit": rate,
         "strategy": strategy}
    )  # fmt: skip
    with open_client(database_url) as client:
        lim = client.set_limit(task_type, spec)
    if json_out:
        print_json(dump(lim))
        return
    stdout().print(f"limits of [bold]{lim.type}[/]: {_describe(lim)}")


@limit_app.command("list")
def limit_list(json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
    """Every task type's limits."""
    with open_client(database_url) as client:
        limits = client.list_limits()
    if json_out:
        print_json([dump(lim) for lim in limits])
        return
    tbl = table(caption=f"{len(limits)} limited task types")
    for col in ("type", "concurrency", "per key", "rate", "strategy"):
        tbl.add_column(col, no_wrap=True)
    for lim in limits:
        tbl.add_row(
            lim.type,
            str(lim.concurrency or "—"),
            lim.concurrency_key or "—",
            lim.rate_limit or "—",
            lim.strategy.value,
        )
    stdout().print(tbl)


@limit_app.command("remove")
def limit_remove(
    task_type: Annotated[str, typer.Argument(help="Task type.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a task type's limits (its queued tasks run freely at once)."""
    with open_client(database_url) as client:
        client.delete_limit(task_type)
    stdout().print(f"removed the limits of {task_type}")


@resource_app.command("set")
def resource_set(
    name: Annotated[str, typer.Argument(help="Resource name, e.g. gpu.")],
    capacity: Annotated[int, typer.Argument(min=0, help="Units available at once.")],
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a resource or change its capacity."""
    with open_client(database_url) as client:
        res = client.set_resource(name, capacity)
    if json_out:
        print_json(dump(res))
        return
    stdout().print(f"resource [bold]{res.name}[/]: capacity {res.capacity}, {res.in_use} in use")


@resource_app.command("list")
def resource_list(json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
    """Resources with units in use and tasks waiting."""
    with open_client(database_url) as client:
        resources = client.list_resources()
    if json_out:
        print_json([dump(r) for r in resources])
        return
    tbl = table(caption=f"{len(resources)} resources")
    for col in ("name", "capacity", "in use", "waiting"):
        tbl.add_column(col, no_wrap=True)
    for r in resources:
        tbl.add_row(r.name, str(r.capacity), str(r.in_use), str(r.waiting))
    stdout().print(tbl)


@resource_app.command("remove")
def resource_remove(
    name: Annotated[str, typer.Argument(help="Resource name.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a resource (refused while unfinished tasks need it)."""
    with open_client(database_url) as client:
        client.delete_resource(name)
    stdout().print(f"removed resource {name}")


def _describe(lim: object) -> str:
    from offload.domain.flow import Limit

    assert isinstance(lim, Limit)
    parts = []
    if lim.concurrency is not None:
        per = f" per {lim.concurrency_key}" if lim.concurrency_key else ""
        parts.append(f"{lim.concurrency} at once{per} ({lim.strategy.value})")
    if lim.rate_limit is not None:
        parts.append(f"at most {lim.rate_limit}")
    return ", ".join(parts)


def add_queue_commands(queue_app: typer.Typer) -> None:
    """Register ``offload queue set|list`` on the ``queue`` command group."""

    @queue_app.command("set")
    def queue_set(
        queue: Annotated[str, typer.Argument(help="Queue name.")],
        *,
        fairness: Annotated[
            str,
            typer.Option(help="owner: alternate across owners at equal priority; none: FIFO."),
        ] = "owner",
        json_out: JsonOut = False,
        database_url: DatabaseUrl = None,
    ) -> None:
        """Set a queue's options."""
        with open_client(database_url) as client:
            out = client.set_queue_settings(queue, fairness=fairness)
        if json_out:
            print_json(dump(out))
            return
        stdout().print(f"queue [bold]{out.queue}[/]: fairness {out.fairness.value}")

    @queue_app.command("list")
    def queue_list(json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
        """Queues with options set."""
        with open_client(database_url) as client:
            queues = client.list_queue_settings()
        if json_out:
            print_json([dump(q) for q in queues])
            return
        tbl = table(caption=f"{len(queues)} queues with options")
        tbl.add_column("queue", no_wrap=True)
        tbl.add_column("fairness", no_wrap=True)
        for q in queues:
            tbl.add_row(q.queue, q.fairness.value)
        stdout().print(tbl)


@cache_app.command("clear")
def cache_clear(
    task_type: Annotated[
        str | None, typer.Option("--type", "-t", help="Only this task type's results.")
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Drop cached results, so the next submits run again."""
    with open_client(database_url) as client:
        removed = client.clear_cache(task_type)
    if json_out:
        print_json({"removed": removed})
        return
    what = f"{task_type} " if task_type else ""
    stdout().print(f"removed {removed} cached {what}result{'s' if removed != 1 else ''}")
