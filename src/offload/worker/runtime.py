"""The worker: claim tasks in batches, run their handlers, report how each attempt ended.

One event loop does all the bookkeeping. Async handlers run as tasks on it; sync handlers
run on :class:`~offload.worker.threads.HandlerThreads`. Everything goes through the
:class:`~offload.client.base.AsyncClient` protocol, so a worker runs the same against the
local database and over HTTP::

    offload.Worker(offload.Client(), capabilities=["math"], concurrency=8).run()

Flow: the claim loop leases up to ``free slots + prefetch`` tasks per round trip (prefetch
adapts to about 0.1 s of work), waits on :meth:`AsyncClient.wait_for_work` when the queue is
empty, and flushes buffered outcomes before every claim. Background loops refresh leases
(which also carries cancel and pause requests), heartbeat the agent record and run the
maintenance pass. Shutdown stops claiming, hands back tasks not yet started, gives running
ones ``grace_s`` to finish and hands back the rest without spending an attempt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, cast

from pydantic import ValidationError

from offload import __version__
from offload.client.base import AsyncClient, Client
from offload.core.registry import Registry, TaskType, default_registry, load_task_modules
from offload.domain.errors import Fatal, InvalidInput, UnknownTaskType
from offload.domain.models import (
    Agent,
    AgentRegistration,
    AgentStatus,
    ClaimRequest,
    Completion,
    Failure,
    LeaseRef,
    LeaseState,
    Task,
)
from offload.domain.settings import Settings
from offload.worker.context import WorkerContext
from offload.worker.lease import keep_agent_alive, keep_leases, maintain_forever
from offload.worker.outcome import attempt_outcome
from offload.worker.reporting import Reporter
from offload.worker.threads import HandlerThreads

log = logging.getLogger("offload.worker")

#: Why an attempt is being stopped (``WorkerContext.cancel_reason``).
CANCEL = "cancel"  # cancel or pause requested: report "Cancelled"
TIMEOUT = "timeout"  # ran past timeout_s: report "Timeout"
#: How long past its timeout an async handler that ignores cancellation keeps its slot.
ASYNC_TIMEOUT_GRACE_S = 1.0
LOST = "lost"  # the lease is gone: report nothing
SHUTDOWN = "shutdown"  # the worker is stopping: hand the lease back

MAX_CLAIM = 1000  # ClaimRequest.max
IDLE_POLL_S = 1.0  # claim at least this often while idle
PREFETCH_WINDOW_S = 0.1  # adaptive prefetch holds about this much work
MAX_PREFETCH = 1000
#: A sync handler asked to cancel gets this long to notice ``ctx.cancelled`` before the
#: attempt is reported cancelled and its thread abandoned.
CANCEL_GRACE_S = 2.0


class _Attempt:
    """One leased task in this worker, from claim until its outcome is delivered."""

    __slots__ = (
        "ctx",
        "lease_id",
        "running",
        "settled",
        "started",
        "task",
        "timeout_s",
        "timer",
        "type",
    )

    def __init__(
        self,
        task: Task,
        lease_id: str,
        task_type: TaskType,
        ctx: WorkerContext,
        timeout_s: float | None,
    ) -> None:
        self.task = task
        self.lease_id = lease_id
        self.type = task_type
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.started = False
        self.settled = False
        self.running: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None


class Worker:
    """Claims tasks it has handlers for and runs them, ``concurrency`` at a time.

    ``client`` is an :class:`offload.Client` or any :class:`AsyncClient`. ``capabilities``
    defaults to those the registry's executable types require; ``queues`` to ``["default"]``;
    ``lease_ttl_s`` to ``$OFFLOAD_LEASE_TTL`` or 30 s. ``prefetch`` fixes how many tasks are
    leased beyond the free slots (default: adaptive, from ``concurrency`` up to 1,000 for
    fast tasks). ``processed`` counts delivered outcomes, ``failed`` the failures among them.
    """

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        registry: Registry | None = None,
        capabilities: list[str] | None = None,
        concurrency: int = 8,
        queues: list[str] | None = None,
        lease_ttl_s: float | None = None,
        name: str | None = None,
        grace_s: float = 30.0,
        prefetch: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidInput("concurrency must be at least 1", field="concurrency")
        if prefetch is not None and prefetch < 0:
            raise InvalidInput("prefetch must be 0 or more", field="prefetch")
        settings = Settings.from_env()
        if lease_ttl_s is None:
            lease_ttl_s = settings.lease_ttl_s
        #: Results over this many bytes of JSON fail their attempt here, before being sent.
        self.max_result_bytes = settings.max_result_bytes
        if grace_s < 0:
            raise InvalidInput("grace period must be 0 or more seconds", field="grace")
        if not lease_ttl_s > 0:
            raise InvalidInput("lease TTL must be a positive number of seconds", field="lease_ttl")
        self.client = client
        self.registry = registry if registry is not None else default_registry
        self.capabilities = list(capabilities) if capabilities is not None else None
        self.concurrency = concurrency
        self.queues = list(queues) if queues else ["default"]
        self.lease_ttl_s = float(lease_ttl_s)
        self.name = name or f"worker-{socket.gethostname()}-{os.getpid()}"
        self.grace_s = grace_s
        self.prefetch = prefetch
        #: Seconds between agent heartbeats ($OFFLOAD_AGENT_HEARTBEAT, default 10).
        self.heartbeat_s = _heartbeat_interval()
        #: The agent id this worker registered as (set while running).
        self.agent_id: str | None = None
        #: Outcomes delivered and accepted, and the failures among them.
        self.processed = 0
        self.failed = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._force_requested = False
        self._signals = 0
        # Per-run state, (re)made by _prepare().
        self._held: dict[str, _Attempt] = {}
        # Batched types (§4.11): attempts waiting for their batch, and each batch's timer.
        self._batches: dict[str, list[_Attempt]] = {}
        self._batch_timers: dict[str, asyncio.TimerHandle] = {}
        self._backlog: deque[_Attempt] = deque()
        self._running = 0
        self._finished = 0
        self._releases: list[LeaseRef] = []
        self._thread_results: deque[tuple[_Attempt, Any, BaseException | None]] = deque()
        self._thread_signalled = False
        self._stopping = False
        self._slot_waiting = False
        #: The claim loop's wait for work, cancelled when the worker stops.
        self._idle_wait: asyncio.Future[bool] | None = None
        self._prefetch = 0
        self._rate_mark = (0.0, 0)

    # -- running -----------------------------------------------------------
    def run(self) -> None:
        """Run until stopped: SIGTERM/SIGINT (when on the main thread) or :meth:`stop`.

        A second signal skips the grace period.
        """
        if isinstance(self.client, Client):
            # The async client lives on the facade's loop thread: run there, wait here
            # (in short waits, so signal handlers run promptly on this thread).
            with self._signal_handlers():
                future = asyncio.run_coroutine_threadsafe(self.run_async(), self.client._loop)
                try:
                    while not future.done():
                        concurrent.futures.wait([future], timeout=0.5)
                except BaseException:
                    self.stop(force=True)
                    raise
                future.result()
            return
        asyncio.run(self._run_with_loop_signals())

    async def _run_with_loop_signals(self) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        try:
            await self.run_async()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self._on_signal(signal.Signals(signum))

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s: draining (up to %gs); send again to stop at once", sig.name, self.grace_s)
            self.stop()
        else:
            log.info("%s again: handing back running tasks now", sig.name)
            self.stop(force=True)

    def stop(self, *, force: bool = False) -> None:
        """Ask the worker to drain: stop claiming, give running tasks ``grace_s`` to finish,
        hand back the rest. Thread-safe. ``force`` skips the grace period."""
        self._stop_requested = True
        self._force_requested = self._force_requested or force
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: nothing to stop
                loop.call_soon_threadsafe(self._begin_stop)

    async def run_async(self, stop: asyncio.Event | None = None) -> None:
        """Run on the current event loop until ``stop`` is set or :meth:`stop` is called."""
        loop = asyncio.get_running_loop()
        types = self.registry.executable_names()
        if not types:
            raise InvalidInput(
                "this worker has no task types to run: import the module that "
                "defines your @offload.task functions (--import MODULE)",
                field="import",
            )
        capabilities = self._capabilities()
        client = self._prepare(loop)
        try:
            agent = await client.register_agent(self._registration(capabilities))
            self.agent_id = agent.id
            log.info(
                "worker %s (agent %s): %d task types, queues %s, concurrency %d",
                self.name,
                agent.id,
                len(types),
                ",".join(self.queues),
                self.concurrency,
            )
            request = ClaimRequest(
                agent_id=agent.id,
                capabilities=capabilities,
                queues=self.queues,
                types=types,
                lease_ttl_s=self.lease_ttl_s,
            )
            await self._serve(client, request, stop)
        finally:
            self._threads.shutdown()
            self._loop = None
            self._stop_requested = self._force_requested = False
            self._signals = 0

    async def _serve(
        self, client: AsyncClient, request: ClaimRequest, stop: asyncio.Event | None
    ) -> None:
        loop = asyncio.get_running_loop()
        agent_id = request.agent_id
        background = [
            loop.create_task(self._reporter.run(), name="offload-reporter"),
            loop.create_task(
                keep_leases(client, self.lease_ttl_s, self._held_leases, self._on_lease_state),
                name="offload-leases",
            ),
            loop.create_task(
                keep_agent_alive(
                    client,
                    agent_id,
                    self._agent_metadata,
                    self.heartbeat_s,
                    self._on_agent_record,
                ),
                name="offload-agent",
            ),
            loop.create_task(maintain_forever(client), name="offload-maintain"),
        ]
        if stop is not None:
            background.append(loop.create_task(self._stop_when(stop), name="offload-stop"))
        try:
            if self._stop_requested:
                self._begin_stop()
            await self._claim_loop(client, request)
            await self._drain()
        finally:
            # Also reached when run_async itself is cancelled: nothing is left leased.
            await asyncio.shield(self._hand_back_everything())
            for job in background:
                job.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await asyncio.shield(self._final_report())
            try:
                await client.deregister_agent(agent_id)
            except Exception as exc:  # the record goes offline by itself
                log.warning("could not deregister agent %s: %s", agent_id, exc)
            log.info(
                "worker %s stopped: %d processed, %d failed", self.name, self.processed, self.failed
            )

    def _bind(self, loop: asyncio.AbstractEventLoop) -> AsyncClient:
        if isinstance(self.client, Client):
            if self.client._loop is loop:
                return self.client.aio
            return cast(AsyncClient, _OtherLoopClient(self.client.aio, self.client._loop))
        return self.client

    def _prepare(self, loop: asyncio.AbstractEventLoop) -> AsyncClient:
        self._loop = loop
        self._client = client = self._bind(loop)
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._held = {}
        self._backlog = deque()
        self._batches = {}
        self._batch_timers = {}
        self._running = 0
        self._finished = 0
        self._releases = []
        self._prefetch = (
            self.prefetch if self.prefetch is not None else min(self.concurrency, MAX_PREFETCH)
        )
        self._rate_mark = (time.monotonic(), 0)
        self._reporter = Reporter(
            client, loop, on_delivered=self._delivered, on_lease_state=self._on_lease_state
        )
        self._threads: HandlerThreads[_Attempt] = HandlerThreads(
            self._run_in_thread, self.concurrency
        )
        return client

    def _registration(self, capabilities: list[str]) -> AgentRegistration:
        """The agent record this worker registers (push agents add an endpoint)."""
        return AgentRegistration(
            name=self.name,
            capabilities=dict.fromkeys(capabilities, 1.0),
            max_concurrency=min(self.concurrency, 100_000),
            queues=self.queues,
            metadata=self._agent_metadata(),
        )

    def _capabilities(self) -> list[str]:
        if self.capabilities is not None:
            return self.capabilities
        caps: set[str] = set()
        for task_type in self.registry:
            if task_type.executable:
                caps.update(task_type.capabilities)
        return sorted(caps)

    def _agent_metadata(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "version": __version__,
            "load": self._running,
            "processed": self.processed,
            "failed": self.failed,
        }

    def _on_agent_record(self, agent: Agent) -> None:
        # Draining (set by an operator): finish what is running, take nothing new.
        if agent.status is AgentStatus.DRAINING and not self._stop_requested:
            log.info("agent %s is draining: finishing current work, then stopping", agent.id)
            self.stop()

    async def _stop_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stop()

    def _begin_stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._stop_event.set()
        self._wake.set()
        if self._idle_wait is not None:
            self._idle_wait.cancel()
        if self._force_requested:
            self._drained.set()

    # -- claiming ----------------------------------------------------------
    @property
    def _active(self) -> int:
        return self._running + len(self._backlog)

    def _refill_level(self) -> int:
        # Claim again once half the prefetched backlog is used up, so the next batch
        # arrives before the slots run dry.
        if self._prefetch < 2:
            return self.concurrency + self._prefetch - 1
        return self.concurrency + self._prefetch // 2

    async def _claim_loop(self, client: AsyncClient, request: ClaimRequest) -> None:
        while not self._stopping:
            # Outcomes go out first (a flush now, in the reporter's task) without holding up
            # the claim: the next batch then arrives while this one is still finishing.
            self._reporter.flush_soon()
            room = self.concurrency + self._adapt_prefetch() - self._active
            asked = min(room, MAX_CLAIM)
            got = 0
            if asked > 0:
                tasks = await self._claim(client, request.model_copy(update={"max": asked}))
                got = len(tasks)
                self._dispatch(tasks)
            if self._stopping:
                return
            if asked > 0 and got < asked:
                await self._wait_for_work(client)
            elif self._active > self._refill_level():
                await self._wait_for_slots()

    async def _claim(self, client: AsyncClient, request: ClaimRequest) -> list[Task]:
        try:
            return await client.claim(request)
        except Exception as exc:  # a busy or unreachable store: back off
            log.warning("claim failed (retrying): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), 0.5)
            return []

    def _adapt_prefetch(self) -> int:
        """Prefetch about PREFETCH_WINDOW_S of work, at least ``concurrency`` tasks."""
        if self.prefetch is not None:
            return self.prefetch
        now = time.monotonic()
        mark, finished = self._rate_mark
        if now - mark >= 0.25:
            rate = (self._finished - finished) / (now - mark)
            self._rate_mark = (now, self._finished)
            floor = min(self.concurrency, MAX_PREFETCH)
            self._prefetch = max(floor, min(MAX_PREFETCH, int(rate * PREFETCH_WINDOW_S)))
        return self._prefetch

    async def _wait_for_work(self, client: AsyncClient) -> None:
        if self._stopping:
            return
        # Stopping cancels the wait (see _begin_stop) rather than racing it against a
        # second task: each task between a notification and the claim is another turn of
        # the loop, and an idle worker takes this path for every task it runs.
        self._idle_wait = change = asyncio.ensure_future(client.wait_for_work(IDLE_POLL_S))
        try:
            async with asyncio.timeout(IDLE_POLL_S + 1):
                await change
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not change.cancelled() or (task is not None and task.cancelling()):
                raise  # the claim loop itself is being cancelled
        except TimeoutError:
            pass
        except Exception as exc:  # a store or server that failed to answer: back off
            log.warning("waiting for work failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), 0.5)
        finally:
            self._idle_wait = None

    async def _wait_for_slots(self) -> None:
        self._wake.clear()
        self._slot_waiting = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
        finally:
            self._slot_waiting = False

    def _dispatch(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.lease is None:
                log.error("task %s was claimed without a lease; skipped", task.id)
                continue
            lease_id = task.lease.id
            task_type = self.registry.find(task.type)
            if task_type is None or task_type.handler is None:
                self._reporter.add(
                    attempt_outcome(
                        task.id,
                        lease_id,
                        error=UnknownTaskType(task.type, self.registry.suggest(task.type)),
                    )
                )
                continue
            ctx = WorkerContext(task, lease_id, self._reporter.post_update)
            att = _Attempt(task, lease_id, task_type, ctx, task.timeout_s or task_type.timeout_s)
            self._held[task.id] = att
            # While stopping, claimed tasks wait in the backlog, which is handed back.
            if self._running < self.concurrency and not self._stopping:
                self._start(att)
            else:
                self._backlog.append(att)

    # -- running attempts ---------------------------------------------------
    def _start(self, att: _Attempt) -> None:
        att.started = True
        self._running += 1
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        if att.type.batch_size is not None:
            self._batch_add(att, loop)
            return
        if att.type.is_async:
            att.running = loop.create_task(self._run_async(att))
            if att.timeout_s is not None:
                # The handler is cancelled at its timeout (see _run_async); one that
                # swallows the cancellation is given up on a little later, as a stuck
                # thread is, so it cannot hold its slot and lease for ever.
                att.timer = loop.call_later(
                    att.timeout_s + ASYNC_TIMEOUT_GRACE_S, self._time_out, att
                )
            return
        if att.timeout_s is not None:
            att.timer = loop.call_later(att.timeout_s, self._time_out, att)
        self._threads.submit(att)

    # -- batched handlers ------------------------------------------------------
    def _batch_add(self, att: _Attempt, loop: asyncio.AbstractEventLoop) -> None:
        """Gather attempts of a batched type: a full batch goes at once, a partial one
        ``batch_wait_ms`` after its first attempt arrived."""
        name = att.type.name
        batch = self._batches.setdefault(name, [])
        batch.append(att)
        if att.timeout_s is not None:
            # Each task keeps its own time limit; a late batch result is then ignored.
            att.timer = loop.call_later(att.timeout_s, self._time_out, att)
        if len(batch) >= (att.type.batch_size or 1):
            self._batch_flush(name)
        elif len(batch) == 1:
            wait_s = (att.type.batch_wait_ms or 0.0) / 1000.0
            self._batch_timers[name] = loop.call_later(wait_s, self._batch_flush, name)

    def _batch_flush(self, name: str) -> None:
        timer = self._batch_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        atts = [a for a in self._batches.pop(name, []) if not a.settled]
        if not atts:
            return
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        tt = atts[0].type
        items: list[Any] = []
        ready: list[_Attempt] = []
        for att in atts:
            try:
                items.append(tt.batch_item(att.task.input))
                ready.append(att)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "input"
                self._finish(att, error=InvalidInput(
                    f"stored input no longer fits {tt.name}: input.{where}: {first['msg']}"
                ))  # fmt: skip
        if not ready:
            return
        handler = cast("Callable[..., Any]", tt.handler)
        kwargs = {cast(str, tt.batch_param): items}
        if tt.is_async:
            loop.create_task(self._run_batch_async(ready, handler, kwargs))
        else:
            fut = loop.run_in_executor(None, lambda: handler(**kwargs))
            fut.add_done_callback(lambda f: self._batch_done(ready, f))

    async def _run_batch_async(
        self, atts: list[_Attempt], handler: Callable[..., Any], kwargs: dict[str, Any]
    ) -> None:
        limits = [a.timeout_s for a in atts if a.timeout_s is not None]
        try:
            if limits:
                async with asyncio.timeout(max(limits)):
                    results = await handler(**kwargs)
            else:
                results = await handler(**kwargs)
        except BaseException as exc:  # whatever a handler raises fails its whole batch
            for att in atts:
                self._finish(att, error=exc)
            return
        self._batch_results(atts, results)

    def _batch_done(self, atts: list[_Attempt], fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            for att in atts:
                self._finish(att, error=exc)
            return
        self._batch_results(atts, fut.result())

    def _batch_results(self, atts: list[_Attempt], results: Any) -> None:
        """One result per input, in order; an exception instance fails just its task."""
        if not isinstance(results, (list, tuple)) or len(results) != len(atts):
            got = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
            error = Fatal(
                f"batch handler {atts[0].type.name} returned {got} results for {len(atts)} "
                "inputs; it must return a list with one result per input, in order"
            )
            for att in atts:
                self._finish(att, error=error)
            return
        for att, result in zip(atts, results, strict=True):
            if isinstance(result, BaseException):
                self._finish(att, error=result)
            else:
                self._finish(att, result=result)

    def _call_kwargs(self, att: _Attempt) -> dict[str, Any]:
        try:
            kwargs = att.type.call_kwargs(att.task.input if att.task.input is not None else {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "input"
            raise InvalidInput(
                f"stored input no longer fits {att.type.name}: input.{where}: {first['msg']}"
            ) from None
        if att.type.takes_context:
            kwargs["ctx"] = att.ctx
        return kwargs

    async def _run_async(self, att: _Attempt) -> None:
        handler = cast("Callable[..., Coroutine[Any, Any, Any]]", att.type.handler)
        try:
            kwargs = self._call_kwargs(att)
            if att.timeout_s is None:
                result = await handler(**kwargs)
            else:
                deadline = asyncio.timeout(att.timeout_s)
                try:
                    async with deadline:
                        result = await handler(**kwargs)
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    if att.ctx.cancel_reason is None:
                        att.ctx.cancel_reason = TIMEOUT
                    self._finish(att)
                    return
        except asyncio.CancelledError:
            if att.ctx.cancel_reason is None:
                raise  # not ours: the worker itself is being cancelled
            self._finish(att)
        except BaseException as exc:  # whatever a handler raises is its outcome
            self._finish(att, error=exc)
        else:
            self._finish(att, result=result)

    def _run_in_thread(self, att: _Attempt) -> None:
        """Handler threads: run one sync attempt and pass its ending to the loop."""
        result: Any = None
        error: BaseException | None = None
        try:
            handler = cast("Callable[..., Any]", att.type.handler)
            result = handler(**self._call_kwargs(att))
        except BaseException as exc:  # whatever a handler raises is its outcome
            error = exc
        self._thread_results.append((att, result, error))
        if self._thread_signalled:
            return
        self._thread_signalled = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: an abandoned attempt
                loop.call_soon_threadsafe(self._collect_thread_results)

    def _collect_thread_results(self) -> None:
        # Reset before draining: a thread appending now either is drained here or signals again.
        self._thread_signalled = False
        results = self._thread_results
        while results:
            att, result, error = results.popleft()
            self._finish(att, result=result, error=error)

    def _time_out(self, att: _Attempt) -> None:
        att.timer = None
        if att.ctx.cancel_reason is None:
            att.ctx.cancel_reason = TIMEOUT
        # The handler thread (or coroutine) keeps running, abandoned: its result is ignored.
        if att.running is not None:
            att.running.cancel()
        self._finish(att)

    def _finish(
        self, att: _Attempt, result: Any = None, error: BaseException | None = None
    ) -> None:
        """An attempt ended (or was given up on): report its one outcome."""
        if att.settled:
            return
        reason = att.ctx.cancel_reason
        if reason in (LOST, SHUTDOWN):
            self._settle(att, None, release=reason == SHUTDOWN)
            return
        try:
            outcome = attempt_outcome(
                att.task.id,
                att.lease_id,
                result=result,
                error=error,
                cancelled=reason == CANCEL,
                timeout_s=att.timeout_s if reason == TIMEOUT else None,
                max_result_bytes=self.max_result_bytes,
            )
        except Exception as exc:  # an outcome must exist, or the slot and lease never free
            log.exception("task %s: could not describe how its attempt ended", att.task.id)
            outcome = attempt_outcome(att.task.id, att.lease_id, error=exc)
        self._settle(att, outcome)

    def _settle(
        self, att: _Attempt, outcome: Completion | Failure | None, *, release: bool = False
    ) -> None:
        """Free the attempt's slot; buffer its outcome, or drop (and maybe release) its lease."""
        if att.settled:
            return
        att.settled = True
        if att.timer is not None:
            att.timer.cancel()
            att.timer = None
        if att.started:
            self._running -= 1
        self._finished += 1
        if self._backlog and not self._stopping:
            self._start(self._backlog.popleft())
        if outcome is None:
            if self._held.get(att.task.id) is att:
                del self._held[att.task.id]
            if release:
                self._releases.append(LeaseRef(task_id=att.task.id, lease_id=att.lease_id))
        else:
            # Nothing else running means nothing to batch with: send at once.
            self._reporter.add(outcome, now=self._running == 0)
        if self._stopping:
            if self._running == 0:
                self._drained.set()
        elif self._slot_waiting and self._active <= self._refill_level():
            self._wake.set()

    def _delivered(self, task_id: str, lease_id: str, accepted: bool, failure: bool) -> None:
        att = self._held.get(task_id)
        if att is not None and att.lease_id == lease_id:
            del self._held[task_id]
        if accepted:
            self.processed += 1
            if failure:
                self.failed += 1

    # -- leases ------------------------------------------------------------
    def _held_leases(self) -> list[LeaseRef]:
        return [LeaseRef(task_id=a.task.id, lease_id=a.lease_id) for a in self._held.values()]

    def _on_lease_state(self, state: LeaseState) -> None:
        att = self._held.get(state.task_id)
        if att is None or att.lease_id != state.lease_id or att.settled:
            return
        if not state.valid:
            log.warning(
                "task %s: lease lost (expired or re-claimed); dropping this attempt", att.task.id
            )
            self._stop_attempt(att, LOST)
        elif state.cancel_requested or state.pause_requested:
            log.info(
                "task %s: %s requested",
                att.task.id,
                "cancel" if state.cancel_requested else "pause",
            )
            self._stop_attempt(att, CANCEL)

    def _stop_attempt(self, att: _Attempt, reason: str) -> None:
        """Flip the attempt's ``ctx.cancelled`` and end it, now or after a grace period.

        ``LOST`` and ``SHUTDOWN`` end it at once (nothing reported, or the lease handed
        back); ``CANCEL`` lets the handler stop and then reports "Cancelled".
        """
        if att.settled:
            return
        current = att.ctx.cancel_reason
        if reason == CANCEL and current is not None:
            return
        if reason == SHUTDOWN and current == CANCEL:
            # Cancelled already: report it now rather than hand the task back.
            if att.running is not None:
                att.running.cancel()
            self._finish(att)
            return
        att.ctx.cancel_reason = reason
        if not att.started:
            self._backlog.remove(att)
            self._finish(att)
            return
        if att.running is not None:
            att.running.cancel()
        if reason != CANCEL:
            self._finish(att)
            return
        # An async handler ends through CancelledError; a sync one must notice ctx.cancelled.
        # Either way, after CANCEL_GRACE_S it is reported cancelled and left behind.
        if att.timer is not None:
            att.timer.cancel()
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        att.timer = loop.call_later(CANCEL_GRACE_S, self._finish, att)

    # -- shutdown ----------------------------------------------------------
    async def _drain(self) -> None:
        """Stop claiming, hand back the backlog, give running attempts ``grace_s``."""
        self._begin_stop()
        for att in list(self._backlog):
            self._stop_attempt(att, SHUTDOWN)
        await self._send_releases()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        if self._running:
            log.info("waiting up to %gs for %d running tasks", self.grace_s, self._running)
        while self._running and not self._force_requested:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), min(remaining, 1.0))

    async def _hand_back_everything(self) -> None:
        """Stop every attempt still running or waiting; their leases go back unspent."""
        self._stopping = True
        pending = [a for a in self._held.values() if not a.settled]
        if pending:
            log.info("handing back %d unfinished tasks", len(pending))
        tasks = [a.running for a in pending if a.running is not None]
        for att in pending:
            self._stop_attempt(att, SHUTDOWN)
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    async def _final_report(self) -> None:
        for _ in range(3):
            if await self._reporter.flush() or not self._reporter.pending:
                break
            await asyncio.sleep(0.2)
        await self._send_releases()

    async def _send_releases(self) -> None:
        refs, self._releases = self._releases, []
        if not refs:
            return
        try:
            await self._client.release(refs)
        except Exception as exc:  # the leases then just expire
            log.warning(
                "could not hand back %d leases (they expire in %gs): %s",
                len(refs),
                self.lease_ttl_s,
                exc,
            )


def _heartbeat_interval() -> float:
    value = Settings.from_env().agent_heartbeat_s
    if not value > 0:
        raise InvalidInput("agent heartbeat must be a positive number", field="agent_heartbeat")
    return value


class _OtherLoopClient:
    """Calls an :class:`AsyncClient` that lives on another loop (a sync ``Client``'s)."""

    def __init__(self, client: AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop)
            return await asyncio.wrap_future(future)

        return call


# -- importing user task modules ----------------------------------------------------------
#: Kept here for callers of the worker module; the loader lives with the registry.
load_imports = load_task_modules
