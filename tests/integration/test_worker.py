"""The worker runtime in this process, against a real SQLite database.

Each test starts ``offload.Worker`` on a thread (the way ``offload worker`` runs it, through
the sync ``Client``) and watches the tasks through the client.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import offload
from offload.client.factory import connect
from offload.domain.errors import InvalidInput
from offload.domain.models import TaskSpec
from offload.domain.status import Status
from offload.worker.runtime import Worker, load_imports
from tests import worker_tasks
from tests.integration.conftest import wait_status, wait_until

DONE = {Status.COMPLETED, Status.FAILED, Status.CANCELLED}

pytestmark = pytest.mark.timeout(60)


def test_sync_and_async_handlers_store_results(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    worker = run_worker(concurrency=4)
    sync = [client.submit("wt.add", {"a": i, "b": 1}) for i in range(20)]
    aio = [client.submit("wt.add_async", {"a": i, "b": 2}) for i in range(20)]
    for i, t in enumerate(sync):
        done = client.wait(t.id, timeout=10)
        assert (done.status, done.result, done.attempt) == (Status.COMPLETED, i + 1, 1)
    for i, t in enumerate(aio):
        assert client.wait(t.id, timeout=10).result == i + 2
    wait_until(lambda: worker.processed == 40, 5, "40 delivered outcomes")
    assert worker.failed == 0
    agents = {a.id: a for a in client.list_agents()}
    assert worker.agent_id in agents
    meta = agents[worker.agent_id].metadata
    assert meta["version"] == offload.__version__
    assert isinstance(meta["pid"], int)
    assert meta["hostname"]


def test_context_progress_log_and_checkpoint_reach_the_event_log(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    run_worker()
    task = client.submit("wt.report", {"steps": 50})
    done = client.wait(task.id, timeout=10)
    assert done.status is Status.COMPLETED
    assert done.result == {"attempt": 1, "steps": 50}
    # Progress is stored before the outcome, so the last value survives.
    assert done.progress == 100.0
    assert done.current_step == "step 50"
    assert [(c.name, c.data) for c in done.checkpoints] == [("done-steps", {"steps": 50})]
    kinds = [e.kind for e in client.events(task.id)]
    assert "log" in kinds and "checkpoint" in kinds
    # Fifty progress calls in a tight loop are coalesced into far fewer writes.
    assert 1 <= kinds.count("progress") < 50
    log_event = next(e for e in client.events(task.id) if e.kind == "log")
    assert log_event.data["message"] == "halfway there"
    assert log_event.data["level"] == "warning"


def test_outcomes_fatal_exception_and_retry(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    worker = run_worker()
    fatal = client.submit("wt.fatal", {"reason": "bad data"}, max_retries=5)
    boom = client.submit("wt.boom", {"message": "kaput"}, max_retries=0)
    retry = client.submit("wt.retry_once", {})

    f = client.wait(fatal.id, timeout=10)
    assert f.status is Status.FAILED and f.attempt == 1  # Fatal: no retry despite max_retries
    assert f.error is not None
    assert (f.error.type, f.error.message, f.error.retryable) == ("Fatal", "bad data", False)

    b = client.wait(boom.id, timeout=10)
    assert b.status is Status.FAILED
    assert b.error is not None and b.error.type == "ValueError" and b.error.retryable
    assert b.error.message == "kaput"
    assert b.error.traceback is not None and "raise ValueError(message)" in b.error.traceback

    r = client.wait(retry.id, timeout=10)
    assert (r.status, r.result, r.attempt) == (Status.COMPLETED, 2, 2)
    assert [e.type for e in r.errors] == ["Retry"]
    wait_until(lambda: worker.failed >= 3, 5, "three failed attempts delivered")


def test_concurrency_runs_sync_handlers_side_by_side(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    run_worker(concurrency=6)
    start = time.monotonic()
    tasks = client.submit_many(
        [TaskSpec(type="wt.sleep", input={"seconds": 0.6}) for _ in range(6)]
    )
    results = [client.wait(t.id, timeout=15).result for t in tasks]
    elapsed = time.monotonic() - start
    # Serially this takes 3.6 s; side by side about 0.6 s.
    assert elapsed < 3.3, elapsed
    assert max(r["start"] for r in results) < min(r["end"] for r in results)


def test_many_async_tasks_in_flight_at_once(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    n = 10_000
    specs = [TaskSpec(type="wt.gated", input={"i": i}) for i in range(n)]
    for i in range(0, n, 1000):
        client.submit_many(specs[i : i + 1000])
    worker = run_worker(concurrency=n, lease_ttl_s=30.0)
    try:
        # Every handler waits at the gate: all 10,000 must be running at the same time.
        wait_until(
            lambda: client.list(status=["running"], limit=1).total == n,
            40,
            f"{n} tasks running at once",
            interval=0.1,
        )
    finally:
        worker_tasks.open_gates()
    wait_until(lambda: worker.processed == n, 40, f"{n} results delivered", interval=0.1)
    assert worker.failed == 0
    assert client.stats().counts["completed"] == n


def test_per_attempt_timeout_sync_and_async(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    worker = run_worker(concurrency=2)
    hang = client.submit("wt.hang", {"seconds": 5}, timeout_s=0.3, max_retries=0)
    snooze = client.submit("wt.sleep_async", {"seconds": 5}, timeout_s=0.3, max_retries=0)
    started = time.monotonic()
    for t in (hang, snooze):
        done = client.wait(t.id, timeout=10)
        assert done.status is Status.FAILED
        assert done.error is not None and done.error.type == "Timeout" and done.error.retryable
    assert time.monotonic() - started < 3
    # The abandoned thread does not cost a slot: new work still runs at once.
    quick = client.submit("wt.add", {"a": 1, "b": 1})
    assert client.wait(quick.id, timeout=5).result == 2
    assert worker.failed == 2


def test_an_async_handler_that_swallows_its_timeout_is_given_up_on(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    run_worker(concurrency=1)
    stubborn = client.submit("wt.stubborn", {"seconds": 4}, timeout_s=0.3, max_retries=0)
    done = client.wait(stubborn.id, timeout=10)
    assert done.status is Status.FAILED
    assert done.error is not None and done.error.type == "Timeout"
    # Its one slot is free again although the coroutine still runs, abandoned.
    quick = client.submit("wt.add", {"a": 2, "b": 2})
    assert client.wait(quick.id, timeout=5).result == 4


def test_attempts_that_cannot_be_described_plainly_still_end(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    run_worker(concurrency=2)
    unprintable = client.submit("wt.unprintable", {}, max_retries=0)
    nan = client.submit("wt.not_a_number", {}, max_retries=0)
    failed = client.wait(unprintable.id, timeout=10)
    assert failed.status is Status.FAILED and failed.error is not None
    assert failed.error.message == "_Unprintable (its message could not be read)"
    refused = client.wait(nan.id, timeout=10)
    assert refused.status is Status.FAILED and refused.error is not None
    assert refused.error.type == "InvalidResult" and not refused.error.retryable
    assert "NaN or infinity" in refused.error.message


def test_cancel_running_builtin_sleep_stops_it_quickly(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    run_worker()
    task = client.submit("util.sleep", {"seconds": 60})
    wait_status(client, task.id, {Status.RUNNING}, 10)
    time.sleep(0.2)
    asked = time.monotonic()
    client.cancel(task.id)
    done = client.wait(task.id, timeout=10)
    assert done.status is Status.CANCELLED
    assert time.monotonic() - asked < 4


def test_cancel_reaches_a_cooperative_sync_handler(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    run_worker()
    task = client.submit("wt.patient", {"seconds": 60})
    wait_status(client, task.id, {Status.RUNNING}, 10)
    client.cancel(task.id)
    done = client.wait(task.id, timeout=10)
    assert done.status is Status.CANCELLED


def test_pause_running_task_then_resume_runs_it_again(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    run_worker()
    task = client.submit("wt.patient", {"seconds": 1.5})
    wait_status(client, task.id, {Status.RUNNING}, 10)
    client.pause(task.id)
    wait_status(client, task.id, {Status.PAUSED}, 10)
    client.resume(task.id)
    done = client.wait(task.id, timeout=15)
    assert done.status is Status.COMPLETED
    assert done.result["stopped"] is False


def test_capabilities_and_queues_limit_what_is_claimed(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    run_worker(capabilities=["math"], queues=["fast"])
    gpu = client.submit("wt.add", {"a": 1, "b": 1}, capabilities=["gpu"], queue="fast")
    other_queue = client.submit("wt.add", {"a": 1, "b": 2}, queue="default")
    mine = client.submit("wt.add", {"a": 1, "b": 3}, capabilities=["math"], queue="fast")
    assert client.wait(mine.id, timeout=10).result == 4
    time.sleep(0.3)
    assert client.get(gpu.id).status is Status.QUEUED
    assert client.get(other_queue.id).status is Status.QUEUED


def test_stop_hands_back_unfinished_tasks_without_spending_an_attempt(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    worker = run_worker(concurrency=1, grace_s=0.3, prefetch=2)
    running = client.submit("wt.hang", {"seconds": 3})
    waiting = client.submit("wt.add", {"a": 1, "b": 1}, priority="low")
    wait_status(client, running.id, {Status.RUNNING}, 10)
    worker.stop()
    wait_until(
        lambda: worker.agent_id is not None and client.get(running.id).status is Status.QUEUED,
        10,
        "the running task handed back",
    )
    for t in (running, waiting):
        back = client.get(t.id)
        assert back.status is Status.QUEUED
        assert back.attempt == 0 and back.errors == []


def test_run_async_on_an_async_client(db_url: str) -> None:
    async def main() -> None:
        aio = await connect(database_url=db_url)
        stop = asyncio.Event()
        worker = Worker(aio, lease_ttl_s=3.0)
        running = asyncio.create_task(worker.run_async(stop))
        try:
            task = await aio.submit("wt.add_async", {"a": 20, "b": 22})
            done = await aio.wait(task.id, timeout=10)
            assert done.result == 42
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
            await aio.close()
        assert worker.processed == 1

    asyncio.run(main())


def test_run_async_on_another_loop_with_a_sync_client(client: offload.Client) -> None:
    # The sync Client's async client lives on its own loop thread; the worker bridges to it.
    async def main() -> None:
        stop = asyncio.Event()
        worker = Worker(client, lease_ttl_s=3.0)
        running = asyncio.create_task(worker.run_async(stop))
        try:
            task = await asyncio.to_thread(client.submit, "wt.add", {"a": 1, "b": 2})
            done = await asyncio.to_thread(client.wait, task.id, 10)
            assert done.result == 3
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)

    asyncio.run(main())


def test_load_imports_reports_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as missing:
        load_imports(["no_such_module_xyz"])
    assert "cannot import 'no_such_module_xyz'" in str(missing.value)
    assert "\n" not in str(missing.value)

    broken = tmp_path / "broken_tasks.py"
    broken.write_text("import offload\n\nraise RuntimeError('config missing\\nsecond line')\n")
    with pytest.raises(InvalidInput) as failing:
        load_imports([str(broken)])
    assert "RuntimeError: config missing second line" in str(failing.value)

    good = tmp_path / "good_tasks_for_import.py"
    good.write_text(
        "import offload\n\n@offload.task('wt.from_file')\n"
        "def from_file(x: int) -> int:\n    return x\n"
    )
    (module,) = load_imports([str(good)])
    assert "wt.from_file" in offload.default_registry
    sys.modules.pop(module.__name__, None)


def test_worker_without_task_types_refuses_to_start(client: offload.Client) -> None:
    worker = Worker(client, registry=offload.Registry())
    with pytest.raises(InvalidInput, match="no task types"):
        worker.run()


@pytest.mark.parametrize("limited_at", ["worker", "store"])
def test_a_result_over_the_limit_fails_at_once_with_the_reason(
    limited_at: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker refuses a big result before sending it; a store that takes less than the
    # worker does refuses it too, and the worker then fails the attempt the same way.
    # Either way: no retry, no lease left to expire, the reason in the task's error.
    if limited_at == "store":
        monkeypatch.setenv("OFFLOAD_MAX_RESULT_BYTES", "1000")
    with offload.Client(database_url=db_url) as client:  # the store's limit: from the env
        monkeypatch.setenv("OFFLOAD_MAX_RESULT_BYTES", "1000")
        worker = Worker(client, concurrency=2, lease_ttl_s=3.0, grace_s=2.0)
        assert worker.max_result_bytes == 1000
        if limited_at == "store":
            worker.max_result_bytes = 10**9
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            big = client.submit("wt.blob", {"n": 5000})
            small = client.submit("wt.blob", {"n": 10})
            done = wait_status(client, big.id, DONE, 15)
            assert (done.status, done.attempt, done.error.type) == (
                Status.FAILED, 1, "InvalidResult",
            )  # fmt: skip
            assert "5,002 bytes of JSON; the limit is 1,000" in done.error.message
            assert [e.kind for e in client.events(big.id)] == ["created", "claimed", "failed"]
            assert client.wait(small.id, timeout=10).result == "x" * 10
        finally:
            worker.stop()
            thread.join(timeout=15)


def test_reports_past_the_limits_are_clipped_or_refused_in_the_handler(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    # The same limits hold in a worker of its own and over HTTP, where they are the request
    # schema's: a log line or step that would be refused there is clipped here, keeping its
    # beginning; a checkpoint too big is refused in the handler, which can keep less.
    run_worker(concurrency=1)
    task = client.submit("wt.loud", {})
    done = client.wait(task.id, timeout=15)
    assert done.status is Status.COMPLETED, done.error
    assert done.result["refused"].startswith("checkpoint 'everything' is 2,00")
    assert "the limit is 1,000,000" in done.result["refused"]
    assert [c.name for c in done.checkpoints] == ["offset"]
    assert done.result["artifact_refused"].startswith("artifact 'dump' has 1,500,002 bytes")
    assert [(a.name, a.uri) for a in done.artifacts] == [("dump", "s3://bucket/dump")]
    assert len(done.current_step or "") == 1000 and done.current_step.startswith("SSS")
    (line,) = [e.data["message"] for e in client.events(task.id) if e.kind == "log"]
    assert len(line) == 100_000 and line.startswith("LLL")
    assert line.endswith("[clipped: 200,000 characters in all]")
