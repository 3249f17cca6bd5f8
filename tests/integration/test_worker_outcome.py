"""The pieces of the worker that need no database: outcome decision, update coalescing,
handler threads."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

import offload
from offload.domain.errors import InvalidInput
from offload.domain.models import Ack, Completion, Failure, LeaseState, ProgressUpdate
from offload.worker.outcome import TRACEBACK_LIMIT, attempt_outcome, to_json
from offload.worker.reporting import Reporter, coalesce
from offload.worker.threads import HandlerThreads


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_returned_value_completes() -> None:
    out = attempt_outcome("t", "l", result={"n": 1})
    assert isinstance(out, Completion)
    assert (out.task_id, out.lease_id, out.result) == ("t", "l", {"n": 1})


def test_outcome_precedence_cancel_then_timeout_then_error() -> None:
    boom = _raised(ValueError("x"))
    cancelled = attempt_outcome("t", "l", result=1, error=boom, cancelled=True, timeout_s=2)
    assert isinstance(cancelled, Failure) and cancelled.error.type == "Cancelled"
    timed_out = attempt_outcome("t", "l", error=boom, timeout_s=2)
    assert isinstance(timed_out, Failure)
    assert (timed_out.error.type, timed_out.error.retryable) == ("Timeout", True)
    assert "2s" in timed_out.error.message


@pytest.mark.parametrize(
    ("error", "kind", "retryable", "delay"),
    [
        (offload.Retry("later", delay_s=5), "Retry", True, 5),
        (offload.Fatal("never"), "Fatal", False, None),
        (InvalidInput("bad input"), "InvalidInput", False, None),
        (KeyError("k"), "KeyError", True, None),
    ],
)
def test_exceptions_map_to_failures(
    error: Exception, kind: str, retryable: bool, delay: float | None
) -> None:
    out = attempt_outcome("t", "l", error=_raised(error))
    assert isinstance(out, Failure)
    assert (out.error.type, out.error.retryable, out.retry_delay_s) == (kind, retryable, delay)


def test_traceback_is_kept_and_truncated_to_its_tail() -> None:
    out = attempt_outcome("t", "l", error=_raised(RuntimeError("x" * 50_000)))
    assert isinstance(out, Failure) and out.error.traceback is not None
    assert len(out.error.traceback) <= TRACEBACK_LIMIT
    assert out.error.traceback.startswith("…(truncated)")
    assert out.error.traceback.rstrip().endswith("x")
    assert len(out.error.message) <= 2_000


def test_results_become_plain_json() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    class Model(BaseModel):
        at: datetime

    when = datetime(2026, 1, 2, tzinfo=UTC)
    assert to_json((1, 2)) == [1, 2]
    assert to_json(Point(1, 2)) == {"x": 1, "y": 2}
    assert to_json(Model(at=when)) == {"at": "2026-01-02T00:00:00Z"}
    out = attempt_outcome("t", "l", result=object())
    assert isinstance(out, Failure)
    assert (out.error.type, out.error.retryable) == ("InvalidResult", False)


@pytest.mark.parametrize(
    "result", [float("nan"), {"a": [1.0, float("inf")]}, [-float("inf")]], ids=repr
)
def test_results_json_cannot_carry_are_refused_not_stored_as_null(result: object) -> None:
    out = attempt_outcome("t", "l", result=result)
    assert isinstance(out, Failure)
    assert (out.error.type, out.error.retryable) == ("InvalidResult", False)
    assert "NaN or infinity" in out.error.message


@pytest.mark.parametrize(
    ("result", "size"),
    [("x" * 1000, 1002), ('"' * 500, 1002), ({"rows": ["abc"] * 200}, 1210)],
    ids=["string", "escaped string", "object"],
)
def test_a_result_over_the_limit_fails_the_attempt_for_good(result: object, size: int) -> None:
    out = attempt_outcome("t", "l", result=result, max_result_bytes=1000)
    assert isinstance(out, Failure)
    assert (out.error.type, out.error.retryable) == ("InvalidResult", False)
    assert f"the result is {size:,} bytes of JSON; the limit is 1,000" in out.error.message
    assert "OFFLOAD_MAX_RESULT_BYTES" in out.error.message and "artifact" in out.error.message
    # At the limit, or with no limit, it is a result like any other.
    assert isinstance(attempt_outcome("t", "l", result=result, max_result_bytes=size), Completion)
    assert isinstance(attempt_outcome("t", "l", result=result), Completion)


def test_an_exception_whose_message_fails_still_makes_a_failure() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    out = attempt_outcome("t", "l", error=_raised(Unprintable()))
    assert isinstance(out, Failure)
    assert out.error.message == "Unprintable (its message could not be read)"


def test_coalesce_merges_progress_but_keeps_logs_in_order() -> None:
    def upd(task: str, **kw: object) -> ProgressUpdate:
        return ProgressUpdate(task_id=task, lease_id="l", **kw)

    merged = coalesce(
        [
            upd("a", progress=10),
            upd("b", progress=5),
            upd("a", progress=20, current_step="two"),
            upd("a", log="hello"),
            upd("a", progress=30),
            upd("a", progress=40),
        ]
    )
    assert [(u.task_id, u.progress, u.current_step, u.log) for u in merged] == [
        ("a", 20, "two", None),
        ("a", None, None, "hello"),
        ("a", 40, None, None),
        ("b", 5, None, None),
    ]


def test_handler_threads_give_every_job_a_thread_and_retire_extras() -> None:
    release = threading.Event()
    done: list[int] = []

    def run(job: int) -> None:
        if job < 3:
            release.wait(5)  # three stuck jobs
        done.append(job)

    pool: HandlerThreads[int] = HandlerThreads(run, size=2)
    for job in range(6):
        pool.submit(job)
    # Jobs 3-5 finish although three threads are stuck: each job got a thread at once.
    deadline = time.monotonic() + 5
    while sorted(done) != [3, 4, 5] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(done) == [3, 4, 5]
    release.set()
    while len(done) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert pool.threads == 2  # extra threads retired once their jobs ended
    pool.shutdown()
    while pool.threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.threads == 0


class _SlowProgressClient:
    """Records the order in which a reporter sends things; the first progress call is held
    until released, as a slow database would."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()

    async def progress(self, update: ProgressUpdate) -> LeaseState:
        if not self.sent:
            await self.release.wait()
        self.sent.append(f"progress {update.current_step}")
        return LeaseState(task_id=update.task_id, lease_id=update.lease_id, valid=True)

    async def complete(self, items: list[Completion]) -> list[Ack]:
        self.sent += [f"complete {c.task_id}" for c in items]
        return [Ack(task_id=c.task_id, ok=True) for c in items]

    async def fail(self, items: list[Failure]) -> list[Ack]:
        return []


def test_an_outcome_never_overtakes_its_own_progress_updates() -> None:
    """The last progress update of an attempt is stored before its result, even when the
    attempt ends while an earlier update is still being sent."""

    async def scenario() -> list[str]:
        client = _SlowProgressClient()
        reporter = Reporter(
            client,  # type: ignore[arg-type]
            asyncio.get_running_loop(),
            on_delivered=lambda *_: None,
            on_lease_state=lambda _: None,
        )
        runner = asyncio.create_task(reporter.run())
        step = lambda n: ProgressUpdate(task_id="t", lease_id="l", current_step=f"step {n}")  # noqa: E731
        reporter.post_update(step(1))
        reporter.flush_soon()
        await asyncio.sleep(0.01)  # the flush is now stuck sending step 1
        reporter.post_update(step(2))
        reporter.add(Completion(task_id="t", lease_id="l", result=1), now=True)
        client.release.set()
        for _ in range(100):
            if "complete t" in client.sent:
                break
            await asyncio.sleep(0.01)
        runner.cancel()
        return client.sent

    assert asyncio.run(scenario()) == ["progress step 1", "progress step 2", "complete t"]
