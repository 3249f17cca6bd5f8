"""``offload bench --http``: submit over HTTP, measured against a real ``offload serve``.

1. Start ``offload serve --no-worker`` on a free loopback port and a fresh SQLite file
   (or ``database_url``), as its own process, the way it is deployed.
2. Sequential submits through :class:`~offload.client.http.HttpClient` (keep-alive):
   100 warm-up, then ``samples`` timed ones; p50/p99 by nearest rank.
3. Bulk: ``bulk_tasks`` tasks in batches of 1,000 (one transaction each); tasks/s from
   the first request to the last answer; every task is then counted on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from offload.client.http import HttpClient
from offload.domain.models import TaskFilter, TaskSpec

BATCH = 1000
BENCH_TYPE = "util.echo"
WARMUP = 100


@dataclass
class HttpBenchResult:
    """Figures of one HTTP run."""

    backend: str
    samples: int
    submit_p50_ms: float
    submit_p99_ms: float
    submit_mean_ms: float
    bulk_tasks: int
    bulk_per_s: float
    bulk_verified: bool
    notes: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def _start_server(database_url: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OFFLOAD_URL", "OFFLOAD_TOKEN")}
    env["OFFLOAD_AUTH"] = "0"
    cmd = [sys.executable, "-m", "offload.cli", "serve", "--port", "0", "--no-worker",
           "--log-level", "warning", "--database-url", database_url]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"offload serve exited: {log_path.read_text()[-500:]}")
        found = re.search(r"http://127\.0\.0\.1:\d+", log_path.read_text(errors="replace"))
        if found:
            return proc, found.group(0)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("offload serve did not start within 30 s")


async def _wait_ready(client: HttpClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.stats()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def run_http_bench(
    *,
    samples: int = 2000,
    bulk_tasks: int = 20_000,
    database_url: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> HttpBenchResult:
    """Run the HTTP benchmark (a temp SQLite database unless ``database_url`` is given)."""
    tmpdir = tempfile.mkdtemp(prefix="offload-bench-http-")
    database_url = database_url or f"sqlite:///{Path(tmpdir) / 'bench.db'}"
    server, url = _start_server(database_url, Path(tmpdir) / "serve.log")
    client = HttpClient(url)
    notes: list[str] = []
    report = progress
    try:
        await _wait_ready(client)
        tag = f"bench-http-{os.getpid()}-{time.time_ns()}"
        for n in range(WARMUP):
            await client.submit(BENCH_TYPE, {"w": n})
        latencies: list[float] = []
        for n in range(samples):
            start = time.perf_counter()
            await client.submit(BENCH_TYPE, {"i": n})
            latencies.append((time.perf_counter() - start) * 1000)
        if report:
            report("sequential submits", samples, samples)

        specs = [TaskSpec(type=BENCH_TYPE, input={"i": i}, tags=[tag]) for i in range(bulk_tasks)]
        start = time.perf_counter()
        await client.submit_all(specs)  # batches of 1,000, two under way at once
        bulk_s = time.perf_counter() - start
        if report:
            report("bulk submits", bulk_tasks, bulk_tasks)
        stored = (await client.list(TaskFilter(tag=tag, limit=1))).total
        if stored != bulk_tasks:
            notes.append(f"bulk: {stored} of {bulk_tasks} tasks found afterwards")
        return HttpBenchResult(
            backend=database_url.split(":", 1)[0], samples=samples,
            submit_p50_ms=_pct(latencies, 50), submit_p99_ms=_pct(latencies, 99),
            submit_mean_ms=sum(latencies) / len(latencies), bulk_tasks=bulk_tasks,
            bulk_per_s=bulk_tasks / bulk_s, bulk_verified=stored == bulk_tasks, notes=notes,
        )  # fmt: skip
    finally:
        await client.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        with contextlib.suppress(OSError):
            shutil.rmtree(tmpdir)


def main(
    samples: int = 2000,
    bulk_tasks: int = 20_000,
    database_url: str | None = None,
    as_json: bool = False,
) -> dict[str, object]:
    """CLI entry (``offload bench --http``): run, print a table (or JSON), return figures."""
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=as_json)

    def progress(stage: str, done: int, total: int) -> None:
        # Plain lines, no live display: a refresh thread would compete with the timed calls.
        if done == total and not as_json:
            console.print(f"  {stage}: {done} done", style="dim")

    result = asyncio.run(
        run_http_bench(
            samples=samples, bulk_tasks=bulk_tasks, database_url=database_url,
            progress=progress,
        )
    )  # fmt: skip
    data = asdict(result)
    if as_json:
        print(json.dumps(data, indent=2))
        return data
    table = Table(title=f"offload bench --http ({result.backend}, offload serve on loopback)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        f"submit latency p50 ({result.samples} sequential)", f"{result.submit_p50_ms:.2f} ms"
    )
    table.add_row("submit latency p99", f"{result.submit_p99_ms:.2f} ms")
    table.add_row("submit latency mean", f"{result.submit_mean_ms:.2f} ms")
    table.add_row(f"bulk submit ({result.bulk_tasks}, batches of {BATCH}, 2 in flight)",
                  f"{result.bulk_per_s:,.0f} tasks/s")  # fmt: skip
    table.add_row("bulk verified", "yes" if result.bulk_verified else "NO")
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    return data
