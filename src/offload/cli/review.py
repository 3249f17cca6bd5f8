"""``offload review list`` and ``offload task review ID``: the review stage from the shell."""

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
    split_list,
    status_text,
    stdout,
    table,
)
from offload.cli.errors import EXIT_USAGE, CliError

app = typer.Typer(help="Find results awaiting review.", no_args_is_help=True)


@app.command("list")
def list_reviews(
    *,
    reviewer: Annotated[
        str | None,
        typer.Option(
            "--reviewer",
            "-r",
            help='Agent id, "capability:NAME" or "human" (a registered agent also sees its '
            "capabilities' reviews).",
        ),
    ] = None,
    capabilities: Annotated[
        list[str] | None,
        typer.Option("--capability", "-c", help="Also reviews for capability:NAME (repeatable)."),
    ] = None,
    status: Annotated[
        str, typer.Option("--status", "-s", help="pending (awaiting a decision), passed, failed.")
    ] = "pending",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List tasks whose result awaits review (oldest first), or past reviews."""
    from pydantic import ValidationError

    from offload.domain.errors import InvalidInput
    from offload.domain.review import ReviewFilter

    try:
        flt = ReviewFilter.model_validate(
            {
                "reviewer": reviewer,
                "capabilities": split_list(capabilities),
                "status": status,
                "limit": limit,
                "offset": offset,
            }
        )
    except ValidationError:
        raise InvalidInput(
            f"unknown review status {status!r}; use pending, passed or failed", field="status"
        ) from None
    with open_client(database_url) as client:
        page = client.list_reviews(flt)
    if json_out:
        print_json(dump(page))
        return
    console = stdout()
    tbl = table(caption=f"showing {len(page.tasks)} of {page.total}")
    tbl.add_column("id", no_wrap=True, min_width=36)
    tbl.add_column("type", no_wrap=True, max_width=24)
    tbl.add_column("status", no_wrap=True)
    tbl.add_column("reviewer", no_wrap=True, max_width=30)
    tbl.add_column("round", justify="right", no_wrap=True)
    tbl.add_column("by agent", no_wrap=True, max_width=24)
    tbl.add_column("waiting", justify="right", no_wrap=True)
    tbl.add_column("result", overflow="ellipsis", no_wrap=True)
    for t in page.tasks:
        review = t.review
        assert review is not None  # listed because it has one
        tbl.add_row(
            t.id,
            t.type,
            status_text(t.status.value),
            review.reviewer or "",
            f"{review.rounds + (1 if t.status.value == 'reviewing' else 0)}/{review.max_rounds}",
            review.agent_id or "",
            human_age(review.requested_at),
            compact(t.result, max(20, console.width - 150)),
        )
    console.print(tbl)


def review_task(
    task_id: Annotated[str, typer.Argument(help="Task id.", metavar="ID", show_default=False)],
    *,
    approve: Annotated[bool, typer.Option("--approve", help="Accept the result.")] = False,
    reject: Annotated[
        bool, typer.Option("--reject", help="Send it back for another attempt.")
    ] = False,
    feedback: Annotated[
        str | None,
        typer.Option(
            "--feedback", "-f", help="What is good or what to fix (the next attempt sees it)."
        ),
    ] = None,
    score: Annotated[
        float | None, typer.Option("--score", help="Quality score, 0 to 1.", min=0.0, max=1.0)
    ] = None,
    exclude_previous_agent: Annotated[
        bool | None,
        typer.Option(
            "--exclude-previous-agent/--same-agent-ok",
            help="On reject: keep the agent that did this attempt off the next one "
            "(default: the task's review setting).",
            show_default=False,
        ),
    ] = None,
    reviewer: Annotated[
        str | None, typer.Option("--reviewer", "-r", help="Who decides (for the record).")
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Approve or reject the result of a task in `reviewing`."""
    if approve == reject:
        raise CliError(
            "give exactly one of --approve or --reject",
            hint="e.g. offload task review ID --reject --feedback 'cite sources'",
            exit_code=EXIT_USAGE,
            code="usage",
        )
    with open_client(database_url) as client:
        task = client.review(
            task_id,
            "approve" if approve else "reject",
            feedback=feedback,
            quality_score=score,
            exclude_previous_agent=exclude_previous_agent,
            reviewer=reviewer,
        )
    if json_out:
        print_json(dump(task))
        return
    from rich.text import Text

    line = Text(f"{'approved' if approve else 'rejected'} {task.id}: now ")
    line.append_text(status_text(task.status.value))
    if task.error is not None and task.status.value == "failed":
        line.append(f" ({task.error.type}: {task.error.message})")
    stdout().print(line)
