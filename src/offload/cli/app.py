"""The ``offload`` command: the root Typer app and ``main()``, the console-script entry point.

Every expected error is turned into one ``error: …`` line on stderr in :func:`main`
(plus a hint line when there is one); exit code 1 for user errors, 2 for usage errors.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from offload.cli import (
    admin,
    agent_serve,
    agents,
    dlq,
    flow,
    info,
    mcp_cmd,
    review,
    schedule,
    tasks,
    workflow,
)
from offload.cli import serve as serve_cmd
from offload.cli import token as token_cmd
from offload.cli import worker as worker_cmd
from offload.cli.common import DATABASE_URL_ENV, print_json
from offload.cli.errors import describe

app = typer.Typer(
    name="offload",
    help="Offload: a durable task queue for AI agents. Talks to $OFFLOAD_URL when set, "
    "else to the local database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
tasks.app.command("review")(review.review_task)
app.add_typer(tasks.app, name="task")
app.add_typer(review.app, name="review")
app.add_typer(workflow.app, name="workflow")
app.add_typer(dlq.app, name="dlq")
app.add_typer(flow.limit_app, name="limit")
app.add_typer(flow.resource_app, name="resource")
app.add_typer(flow.cache_app, name="cache")
app.add_typer(schedule.app, name="schedule")
app.add_typer(agents.app, name="agent")
agents.app.command("serve")(agent_serve.agent_serve)
flow.add_queue_commands(agents.queue_app)
app.add_typer(agents.queue_app, name="queue")
app.add_typer(admin.db_app, name="db")
app.command("stats")(info.stats)
app.command("types")(info.types)
app.command("worker")(worker_cmd.worker)
app.command("serve")(serve_cmd.serve)
app.command("mcp")(mcp_cmd.mcp)
app.add_typer(token_cmd.app, name="token")
app.command("bench")(admin.bench)


def _version(value: bool) -> None:
    if value:
        from offload import __version__

        print(f"offload {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help=f"Database for every command (same as ${DATABASE_URL_ENV}).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Offload: a durable task queue for AI agents."""
    if database_url:
        # Commands read their --database-url default from the environment, so setting it
        # here makes `offload --database-url X task list` and `task list --database-url X`
        # equivalent (the command's own flag still wins).
        os.environ[DATABASE_URL_ENV] = database_url


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (the console script exits with it)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="offload")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except Exception as exc:
        described = describe(exc)
        if described is None:
            raise
        body, hint, exit_code = described
        reported = getattr(exc, "reported", False)
        if "--json" in args and not reported:
            print_json({"error": body})
        sys.stdout.flush()
        print(f"error: {body['message']}", file=sys.stderr)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
