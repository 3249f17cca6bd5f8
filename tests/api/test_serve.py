"""The real ``offload serve`` in a subprocess: refusing an open bind without auth, remote
workers (``offload worker --url``) with a SIGKILL mid-task, the CLI against a server, and a
graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import offload
from offload.domain.status import Status
from tests.api.conftest import COMMAND, Processes, clean_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ok(env: dict[str, str], *args: str) -> str:
    proc = cli(env, *args)
    assert proc.returncode == 0, f"offload {' '.join(args)}: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def token(env: dict[str, str], user: str, role: str) -> str:
    """``offload token create`` against the local database: the secret alone on stdout."""
    secret = ok(env, "token", "create", "--user", user, "--role", role).strip()
    assert secret.startswith("ofk_") and "\n" not in secret
    return secret


def remote_worker(procs: Processes, env: dict[str, str], url: str, secret: str, name: str,
                  *args: str) -> subprocess.Popen[bytes]:  # fmt: skip
    cmd = [sys.executable, "-m", "offload.cli", "worker", "--url", url, "--name", name, *args]
    return procs.spawn(cmd, env | {"OFFLOAD_TOKEN": secret}, name)


def test_refuses_a_public_bind_without_auth(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    proc = cli(env, "serve", "--host", "0.0.0.0", "--port", "0")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "--auth" in lines[0] and "OFFLOAD_AUTH=1" in lines[0]
    assert "offload token create" in lines[0]
    assert "Traceback" not in proc.stderr


def test_remote_workers_process_tasks_and_survive_a_sigkill(
    tmp_path: Path, procs: Processes
) -> None:
    env = clean_env(tmp_path)
    ops = token(env, "ops", "admin")
    alice = token(env, "alice", "user")
    _, url = procs.serve(env, "--auth", "--no-worker")

    first = remote_worker(procs, env, url, ops, "w1", "--lease-ttl", "1.5", "--concurrency", "4")
    with offload.Client(url, token=alice) as sdk:
        quick = [sdk.submit("math.factorial", {"n": n}) for n in range(1, 11)]
        for n, task in enumerate(quick, start=1):
            done = sdk.wait(task.id, timeout=30)
            assert done.status is Status.COMPLETED, procs.log(first)
            assert done.result == __import__("math").factorial(n)
            assert done.owner == "alice"

        slow = sdk.submit("util.sleep", {"seconds": 3})
        wait_until(lambda: sdk.get(slow.id).status is Status.RUNNING, 20, "the sleep to run")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        second = remote_worker(procs, env, url, ops, "w2", "--lease-ttl", "1.5")
        done = sdk.wait(slow.id, timeout=30)
        assert done.status is Status.COMPLETED, procs.log(second)
        assert done.attempt == 2 and done.result == {"slept": 3, "cancelled": False}
        events = sdk.events(slow.id)
        kinds = [e.kind for e in events]
        assert kinds.count("claimed") == 2 and "lease_expired" in kinds
        holders = [e.data["agent_id"] for e in events if e.kind == "claimed"]
        assert holders[0] != holders[1]
        assert done.errors[0].type == "LeaseExpired"


def test_cli_commands_work_against_the_server(tmp_path: Path, procs: Processes) -> None:
    env = clean_env(tmp_path)
    ops = token(env, "ops", "admin")
    bob = token(env, "bob", "user")
    _, url = procs.serve(env, "--auth", "--workers", "2")
    remote = env | {"OFFLOAD_URL": url, "OFFLOAD_TOKEN": bob}

    task = json.loads(ok(remote, "task", "create", "--type", "math.factorial", "--input",
                         '{"n": 6}', "--json"))  # fmt: skip
    assert task["owner"] == "bob"
    assert ok(remote, "task", "watch", task["id"]).strip().endswith("720")
    listed = json.loads(ok(remote, "task", "list", "--json"))
    assert [(t["id"], t["result"]) for t in listed["tasks"]] == [(task["id"], 720)]
    assert json.loads(ok(remote, "stats", "--json"))["counts"]["completed"] == 1
    # Admin work over HTTP: tokens.
    admin = remote | {"OFFLOAD_TOKEN": ops}
    new = ok(admin, "token", "create", "--user", "carol").strip()
    assert new.startswith("ofk_")
    tokens = json.loads(ok(admin, "token", "list", "--json"))
    assert {"ops", "bob", "carol"} <= {t["user"] for t in tokens}
    denied = cli(remote, "token", "list")
    assert denied.returncode == 1 and denied.stderr.startswith("error: this needs a token")
    anonymous = cli(env | {"OFFLOAD_URL": url}, "task", "list")
    assert anonymous.returncode == 1
    assert anonymous.stderr.splitlines()[0].startswith("error: missing bearer token")
    unreachable = cli(env | {"OFFLOAD_URL": "http://127.0.0.1:9"}, "stats")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_sigterm_is_graceful(tmp_path: Path, procs: Processes) -> None:
    env = clean_env(tmp_path)
    server, url = procs.serve(env, "--grace", "10")
    with offload.Client(url) as sdk:
        task = sdk.submit("util.sleep", {"seconds": 1.5})
        wait_until(lambda: sdk.get(task.id).status is Status.RUNNING, 20, "the task to run")
    stream = httpx.Client(base_url=url, timeout=httpx.Timeout(20, read=20))
    with stream.stream("GET", "/v1/events") as events:
        start = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        for _ in events.iter_lines():  # the open stream ends promptly, not after a timeout
            pass
        assert time.monotonic() - start < 8
    stream.close()
    assert server.wait(timeout=30) == 0, procs.log(server)
    # The embedded worker finished the running task before the process exited.
    done = json.loads(ok(env, "task", "status", task.id, "--json"))
    assert done["status"] == "completed", procs.log(server)


def test_serve_exempts_its_startup_heap_from_collection(tmp_path: Path, procs: Processes) -> None:
    # The embedded worker runs in the server's process: wt.heap reports that process's
    # frozen objects (the app, its routes and schemas, the task modules).
    env = clean_env(tmp_path)
    _, url = procs.serve(env, "--workers", "1", "--import", "tests.worker_tasks")
    out = ok(env | {"OFFLOAD_URL": url}, "task", "create", "--type", "wt.heap", "--wait",
             "--timeout-wait", "30", "--json")  # fmt: skip
    assert json.loads(out)["result"]["frozen"] > 10_000, out
