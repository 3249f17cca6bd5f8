"""Utility task types: ``util.echo``, ``util.sleep`` and ``util.fail``.

They do no real work; benchmarks, demos and tests use them to exercise the queue itself
(throughput, progress, cancellation, retries and the dead-letter queue).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, NoReturn, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from offload.core.registry import Registry, TaskContext
from offload.domain.errors import Fatal

#: This family's task types; :func:`offload.tasks.register_builtins` copies them.
registry = Registry()

#: Longest ``util.sleep`` allowed: one day.
MAX_SLEEP_S = 86_400.0
#: ``util.sleep`` reports progress and checks for cancel this often.
SLEEP_SLICE_S = 1.0


class EchoInput(BaseModel):
    """Any JSON object; every field is kept as given."""

    model_config = ConfigDict(extra="allow")


class SleepResult(TypedDict):
    """What ``util.sleep`` returns."""

    slept: float
    cancelled: bool


@registry.task(
    "util.echo",
    output_schema={"type": "object", "additionalProperties": True},
)
async def echo(payload: EchoInput) -> dict[str, Any]:
    """Return the input object unchanged.

    A no-op used by benchmarks and smoke tests; it accepts any JSON object.
    """
    # Every field is an "extra" of the field-less model, so this is the input itself
    # without another copy: the benchmarks run this handler tens of thousands of times.
    return payload.model_extra or {}


@registry.task(
    "util.sleep",
    output_schema={
        "type": "object",
        "properties": {"slept": {"type": "number"}, "cancelled": {"type": "boolean"}},
        "required": ["slept", "cancelled"],
    },
)
async def sleep(
    seconds: Annotated[float, Field(ge=0, le=MAX_SLEEP_S, description="how long to sleep")],
    ctx: TaskContext,
) -> SleepResult:
    """Sleep for ``seconds`` (0 to 86400), reporting progress every second.

    Stops early when the task is cancelled or paused and then returns
    ``{"slept": <seconds slept>, "cancelled": true}``; the worker decides the final
    status from the cancel request. Otherwise returns ``{"slept": seconds, "cancelled": false}``.
    """
    slept = 0.0
    while slept < seconds:
        if ctx.cancelled:
            return {"slept": slept, "cancelled": True}
        step = min(SLEEP_SLICE_S, seconds - slept)
        await asyncio.sleep(step)
        # Snap to the whole slice count so progress reads "slept 3s", not "2.9999999s".
        slept = seconds if step < SLEEP_SLICE_S else slept + SLEEP_SLICE_S
        ctx.progress(100.0 * slept / seconds, step=f"slept {slept:g}s of {seconds:g}s")
    if seconds == 0:
        ctx.progress(100.0, step="slept 0s of 0s")
    return {"slept": seconds, "cancelled": False}


@registry.task("util.fail")
def fail(
    message: Annotated[str, Field(max_length=10_000)] = "failed on purpose",
    retryable: bool = True,
) -> NoReturn:
    """Always fail with ``message``.

    With ``retryable`` true (the default) the attempt fails with an ordinary error and is
    retried under the task's retry policy; with ``retryable`` false it raises ``Fatal`` and
    the task fails at once, with no retry.
    """
    if not retryable:
        raise Fatal(message)
    raise RuntimeError(message)
