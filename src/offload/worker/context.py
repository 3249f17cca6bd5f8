"""The ``ctx`` a running handler receives (the :class:`offload.TaskContext` protocol).

Every method returns at once: it builds a :class:`ProgressUpdate` and hands it to the worker,
whose reporter sends it in the background. The methods are safe to call from handler threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from offload.domain.models import (
    MAX_LOG_CHARS,
    MAX_STEP_CHARS,
    Artifact,
    Checkpoint,
    ProgressUpdate,
    Review,
    ReviewStatus,
    Task,
    utcnow,
)
from offload.domain.rules import check_kept
from offload.worker.outcome import to_json


def _clipped(text: str, limit: int) -> str:
    """``text``, or its beginning and how long it was when over ``limit`` characters."""
    if len(text) <= limit:
        return text
    note = f" … [clipped: {len(text):,} characters in all]"
    return text[: limit - len(note)] + note


class WorkerContext:
    """Cancellation flag and non-blocking progress reporting for one attempt."""

    __slots__ = ("_post", "cancel_reason", "lease_id", "task")

    def __init__(self, task: Task, lease_id: str, post: Callable[[ProgressUpdate], None]) -> None:
        self.task = task
        self.lease_id = lease_id
        #: Why the attempt should stop (``"cancel"``, ``"timeout"``, ``"shutdown"``, …), or None.
        self.cancel_reason: str | None = None
        self._post = post

    @property
    def cancelled(self) -> bool:
        """True once cancel or pause was requested, the attempt timed out, or the worker is
        shutting down: stop soon (the result of a cancelled attempt is not kept)."""
        return self.cancel_reason is not None

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, …"""
        return self.task.attempt

    @property
    def task_id(self) -> str:
        """The running task's id."""
        return self.task.id

    @property
    def review(self) -> Review | None:
        """The task's review state (``None`` unless its results are reviewed): ``rounds``
        decided so far and every round's ``history`` (decision, feedback, score)."""
        return self.task.review

    @property
    def review_feedback(self) -> str | None:
        """What the reviewer said when rejecting the previous attempt's result, or None.

        A handler redoing rejected work reads it to fix what was criticised.
        """
        review = self.task.review
        if review is None or review.status is not ReviewStatus.FAILED:
            return None
        return review.feedback

    def progress(self, percent: float | None = None, step: str | None = None) -> None:
        """Report progress (0-100, clamped) and/or the current step (its first
        1,000 characters)."""
        if percent is not None:
            if math.isnan(percent):
                raise ValueError("progress percent must be a number between 0 and 100")
            percent = min(100.0, max(0.0, float(percent)))
        if step is not None:
            step = _clipped(str(step), MAX_STEP_CHARS)
        self._send(progress=percent, current_step=step)

    def log(self, message: str, level: str = "info") -> None:
        """Append a log line to the task's event log. A line over 100,000 characters keeps
        its beginning and says how long it was."""
        self._send(log=_clipped(str(message), MAX_LOG_CHARS), level=str(level)[:20])

    def checkpoint(self, name: str, data: Any = None) -> None:
        """Save a named checkpoint; a later attempt finds it in ``ctx.task.checkpoints``.

        Raises :class:`offload.TooLarge` for data over 1,000,000 bytes of JSON (and
        ``TypeError`` for data JSON cannot hold), here in the handler, where it is made."""
        value = to_json(data)
        check_kept(
            value, "checkpoint.data", f"checkpoint {name!r} is",
            ": keep what resuming needs (an offset, ids), not the data itself",
        )  # fmt: skip
        self._send(checkpoint=Checkpoint(name=name, at=utcnow(), data=value))

    def artifact(self, artifact: Artifact) -> None:
        """Attach an artifact to the task. Raises :class:`offload.TooLarge` for inline
        content over 1,000,000 bytes of JSON: store it elsewhere and give its ``uri``."""
        check_kept(
            artifact.inline, "artifact.inline", f"artifact {artifact.name!r} has",
            ": store it elsewhere and give its uri",
        )  # fmt: skip
        self._send(artifact=artifact)

    def last_checkpoint(self, name: str | None = None) -> Checkpoint | None:
        """The newest checkpoint saved by an earlier attempt (with that ``name``), if any."""
        for cp in reversed(self.task.checkpoints):
            if name is None or cp.name == name:
                return cp
        return None

    def _send(self, **fields: Any) -> None:
        self._post(ProgressUpdate(task_id=self.task.id, lease_id=self.lease_id, **fields))
