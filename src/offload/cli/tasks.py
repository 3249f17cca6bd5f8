"""``offload task …``: create, inspect, follow and control tasks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from offload.cli.common import (
    DatabaseUrl,
    JsonOut,
    compact,
    dump,
    finish,
    human_age,
    human_duration,
    load_document,
    open_client,
    parse_json,
    parse_when,
    print_json,
    read_text,
    render_result,
    split_list,
    status_text,
    stderr,
    stdout,
    table,
    wait_for,
)
from offload.cli.errors import CliError

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.table import Table

    from offload.client.base import Client
    from offload.domain.models import Task, TaskEvent, TaskPage

app = typer.Typer(help="Create, inspect, follow and control tasks.", no_args_is_help=True)

TaskId = Annotated[str, typer.Argument(help="Task id.", metavar="ID", show_default=False)]

#: TaskSpec field -> the option that sets it, so validation errors name what to fix.
_OPTION_OF = {
    "type": "--type",
    "input": "--input",
    "title": "--title",
    "description": "DESCRIPTION",
    "tags": "--tag",
    "queue": "--queue",
    "priority": "--priority",
    "capabilities": "--capability",
    "depends_on": "--depends-on",
    "max_retries": "--max-retries",
    "timeout_s": "--timeout",
    "run_at": "--run-at",
    "deadline": "--deadline",
    "idempotency_key": "--idempotency-key",
    "review": "--review",
}


def _check_options(task_type: str, options: dict[str, Any]) -> None:
    """Validate the task options here, so a mistake names the CLI option (not a field)."""
    from pydantic import ValidationError

    from offload.domain.models import TaskSpec

    try:
        TaskSpec.model_validate({"type": task_type, **options})
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:3]:
            loc = err.get("loc", ())
            name = _OPTION_OF.get(str(loc[0]), str(loc[0])) if loc else "value"
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{name}: {msg}")
        raise CliError("; ".join(parts), code="invalid_input") from None


@app.command("create")
def create(
    *,
    task_type: Annotated[
        str,
        typer.Option(
            "--type",
            "-t",
            help="Task type, e.g. math.factorial (see `offload types`).",
            show_default=False,
        ),
    ],
    description: Annotated[
        str | None,
        typer.Argument(
            help="What to do; also the title when --title is absent.",
            metavar="DESCRIPTION",
            show_default=False,
        ),
    ] = None,
    priority: Annotated[
        str | None, typer.Option("--priority", "-p", help="low|normal|high|critical or 1-10.")
    ] = None,
    input_json: Annotated[
        str | None,
        typer.Option("--input", "-i", help="Input as a JSON object.", show_default=False),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input-file",
            help="Read the input from a JSON/YAML file ('-' = stdin).",
            show_default=False,
        ),
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Short title.")] = None,
    tags: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue name.")] = None,
    depends_on: Annotated[
        list[str] | None,
        typer.Option("--depends-on", help="Run after this task completes (repeatable)."),
    ] = None,
    run_at: Annotated[
        str | None, typer.Option("--run-at", help="Not before: ISO time or +10s/+5m/+2h.")
    ] = None,
    deadline: Annotated[
        str | None, typer.Option("--deadline", help="Give up after: ISO time or +1h.")
    ] = None,
    max_retries: Annotated[
        int | None, typer.Option("--max-retries", help="Retries after the first attempt.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Per-attempt time limit, seconds.")
    ] = None,
    capabilities: Annotated[
        list[str] | None,
        typer.Option("--capability", "-c", help="Required worker capability (repeatable)."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Create at most once per key.")
    ] = None,
    resources: Annotated[
        list[str] | None,
        typer.Option("--resource", help="Units held while running: gpu=1 (repeatable)."),
    ] = None,
    review: Annotated[
        str | None,
        typer.Option(
            "--review",
            help='Have the result reviewed by REVIEWER: an agent id, "capability:NAME" or '
            '"human" (see `offload review list`).',
            metavar="REVIEWER",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait for the result and print it.")
    ] = False,
    timeout_wait: Annotated[
        float | None, typer.Option("--timeout-wait", help="With --wait: give up after S seconds.")
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a task and print its id (with --wait, its result)."""
    if input_json is not None and input_file is not None:
        raise typer.BadParameter("use --input or --input-file, not both", param_hint="--input")
    input_data: Any = {}
    if input_json is not None:
        input_data = parse_json(input_json, option="--input")
    elif input_file is not None:
        input_data = load_document(input_file)
    options: dict[str, Any] = {}
    if description is not None:
        options["description"] = description
    if title is not None:
        options["title"] = title
    elif description is not None:
        options["title"] = (description.strip().splitlines() or [""])[0][:200]
    if priority is not None:
        options["priority"] = priority
    if tags:
        options["tags"] = list(tags)
    if queue is not None:
        options["queue"] = queue
    if depends_on:
        options["depends_on"] = split_list(depends_on)
    if run_at is not None:
        options["run_at"] = parse_when(run_at, option="--run-at")
    if deadline is not None:
        options["deadline"] = parse_when(deadline, option="--deadline")
    if max_retries is not None:
        options["max_retries"] = max_retries
    if timeout is not None:
        options["timeout_s"] = timeout
    if capabilities:
        options["capabilities"] = split_list(capabilities)
    if idempotency_key is not None:
        options["idempotency_key"] = idempotency_key
    if resources:
        options["resources"] = _parse_resources(resources)
    if review is not None:
        options["review"] = {"reviewer": review}
    _check_options(task_type, options)

    with open_client(database_url) as client:
        task = client.submit(task_type, input_data, **options)
        if not wait:
            if json_out:
                print_json(dump(task))
            else:
                print(task.id)
            return
        if not json_out:
            print(task.id, flush=True)
        finish(wait_for(client, task.id, timeout_wait), json_out=json_out)


@app.command("submit")
def submit_file(
    source: Annotated[
        Path,
        typer.Argument(
            help="Task specs: JSON Lines (one object per line, as for `POST /v1/tasks`) or "
            "one JSON array; '-' reads stdin.",
            metavar="FILE",
            show_default=False,
        ),
    ],
    in_flight: Annotated[
        int,
        typer.Option("--in-flight", min=1, max=8, help="Batches of 1,000 under way at once."),
    ] = 2,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create many tasks from a file: batches of 1,000, each all or none.

    Every task is checked before anything is sent. If a batch is refused, no further batch is sent and the error says which lines were created.
    """  # noqa: E501 (one paragraph of --help)
    from offload.domain.errors import OffloadError

    specs, places = _read_specs(source)
    with open_client(database_url) as client:
        try:
            # A bar only for a person watching: scripts and logs get the outcome alone.
            if json_out or not stderr().is_terminal:
                tasks = client.submit_all(specs, in_flight=in_flight)
            else:
                tasks = _submit_with_bar(client, specs, in_flight)
        except OffloadError as exc:
            raise _located(exc, source, places) from None
    if json_out:
        print_json({"created": len(tasks), "ids": [t.id for t in tasks]})
        return
    ids = tasks[0].id if len(tasks) == 1 else f"{tasks[0].id} … {tasks[-1].id}"
    plural = "s" if len(tasks) != 1 else ""
    stdout().print(f"created {len(tasks):,} task{plural} ({ids})", highlight=False)


def _read_specs(source: Path) -> tuple[list[Any], list[str]]:
    """The specs in ``source`` (validated) and where each is: "line 7" or "item 7"."""
    from offload.domain.errors import InvalidInput
    from offload.domain.models import TaskSpec, validated

    try:
        text = read_text(source)
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror or exc}", code="not_found") from None
    name = _source_name(source)
    items: list[tuple[str, Any]] = []
    if text.lstrip().startswith("["):
        data = parse_json(text, option=name, hint=None)
        items = [(f"item {number}", item) for number, item in enumerate(data, 1)]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                where = f"{name} line {number}"
                items.append((f"line {number}", parse_json(line, option=where, hint=None)))
    if not items:
        raise CliError(f"{name} holds no tasks", code="invalid_input")
    specs, places = [], []
    for place, item in items:
        try:
            specs.append(validated(TaskSpec, item))
        except InvalidInput as exc:
            raise CliError(f"{name} {place}: {exc.message}", code="invalid_input") from None
        places.append(place)
    return specs, places


def _source_name(source: Path) -> str:
    return "stdin" if str(source) == "-" else str(source)


def _submit_with_bar(client: Client, specs: list[Any], in_flight: int) -> list[Task]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "submitting", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=stderr()
    ) as progress:
        bar = progress.add_task("submit", total=len(specs))
        return client.submit_all(
            specs,
            in_flight=in_flight,
            progress=lambda done, _total: progress.update(bar, completed=done),
        )


def _located(exc: Any, source: Path, places: list[str]) -> CliError:
    """A refused batch's error in the file's terms: where the task is, what was created."""
    details = dict(exc.details)
    index = details.get("index")
    where = f" {places[index]}" if isinstance(index, int) and 0 <= index < len(places) else ""
    created = [(a, b) for a, b in details.get("created") or [] if 0 <= a < b <= len(places)]
    # "lines 1-1000, 2001-2500 were created" (or items, for a JSON array)
    spans = [places[a].split()[1] + (f"-{places[b - 1].split()[1]}" if b - a > 1 else "")
             for a, b in created]  # fmt: skip
    kind = places[0].split()[0]
    plural = len(created) > 1 or any(b - a > 1 for a, b in created)
    said = (
        f"{kind}{'s' if plural else ''} {', '.join(spans)} "
        f"{'were' if plural else 'was'} created, the others were not"
        if spans
        else "no task was created"
    )
    details["created_places"] = [[places[a], places[b - 1]] for a, b in created]
    reason = details.get("reason", exc.message)
    return CliError(
        f"{_source_name(source)}{where}: {reason} ({said})",
        code=exc.code,
        details=details,
        hint="submit only the tasks not created, or give the tasks idempotency keys and "
        "submit the whole file again"
        if spans
        else None,
    )


def _detail_table(task: Task) -> Table:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("id", task.id),
        ("type", task.type),
        ("title", task.title),
        ("status", status_text(task.status.value)),
        ("waiting on", task.waiting_on.value.replace("_", " ") if task.waiting_on else None),
        ("priority", str(task.priority)),
        ("queue", task.queue),
        ("attempt", f"{task.attempt} (max retries {task.max_retries})"),
        (
            "progress",
            f"{task.progress:.0f}%" + (f"  {task.current_step}" if task.current_step else ""),
        ),
        ("tags", ", ".join(task.tags) or None),
        ("capabilities", ", ".join(task.capabilities) or None),
        ("resources", ", ".join(f"{k}={v}" for k, v in task.resources.items()) or None),
        ("agent", task.assignment.agent_id if task.assignment else None),
        ("depends on", ", ".join(f"{d.task_id} ({d.on.value})" for d in task.depends_on) or None),
        ("parent", task.parent_id),
        ("children", ", ".join(task.children) or None),
        ("created", f"{task.created_at:%Y-%m-%d %H:%M:%S} UTC ({human_age(task.created_at)} ago)"),
        ("run at", f"{task.run_at:%Y-%m-%d %H:%M:%S} UTC" if task.run_at else None),
        ("deadline", f"{task.deadline:%Y-%m-%d %H:%M:%S} UTC" if task.deadline else None),
        ("started", f"{task.started_at:%Y-%m-%d %H:%M:%S} UTC" if task.started_at else None),
        ("finished", f"{task.finished_at:%Y-%m-%d %H:%M:%S} UTC" if task.finished_at else None),
        ("duration", human_duration(task.actual_duration_s) if task.actual_duration_s else None),
        ("description", task.description if task.description != task.title else None),
    ]
    if task.review is not None:
        r = task.review
        parts = [f"{r.status.value}, reviewer {r.reviewer}, round {r.rounds}/{r.max_rounds}"]
        if r.quality_score is not None:
            parts.append(f"score {r.quality_score:g}")
        if r.feedback:
            parts.append(f"feedback: {r.feedback}")
        rows.append(("review", "; ".join(parts)))
    if task.status.value in ("completed", "reviewing"):
        text = render_result(task.result)
        if len(text) > 2000:
            text = text[:2000] + "\n… (truncated; --json shows all)"
        rows.append(("result", text))
    if task.error is not None:
        rows.append(("error", f"{task.error.type}: {task.error.message}"))
    for label, value in rows:
        if value is not None and value != "":
            grid.add_row(label, value)
    return grid


@app.command("status")
def status(task_id: TaskId, json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
    """Show one task: status, progress, timing, result or error."""
    with open_client(database_url) as client:
        task = client.get(task_id)
    if json_out:
        print_json(dump(task))
    else:
        stdout().print(_detail_table(task))


def _list_filters(statuses: list[str] | None, **filters: Any) -> dict[str, Any]:
    from offload.domain.status import expand_statuses

    out = {k: v for k, v in filters.items() if v is not None}
    names = split_list(statuses)
    if names:
        expand_statuses(names)  # refuse an unknown status before touching the database
        out["status"] = names
    return out


def task_table(page: TaskPage, *, width: int) -> Table:
    """The task listing table; the title column only when the screen has room for it."""
    tbl = table(caption=f"showing {len(page.tasks)} of {page.total}")
    tbl.add_column("id", no_wrap=True, min_width=36)
    tbl.add_column("type", no_wrap=True, max_width=24)
    tbl.add_column("status", no_wrap=True)
    tbl.add_column("pri", justify="right", no_wrap=True)
    tbl.add_column("prog", justify="right", no_wrap=True)
    tbl.add_column("age", justify="right", no_wrap=True)
    with_title = width >= 110
    if with_title:
        tbl.add_column("title", no_wrap=True, overflow="ellipsis")
    for t in page.tasks:
        cells: list[Any] = [
            t.id,
            t.type,
            status_text(t.status.value),
            str(t.priority),
            f"{t.progress:.0f}%",
            human_age(t.created_at),
        ]
        if with_title:
            cells.append(compact(t.title or "", width - 100))
        tbl.add_row(*cells)
    return tbl


@app.command("list")
def list_tasks(
    *,
    statuses: Annotated[
        list[str] | None,
        typer.Option(
            "--status", "-s", help="Status or alias pending|active|done; repeatable or a,b."
        ),
    ] = None,
    task_type: Annotated[str | None, typer.Option("--type", "-t", help="Task type.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Tag.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Agent id.")] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="Workflow parent id.")] = None,
    search: Annotated[str | None, typer.Option("--search", help="Text in the title.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List tasks, newest first, with filters."""
    filters = _list_filters(
        statuses,
        type=task_type,
        tag=tag,
        queue=queue,
        agent_id=agent,
        parent_id=parent,
        search=search,
        limit=limit,
        offset=offset,
    )
    with open_client(database_url) as client:
        page = client.list(**filters)
    if json_out:
        print_json(dump(page))
    else:
        console = stdout()
        console.print(task_table(page, width=console.width))


def _event_line(event: TaskEvent) -> str:
    """What an event says, in a few words."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.kind == "log":
        level = str(data.get("level", "info"))
        return f"{level}: {data.get('message', '')}"
    if event.kind == "progress":
        parts = []
        if data.get("progress") is not None:
            parts.append(f"{float(data['progress']):.0f}%")
        if data.get("current_step"):
            parts.append(str(data["current_step"]))
        return " ".join(parts) or compact(event.data)
    if event.kind == "status_changed":
        before = data.get("from") or data.get("old")
        after = data.get("to") or data.get("status") or data.get("new")
        if after:
            return f"{before} → {after}" if before else f"→ {after}"
    if data:
        return compact(" ".join(f"{k}={_scalar(v)}" for k, v in data.items()))
    return "" if event.data in (None, {}, []) else compact(event.data)


def _scalar(value: Any) -> str:
    if isinstance(value, dict) and "type" in value and "message" in value:
        return f"{value['type']}: {value['message']}"  # an error
    if isinstance(value, str):
        return value if value and " " not in value else repr(value)
    return compact(value, 60)


@app.command("watch")
def watch(
    task_id: TaskId,
    json_out: Annotated[bool, typer.Option("--json", help="Stream events as JSON lines.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Follow a task live (progress bar, step, logs) until it finishes; print its result."""
    with open_client(database_url) as client:
        if json_out:
            import json

            def emit(ev: TaskEvent) -> None:
                sys.stdout.write(json.dumps(dump(ev), default=str) + "\n")
                sys.stdout.flush()

            task = _follow(client, client.get(task_id), emit, lambda t: None)
            if task.status.value != "completed":
                finish(task, json_out=False)  # raises with the reason
            return
        task = _watch_live(client, client.get(task_id))
    finish(task, json_out=False)


def _follow(
    client: Client,
    task: Task,
    on_event: Callable[[TaskEvent], None],
    on_task: Callable[[Task], None],
    poll_s: float = 5.0,
) -> Task:
    """Feed every event of ``task`` to ``on_event`` until it is terminal; return it then."""
    after = 0
    while True:
        events = [] if task.done else client.watch(task.id, after, timeout=poll_s)
        # Re-read the task each round: its status is exact even for event kinds we do not know.
        task = client.get(task.id)
        if task.done:  # the tail, without waiting
            events = [*events, *client.events(task.id, max([after, *(e.seq for e in events)]))]
        for ev in sorted(events, key=lambda e: e.seq):
            if ev.seq > after:
                on_event(ev)
                after = ev.seq
        on_task(task)
        if task.done:
            return task


def _watch_live(client: Client, task: Task) -> Task:
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    def label(t: Task) -> str:
        step = f" · {t.current_step}" if t.current_step else ""
        return f"{t.type} [{t.status.value}]{step}"

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=stdout(),
    ) as progress:
        bar = progress.add_task(label(task), total=100, completed=round(task.progress))

        def on_event(ev: TaskEvent) -> None:
            if ev.kind != "progress":
                progress.console.print(
                    f"{ev.at:%H:%M:%S} {ev.kind:<15} {_event_line(ev)}".rstrip(),
                    markup=False,
                    highlight=False,
                )

        def on_task(t: Task) -> None:
            done = 100.0 if t.status.value == "completed" else t.progress
            progress.update(bar, completed=done, description=label(t))

        return _follow(client, task, on_event, on_task)


@app.command("wait")
def wait_cmd(
    task_id: TaskId,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after S seconds.")
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Wait for a task to finish and print its result (exit 1 if it failed or was cancelled)."""
    with open_client(database_url) as client:
        task = wait_for(client, task_id, timeout)
    finish(task, json_out=json_out)


def _control_report(task: Task, verb: str, json_out: bool) -> None:
    if json_out:
        print_json(dump(task))
        return
    from rich.text import Text

    line = Text(f"{verb} {task.id}: now ")
    line.append_text(status_text(task.status.value))
    if task.cancel_requested and task.status.value != "cancelled":
        line.append(" (cancel requested; the worker stops it)")
    elif task.pause_requested and task.status.value != "paused":
        line.append(" (pause requested; the worker pauses it)")
    stdout().print(line)


@app.command("cancel")
def cancel(
    task_id: TaskId,
    reason: Annotated[str | None, typer.Option("--reason", help="Why; kept on the task.")] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Cancel a task (a running one is asked to stop)."""
    with open_client(database_url) as client:
        task = client.cancel(task_id, reason)
    _control_report(task, "cancelled", json_out)


@app.command("pause")
def pause(task_id: TaskId, json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
    """Pause a task until `offload task resume`."""
    with open_client(database_url) as client:
        task = client.pause(task_id)
    _control_report(task, "paused", json_out)


@app.command("resume")
def resume(task_id: TaskId, json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
    """Resume a paused task."""
    with open_client(database_url) as client:
        task = client.resume(task_id)
    _control_report(task, "resumed", json_out)


@app.command("retry")
def retry(task_id: TaskId, json_out: JsonOut = False, database_url: DatabaseUrl = None) -> None:
    """Queue a failed or cancelled task again with a fresh attempt budget."""
    with open_client(database_url) as client:
        task = client.retry(task_id)
    _control_report(task, "retried", json_out)


@app.command("logs")
def logs(
    task_id: TaskId,
    after: Annotated[int, typer.Option("--after", help="Only events after this seq.", min=0)] = 0,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000)] = 1000,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show a task's event log (status changes, progress, log lines…)."""
    with open_client(database_url) as client:
        client.get(task_id)  # a clear "not found" rather than an empty log
        events: list[TaskEvent] = client.events(task_id, after, limit)
    if json_out:
        print_json(dump(events))
        return
    tbl = table(caption=f"{len(events)} events")
    tbl.add_column("seq", justify="right", no_wrap=True)
    tbl.add_column("time (UTC)", no_wrap=True, min_width=12)
    tbl.add_column("kind", no_wrap=True, min_width=8)
    tbl.add_column("actor", no_wrap=True, max_width=24)
    tbl.add_column("details", overflow="fold")
    for ev in events:
        tbl.add_row(
            str(ev.seq), f"{ev.at:%H:%M:%S.%f}"[:-3], ev.kind, ev.actor or "", _event_line(ev)
        )
    stdout().print(tbl)


def _parse_resources(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in split_list(items):
        name, sep, units = item.partition("=")
        if not sep:
            units = "1"
        if not name or not units.strip().isdigit():
            raise typer.BadParameter(
                f"{item!r} is not NAME=UNITS, e.g. gpu=1", param_hint="--resource"
            )
        out[name.strip()] = int(units)
    return out
