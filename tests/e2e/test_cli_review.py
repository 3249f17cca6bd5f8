"""The review stage through the real ``offload`` command: create with ``--review``, a real
worker subprocess does the work, ``offload review list`` finds it, ``offload task review``
rejects then approves; refusals are one line with a non-zero exit."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_cli import COMMAND, Cli, _assert_one_error, _env

pytestmark = pytest.mark.slow

QUEUE = "review-e2e"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(_env(tmp_path))


@pytest.fixture
def worker(cli: Cli, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*COMMAND, "worker", "--queues", QUEUE, "--concurrency", "2", "--grace", "2"],
            env=cli.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), log_path.read_text()


def pending_reviews(cli: Cli, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll ``offload review list`` until ``task_id`` awaits review; answers the page."""
    deadline = time.monotonic() + timeout
    while True:
        page = cli.json("review", "list", "--reviewer", "human")
        if task_id in [t["id"] for t in page["tasks"]]:
            return page
        assert time.monotonic() < deadline, f"{task_id} never reached review: {page}"
        time.sleep(0.2)


def test_reject_then_approve_from_the_shell(cli: Cli, worker: subprocess.Popen[bytes]) -> None:
    created = cli.json(
        "task", "create", "--type", "util.echo", "--input", '{"x": 1}',
        "--queue", QUEUE, "--review", "human", "needs a look",
    )  # fmt: skip
    tid = created["id"]
    assert created["review"]["reviewer"] == "human"
    page = pending_reviews(cli, tid)
    assert page["tasks"][0]["status"] == "reviewing"
    # Humans get a table; the status and list views know `reviewing`.
    assert tid in cli.ok("review", "list", "--reviewer", "human")
    assert "reviewing" in cli.ok("task", "status", tid)
    assert [t["id"] for t in cli.json("task", "list", "--status", "reviewing")["tasks"]] == [tid]
    assert cli.json("stats")["counts"]["reviewing"] == 1
    assert "reviewing" in cli.ok("stats")

    rejected = cli.json(
        "task", "review", tid, "--reject", "--feedback", "say more", "--score", "0.2"
    )
    assert rejected["status"] in ("queued", "running", "reviewing")
    assert rejected["review"]["feedback"] == "say more"
    pending_reviews(cli, tid)  # the worker ran it again
    out = cli.ok("task", "review", tid, "--approve", "--score", "0.9", "--feedback", "good")
    assert f"approved {tid}: now completed" in out
    done = cli.json("task", "status", tid)
    assert done["status"] == "completed" and done["attempt"] == 2
    assert done["review"]["quality_score"] == 0.9
    assert [h["decision"] for h in done["review"]["history"]] == ["reject", "approve"]
    assert "passed" in cli.ok("task", "status", tid)
    kinds = [e["kind"] for e in cli.json("task", "logs", tid)]
    assert kinds.count("review.requested") == 2 and kinds.count("review.decided") == 2
    assert [t["id"] for t in cli.json("review", "list", "--status", "passed")["tasks"]] == [tid]

    # Refusals: one clear line, exit 1; usage mistakes exit 2.
    _assert_one_error(cli("task", "review", tid, "--reject"), "completed", "not reviewing")
    _assert_one_error(cli("task", "review", "no-such-task", "--approve"), "not found")
    _assert_one_error(cli("review", "list", "--status", "maybe"), "pending, passed or failed")
    _assert_one_error(
        cli("task", "create", "--type", "util.echo", "--review", "capability:"), "--review"
    )
    assert cli("task", "review", tid).returncode == 2
    assert cli("task", "review", tid, "--approve", "--reject").returncode == 2
    assert cli("task", "review", tid, "--approve", "--score", "3").returncode == 2
