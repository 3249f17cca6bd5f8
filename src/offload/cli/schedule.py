"""``offload schedule add|list|remove|pause|resume``: tasks on a timetable (§4.9)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from offload.cli.common import (
    DatabaseUrl,
    JsonOut,
    dump,
    human_age,
    open_client,
    parse_json,
    print_json,
    stdout,
    table,
)
from offload.cli.errors import CliError

app = typer.Typer(
    help="Schedules: create tasks by cron or at a fixed interval.", no_args_is_help=True
)

Ident = Annotated[str, typer.Argument(help="Schedule name or id.")]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A name for the schedule.")],
    *,
    task_type: Annotated[str, typer.Option("--type", "-t", help="Task type to create.")],
    input_json: Annotated[
        str | None, typer.Option("--input", "-i", help="Task input as a JSON object.")
    ] = None,
    cron: Annotated[
        str | None, typer.Option("--cron", help="Cron expression, e.g. '*/5 * * * *'.")
    ] = None,
    every: Annotated[
        float | None, typer.Option("--every", min=1, help="Fire every SECONDS instead.")
    ] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="IANA timezone for --cron.")] = "UTC",
    catchup: Annotated[
        str, typer.Option(help="Firings missed while down: skip, one or all.")
    ] = "skip",
    priority: Annotated[str | None, typer.Option("--priority", "-p")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a schedule."""
    if (cron is None) == (every is None):
        raise CliError("give exactly one of --cron or --every", hint="e.g. --every 60")
    task: dict[str, Any] = {}
    if priority is not None:
        task["priority"] = priority
    if queue is not None:
        task["queue"] = queue
    options: dict[str, Any] = {"timezone": timezone, "catchup": catchup, "task": task}
    if cron is not None:
        options["cron"] = cron
    else:
        options["every_s"] = every
    data = parse_json(input_json, option="--input") if input_json is not None else {}
    with open_client(database_url) as client:
        sch = client.create_schedule(name, task_type, data, **options)
    if json_out:
        print_json(dump(sch))
        return
    nxt = f"{sch.next_fire_at:%Y-%m-%d %H:%M:%S} UTC"
    stdout().print(f"schedule [bold]{sch.name}[/] ({sch.id}): {_when(sch)}; next {nxt}")


@app.command("list")
def list_(json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
    """Schedules with their timetable and next firing."""
    with open_client(database_url) as client:
        schedules = client.list_schedules()
    if json_out:
        print_json([dump(s) for s in schedules])
        return
    tbl = table(caption=f"{len(schedules)} schedules")
    for col in ("name", "task type", "when", "catch-up", "next (UTC)", "last fired", "state"):
        tbl.add_column(col, no_wrap=True)
    for s in schedules:
        tbl.add_row(
            s.name, s.task.type, _when(s), s.catchup.value,
            f"{s.next_fire_at:%Y-%m-%d %H:%M:%S}",
            f"{human_age(s.last_fired_at)} ago" if s.last_fired_at else "—",
            "paused" if s.paused else "active",
        )  # fmt: skip
    stdout().print(tbl)


@app.command("remove")
def remove(ident: Ident, database_url: DatabaseUrl = None) -> None:
    """Remove a schedule (tasks it created stay)."""
    with open_client(database_url) as client:
        sch = client.delete_schedule(ident)
    stdout().print(f"removed schedule {sch.name}")


@app.command("pause")
def pause(ident: Ident, database_url: DatabaseUrl = None) -> None:
    """Pause a schedule."""
    with open_client(database_url) as client:
        sch = client.pause_schedule(ident, True)
    stdout().print(f"paused schedule {sch.name}")


@app.command("resume")
def resume(ident: Ident, database_url: DatabaseUrl = None) -> None:
    """Resume a schedule from its next firing time."""
    with open_client(database_url) as client:
        sch = client.pause_schedule(ident, False)
    stdout().print(f"resumed schedule {sch.name}; next {sch.next_fire_at:%Y-%m-%d %H:%M:%S} UTC")


def _when(s: Any) -> str:
    if s.cron is not None:
        return f"cron {s.cron}" + (f" ({s.timezone})" if s.timezone != "UTC" else "")
    return f"every {s.every_s:g}s"
