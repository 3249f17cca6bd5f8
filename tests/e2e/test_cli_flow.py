"""The real ``offload`` command for limits, resources, queues, schedules and the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.e2e.test_cli import Cli, _assert_one_error, _env

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(_env(tmp_path))


def test_limit_resource_and_queue_commands(cli: Cli) -> None:
    assert "10/s" in cli.ok(
        "limit", "set", "util.echo", "-c", "2", "-k", "input.user", "-r", "10/s"
    )
    (lim,) = cli.json("limit", "list")
    assert (lim["type"], lim["concurrency"], lim["concurrency_key"]) == (
        "util.echo",
        2,
        "input.user",
    )
    assert "util.echo" in cli.ok("limit", "list")
    _assert_one_error(cli("limit", "set", "util.echo", "--rate", "fast"), "COUNT/PERIOD")
    _assert_one_error(cli("limit", "set", "util.ech", "-c", "1"), "util.ech")

    assert "capacity 1" in cli.ok("resource", "set", "gpu", "1")
    task = cli.json("task", "create", "-t", "util.echo", "-i", '{"user": 1}', "--resource", "gpu=1")
    assert task["resources"] == {"gpu": 1} and task["limit_key"].startswith("util.echo")
    (gpu,) = cli.json("resource", "list")
    assert (gpu["capacity"], gpu["waiting"]) == (1, 1)
    _assert_one_error(cli("task", "create", "-t", "util.echo", "--resource", "tpu=1"), "tpu")
    _assert_one_error(cli("resource", "remove", "gpu"), "need resource")
    missing = cli("resource", "remove", "nope")
    _assert_one_error(missing, "not found")
    assert "offload resource list" in missing.stderr

    assert "fairness owner" in cli.ok("queue", "set", "default", "--fairness", "owner")
    assert cli.json("queue", "list")[0]["fairness"] == "owner"
    assert "removed the limits" in cli.ok("limit", "remove", "util.echo")
    assert cli.json("limit", "list") == []


def test_schedule_and_cache_commands(cli: Cli) -> None:
    out = cli.ok("schedule", "add", "tick", "-t", "util.echo", "-i", '{"a": 1}', "--every", "60")
    assert "every 60s" in out
    cli.ok("schedule", "add", "paris", "-t", "util.echo", "--cron", "0 9 * * *",
           "--timezone", "Europe/Paris")  # fmt: skip
    names = sorted(s["name"] for s in cli.json("schedule", "list"))
    assert names == ["paris", "tick"]
    assert "paused" in cli.ok("schedule", "pause", "tick")
    assert "resumed" in cli.ok("schedule", "resume", "tick")
    _assert_one_error(cli("schedule", "add", "x", "-t", "util.echo", "--cron", "nope"), "cron")
    _assert_one_error(cli("schedule", "add", "tick", "-t", "util.echo", "--every", "5"), "exists")
    _assert_one_error(cli("schedule", "add", "y", "-t", "util.echo"), "exactly one")
    assert "removed schedule tick" in cli.ok("schedule", "remove", "tick")
    gone = cli("schedule", "remove", "tick")
    _assert_one_error(gone, "not found")
    assert "offload schedule list" in gone.stderr

    assert cli.json("cache", "clear") == {"removed": 0}
    assert "removed 0 cached util.echo results" in cli.ok("cache", "clear", "--type", "util.echo")
