"""Task types for the push-agent integration tests (imported by the server and agents)."""

from __future__ import annotations

import os
import time
from typing import Any

import offload
from offload import TaskContext


@offload.task("ag.analyze", capabilities=["data_analysis"])
def analyze(values: list[float]) -> dict[str, Any]:
    """Mean of ``values``, and which agent process computed it."""
    return {"mean": sum(values) / len(values), "pid": os.getpid()}


@offload.task("ag.codegen", capabilities=["code_generation"])
def codegen(spec: str) -> dict[str, Any]:
    """A trivial "generated" function."""
    return {"code": f"def {spec}(): pass", "pid": os.getpid()}


@offload.task("ag.slow", capabilities=["data_analysis"])
def slow(seconds: float, ctx: TaskContext) -> dict[str, Any]:
    """Sleep in small steps, reporting progress (so a test can kill the agent mid-task)."""
    steps = max(1, int(seconds / 0.1))
    for i in range(steps):
        if ctx.cancelled:
            break
        ctx.progress(100 * i / steps, step=f"step {i}")
        time.sleep(seconds / steps)
    return {"slept": seconds, "pid": os.getpid()}


@offload.task("ag.any")
def any_agent(i: int) -> dict[str, Any]:
    """No capability needed."""
    return {"i": i, "pid": os.getpid()}
