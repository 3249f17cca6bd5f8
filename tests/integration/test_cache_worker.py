"""A cache hit skips execution: a real worker process counts its runs in a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import offload

from .conftest import ROOT, WorkerProcesses, wait_until


def test_cache_hit_skips_the_handler(
    client: offload.Client, workers: WorkerProcesses, tmp_path: Path, db_url: str
) -> None:
    runs = tmp_path / "runs.txt"
    workers.spawn("--concurrency", "2")
    first = client.submit("wt.counted", {"path": str(runs), "n": 7})
    assert client.wait(first.id, timeout=30).result == 49
    second = client.submit("wt.counted", {"path": str(runs), "n": 7})
    assert second.cache_hit and second.status.value == "completed" and second.result == 49
    third = client.submit("wt.counted", {"path": str(runs), "n": 8})
    assert client.wait(third.id, timeout=30).result == 64
    assert runs.read_text().split() == ["7", "8"], "the cached input ran once"

    # `offload cache clear` drops the entry: the same input runs again.
    out = subprocess.run(
        [sys.executable, "-m", "offload.cli", "cache", "clear", "--type", "wt.counted",
         "--database-url", db_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**workers.env, "OFFLOAD_IMPORTS": "tests.worker_tasks"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "removed 2 cached wt.counted results" in out.stdout
    fourth = client.submit("wt.counted", {"path": str(runs), "n": 7})
    assert not fourth.cache_hit
    wait_until(lambda: client.get(fourth.id).status.value == "completed", 30, "the rerun")
    assert runs.read_text().split() == ["7", "8", "7"]
