"""``offload bench``: throughput and latency measured the way the peer harness measures them.

1. Bulk-submit N no-op tasks (``util.echo``, results stored) with no worker running.
2. Spawn ONE worker process; processed/s = N ÷ (time from spawn to the last completion),
   start-up included; steady/s counts from the first completion seen.
3. Check every stored result equals its input.
4. With the worker idle: 10 warm-up round trips, then ``samples`` sequential
   submit → result-visible round trips; p50/p99 by nearest rank.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from offload.client.factory import connect
from offload.domain.flow import LimitSpec
from offload.domain.models import TaskFilter, TaskSpec
from offload.domain.status import TERMINAL, Status

BENCH_TYPE = "util.echo"


@dataclass
class BenchResult:
    """Figures of one run."""

    backend: str
    tasks: int
    submit_per_s: float
    processed_per_s: float
    steady_per_s: float
    processed: int
    verified: bool
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_samples: int
    worker_concurrency: int
    notes: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def _worker_cmd(database_url: str, concurrency: int) -> list[str]:
    # `python -m offload.worker` is the worker without the CLI's Typer/Rich imports (the
    # same Worker; 0.2 s less start-up, which the from-spawn figure includes).
    return [sys.executable, "-m", "offload.worker", "--database-url", database_url,
            "--concurrency", str(concurrency), "--name", "bench-worker"]  # fmt: skip


async def run_bench(
    *,
    tasks: int = 20_000,
    latency_samples: int = 200,
    database_url: str | None = None,
    concurrency: int = 64,
    timeout_s: float = 120.0,
    progress: Any = None,
    limit: LimitSpec | None = None,
) -> BenchResult:
    """Run the benchmark against a fresh database (a temp SQLite file by default).

    With ``limit``, the no-op type runs under that limit (one that should not bind), which
    puts every claim on the limited path: the figure to compare with an unlimited run."""
    tmpdir = None
    if database_url is None:
        tmpdir = tempfile.mkdtemp(prefix="offload-bench-")
        database_url = f"sqlite:///{Path(tmpdir) / 'bench.db'}"
    backend = database_url.split(":", 1)[0]
    client = await connect(database_url=database_url)
    worker: subprocess.Popen[bytes] | None = None
    notes: list[str] = []
    try:
        if limit is not None:
            await client.set_limit(BENCH_TYPE, limit)
        run_tag = f"bench-{os.getpid()}-{time.time_ns()}"
        unfinished = [s.value for s in Status if s not in TERMINAL]
        everything = TaskFilter(status=unfinished, limit=0)
        base = (await client.list(everything)).total
        # 1. bulk submit
        specs = [TaskSpec(type=BENCH_TYPE, input={"i": i}, tags=[run_tag]) for i in range(tasks)]
        # The SDK's bulk submit: transactions of 1,000, two under way at once.
        t0 = time.perf_counter()
        await client.submit_all(
            specs,
            progress=(lambda done, total: progress("submit", done, total)) if progress else None,
        )
        submit_s = time.perf_counter() - t0

        # 2. one worker process, timed from spawn
        spawn = time.perf_counter()
        # Popen only forks; the harness measures from this instant, as the peers' does.
        worker = subprocess.Popen(  # noqa: ASYNC220
            _worker_cmd(database_url, concurrency),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        first_done: float | None = None
        first_count = 0
        done = 0
        # Poll what is left in the whole database, not what is done: unfinished tasks are
        # counted from a partial index in well under a millisecond, while counting this run's
        # finished tasks by tag parses every row and took a PostgreSQL core away from the
        # worker being measured. The tagged count confirms the end (other work may share the
        # database).
        tagged = TaskFilter(status=unfinished, tag=run_tag, limit=0)
        delay = 0.05
        while True:
            await asyncio.sleep(delay)
            left = (await client.list(everything)).total - base
            if left <= 0:
                left = (await client.list(tagged)).total
            done = tasks - max(left, 0)
            now = time.perf_counter()
            if done and first_done is None:
                first_done, first_count = now, done
            elif first_done is not None and done > first_count:
                # Fewer polls while much is left (each one costs the measured database
                # something); the end is still seen within a few milliseconds.
                rate = (done - first_count) / (now - first_done)
                delay = min(0.5, max(0.01, (tasks - done) / rate / 4))
            if progress:
                progress("process", done, tasks)
            if done >= tasks:
                break
            if now - spawn > timeout_s:
                notes.append(f"timed out after {timeout_s:.0f}s with {done} processed")
                break
            if worker.poll() is not None:
                err = worker.stderr.read().decode() if worker.stderr else ""
                raise RuntimeError(f"bench worker exited early: {err.strip()[-500:]}")
        end = time.perf_counter()
        processed_s = end - spawn
        steady = (
            ((done - first_count) / (end - first_done)) if first_done and end > first_done else 0.0
        )

        # 3. verify
        verified = True
        offset = 0
        while offset < done:
            page = await client.list(TaskFilter(tag=run_tag, limit=1000, offset=offset))
            for t in page.tasks:
                if t.status.value != "completed" or t.result != t.input:
                    verified = False
            offset += 1000
            if not page.tasks:
                break

        # 4. idle round trips
        latencies: list[float] = []
        for n in range(10 + latency_samples):
            s = time.perf_counter()
            t = await client.submit(BENCH_TYPE, {"i": n})
            await client.wait(t.id, timeout=10)
            if n >= 10:
                latencies.append((time.perf_counter() - s) * 1000)
            if progress and n >= 10:
                progress("latency", n - 9, latency_samples)
        return BenchResult(
            backend=backend, tasks=tasks, submit_per_s=tasks / submit_s,
            processed_per_s=done / processed_s, steady_per_s=steady, processed=done,
            verified=verified and done == tasks, latency_p50_ms=_pct(latencies, 50),
            latency_p99_ms=_pct(latencies, 99), latency_samples=len(latencies),
            worker_concurrency=concurrency, notes=notes,
        )  # fmt: skip
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if limit is not None:
            with contextlib.suppress(Exception):
                await client.delete_limit(BENCH_TYPE)
        await client.close()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


#: Limits that do not bind, for ``--case limits``: what a limit costs when it admits all.
LIMIT_CASES: dict[str, LimitSpec | None] = {
    "unlimited": None,
    "concurrency limit": LimitSpec(concurrency=1_000_000),
    "rate limit": LimitSpec(rate_limit="1000000/s"),
}


def limits_main(
    tasks: int = 20_000,
    database_url: str | None = None,
    as_json: bool = False,
    concurrency: int = 64,
    rounds: int = 2,
) -> dict[str, Any]:
    """``offload bench --case limits``: the same run without a limit, with a concurrency
    limit and with a rate limit that do not bind, alternated ``rounds`` times; each limited
    figure as a ratio to the unlimited runs of the same invocation (target ≥ 0.8)."""
    import json
    import statistics

    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=as_json)
    runs: dict[str, list[BenchResult]] = {name: [] for name in LIMIT_CASES}
    for r in range(rounds):
        for name, spec in LIMIT_CASES.items():
            console.print(f"[dim]round {r + 1}/{rounds}: {name}…[/]")
            runs[name].append(
                asyncio.run(
                    run_bench(
                        tasks=tasks,
                        latency_samples=1,
                        database_url=database_url,
                        concurrency=concurrency,
                        limit=spec,
                    )
                )
            )
    base = statistics.median(x.processed_per_s for x in runs["unlimited"])
    base_steady = statistics.median(x.steady_per_s for x in runs["unlimited"])
    data: dict[str, Any] = {"rounds": rounds, "tasks": tasks, "cases": {}}
    for name, results in runs.items():
        proc = statistics.median(x.processed_per_s for x in results)
        steady = statistics.median(x.steady_per_s for x in results)
        data["cases"][name] = {
            "processed_per_s": proc,
            "steady_per_s": steady,
            "ratio": proc / base if base else None,
            "steady_ratio": steady / base_steady if base_steady else None,
            "verified": all(x.verified for x in results),
        }
    if as_json:
        print(json.dumps(data, indent=2))
        return data
    table = Table(title=f"offload bench: limits that do not bind ({tasks} tasks, median of "
                  f"{rounds} alternated runs)")  # fmt: skip
    for col in ("case", "processed/s", "steady/s", "vs unlimited", "verified"):
        table.add_column(col, justify="right" if col != "case" else "left")
    for name, c in data["cases"].items():
        table.add_row(
            name, f"{c['processed_per_s']:,.0f}", f"{c['steady_per_s']:,.0f}",
            f"{c['ratio']:.0%}" if c["ratio"] else "—", "yes" if c["verified"] else "NO",
        )  # fmt: skip
    console.print(table)
    return data


def main(
    tasks: int = 20_000,
    latency_samples: int = 200,
    database_url: str | None = None,
    as_json: bool = False,
    concurrency: int = 64,
) -> dict[str, Any]:
    """CLI entry: run, print a table (or JSON), return the figures."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Table

    console = Console(stderr=as_json)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=console,
        transient=True,
        disable=as_json,
    ) as bar:
        ids: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in ids:
                ids[stage] = bar.add_task(stage, total=total)
            bar.update(ids[stage], completed=done)

        result = asyncio.run(
            run_bench(
                tasks=tasks,
                latency_samples=latency_samples,
                database_url=database_url,
                concurrency=concurrency,
                progress=progress,
            )
        )
    data = asdict(result)
    if as_json:
        print(json.dumps(data, indent=2))
        return data
    table = Table(
        title=f"offload bench ({result.backend}, {result.tasks} no-op tasks, results stored)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "bulk submit (batches of 1,000, 2 in flight)", f"{result.submit_per_s:,.0f} tasks/s"
    )
    table.add_row("processed (1 worker, from spawn)", f"{result.processed_per_s:,.0f} tasks/s")
    table.add_row("steady state", f"{result.steady_per_s:,.0f} tasks/s")
    table.add_row("results verified", "yes" if result.verified else "NO")
    if result.latency_p50_ms is not None:
        table.add_row("idle round trip p50", f"{result.latency_p50_ms:.2f} ms")
        table.add_row("idle round trip p99", f"{result.latency_p99_ms:.2f} ms")
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    return data
