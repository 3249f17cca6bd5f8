"""Shared CLI pieces: common options, opening the client, parsing and rendering helpers.

Heavy imports (rich, pydantic models, the client) happen inside functions so
``offload --help`` starts fast and never opens a database.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from offload.cli.errors import CliError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from offload.client.base import Client
    from offload.domain.models import Task

DATABASE_URL_ENV = "OFFLOAD_DATABASE_URL"

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar=DATABASE_URL_ENV,
        show_envvar=True,
        help="Database to use, e.g. sqlite:///path/offload.db or postgresql://…",
        show_default=False,
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
#: ``--import MODULE``: the user's modules that define ``@offload.task`` types.
Imports = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        "-I",
        help="Module defining task types (repeatable); also $OFFLOAD_IMPORTS (comma list).",
        show_default=False,
    ),
]

STATUS_STYLES: dict[str, str] = {
    "blocked": "dim",
    "scheduled": "cyan",
    "queued": "blue",
    "assigned": "magenta",
    "running": "yellow",
    "reviewing": "magenta",
    "paused": "dim yellow",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "dim red",
}


# -- client ----------------------------------------------------------------------------


@contextmanager
def open_client(database_url: str | None) -> Iterator[Client]:
    """A :class:`offload.Client` for one command, closed afterwards.

    ``OFFLOAD_URL``/``OFFLOAD_TOKEN`` select a server; otherwise the database
    (``--database-url``, ``$OFFLOAD_DATABASE_URL`` or the default embedded file).
    """
    from offload.client.base import Client

    imports = split_list([os.environ.get("OFFLOAD_IMPORTS", "")])
    if imports:
        # User task types must be known where tasks are submitted, not only in the worker.
        from offload.worker.runtime import load_imports

        load_imports(imports)
    token = os.environ.get("OFFLOAD_TOKEN") or None
    if database_url and database_url != os.environ.get(DATABASE_URL_ENV):
        # An explicit --database-url beats $OFFLOAD_URL: the user named a database.
        client = Client(token=token, database_url=database_url)
    else:
        client = Client(
            os.environ.get("OFFLOAD_URL") or None, token=token, database_url=database_url or None
        )
    try:
        yield client
    finally:
        client.close()


def target_label(database_url: str | None) -> str:
    """Where commands go, for banners; passwords masked."""
    server = os.environ.get("OFFLOAD_URL")
    if server:
        return server
    if not database_url:
        from offload.domain.settings import default_database_url

        database_url = default_database_url()
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", database_url)


# -- parsing -----------------------------------------------------------------------------


def split_list(values: Iterable[str] | None) -> list[str]:
    """Flatten repeatable options that may also hold comma lists: ``-s a,b -s c``."""
    out: list[str] = []
    for value in values or ():
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def read_text(path: Path) -> str:
    """Contents of ``path``, or stdin for ``-``."""
    if str(path) == "-":
        return sys.stdin.read()
    return path.read_text(encoding="utf-8")


_SHELL_HINT = """quote it for the shell, e.g. --input '{"n": 10}'"""


def parse_json(text: str, *, option: str, hint: str | None = _SHELL_HINT) -> Any:
    """Decode JSON given on the command line (or read from a file: ``hint=None``), naming
    the option or place when it is malformed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{option} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            hint=hint,
            code="invalid_json",
        ) from None


def load_document(path: Path) -> Any:
    """A JSON or YAML file (by extension; YAML when unsure, which also reads JSON)."""
    text = read_text(path)
    if path.suffix.lower() == ".json":
        return parse_json(text, option=str(path))
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CliError(f"{path} is not valid YAML: {problem}{where}", code="invalid_yaml") from None


_REL_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_REL_WHOLE = re.compile(r"^\+?\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(value: str, *, option: str, now: datetime | None = None) -> datetime:
    """An instant: ISO 8601 (local unless it has an offset) or ``+10s``, ``+5m``, ``+1h30m``."""
    text = value.strip().lower()
    now = now or datetime.now(UTC)
    if text == "now":
        return now
    if _REL_WHOLE.match(text):
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _REL_PART.findall(text))
        return now + timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CliError(
            f"{option} {value!r} is not a time",
            hint="use ISO 8601 (2030-01-31T09:00, local time unless an offset is given) "
            "or a relative time like +10s, +5m, +2h, +1d",
            code="invalid_input",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # naive means the user's local time
    return parsed.astimezone(UTC)


# -- output -----------------------------------------------------------------------------


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout (no colour, never wrapped)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def dump(model: Any) -> Any:
    """A pydantic model (or list of them) as JSON-ready data."""
    if isinstance(model, list):
        return [dump(m) for m in model]
    return model.model_dump(mode="json")


#: Width for output that is not a terminal (pipes, files, tests): wide enough for ids.
PIPE_WIDTH = 160


def stdout() -> Console:
    """A Rich console on stdout (wide when piped, so tables keep whole ids)."""
    from rich.console import Console

    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(highlight=False, width=PIPE_WIDTH if piped else None)


def table(**kwargs: Any) -> Table:
    """A Rich table in the CLI's house style (light borders, left caption)."""
    from rich import box
    from rich.table import Table

    kwargs.setdefault("box", box.SIMPLE_HEAD)
    kwargs.setdefault("caption_justify", "left")
    kwargs.setdefault("pad_edge", False)
    kwargs.setdefault("collapse_padding", True)
    return Table(**kwargs)


def stderr() -> Console:
    """A Rich console on stderr (banners, notices)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def status_text(status: str) -> Text:
    """A status name in its colour."""
    from rich.text import Text

    return Text(status, style=STATUS_STYLES.get(status, ""))


def human_age(at: datetime | None, now: datetime | None = None) -> str:
    """``12s``, ``5m``, ``3h``, ``2d`` since ``at``."""
    if at is None:
        return "-"
    seconds = max(0.0, ((now or datetime.now(UTC)) - at).total_seconds())
    return human_duration(seconds, coarse=True)


def human_duration(seconds: float | None, *, coarse: bool = False) -> str:
    """A duration for people: ``850 ms``, ``4.2 s``, ``3m 10s``, ``2h 5m``."""
    if seconds is None:
        return "-"
    if coarse:
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{int(seconds // size)}{unit}"
        return f"{int(seconds)}s"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m"


def compact(data: Any, limit: int = 120) -> str:
    """One-line JSON of ``data``, shortened to ``limit`` characters."""
    text = data if isinstance(data, str) else json.dumps(data, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_result(result: Any) -> str:
    """A result as text: scalars plain, objects and lists as indented JSON."""
    if isinstance(result, str):
        return result
    if isinstance(result, dict | list):
        return json.dumps(result, indent=2, ensure_ascii=False, default=str)
    return json.dumps(result, default=str)


#: How long a waited-for task may sit queued before the CLI checks that a worker runs.
IDLE_HINT_AFTER_S = 3.0


def wait_for(client: Client, task_id: str, timeout: float | None) -> Task:
    """``client.wait``, saying on stderr (once) when the task sits queued and no worker is
    running: a new user who forgot ``offload worker`` otherwise waits in silence."""
    import time

    from offload.domain.errors import OffloadError, WaitTimeout

    first = IDLE_HINT_AFTER_S if timeout is None else min(IDLE_HINT_AFTER_S, timeout)
    start = time.monotonic()
    try:
        return client.wait(task_id, timeout=first)
    except WaitTimeout as exc:
        if timeout is not None and time.monotonic() - start >= timeout:
            raise
        if exc.details.get("status") == "queued":
            try:
                idle = all(a.status.value == "offline" for a in client.list_agents())
            except OffloadError:  # not allowed to list agents, say: no hint
                idle = False
            if idle:
                stderr().print(
                    f"hint: task {task_id} is queued and no worker is running; start one "
                    "with `offload worker` (or `make run`) in another terminal",
                    markup=False,
                    soft_wrap=True,
                )
    left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
    try:
        return client.wait(task_id, timeout=left)
    except WaitTimeout as exc:
        assert timeout is not None  # only a bounded wait times out
        raise WaitTimeout(task_id, str(exc.details.get("status")), timeout) from None


def finish(task: Task, *, json_out: bool) -> None:
    """Print a finished task's outcome; raise :class:`CliError` unless it completed."""
    if json_out:
        print_json(dump(task))
    elif task.status.value == "completed":
        sys.stdout.write(render_result(task.result) + "\n")
        sys.stdout.flush()
    if task.status.value == "completed":
        return
    if task.status.value == "failed":
        err = task.error
        why = f"{err.type}: {err.message}" if err else "no error recorded"
        raise CliError(
            f"task {task.id} failed: {why}",
            hint=f"`offload task logs {task.id}` shows its events; `offload dlq retry "
            f"{task.id}` runs it again",
            code="task_failed",
            details={"task_id": task.id, "status": "failed"},
            reported=json_out,
        )
    if task.status.value == "cancelled":
        why = f": {task.error.message}" if task.error else ""
        raise CliError(
            f"task {task.id} was cancelled{why}",
            code="task_cancelled",
            details={"task_id": task.id, "status": "cancelled"},
            reported=json_out,
        )
    raise CliError(
        f"task {task.id} is {task.status.value}",
        code="task_not_done",
        details={"task_id": task.id, "status": task.status.value},
        reported=json_out,
    )
