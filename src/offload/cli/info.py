"""``offload stats`` and ``offload types``: what the queue holds and what it can run."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Annotated

import typer

from offload.cli.common import (
    DatabaseUrl,
    JsonOut,
    compact,
    dump,
    human_duration,
    open_client,
    print_json,
    status_text,
    stdout,
    table,
)

if TYPE_CHECKING:
    from offload.domain.models import TaskTypeInfo


def stats(json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
    """Counts by status and per-type figures (success rate, run and wait percentiles)."""
    from offload.domain.status import Status

    with open_client(database_url) as client:
        st = client.stats()
    if json_out:
        print_json(dump(st))
        return
    console = stdout()
    counts = table(title="tasks by status", caption=f"total {st.total}")
    counts.add_column("status")
    counts.add_column("count", justify="right")
    names = [s.value for s in Status] + sorted(set(st.counts) - {s.value for s in Status})
    for name in names:
        counts.add_row(status_text(name), str(st.counts.get(name, 0)))
    console.print(counts)
    if st.by_type:
        per_type = table(title="by type")
        per_type.add_column("type", no_wrap=True, min_width=12)
        for label in (
            "count",
            "done",
            "fail",
            "ok %",
            "run p50",
            "run p95",
            "wait p50",
            "wait p95",
        ):
            per_type.add_column(label, justify="right")
        for ts in st.by_type:
            rate = "-" if ts.success_rate is None else f"{ts.success_rate:.0%}"
            per_type.add_row(
                ts.type,
                str(ts.count),
                str(ts.completed),
                str(ts.failed),
                rate,
                human_duration(ts.run_p50_s),
                human_duration(ts.run_p95_s),
                human_duration(ts.wait_p50_s),
                human_duration(ts.wait_p95_s),
            )
        console.print(per_type)
    if st.agents:
        console.print("agents: " + ", ".join(f"{k} {v}" for k, v in sorted(st.agents.items())))


def types(
    name: Annotated[
        str | None,
        typer.Argument(help="Show one type in full (input schema…).", show_default=False),
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List the registered task types (or show one with its input schema)."""
    import json

    from rich.table import Table

    from offload.domain.errors import UnknownTaskType

    with open_client(database_url) as client:
        infos: list[TaskTypeInfo] = sorted(client.task_types(), key=lambda i: i.name)
    if name is not None:
        match = [i for i in infos if i.name == name]
        if not match:
            names = [i.name for i in infos]
            raise UnknownTaskType(name, difflib.get_close_matches(name, names, n=3, cutoff=0.5))
        info = match[0]
        if json_out:
            print_json(dump(info))
            return
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(overflow="fold")
        grid.add_row("name", info.name)
        grid.add_row("capabilities", ", ".join(info.capabilities) or "-")
        grid.add_row("executable", "yes" if info.executable else "no (external agents)")
        grid.add_row(
            "defaults",
            f"max retries {info.max_retries}, timeout "
            f"{human_duration(info.timeout_s)}, queue {info.queue}, version {info.version}",
        )
        grid.add_row("description", info.description or "-")
        grid.add_row("input schema", json.dumps(info.input_schema, indent=2))
        if info.output_schema:
            grid.add_row("output schema", json.dumps(info.output_schema, indent=2))
        stdout().print(grid)
        return
    if json_out:
        print_json(dump(infos))
        return
    tbl = table(caption=f"{len(infos)} task types · `offload types NAME` shows one")
    tbl.add_column("name", no_wrap=True, min_width=max([4, *(len(i.name) for i in infos)]))
    tbl.add_column("capabilities", no_wrap=True)
    tbl.add_column("exec", justify="center", no_wrap=True)
    tbl.add_column("description", overflow="fold")
    for info in infos:
        first = info.description.strip().splitlines()[0] if info.description.strip() else ""
        first = compact(first, 72)
        tbl.add_row(info.name, ", ".join(info.capabilities), "✓" if info.executable else "-", first)
    stdout().print(tbl)
