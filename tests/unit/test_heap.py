"""The cyclic collector stays out of bulk submits, and always comes back (core.heap)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offload.core import heap
from offload.core.heap import collection_held, collection_paused
from offload.core.registry import Registry
from offload.core.service import QueueService
from offload.domain.errors import InvalidInput
from offload.domain.models import TaskSpec
from offload.storage import open_store


@pytest.fixture
def collections() -> Iterator[list[tuple[int, bool]]]:
    """Each collection run during the test: its generation, and whether a pause was held."""
    seen: list[tuple[int, bool]] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append((info["generation"], collection_held()))

    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        gc.enable()


def test_pause_resumes_after_the_last_holder() -> None:
    assert gc.isenabled()
    outer = collection_paused()
    inner = collection_paused()
    outer.__enter__()
    inner.__enter__()
    assert not gc.isenabled() and collection_held()
    outer.__exit__(None, None, None)  # holders may end in any order
    assert not gc.isenabled()
    inner.__exit__(None, None, None)
    assert gc.isenabled() and not collection_held()


def test_pause_resumes_when_the_block_raises() -> None:
    with pytest.raises(ValueError), collection_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_program_that_disabled_collection_keeps_it_disabled() -> None:
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_holders_cannot_keep_collection_off(
    monkeypatch: pytest.MonkeyPatch, collections: list[tuple[int, bool]]
) -> None:
    """Batches that always overlap never release the pause; one that ends after the pause
    has lasted MAX_PAUSE_S runs a full collection."""
    # Below zero: overdue even if the clock has not moved between the two readings.
    monkeypatch.setattr(heap, "MAX_PAUSE_S", -1.0)
    with collection_paused():
        with collection_paused():
            pass
        # Only the collections inside the pause count: an automatic one may run before it.
        assert [c for c in collections if c[1]] == [(2, True)]
        assert not gc.isenabled()
    assert gc.isenabled()


def _service(tmp_path: Path) -> tuple[QueueService, asyncio.AbstractEventLoop]:
    reg = Registry()

    @reg.task("t.num")
    def num(n: int) -> int:
        return n

    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(open_store(f"sqlite:///{tmp_path / 'o.db'}"))
    return QueueService(store, reg), loop


def test_a_bulk_submit_runs_no_automatic_collection(
    tmp_path: Path, collections: list[tuple[int, bool]]
) -> None:
    service, loop = _service(tmp_path)
    specs = [TaskSpec(type="t.num", input={"n": i}) for i in range(1000)]
    old = gc.get_threshold()
    # A threshold this low collects many times in a 1,000-task batch unless it is paused.
    gc.set_threshold(50, 2, 2)
    during: list[tuple[int, bool]] = []
    insert = service.store.insert_tasks

    async def stored_then_look(tasks: Any, now: float) -> Any:
        out = await insert(tasks, now)
        during.extend(collections)  # from the start of the call to the end of its insert
        return out

    service.store.insert_tasks = stored_then_look  # type: ignore[method-assign]
    collections.clear()
    try:
        created = loop.run_until_complete(service.submit_many(specs))
        assert len(created) == 1000
        assert during == []
        assert gc.isenabled()
        # A batch refused part-way through resumes collection too.
        bad = [*specs[:10], TaskSpec(type="t.num", input={"n": "x"}), *specs[:60]]
        with pytest.raises(InvalidInput, match="task #10"):
            loop.run_until_complete(service.submit_many(bad))
        assert gc.isenabled() and not collection_held()
        # Once resumed, what the batch left alive is collected as usual.
        collections.clear()
        loop.run_until_complete(service.submit_many(specs[:20]))
        assert collections != []
    finally:
        gc.set_threshold(*old)
        loop.run_until_complete(service.store.close())
        loop.close()
