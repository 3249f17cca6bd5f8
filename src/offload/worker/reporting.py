"""Deliver attempt outcomes and progress updates in batches.

Outcomes are buffered and sent with one ``complete``/``fail`` call per batch: as soon as
:attr:`Reporter.batch_size` are waiting, within :attr:`Reporter.delay_s` of the first one, or
at once when asked (nothing else is running, so there is nothing to batch with). An outcome
counts as delivered only once that call has returned. Progress updates come from any thread,
are coalesced per task and always go out before the outcomes of the same flush, so a task's
last checkpoint is stored before its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from offload.client.base import AsyncClient
from offload.domain.errors import StaleLease, TooLarge
from offload.domain.models import Ack, Completion, ErrorInfo, Failure, LeaseState, ProgressUpdate

log = logging.getLogger("offload.worker")

OutcomeT = TypeVar("OutcomeT", Completion, Failure)

#: Called once per outcome when its delivery is settled: (task_id, lease_id, accepted, is_failure).
OnDelivered = Callable[[str, str, bool, bool], None]

#: An outcome that could not be sent this many times in a row is dropped (its lease then
#: expires and the task runs again: delivery stays at-least-once).
MAX_STRIKES = 5
#: How long progress updates gather before they are sent (they are coalesced per task).
UPDATE_DELAY_S = 0.05


class Reporter:
    """Buffers outcomes and progress updates of one worker and sends them in batches."""

    def __init__(
        self,
        client: AsyncClient,
        loop: asyncio.AbstractEventLoop,
        *,
        on_delivered: OnDelivered,
        on_lease_state: Callable[[LeaseState], None],
        batch_size: int = 100,
        delay_s: float = 0.002,
    ) -> None:
        self.batch_size = batch_size
        self.delay_s = delay_s
        self._client = client
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._on_delivered = on_delivered
        self._on_lease_state = on_lease_state
        self._completions: list[Completion] = []
        self._failures: list[Failure] = []
        self._strikes: dict[tuple[str, str], int] = {}
        # Appended from handler threads; ``deque.append`` is atomic.
        self._updates: deque[ProgressUpdate] = deque()
        self._update_signalled = False
        # One timer for outcomes (delay_s), one for updates (UPDATE_DELAY_S); either flushes all.
        self._timer: asyncio.TimerHandle | None = None
        self._update_timer: asyncio.TimerHandle | None = None
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        self._backoff = 0.0

    @property
    def pending(self) -> int:
        """Outcomes waiting to be delivered."""
        return len(self._completions) + len(self._failures)

    def add(self, outcome: Completion | Failure, *, now: bool = False) -> None:
        """Buffer one outcome (loop thread only); ``now`` asks for a flush without delay."""
        if isinstance(outcome, Completion):
            self._completions.append(outcome)
        else:
            self._failures.append(outcome)
        if now or self.pending >= self.batch_size:
            self._kick_now()
        elif self._timer is None:
            self._timer = self._loop.call_later(self.delay_s, self._kick_now)

    def post_update(self, update: ProgressUpdate) -> None:
        """Queue a progress update; safe from any thread, never blocks."""
        self._updates.append(update)
        if self._update_signalled:
            return
        self._update_signalled = True
        if threading.get_ident() == self._loop_thread:
            self._arm_update_timer()
        else:
            # RuntimeError: the worker is gone and an abandoned handler is still talking.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._arm_update_timer)

    def _arm_update_timer(self) -> None:
        if self._update_timer is None:
            self._update_timer = self._loop.call_later(UPDATE_DELAY_S, self._kick_now)

    def flush_soon(self) -> None:
        """Have the background task flush now if anything is waiting."""
        if self._completions or self._failures or self._updates:
            self._kick_now()

    def _kick_now(self) -> None:
        self._cancel_timers()
        self._kick.set()

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._update_timer is not None:
            self._update_timer.cancel()
            self._update_timer = None

    async def run(self) -> None:
        """Deliver whenever there is something to deliver, until cancelled."""
        while True:
            await self._kick.wait()
            self._kick.clear()
            if self._backoff:
                await asyncio.sleep(self._backoff)
            # Shielded: cancelling the reporter must not abandon a batch mid-call.
            await asyncio.shield(self.flush())

    async def flush(self) -> bool:
        """Send pending updates, then every buffered outcome; False if some could not be sent."""
        async with self._lock:
            self._cancel_timers()
            # Reset before draining: an update posted from now on signals again.
            self._update_signalled = False
            # Outcomes are taken before the updates are sent: an outcome exists only once
            # its handler has returned, so all its updates are queued already and go first.
            # Outcomes that arrive while updates are being sent wait for the next flush,
            # behind updates of theirs that may have arrived meanwhile.
            items, self._completions = self._completions, []
            fails, self._failures = self._failures, []
            if self._updates:
                await self._send_updates()
            ok = True
            if items:
                ok = await self._deliver(items, self._client.complete, self._completions, False)
            if fails:
                ok = await self._deliver(fails, self._client.fail, self._failures, True) and ok
            if self._completions or self._failures:
                self._kick.set()
            if ok:
                self._backoff = 0.0
            else:
                self._backoff = min(1.0, max(0.05, self._backoff * 2))
                self._kick.set()
            return ok

    async def _deliver(
        self,
        items: list[OutcomeT],
        send: Callable[[Sequence[OutcomeT]], Awaitable[list[Ack]]],
        retry_into: list[OutcomeT],
        failures: bool,
    ) -> bool:
        try:
            acks = await send(items)
        except Exception as exc:  # kept and retried; leases stay refreshed
            log.warning("could not report %d outcomes (will retry): %s", len(items), exc)
            self._requeue(items, retry_into)
            return False
        by_id = {ack.task_id: ack for ack in acks}
        for item in items:
            self._strikes.pop((item.task_id, item.lease_id), None)
            ack = by_id.get(item.task_id)
            if ack is not None and ack.code == TooLarge.code and not failures:
                # The server takes smaller results than this worker does: the lease is
                # still held, so the attempt fails as it would have here.
                self._failures.append(_too_large(item, ack.message))
                continue
            if ack is None or not ack.ok:
                why = (ack.message or ack.code) if ack is not None else "no acknowledgement"
                log.info("task %s: outcome discarded (%s)", item.task_id, why)
            self._on_delivered(item.task_id, item.lease_id, ack is not None and ack.ok, failures)
        return True

    def _requeue(self, items: list[OutcomeT], into: list[OutcomeT]) -> None:
        keep: list[OutcomeT] = []
        for item in items:
            key = (item.task_id, item.lease_id)
            strikes = self._strikes.get(key, 0) + 1
            if strikes >= MAX_STRIKES:
                self._strikes.pop(key, None)
                log.error(
                    "task %s: giving up reporting its outcome after %d tries; the lease "
                    "will expire and the task run again",
                    item.task_id,
                    strikes,
                )
                self._on_delivered(item.task_id, item.lease_id, False, False)
                continue
            self._strikes[key] = strikes
            keep.append(item)
        into[:0] = keep

    async def _send_updates(self) -> None:
        drained: list[ProgressUpdate] = []
        while self._updates:
            drained.append(self._updates.popleft())
        for update in coalesce(drained):
            try:
                state = await self._client.progress(update)
            except StaleLease:
                state = LeaseState(task_id=update.task_id, lease_id=update.lease_id, valid=False)
            except Exception as exc:  # progress is advisory; the outcome is not
                log.warning("task %s: progress update not stored: %s", update.task_id, exc)
                continue
            self._on_lease_state(state)


def _too_large(item: Completion | Failure, message: str | None) -> Failure:
    return Failure(
        task_id=item.task_id,
        lease_id=item.lease_id,
        error=ErrorInfo(
            type="InvalidResult", message=message or "result too large", retryable=False
        ),
    )


def _progress_only(update: ProgressUpdate) -> bool:
    return update.log is None and update.checkpoint is None and update.artifact is None


def coalesce(updates: Sequence[ProgressUpdate]) -> list[ProgressUpdate]:
    """Merge runs of progress-only updates per task; logs, checkpoints and artifacts stay in
    order. Tasks keep the order in which they first appear."""
    per_task: dict[tuple[str, str], list[ProgressUpdate]] = {}
    for update in updates:
        queue = per_task.setdefault((update.task_id, update.lease_id), [])
        if queue and _progress_only(update) and _progress_only(queue[-1]):
            last = queue[-1]
            queue[-1] = last.model_copy(
                update={
                    "progress": update.progress if update.progress is not None else last.progress,
                    "current_step": (
                        update.current_step
                        if update.current_step is not None
                        else last.current_step
                    ),
                }
            )
        else:
            queue.append(update)
    return [u for queue in per_task.values() for u in queue]
