"""``offload agent …`` and ``offload queue dispatch`` through the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

_SCRIPT = Path(sys.executable).with_name("offload")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "offload.cli"]


@dataclass
class Cli:
    """Runs ``offload …`` with a fixed environment."""

    env: dict[str, str]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, *args],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str) -> str:
        proc = self(*args)
        assert proc.returncode == 0, f"offload {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    src = Path(__file__).resolve().parents[2] / "src"
    env |= {
        "OFFLOAD_HOME": str(home),
        "OFFLOAD_DATABASE_URL": f"sqlite:///{home / 'offload.db'}",
        "PYTHONPATH": f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}",
        "COLUMNS": "200",
    }
    return env


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(_env(tmp_path_factory.mktemp("offload-agents")))


def test_register_list_workload_drain(cli: Cli) -> None:
    agent = cli.json(
        "agent",
        "register",
        "analyst",
        "--id",
        "ag-1",
        "--kind",
        "llm",
        "-c",
        "data_analysis:0.9,code_generation",
        "--max-concurrency",
        "3",
    )
    assert agent["capabilities"] == {"data_analysis": 0.9, "code_generation": 1.0}
    table = cli.ok("agent", "list")
    assert "ag-1" in table and "data_analysis:0.9" in table and "0/3" in table
    avail = cli.json("agent", "list", "--available", "--capability", "data_analysis")
    assert [a["id"] for a in avail] == ["ag-1"]
    assert cli.json("agent", "list", "--available", "--capability", "nothing") == []
    work = cli.json("agent", "workload", "--id", "ag-1")
    assert work["agent"]["id"] == "ag-1" and work["tasks"] == []
    assert "history: 0 completed, 0 failed" in cli.ok("agent", "workload", "--id", "ag-1")
    assert "draining" in cli.ok("agent", "drain", "--id", "ag-1")
    assert cli.json("agent", "list", "--available") == []
    assert cli.json("agent", "resume", "--id", "ag-1")["status"] == "online"
    assert cli.json("agent", "deregister", "--id", "ag-1")["status"] == "offline"


def test_agent_errors_are_one_line(cli: Cli) -> None:
    proc = cli("agent", "workload", "--id", "nobody")
    assert proc.returncode == 1 and "agent" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2
    proc = cli("agent", "register", "x", "-c", "math:7")
    assert proc.returncode == 2 and "between 0 and 1" in proc.stderr
    proc = cli("agent", "list", "--capability", "x")
    assert proc.returncode == 2


def test_queue_dispatch(cli: Cli, tmp_path: Path) -> None:
    assert "queue jobs: pull" in cli.ok("queue", "dispatch", "jobs")
    out = cli.ok("queue", "dispatch", "jobs", "--mode", "hybrid", "--threshold", "7")
    assert "hybrid, priority ≥ 7 pushed" in out
    got = cli.json("queue", "dispatch", "jobs")
    assert got["mode"] == "hybrid" and got["hybrid_threshold"] == 7
    proc = cli("queue", "dispatch", "jobs", "--mode", "lottery")
    assert proc.returncode == 2


def test_agent_serve_errors_are_one_line(cli: Cli) -> None:
    proc = cli("agent", "serve", "--port", "0")
    assert proc.returncode == 1 and "--server" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("agent", "serve", "--port", "0", "--server", "127.0.0.1:1")
    assert proc.returncode == 1 and "http://" in proc.stderr
    proc = cli("agent", "serve", "--port", "0", "--server", "http://127.0.0.1:1")
    assert proc.returncode == 1 and "cannot reach" in proc.stderr
    assert "Traceback" not in proc.stderr
