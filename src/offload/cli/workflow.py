"""``offload workflow …``: submit a DAG of tasks from a YAML or JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from offload.cli.common import (
    DatabaseUrl,
    JsonOut,
    dump,
    finish,
    load_document,
    open_client,
    print_json,
    status_text,
    stdout,
    table,
    wait_for,
)
from offload.cli.errors import CliError

app = typer.Typer(
    help="Submit and follow workflows (a parent task and a DAG of children).", no_args_is_help=True
)


@app.command("submit")
def submit(
    file: Annotated[
        Path,
        typer.Argument(
            help="Workflow file (.yaml/.yml/.json; '-' = stdin): "
            "{title, tasks: [{ref, type, input, depends_on: [ref…]}]}.",
            metavar="FILE",
            show_default=False,
        ),
    ],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait and print the results.")] = False,
    timeout_wait: Annotated[
        float | None, typer.Option("--timeout-wait", help="With --wait: give up after S seconds.")
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a workflow; print the parent id and its children."""
    from offload.domain.models import WorkflowSpec

    document = load_document(file)
    if not isinstance(document, dict):
        raise CliError(
            f"{file}: a workflow is a mapping with `tasks: [...]`, not a {type(document).__name__}",
            code="invalid_input",
        )
    spec = WorkflowSpec.model_validate(document)
    with open_client(database_url) as client:
        parent = client.submit_workflow(spec)
        # Ids are time-ordered: sorting by id lists children in the file's order.
        children = sorted(client.list(parent_id=parent.id, limit=1000).tasks, key=lambda t: t.id)
        if wait:
            if not json_out:
                _print_created(parent.id, children)
            finish(wait_for(client, parent.id, timeout_wait), json_out=json_out)
            return
    if json_out:
        print_json({"parent": dump(parent), "children": dump(children)})
    else:
        _print_created(parent.id, children)


def _print_created(parent_id: str, children: list[Any]) -> None:
    print(parent_id, flush=True)
    tbl = table(caption=f"workflow {parent_id}: {len(children)} tasks")
    tbl.add_column("ref", no_wrap=True, min_width=3)
    tbl.add_column("id", no_wrap=True, min_width=36)
    tbl.add_column("type", no_wrap=True, min_width=12)
    tbl.add_column("status", no_wrap=True, min_width=9)
    tbl.add_column("depends on")
    refs = {c.id: c.ref or c.id for c in children}
    for c in children:
        deps = ", ".join(refs.get(d.task_id, d.task_id) for d in c.depends_on)
        tbl.add_row(c.ref or "-", c.id, c.type, status_text(c.status.value), deps)
    stdout().print(tbl)
