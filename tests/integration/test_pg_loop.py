"""PostgreSQL store calls on the event loop's thread (storage/postgres/bridge.py): they run
there without blocking it, survive their caller's cancellation, recover from a dropped
connection in a thread, and overflow to threads when every loop connection is busy."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from offload.client.factory import connect
from offload.client.local import LocalClient
from offload.domain.models import TaskSpec
from offload.storage.postgres.store import PostgresStore


async def _open(url: str) -> tuple[LocalClient, PostgresStore]:
    client = await connect(database_url=url)
    assert isinstance(client, LocalClient)
    store = client.service.store
    assert isinstance(store, PostgresStore)
    return client, store


def _balanced(store: PostgresStore) -> bool:
    """Every loop connection is back and idle."""
    return len(store._loop_idle) == store._loop_held and store._loop_held <= store._loop_max


def test_a_call_runs_on_the_loop_thread_while_the_loop_keeps_running(pg_url: str) -> None:
    async def scenario() -> tuple[int, int]:
        client, store = await _open(pg_url)
        try:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            def slow(cur: Any) -> int:
                cur.execute("SELECT pg_sleep(0.3)")
                return threading.get_ident()

            beat = asyncio.create_task(ticker())
            ran_on = await store._run(store._read, slow)
            beat.cancel()
            return ran_on, ticks
        finally:
            await client.close()

    ran_on, ticks = asyncio.run(scenario())
    # The loop's thread (no hop to a worker thread), and the loop ran all along.
    assert ran_on == threading.get_ident()
    assert ticks >= 10, ticks


def test_a_cancelled_caller_returns_at_once_and_the_transaction_still_commits(
    pg_url: str,
) -> None:
    async def scenario() -> tuple[float, int, bool]:
        client, store = await _open(pg_url)
        try:

            def make(cur: Any) -> None:
                cur.execute("CREATE TABLE probe (x int)")

            await store._run(store._tx, make)

            def slow_insert(cur: Any) -> None:
                cur.execute("SELECT pg_sleep(0.3)")
                cur.execute("INSERT INTO probe VALUES (1)")

            start = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store._run(store._tx, slow_insert), 0.05)
            waited = time.monotonic() - start
            for _ in range(100):
                await asyncio.sleep(0.02)
                if _balanced(store) and store._loop_held:
                    break

            def count(cur: Any) -> int:
                return int(cur.execute("SELECT count(*) FROM probe").scalar())

            return waited, await store._run(store._read, count), _balanced(store)
        finally:
            await client.close()

    waited, rows, balanced = asyncio.run(scenario())
    assert waited < 0.25, waited
    assert rows == 1
    assert balanced


def test_a_dropped_loop_connection_is_replaced_and_the_call_retried(pg_url: str) -> None:
    async def scenario() -> None:
        client, store = await _open(pg_url)
        try:
            await client.submit("util.echo", {"n": 0})
            assert store._loop_idle, "a loop connection after the first call"
            victim = store._loop_idle[-1]
            with psycopg.connect(store.conninfo, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
            made = await client.submit("util.echo", {"n": 1})
            assert (await client.get(made.id)).input == {"n": 1}
            for _ in range(100):
                if victim not in store._loop_idle and _balanced(store):
                    break
                await asyncio.sleep(0.02)
            assert victim not in store._loop_idle
            assert _balanced(store)
            # Calls go on the loop again once a fresh connection has been checked out.
            for n in range(2, 6):
                await client.submit("util.echo", {"n": n})
            assert store._loop_held >= 1
            assert (await client.list(limit=0)).total == 6
        finally:
            await client.close()

    asyncio.run(scenario())


def test_more_calls_than_loop_connections_overflow_to_threads(pg_url: str) -> None:
    async def scenario() -> None:
        client, store = await _open(pg_url)
        try:
            made = await asyncio.gather(*(client.submit("util.echo", {"n": n}) for n in range(60)))
            got = await asyncio.gather(*(client.get(t.id) for t in made))
            assert sorted(t.input["n"] for t in got) == list(range(60))
            assert 1 <= store._loop_held <= store._loop_max
            batch = await client.submit_many(
                [TaskSpec(type="util.echo", input={"i": i}) for i in range(500)]
            )
            assert len(batch) == 500
            assert (await client.list(limit=0)).total == 560
            assert _balanced(store)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_session_reset_on_a_loop_connection_prepares_again(pg_url: str) -> None:
    async def scenario() -> None:
        client, store = await _open(pg_url)
        try:
            first = await client.submit("util.echo", {"n": 1})
            await client.get(first.id)
            conn = store._loop_idle[-1]
            # Idle, outside a bridged call: the connection blocks as any psycopg one does.
            conn.execute("DEALLOCATE ALL")
            assert (await client.get(first.id)).id == first.id
            assert (await client.get(first.id)).id == first.id
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_wait_right_after_submit_sees_a_finish_heard_before_it_began(pg_url: str) -> None:
    """The wait that follows a submit skips its first read: the change token taken before
    the insert still catches a finish announced (and heard) before the wait began."""

    async def scenario() -> tuple[float, str]:
        client, _ = await _open(pg_url)
        other, _ = await _open(pg_url)
        try:
            task = await client.submit("util.echo", {"n": 1})
            await other.cancel(task.id, "finished elsewhere")
            await asyncio.sleep(0.2)  # this process hears the NOTIFY before waiting
            start = time.monotonic()
            done = await client.wait(task.id, timeout=5)
            return time.monotonic() - start, done.status.value
        finally:
            await other.close()
            await client.close()

    took, status = asyncio.run(scenario())
    assert status == "cancelled"
    assert took < 0.5, took


def test_a_wait_after_submit_still_hides_another_tenants_task(pg_url: str) -> None:
    from offload.domain.errors import NotFound

    async def scenario() -> None:
        client, _ = await _open(pg_url)
        try:
            mine = LocalClient(client.service, owner="tenant-a")
            theirs = LocalClient(client.service, owner="tenant-b")
            task = await mine.submit("util.echo", {"n": 1})
            with pytest.raises(NotFound):
                await theirs.wait(task.id, timeout=1)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_bulk_submits_batches_all_run_on_the_loop(pg_url: str) -> None:
    """A bulk submit's second batch, under way beside the first one, finds a loop connection
    that the first batch had connected for it, instead of running in a thread (where it
    contended with the loop for the GIL)."""

    async def scenario() -> None:
        client, store = await _open(pg_url)
        threads: list[int] = []
        insert = store._insert_tasks

        def spied(cur: Any, tasks: Any, now: float) -> Any:
            threads.append(threading.get_ident())
            return insert(cur, tasks, now)

        store._insert_tasks = spied  # type: ignore[method-assign]
        try:
            assert store._loop_held == 1
            made = await client.submit_all(
                [TaskSpec(type="util.echo", input={"i": i}) for i in range(3_000)]
            )
            assert [t.input["i"] for t in made] == list(range(3_000))
            assert (await client.list(limit=0)).total == 3_000
            assert threads == [threading.get_ident()] * 3
            assert store._loop_held == 2 and _balanced(store)
        finally:
            await client.close()

    asyncio.run(scenario())
