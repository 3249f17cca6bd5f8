"""Task types for the worker tests: imported by the tests and by worker subprocesses
(``--import tests.worker_tasks``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from pydantic import BaseModel

import offload
from offload import TaskContext


@offload.task("wt.add")
def add(a: int, b: int) -> int:
    """Sync handler."""
    return a + b


@offload.task("wt.add_async")
async def add_async(a: int, b: int) -> int:
    """Async handler."""
    await asyncio.sleep(0)
    return a + b


@offload.task("wt.noop")
def noop(i: int) -> int:
    """The benchmark's no-op, sync."""
    return i


@offload.task("wt.report")
def report(steps: int, ctx: TaskContext) -> dict[str, Any]:
    """Progress, log lines and a checkpoint from a handler thread."""
    for n in range(steps):
        ctx.progress(100.0 * (n + 1) / steps, step=f"step {n + 1}")
    ctx.log("halfway there", level="warning")
    ctx.checkpoint("done-steps", {"steps": steps})
    return {"attempt": ctx.attempt, "steps": steps}


@offload.task("wt.draft", review={"reviewer": "capability:editing", "max_rounds": 3})
def draft(topic: str, ctx: TaskContext) -> dict[str, Any]:
    """Reviewed work: a rejected attempt's feedback reaches the next one through ``ctx``."""
    feedback = ctx.review_feedback
    text = f"notes on {topic}" if feedback is None else f"notes on {topic}, revised: {feedback}"
    return {"text": text, "attempt": ctx.attempt, "pid": os.getpid(), "feedback": feedback}


@offload.task("wt.sleep")
def sleep_sync(seconds: float) -> dict[str, float]:
    """Block a handler thread; returns when it ran."""
    start = time.time()
    time.sleep(seconds)
    return {"start": start, "end": time.time(), "pid": os.getpid()}


@offload.task("wt.sleep_async")
async def sleep_async(seconds: float) -> dict[str, float]:
    """Sleep on the loop; returns when it ran."""
    start = time.time()
    await asyncio.sleep(seconds)
    return {"start": start, "end": time.time()}


#: One gate per event loop: ``wt.gated`` handlers wait on it until a test opens it.
_GATES: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}


def open_gates() -> None:
    """Release every ``wt.gated`` handler waiting in this process (thread-safe)."""
    for loop, gate in list(_GATES.items()):
        loop.call_soon_threadsafe(gate.set)
    _GATES.clear()


@offload.task("wt.gated")
async def gated(i: int) -> int:
    """Wait (on the loop, no thread) until :func:`open_gates`; at most a minute."""
    gate = _GATES.setdefault(asyncio.get_running_loop(), asyncio.Event())
    await asyncio.wait_for(gate.wait(), 60)
    return i


@offload.task("wt.patient")
def patient(seconds: float, ctx: TaskContext) -> dict[str, Any]:
    """Sleep in small slices, stopping early when ``ctx.cancelled``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if ctx.cancelled:
            return {"stopped": True}
        time.sleep(0.02)
    return {"stopped": False, "pid": os.getpid()}


@offload.task("wt.hang")
def hang(seconds: float) -> str:
    """Ignore ctx entirely: only a timeout stops it (the thread is abandoned)."""
    time.sleep(seconds)
    return "woke up"


@offload.task("wt.fatal")
def fatal(reason: str) -> None:
    """Fail for good."""
    raise offload.Fatal(reason)


@offload.task("wt.boom")
def boom(message: str) -> None:
    """An unexpected exception: retryable, with a traceback."""
    raise ValueError(message)


@offload.task("wt.retry_once")
def retry_once(ctx: TaskContext) -> int:
    """Ask for a retry on the first attempt, succeed on the second."""
    if ctx.attempt == 1:
        raise offload.Retry("not yet", delay_s=0)
    return ctx.attempt


@offload.task("wt.record")
def record(i: int, ctx: TaskContext, hold_s: float = 0.0) -> dict[str, Any]:
    """Append one line per execution to ``$WT_RECORD_DIR/<pid>`` (exactly-once checks).

    Holds for ``hold_s`` only in a process started with ``WT_HOLD`` set (the one to crash).
    """
    folder = os.environ.get("WT_RECORD_DIR")
    if folder:
        with open(os.path.join(folder, str(os.getpid())), "a") as f:
            f.write(f"{ctx.task.id} {ctx.attempt}\n")
    if hold_s and os.environ.get("WT_HOLD"):
        time.sleep(hold_s)
    return {"i": i, "pid": os.getpid()}


@offload.task("wt.counted", cache_ttl_s=300)
def counted(path: str, n: int) -> int:
    """Appends a line per run to ``path``: tests count real executions (cache hits add none)."""
    with open(path, "a") as f:
        f.write(f"{n}\n")
    return n * n


class Word(BaseModel):
    """An item of the batched test type."""

    text: str


def _log_batch(path: str | None, size: int) -> None:
    if path:
        with open(path, "a") as f:
            f.write(f"{size}\n")


@offload.task("wt.upper_batch", batch_size=50, batch_wait_ms=50)
def upper_batch(items: list[Word]) -> list[Any]:
    """Upper-cases words; the word "boom" fails alone. Logs each call's size to $WT_BATCH_LOG."""
    _log_batch(os.environ.get("WT_BATCH_LOG"), len(items))
    return [
        offload.Fatal(f"cannot shout {w.text!r}") if w.text == "boom" else w.text.upper()
        for w in items
    ]


@offload.task("wt.len_batch_async", batch_size=10, batch_wait_ms=20)
async def len_batch_async(items: list[dict]) -> list[int]:
    """Async batched handler on plain dicts."""
    await asyncio.sleep(0)
    return [len(i) for i in items]


@offload.task("wt.short_batch", batch_size=5, batch_wait_ms=20)
def short_batch(items: list[dict]) -> list[int]:
    """Returns one result too few: every task of the batch fails clearly."""
    return [1] * (len(items) - 1)


@offload.task("wt.stubborn")
async def stubborn(seconds: float) -> str:
    """Swallow every cancellation: only the worker giving up on it frees its slot."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)
    return "finished anyway"


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


@offload.task("wt.unprintable")
def unprintable() -> None:
    """Raise an exception whose message cannot be read."""
    raise _Unprintable()


@offload.task("wt.not_a_number")
def not_a_number() -> dict[str, float]:
    """Return what JSON cannot carry."""
    return {"x": float("nan")}


@offload.task("wt.heap")
def heap() -> dict[str, int]:
    """How many objects the worker process froze out of garbage collection."""
    import gc

    return {"frozen": gc.get_freeze_count(), "pid": os.getpid()}


@offload.task("wt.blob", retries=3)
def blob(n: int) -> str:
    """A result of ``n`` characters."""
    return "x" * n


@offload.task("wt.loud")
def loud(ctx: TaskContext) -> dict[str, Any]:
    """Reports past every limit: a huge log line and step, a checkpoint too big to keep."""
    ctx.log("L" * 200_000)
    ctx.progress(50, step="S" * 5_000)
    try:
        ctx.checkpoint("everything", {"rows": ["r" * 1000] * 2000})
    except offload.TooLarge as exc:
        refused = exc.message
    else:
        refused = ""
    ctx.checkpoint("offset", {"next": 2000})
    try:
        ctx.artifact(offload.Artifact(name="dump", inline="d" * 1_500_000))
    except offload.TooLarge as exc:
        artifact_refused = exc.message
    else:
        artifact_refused = ""
    ctx.artifact(offload.Artifact(name="dump", uri="s3://bucket/dump", size=1_500_000))
    return {"refused": refused, "artifact_refused": artifact_refused}
