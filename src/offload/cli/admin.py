"""``offload db upgrade`` and ``offload bench``."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Annotated

import typer

from offload.cli.common import DatabaseUrl
from offload.cli.errors import EXIT_USAGE, CliError

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply pending schema migrations."""
    from offload.client.factory import upgrade_database
    from offload.domain.settings import default_database_url

    version = upgrade_database(database_url or default_database_url())
    print(f"database at version {version}")


def bench(
    tasks: Annotated[
        int, typer.Option("--tasks", min=1, help="Tasks for the throughput run.")
    ] = 20000,
    latency_samples: Annotated[
        int, typer.Option("--latency-samples", min=1, help="Round trips for the latency run.")
    ] = 200,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Worker concurrency (async no-op tasks).")
    ] = 64,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    case: Annotated[
        str,
        typer.Option(
            "--case",
            help="plain, or limits: unlimited vs a concurrency and a rate limit that do not "
            "bind (ratios; target >= 80%).",
        ),
    ] = "plain",
    http: Annotated[
        bool,
        typer.Option(
            "--http",
            help="Submit latency and bulk submit over HTTP against a real `offload serve`.",
        ),
    ] = False,
    database_url: Annotated[
        str | None,
        # No $OFFLOAD_DATABASE_URL here: the benchmark writes thousands of tasks, so it only
        # touches a real database when asked by name.
        typer.Option(
            "--database-url",
            help="Database to benchmark (default: a fresh temporary SQLite file).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Measure throughput and latency (PRODUCT.md §10) and print a table."""
    if http:
        from offload.bench.http import main as http_main

        http_figures = http_main(
            samples=2000, bulk_tasks=tasks, database_url=database_url or None, as_json=json_out
        )
        if http_figures.get("bulk_verified") is False:
            raise CliError(
                "the HTTP benchmark's tasks did not verify", code="bench_unverified",
                reported=json_out,
            )  # fmt: skip
        return
    if importlib.util.find_spec("offload.bench") is None:
        raise CliError(
            "the benchmark (offload.bench) is not part of this installation",
            exit_code=EXIT_USAGE,
            code="unavailable",
        )
    bench_module = importlib.import_module("offload.bench")
    if case == "limits":
        data = bench_module.limits_main(
            tasks=tasks, database_url=database_url or None, as_json=json_out,
            concurrency=concurrency,
        )  # fmt: skip
        if not all(c["verified"] for c in data["cases"].values()):
            raise CliError(
                "the benchmark's results did not verify", code="bench_unverified",
                reported=json_out,
            )  # fmt: skip
        return
    if case != "plain":
        raise CliError(f"unknown --case {case!r}", hint="use plain or limits", exit_code=EXIT_USAGE)
    figures = bench_module.main(
        tasks=tasks,
        latency_samples=latency_samples,
        database_url=database_url or None,
        as_json=json_out,
        concurrency=concurrency,
    )
    if isinstance(figures, dict) and figures.get("verified") is False:
        raise CliError(
            "the benchmark's results did not verify", code="bench_unverified", reported=json_out
        )
