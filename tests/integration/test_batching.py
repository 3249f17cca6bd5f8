"""Batched handlers (§4.11): one call per batch, each task completing or failing alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import offload
from offload.core.registry import Registry
from offload.domain.errors import InvalidInput
from offload.domain.models import TaskSpec
from offload.worker.runtime import Worker

from .conftest import WorkerProcesses, wait_until


def test_registry_derives_the_item_schema_and_refuses_bad_declarations() -> None:
    reg = Registry()
    with pytest.raises(InvalidInput, match="list\\[Model\\] or list\\[dict\\]"):

        @reg.task("x.bad", batch_size=10)
        def bad(a: int, b: int) -> list[int]:
            return [a + b]

    with pytest.raises(InvalidInput, match="cannot take ctx"):

        @reg.task("x.ctx", batch_size=10)
        def with_ctx(items: list[dict], ctx: object) -> list[int]:
            return []

    import tests.worker_tasks  # noqa: F401

    tt = offload.default_registry.get("wt.upper_batch")
    assert tt.info().batch_size == 50
    with pytest.raises(InvalidInput, match="text"):
        tt.validate_input({"txt": "a"})


def _done(client: offload.Client, ids: list[str]) -> bool:
    return all(client.get(i).done for i in ids)


def test_batches_in_a_worker_process(
    client: offload.Client, workers: WorkerProcesses, tmp_path: Path
) -> None:
    log = tmp_path / "batches.txt"
    words = [f"w{i}" for i in range(119)] + ["boom"]
    ids = [
        t.id
        for t in client.submit_many(
            [TaskSpec(type="wt.upper_batch", input={"text": w}) for w in words]
        )
    ]
    with pytest.raises(InvalidInput, match="text"):
        client.submit("wt.upper_batch", {"nope": 1})
    workers.spawn("--concurrency", "64", env={"WT_BATCH_LOG": str(log)})
    wait_until(lambda: _done(client, ids), 60, "120 batched tasks")
    sizes = [int(x) for x in log.read_text().split()]
    assert sum(sizes) == 120 and max(sizes) <= 50
    assert sum(1 for s in sizes if s > 1) >= 2, f"inputs were not grouped: {sizes}"
    for task_id, word in zip(ids, words, strict=True):
        task = client.get(task_id)
        if word == "boom":
            assert task.status.value == "failed" and "cannot shout" in task.error.message
        else:
            assert task.status.value == "completed" and task.result == word.upper()


def test_async_batches_and_a_wrong_length_result(
    client: offload.Client, run_worker: Callable[..., Worker]
) -> None:
    good = [
        t.id
        for t in client.submit_many(
            [TaskSpec(type="wt.len_batch_async", input={"k": i, "j": 1}) for i in range(25)]
        )
    ]
    short = [
        t.id
        for t in client.submit_many([TaskSpec(type="wt.short_batch", input={}) for _ in range(3)])
    ]
    run_worker(concurrency=32)
    wait_until(lambda: _done(client, good + short), 60, "batched tasks")
    assert all(client.get(i).result == 2 for i in good)
    for i in short:
        task = client.get(i)
        assert task.status.value == "failed"
        assert "one result per input" in task.error.message
