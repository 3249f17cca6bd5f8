"""A task completed on its own is announced with its record: its waiter answers from the
notification, without reading the task back (PostgreSQL; SQLite reads, and says so)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from offload.client.factory import connect
from offload.client.local import LocalClient
from offload.domain.errors import NotFound
from offload.domain.models import AgentRegistration, ClaimRequest, Completion, Task
from offload.storage.postgres.store import FLOAT_COLUMNS, PostgresStore


@contextlib.asynccontextmanager
async def _paired(url: str) -> AsyncIterator[tuple[LocalClient, LocalClient, PostgresStore]]:
    """A waiting client (listening for finished tasks) and a working one, closed after."""
    waiter, worker = await connect(database_url=url), await connect(database_url=url)
    assert isinstance(waiter, LocalClient) and isinstance(worker, LocalClient)
    await worker.register_agent(AgentRegistration(name="w", capabilities={}))
    store = waiter.service.store
    assert isinstance(store, PostgresStore)
    # Asking for a kind makes the listener LISTEN on its channel and then wake everyone
    # once: let each of those wake-ups pass, one channel at a time, before any test starts.
    for kind in ("done", "work"):
        assert await store.wait_for_change(10, since=store.change_token(kind), kind=kind)
    try:
        yield waiter, worker, store
    finally:
        await waiter.close()
        await worker.close()


async def _finish(worker: LocalClient, tasks: list[Task], result: Any = None) -> None:
    """Claim ``tasks`` and complete them in one batch, echoing their input by default."""
    agent = (await worker.list_agents())[0]
    claimed = await worker.claim(
        ClaimRequest(agent_id=agent.id, capabilities=[], types=["util.echo"], max=10)
    )
    assert {c.id for c in claimed} == {t.id for t in tasks}
    acks = await worker.complete(
        [
            Completion(
                task_id=c.id, lease_id=c.lease.id, result=c.input if result is None else result
            )
            for c in claimed
            if c.lease is not None
        ]
    )
    assert all(a.ok for a in acks), acks


def test_a_lone_completion_carries_the_record_a_read_would_return(
    pg_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with _paired(pg_url) as (waiter, worker, store):
            # "w" in the record must not read as "work may be claimable" in the payload.
            work = store.change_token("work")
            task = await waiter.submit("util.echo", {"x": 1.5, "n": 3, "s": "www é"})
            # The submit's own wake-up reaches this process after it returns: let it pass.
            assert await store.wait_for_change(5, since=work, kind="work")
            done, work = store.change_token("done"), store.change_token("work")
            await _finish(worker, [task])
            assert await store.wait_for_change(5, since=done, kind="done")
            heard = store.heard_finished(task.id, done)
            read = await waiter.get(task.id)
            assert heard is not None
            assert heard == read
            assert heard.model_dump_json() == read.model_dump_json()
            assert heard.result == {"x": 1.5, "n": 3, "s": "www é"}
            # Whole floats stay floats (JSON writes 100.0 as 100), times stay exact.
            assert type(heard.progress) is float and heard.progress == 100.0
            assert heard.finished_at == read.finished_at
            assert store.change_token("work") == work
            # Only what was heard after the token counts: a later waiter reads.
            assert store.heard_finished(task.id, store.change_token("done")) is None

    loop.run_until_complete(scenario())


def test_a_waiter_answers_from_the_notification_without_a_read(
    pg_url: str, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with _paired(pg_url) as (waiter, worker, store):
            task = await waiter.submit("util.echo", {"x": 2})
            reads: list[str] = []
            real = store.get_task

            async def counted(task_id: str, owner: str | None = None) -> Task | None:
                reads.append(task_id)
                return await real(task_id, owner)

            monkeypatch.setattr(store, "get_task", counted)
            waiting = asyncio.ensure_future(waiter.wait(task.id, timeout=10))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await _finish(worker, [task])
            finished = await waiting
            assert finished.status.value == "completed" and finished.result == {"x": 2}
            assert reads == []
            # A waiter for another owner still gets nothing it may not see.
            with pytest.raises(NotFound):
                await waiter.service.wait(task.id, timeout=1, owner="someone-else")

    loop.run_until_complete(scenario())


def test_batches_and_big_records_are_announced_plainly_and_read(
    pg_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with _paired(pg_url) as (waiter, worker, store):
            pair = [await waiter.submit("util.echo", {"i": i}) for i in range(2)]
            done = store.change_token("done")
            await _finish(worker, pair)
            assert await store.wait_for_change(5, since=done, kind="done")
            assert [store.heard_finished(t.id, done) for t in pair] == [None, None]
            assert [(await waiter.wait(t.id, timeout=5)).result for t in pair] == [
                {"i": 0},
                {"i": 1},
            ]

            big = await waiter.submit("util.echo", {"i": 2})
            done = store.change_token("done")
            await _finish(worker, [big], result={"text": "y" * 9000})
            assert await store.wait_for_change(5, since=done, kind="done")
            assert store.heard_finished(big.id, done) is None
            assert (await waiter.wait(big.id, timeout=5)).result == {"text": "y" * 9000}

    loop.run_until_complete(scenario())


def test_float_columns_are_the_tables_float8_columns(pg_url: str) -> None:
    async def migrate() -> None:
        client = await connect(database_url=pg_url)
        await client.close()

    asyncio.run(migrate())
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'tasks' AND data_type = 'double precision'"
        ).fetchall()
    assert {r[0] for r in rows} == set(FLOAT_COLUMNS)
