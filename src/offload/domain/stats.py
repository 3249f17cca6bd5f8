"""Pure statistics helpers (percentiles, per-type figures) used by every backend."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from offload.domain.models import Stats, TypeStats


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0–100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def build_stats(
    counts: dict[str, int],
    per_type_counts: dict[str, int],
    finished: Sequence[tuple[Any, ...]],
    agents: dict[str, int],
    now: float,
) -> Stats:
    """Assemble :class:`Stats` from counts and ``(type, status, run_s, wait_s)`` rows."""
    runs: dict[str, list[float]] = {}
    waits: dict[str, list[float]] = {}
    done: dict[str, list[int]] = {}
    for type_, status, run_s, wait_s in finished:
        ok_fail = done.setdefault(type_, [0, 0])
        if status == "completed":
            ok_fail[0] += 1
            if run_s is not None:
                runs.setdefault(type_, []).append(max(run_s, 0.0))
        elif status == "failed":
            ok_fail[1] += 1
        if wait_s is not None:
            waits.setdefault(type_, []).append(max(wait_s, 0.0))
    by_type = []
    for type_ in sorted(per_type_counts):
        ok, bad = done.get(type_, [0, 0])
        r = sorted(runs.get(type_, []))
        w = sorted(waits.get(type_, []))
        by_type.append(TypeStats(
            type=type_, count=per_type_counts[type_], completed=ok, failed=bad,
            success_rate=(ok / (ok + bad)) if ok + bad else None,
            run_p50_s=percentile(r, 50), run_p95_s=percentile(r, 95),
            wait_p50_s=percentile(w, 50), wait_p95_s=percentile(w, 95),
        ))  # fmt: skip
    return Stats(
        counts=counts,
        total=sum(counts.values()),
        by_type=by_type,
        agents=agents,
        generated_at=datetime.fromtimestamp(now, UTC),
    )
