"""Offload beside its PostgreSQL peers, in the same run: `offload bench` alternated with the
peer harness's own `bench_pgqueuer.py` / `bench_procrastinate.py` on one PostgreSQL server.

The machine's speed drifts from hour to hour (the same code has measured half as fast on
one day as on another), so absolute figures taken on different days do not compare; these
ratios, taken round by round, do.

    .venv/bin/python bench/side_by_side.py --rounds 3
    .venv/bin/python bench/side_by_side.py --peers pgqueuer --port 5441 --json

Needs: the harness (`../shared/bench/peers`, or a writable copy of it given as --peers-dir)
with its virtualenv (`setup.sh` there, or `python3 -m venv .venv && .venv/bin/pip install
-r requirements.txt`), and a PostgreSQL 15 on 127.0.0.1:PORT with the harness's settings
(its `services.sh start` starts one on 5440, beside the Redis that `setup.sh` installs:
fsync and synchronous_commit on, shared_buffers 256MB). Each system drops and recreates
its own database there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEERS_DIR = ROOT.parent / "shared" / "bench" / "peers"
#: Offload's figure name -> the harness's name for the same measure.
MEASURES = {
    "processed_per_s": "processed_per_s",
    "submit_per_s": "enqueue_per_s",
    "latency_p50_ms": "p50_ms",
    "latency_p99_ms": "p99_ms",
}
SHORT = {"processed_per_s": "processed/s", "submit_per_s": "enqueue/s",
         "latency_p50_ms": "p50 ms", "latency_p99_ms": "p99 ms"}  # fmt: skip
LABELS = {
    "processed_per_s": "processed/s (from spawn)",
    "submit_per_s": "enqueue/s (bulk)",
    "latency_p50_ms": "round trip p50 ms",
    "latency_p99_ms": "round trip p99 ms",
}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def recreate(port: int, name: str) -> str:
    import psycopg

    try:
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True, connect_timeout=5
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        fail(
            f"no PostgreSQL on 127.0.0.1:{port} ({str(exc).strip().splitlines()[0]}); start "
            "one with the harness's settings (its services.sh start) or pass --port"
        )
    return f"postgresql://postgres@127.0.0.1:{port}/{name}"


def run_offload(port: int, tasks: int) -> dict[str, Any]:
    url = recreate(port, "offload_side_by_side")
    cmd = [sys.executable, "-m", "offload.cli", "bench", "--database-url", url,
           "--tasks", str(tasks), "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        fail(f"offload bench failed: {proc.stderr.strip()[-500:]}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return {k: data[k] for k in MEASURES}


def run_peer(peer: str, peers_dir: Path, python: Path, port: int, tasks: int) -> dict[str, Any]:
    script = peers_dir / f"bench_{peer}.py"
    if not script.exists():
        fail(f"{script} not found")
    with tempfile.TemporaryDirectory(prefix=f"side-{peer}-") as logs:
        env = {**os.environ, "PEERS_PG_PORT": str(port), "BENCH_N": str(tasks),
               "BENCH_LOG_DIR": logs}  # fmt: skip
        proc = subprocess.run(
            [str(python), str(script)], cwd=peers_dir, env=env, capture_output=True, text=True,
            timeout=200, check=False,
        )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT_JSON ")]
    if not lines:
        fail(f"{peer}: no result (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    data: dict[str, Any] = json.loads(lines[-1].split(" ", 1)[1])
    return {ours: data.get(theirs) for ours, theirs in MEASURES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PEERS_PG_PORT", "5440")))
    parser.add_argument("--peers", default="pgqueuer,procrastinate")
    parser.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR)
    parser.add_argument("--peers-python", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    python = args.peers_python or args.peers_dir / ".venv" / "bin" / "python"
    if peers and not python.exists():
        fail(f"{python} not found: create the harness's venv (setup.sh in {args.peers_dir})")

    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(1, args.rounds + 1):
        figures = {"offload": run_offload(args.port, args.tasks)}
        for peer in peers:
            figures[peer] = run_peer(peer, args.peers_dir, python, args.port, args.tasks)
        rounds.append(figures)
        if not args.json:
            print(f"round {r}: " + "; ".join(
                f"{name} " + ", ".join(f"{SHORT[k]} {v:,.1f}" for k, v in f.items()
                                       if v is not None)
                for name, f in figures.items()
            ), flush=True)  # fmt: skip

    ratios = {
        peer: {
            m: [rd["offload"][m] / rd[peer][m] for rd in rounds if rd[peer].get(m)]
            for m in MEASURES
        }
        for peer in peers
    }
    if args.json:
        print(json.dumps({"rounds": rounds, "ratios": ratios}, indent=2))
        return
    print(f"\nOffload ÷ peer, round by round ({args.tasks:,} tasks; above 1 is faster for "
          "rates, slower for latencies):")  # fmt: skip
    for peer in peers:
        for m in MEASURES:
            values = ratios[peer][m]
            if values:
                shown = ", ".join(f"{v:.2f}" for v in values)
                median = statistics.median(values)
                print(f"  {peer:<14} {LABELS[m]:<26} {shown}  (median {median:.2f})")


if __name__ == "__main__":
    main()
