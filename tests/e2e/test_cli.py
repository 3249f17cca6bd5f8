"""The real ``offload`` command in a subprocess, against a temporary SQLite database.

One worker process (started by ``offload worker``) serves the module; tasks that must stay
queued go to a queue it does not serve (``parked``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

_SCRIPT = Path(sys.executable).with_name("offload")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "offload.cli"]
PARKED = "parked"  # a queue no worker serves: tasks there stay queued


@dataclass
class Cli:
    """Runs ``offload …`` with a fixed environment."""

    env: dict[str, str]

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, *args],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
        )

    def ok(self, *args: str) -> str:
        proc = self(*args)
        assert proc.returncode == 0, f"offload {' '.join(args)}: {proc.stderr}"
        assert "Traceback" not in proc.stderr
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OFFLOAD_URL", "OFFLOAD_TOKEN")}
    env |= {
        "OFFLOAD_HOME": str(home),
        "OFFLOAD_DATABASE_URL": f"sqlite:///{home / 'offload.db'}",
        "COLUMNS": "200",
    }
    return env


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(_env(tmp_path_factory.mktemp("offload-cli")))


@pytest.fixture(scope="module")
def worker(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*COMMAND, "worker", "--concurrency", "4", "--lease-ttl", "10", "--grace", "2"],
            env=cli.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), log_path.read_text()


def _assert_one_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 1, no traceback, ``error: …`` first and at most a hint after it."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert len(lines) <= 2 and all(ln.startswith("hint: ") for ln in lines[1:]), proc.stderr
    for needle in needles:
        assert needle in lines[0], proc.stderr


# -- no database needed -------------------------------------------------------------------


def test_version_and_help_do_not_open_the_database(tmp_path: Path) -> None:
    cli = Cli(_env(tmp_path))
    assert cli.ok("--version").startswith("offload ")
    for args in (["--help"], ["task", "--help"], ["task", "create", "--help"], ["worker", "-h"]):
        assert "Usage" in cli.ok(*args)
    assert not (tmp_path / "offload.db").exists()


def test_python_dash_m_runs_the_cli(cli: Cli) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "offload.cli", "--version"],
        check=False,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("offload ")


def test_usage_errors_exit_2(cli: Cli) -> None:
    assert cli("task", "create").returncode == 2  # --type is required
    assert cli("dlq", "retry").returncode == 2  # ids or --all
    assert cli("task", "list", "--limit", "0").returncode == 2


# -- errors: one line, exit 1 ---------------------------------------------------------------


def test_unknown_type_suggests_close_names(cli: Cli) -> None:
    proc = cli("task", "create", "--type", "math.factorail", "--input", '{"n": 3}')
    _assert_one_error(proc, "math.factorail", "math.factorial")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--input", '{"n": 10'], ["--input", "JSON"]),
        (["--input", "{}"], ["input.n"]),
        (["--input", '{"n": "ten"}'], ["input.n", "integer"]),
        (["--input", "[1, 2]"], ["JSON object"]),
        (["--input", '{"n": 1}', "--priority", "urgent"], ["--priority"]),
        (["--input", '{"n": 1}', "--run-at", "someday"], ["--run-at"]),
    ],
)
def test_bad_create_input_is_one_clear_line(cli: Cli, args: list[str], needles: list[str]) -> None:
    _assert_one_error(cli("task", "create", "--type", "math.factorial", *args), *needles)


@pytest.mark.parametrize("command", ["status", "cancel", "wait", "logs", "retry"])
def test_unknown_id_is_one_clear_line(cli: Cli, command: str) -> None:
    _assert_one_error(cli("task", command, "no-such-task"), "no-such-task", "not found")


def test_errors_in_json_mode_are_json_too(cli: Cli) -> None:
    proc = cli("task", "status", "no-such-task", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda d: d, ["that is a directory"]),
        (
            lambda d: (d / "notes.db").write_text("not a database") and d / "notes.db",
            ["notes.db", "not an SQLite database"],
        ),
        (lambda d: Path("/proc/offload/x.db"), ["/proc/offload/x.db", "is writable"]),
    ],
)
def test_a_database_file_that_cannot_be_opened_is_one_clear_line(
    cli: Cli, tmp_path: Path, make: Any, needles: list[str]
) -> None:
    url = f"sqlite:///{make(tmp_path)}"
    _assert_one_error(cli("task", "list", "--database-url", url), "cannot open", *needles)


@pytest.mark.parametrize("command", [["worker"], ["task", "list"]])
@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("OFFLOAD_LEASE_TTL", "abc", "OFFLOAD_LEASE_TTL='abc' is not a number"),
        ("OFFLOAD_MAX_RESULT_BYTES", "0", "OFFLOAD_MAX_RESULT_BYTES must be a positive number"),
    ],
)
def test_a_setting_that_is_not_a_number_is_one_clear_line(
    cli: Cli, command: list[str], name: str, value: str, says: str
) -> None:
    bad = Cli({**cli.env, name: value})
    _assert_one_error(bad(*command), says)


def test_waiting_with_no_worker_running_says_to_start_one(tmp_path: Path) -> None:
    lonely = Cli(_env(tmp_path))
    proc = lonely("task", "create", "--type", "util.echo", "--wait", "--timeout-wait", "4.5")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("hint: task ") and "no worker is running" in lines[0]
    assert "`offload worker`" in lines[0]
    assert lines[1].endswith("is still queued after 4.5s")


def test_missing_workflow_file(cli: Cli, tmp_path: Path) -> None:
    _assert_one_error(cli("workflow", "submit", str(tmp_path / "nope.yaml")), "nope.yaml")


# -- reading -------------------------------------------------------------------------------


def test_json_outputs_parse(cli: Cli) -> None:
    created = cli.json(
        "task",
        "create",
        "--type",
        "util.echo",
        "--input",
        '{"x": 1}',
        "--queue",
        PARKED,
        "--tag",
        "json-check",
        "echo something",
    )
    assert created["status"] == "queued" and created["title"] == "echo something"
    task_id = created["id"]
    assert cli.json("task", "status", task_id)["input"] == {"x": 1}
    page = cli.json("task", "list", "--tag", "json-check")
    assert [t["id"] for t in page["tasks"]] == [task_id] and page["total"] == 1
    assert cli.json("task", "logs", task_id)[0]["kind"] == "created"
    names = {t["name"] for t in cli.json("types")}
    assert {"math.factorial", "util.echo", "util.fail", "util.sleep"} <= names
    assert cli.json("stats")["total"] >= 1
    # The human views show the same task.
    assert task_id in cli.ok("task", "list", "--tag", "json-check")
    assert "util.echo" in cli.ok("task", "status", task_id)


def _spec_lines(n: int, tag: str, bad_at: int | None = None) -> str:
    return "".join(
        json.dumps({"type": "no.such.type" if i == bad_at else "util.echo", "input": {"i": i},
                    "queue": PARKED, "tags": [tag]}) + "\n"
        for i in range(n)
    )  # fmt: skip


def test_submit_a_file_of_tasks(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(_spec_lines(1_500, "from-file"), encoding="utf-8")
    out = cli.json("task", "submit", str(path))
    assert out["created"] == 1_500 and len(set(out["ids"])) == 1_500
    assert cli.json("task", "list", "--tag", "from-file", "--limit", "1")["total"] == 1_500
    # Human output: one line; stdin and a JSON array work too.
    one = cli("task", "submit", "-", stdin='{"type": "util.echo", "queue": "parked"}\n')
    assert one.returncode == 0 and one.stderr == "", one.stderr
    assert one.stdout.startswith("created 1 task (") and one.stdout.count("\n") == 1
    proc = cli(
        "task", "submit", "-", "--json", stdin='[{"type": "util.echo"}, {"type": "util.echo"}]'
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["created"] == 2


def test_a_bad_line_in_a_task_file_is_named_and_nothing_is_sent(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        _spec_lines(3, "bad-line") + '{"type": "util.echo", "priority": "urgent"}\n',
        encoding="utf-8",
    )
    _assert_one_error(cli("task", "submit", str(path)), "bad.jsonl line 4: priority")
    path.write_text(_spec_lines(2, "bad-json") + "{not json\n", encoding="utf-8")
    _assert_one_error(cli("task", "submit", str(path)), "bad.jsonl line 3 is not valid JSON")
    _assert_one_error(cli("task", "submit", "-", stdin="\n"), "stdin holds no tasks")
    _assert_one_error(cli("task", "submit", str(tmp_path / "nope.jsonl")), "cannot read")
    for tag in ("bad-line", "bad-json"):
        assert cli.json("task", "list", "--tag", tag, "--limit", "1")["total"] == 0


def test_a_refused_batch_says_which_lines_were_created(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "refused.jsonl"
    path.write_text(_spec_lines(2_500, "refused", bad_at=1_200), encoding="utf-8")
    proc = cli("task", "submit", str(path), "--in-flight", "1")
    _assert_one_error(
        proc,
        "refused.jsonl line 1201: unknown task type 'no.such.type'",
        "(lines 1-1000 were created, the others were not)",
    )
    assert "submit only the tasks not created" in proc.stderr
    assert cli.json("task", "list", "--tag", "refused", "--limit", "1")["total"] == 1_000
    err = json.loads(cli("task", "submit", str(path), "--in-flight", "1", "--json").stdout)
    assert err["error"]["code"] == "unknown_task_type"
    assert err["error"]["details"]["created"] == [[0, 1000]]
    assert err["error"]["details"]["index"] == 1_200


def test_run_at_relative_time_schedules(cli: Cli) -> None:
    task = cli.json("task", "create", "--type", "util.echo", "--run-at", "+1h", "--queue", PARKED)
    assert task["status"] == "scheduled" and task["run_at"]


# -- with a worker ---------------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_create_wait_prints_the_result(cli: Cli) -> None:
    out = cli.ok(
        "task",
        "create",
        "--type",
        "math.factorial",
        "--input",
        '{"n": 10}',
        "--priority",
        "high",
        "--wait",
        "--timeout-wait",
        "30",
    )
    task_id, result = out.strip().splitlines()
    assert result == "3628800"
    done = cli.json("task", "status", task_id)
    assert done["status"] == "completed" and done["priority"] == 8
    assert cli.ok("task", "wait", task_id).strip() == "3628800"


@pytest.mark.usefixtures("worker")
def test_list_filters_accept_status_aliases(cli: Cli) -> None:
    tag = f"alias-{uuid.uuid4().hex[:8]}"
    parked = cli.json("task", "create", "--type", "util.echo", "--queue", PARKED, "--tag", tag)
    done_id = cli.ok(
        "task", "create", "--type", "util.echo", "--tag", tag, "--wait", "--timeout-wait", "30"
    ).splitlines()[0]

    def ids(*status: str) -> set[str]:
        return {t["id"] for t in cli.json("task", "list", "--tag", tag, *status)["tasks"]}

    assert ids("--status", "pending") == {parked["id"]}
    assert ids("--status", "done") == {done_id}
    assert ids("--status", "pending,done") == {parked["id"], done_id}
    assert ids("-s", "active", "-s", "completed") == {done_id}
    _assert_one_error(cli("task", "list", "--status", "finished-ish"), "finished-ish")


@pytest.mark.usefixtures("worker")
def test_watch_follows_a_task_to_the_end(cli: Cli) -> None:
    task_id = cli.ok("task", "create", "--type", "util.sleep", "--input", '{"seconds": 1}').strip()
    out = cli.ok("task", "watch", task_id)
    assert '"slept": 1' in out
    kinds = [
        e["kind"] for e in map(json.loads, cli.ok("task", "watch", task_id, "--json").splitlines())
    ]
    assert kinds[0] == "created" and "progress" in kinds


@pytest.mark.usefixtures("worker")
def test_workflow_submit_from_yaml(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "flow.yaml"
    spec.write_text(
        "title: two steps\n"
        "tasks:\n"
        "  - ref: fact\n"
        "    type: math.factorial\n"
        "    input: {n: 5}\n"
        "  - ref: echo\n"
        "    type: util.echo\n"
        "    input: {note: after fact}\n"
        "    depends_on: [fact]\n"
    )
    out = cli.ok("workflow", "submit", str(spec), "--wait", "--timeout-wait", "30")
    parent_id = out.splitlines()[0].strip()
    assert "fact" in out and "echo" in out
    parent = cli.json("task", "status", parent_id)
    assert parent["status"] == "completed"
    assert parent["result"]["fact"] == 120
    assert parent["result"]["echo"] == {"note": "after fact"}
    children = cli.json("task", "list", "--parent", parent_id)["tasks"]
    assert {c["ref"] for c in children} == {"fact", "echo"}


def test_workflow_with_a_bad_field_is_one_line(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"tasks": [{"ref": "a", "type": "util.echo", "colour": "red"}]}))
    _assert_one_error(cli("workflow", "submit", str(spec)), "colour")


@pytest.mark.usefixtures("worker")
def test_dead_letter_list_and_retry(cli: Cli) -> None:
    proc = cli(
        "task",
        "create",
        "--type",
        "util.fail",
        "--input",
        '{"message": "boom on purpose", "retryable": false}',
        "--wait",
        "--timeout-wait",
        "30",
    )
    _assert_one_error(proc, "failed", "boom on purpose")
    task_id = proc.stdout.strip()
    failed = cli.json("dlq", "list", "--type", "util.fail")["tasks"]
    mine = next(t for t in failed if t["id"] == task_id)
    assert mine["error"]["message"] == "boom on purpose" and not mine["error"]["retryable"]
    assert task_id in cli.ok("dlq", "list")
    retried = cli.json("dlq", "retry", task_id)
    assert retried[0]["id"] == task_id and retried[0]["status"] != "failed"
    # It fails again (the handler always does); then --all picks it up.
    assert cli("task", "wait", task_id, "--timeout", "30").returncode == 1
    again = cli.json("dlq", "retry", "--all", "--type", "util.fail")
    assert task_id in {t["id"] for t in again}


def test_cancel_pause_resume_a_queued_task(cli: Cli) -> None:
    task_id = cli.ok("task", "create", "--type", "util.echo", "--queue", PARKED).strip()
    cli.ok("task", "pause", task_id)
    assert cli.json("task", "status", task_id)["status"] == "paused"
    cli.ok("task", "resume", task_id)
    assert cli.json("task", "status", task_id)["status"] == "queued"
    assert "cancelled" in cli.ok("task", "cancel", task_id, "--reason", "not needed")
    assert cli.json("task", "status", task_id)["status"] == "cancelled"
    proc = cli("task", "wait", task_id)
    _assert_one_error(proc, "cancelled")
    _assert_one_error(cli("task", "pause", task_id), task_id)  # illegal transition


def test_db_upgrade_reports_the_version(cli: Cli) -> None:
    out = cli.ok("db", "upgrade")
    assert out.startswith("database at version ")


def test_worker_runs_types_from_import(tmp_path: Path) -> None:
    (tmp_path / "my_cli_tasks.py").write_text(
        "import offload\n\n"
        "@offload.task('custom.shout')\n"
        "def shout(text: str) -> str:\n"
        "    return text.upper()\n\n"
        "@offload.task('custom.frozen')\n"
        "def frozen() -> int:\n"
        "    import gc\n"
        "    return gc.get_freeze_count()\n"
    )
    cli = Cli(_env(tmp_path) | {"OFFLOAD_IMPORTS": str(tmp_path / "my_cli_tasks.py")})
    proc = subprocess.Popen(
        [*COMMAND, "worker", "--import", "my_cli_tasks", "--concurrency", "2", "--grace", "1"],
        env={k: v for k, v in cli.env.items() if k != "OFFLOAD_IMPORTS"}
        | {"PYTHONPATH": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = cli.ok(
            "task",
            "create",
            "--type",
            "custom.shout",
            "--input",
            '{"text": "hi"}',
            "--wait",
            "--timeout-wait",
            "30",
        )
        assert out.splitlines()[-1] == "HI"
        # `offload worker` exempts its start-up heap from collection (as python -m does).
        frozen = cli.ok(
            "task", "create", "--type", "custom.frozen", "--wait", "--timeout-wait", "30"
        )
        assert int(frozen.splitlines()[-1]) > 10_000
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert "offload worker" in err and "Traceback" not in err
