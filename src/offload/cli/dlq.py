"""``offload dlq …``: the dead-letter queue (tasks that failed for good)."""

from __future__ import annotations

from typing import Annotated

import typer

from offload.cli.common import (
    DatabaseUrl,
    JsonOut,
    compact,
    dump,
    human_age,
    open_client,
    print_json,
    stdout,
    table,
)
from offload.cli.errors import EXIT_ERROR, CliError, describe

app = typer.Typer(
    help="Inspect and retry failed tasks (the dead-letter queue).", no_args_is_help=True
)

#: retry_many handles at most this many tasks per call (the listing limit).
_RETRY_BATCH = 1000


@app.command("list")
def list_failed(
    *,
    task_type: Annotated[str | None, typer.Option("--type", "-t", help="Task type.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Tag.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue.")] = None,
    search: Annotated[str | None, typer.Option("--search", help="Text in the title.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List failed tasks with their error."""
    filters = {
        k: v
        for k, v in {"type": task_type, "tag": tag, "queue": queue, "search": search}.items()
        if v is not None
    }
    with open_client(database_url) as client:
        page = client.list(None, status=["failed"], limit=limit, offset=offset, **filters)
    if json_out:
        print_json(dump(page))
        return
    tbl = table(
        caption=f"showing {len(page.tasks)} of {page.total} failed tasks"
        + (" · `offload dlq retry ID` or `--all` runs them again" if page.total else ""),
    )
    tbl.add_column("id", no_wrap=True, min_width=36)
    tbl.add_column("type", no_wrap=True, min_width=12)
    tbl.add_column("error", no_wrap=True, style="red", min_width=8)
    tbl.add_column("message", overflow="fold", min_width=20)
    tbl.add_column("tries", justify="right", min_width=5)
    tbl.add_column("age", justify="right", min_width=4)
    for t in page.tasks:
        err = t.error
        tbl.add_row(
            t.id,
            t.type,
            err.type if err else "-",
            compact(err.message, 160) if err else "",
            str(t.attempt),
            human_age(t.finished_at or t.updated_at),
        )
    stdout().print(tbl)


@app.command("retry")
def retry(
    *,
    task_ids: Annotated[
        list[str] | None,
        typer.Argument(help="Failed task ids.", metavar="ID", show_default=False),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Retry every failed task (see filters).")
    ] = False,
    task_type: Annotated[str | None, typer.Option("--type", "-t", help="With --all: type.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="With --all: tag.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="With --all: queue.")] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Queue failed tasks again with a fresh attempt budget: IDs, or --all [--type T]."""
    if bool(task_ids) == all_:
        raise typer.BadParameter("give task ids or --all (not both)", param_hint="ID")
    if not all_ and (task_type or tag or queue):
        raise typer.BadParameter("--type/--tag/--queue go with --all", param_hint="--all")
    with open_client(database_url) as client:
        if all_:
            filters = {
                k: v
                for k, v in {"type": task_type, "tag": tag, "queue": queue}.items()
                if v is not None
            }
            tasks = client.retry_many(None, status=["failed"], limit=_RETRY_BATCH, **filters)
            if json_out:
                print_json(dump(tasks))
                return
            more = " (there may be more: run it again)" if len(tasks) >= _RETRY_BATCH else ""
            stdout().print(f"retried {len(tasks)} failed task(s){more}")
            return
        retried = []
        failures = 0
        for task_id in task_ids or []:
            # Go on after a bad id so one typo does not hide the others' outcome.
            try:
                retried.append(client.retry(task_id))
            except Exception as exc:
                described = describe(exc)
                if described is None:
                    raise
                failures += 1
                stdout_err = described[0]["message"]
                typer.echo(f"error: {stdout_err}", err=True)
                continue
            if not json_out:
                stdout().print(f"retried {task_id}: now {retried[-1].status.value}")
    if json_out:
        print_json(dump(retried))
    if failures:
        raise CliError(
            f"{failures} of {len(task_ids or [])} task(s) could not be retried",
            exit_code=EXIT_ERROR,
            code="partial_failure",
            reported=json_out,
        )
