"""The live event feed on PostgreSQL never skips an event committed out of seq order.

Two transactions can take event numbers in one order and commit in the other. A reader
that moved past the lower number would never see that event; the feed must hold back
until the hole fills, or until it has been open long enough to be a rolled-back number.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psycopg

from offload.client.factory import connect
from offload.domain.models import TaskSpec
from offload.storage.sql import SqlStore


def _event_in_open_transaction(url: str, task_id: str) -> tuple[psycopg.Connection, int]:
    """A transaction that has appended an event (taking its seq) but not committed."""
    conn = psycopg.connect(url)
    seq = conn.execute(
        "INSERT INTO task_events (task_id, at, kind, actor, data) "
        "VALUES (%s, %s, 'log', 'test', '{}') RETURNING seq",
        (task_id, time.time()),
    ).fetchone()
    assert seq is not None
    return conn, int(seq[0])


def test_feed_waits_for_an_earlier_event_still_committing(
    pg_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        client = await connect(database_url=pg_url)
        store = client.service.store
        assert isinstance(store, SqlStore)
        try:
            first = await client.submit_many([TaskSpec(type="util.echo", input={"i": 0})])
            start = await store.last_event_seq()
            slow, held_seq = _event_in_open_transaction(pg_url, first[0].id)
            try:
                # A later transaction takes a higher number and commits first.
                await client.submit_many([TaskSpec(type="util.echo", input={"i": 1})])
                feed = await store.events_since(start)
                assert [e.seq for e in feed] == [], "delivered past an open hole"
                slow.commit()
            finally:
                slow.close()
            feed = await store.events_since(start)
            seqs = [e.seq for e in feed]
            assert seqs[0] == held_seq and seqs == sorted(seqs) and len(seqs) == 2
        finally:
            await client.close()

    loop.run_until_complete(scenario())


def test_feed_passes_a_rolled_back_number_after_the_wait(
    pg_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        client = await connect(database_url=pg_url)
        store = client.service.store
        assert isinstance(store, SqlStore)
        store.gap_wait_s = 0.3
        try:
            first = await client.submit_many([TaskSpec(type="util.echo", input={"i": 0})])
            start = await store.last_event_seq()
            lost, _ = _event_in_open_transaction(pg_url, first[0].id)
            lost.rollback()
            lost.close()
            later = await client.submit_many([TaskSpec(type="util.echo", input={"i": 1})])
            assert await store.events_since(start) == []
            await asyncio.sleep(0.4)
            feed = await store.events_since(start)
            assert [e.task_id for e in feed] == [later[0].id]
        finally:
            await client.close()

    loop.run_until_complete(scenario())


def test_waiters_wake_only_for_their_kind_of_change(
    pg_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    """NOTIFY payloads say what changed: a waiter for a result sleeps through submits and
    claims, an idle worker sleeps through claims and plain completions, a live stream
    hears everything."""
    from offload.domain.flow import LimitSpec
    from offload.domain.models import AgentRegistration, ClaimRequest, Completion

    async def changed(store: SqlStore, kinds: dict[str, int]) -> dict[str, bool]:
        out = {}
        for kind, token in kinds.items():
            out[kind] = await store.wait_for_change(0.3, since=token, kind=kind)
        return out

    async def scenario() -> None:
        client = await connect(database_url=pg_url)
        store = client.service.store
        assert isinstance(store, SqlStore)
        try:
            agent = await client.register_agent(AgentRegistration(name="w", capabilities={}))
            kinds = ("any", "work", "done")

            async def tokens() -> dict[str, int]:
                # Let notifications of the previous step arrive first.
                await asyncio.sleep(0.5)
                return {k: store.change_token(k) for k in kinds}

            # Asking for a kind of change makes the store listen for it, and wake its
            # waiters once (for what changed before it listened): let that pass first.
            await tokens()
            before = await tokens()
            task = await client.submit("util.echo", {"x": 1})
            assert await changed(store, before) == {"any": True, "work": True, "done": False}

            before = await tokens()
            req = ClaimRequest(agent_id=agent.id, capabilities=[], types=["util.echo"])
            (claimed,) = await client.claim(req)
            assert await changed(store, before) == {"any": True, "work": False, "done": False}

            before = await tokens()
            assert await client.claim(req) == []  # an empty claim says nothing at all
            assert await changed(store, before) == {"any": False, "work": False, "done": False}

            before = await tokens()
            assert claimed.lease is not None
            await client.complete(
                [Completion(task_id=task.id, lease_id=claimed.lease.id, result={"x": 1})]
            )
            # A plain task finished: nothing became claimable, so idle workers sleep on.
            assert await changed(store, before) == {"any": True, "work": False, "done": True}

            # One that held a concurrency limit's slot frees it: that is work.
            await client.set_limit("util.echo", LimitSpec(concurrency=1))
            limited = await client.submit("util.echo", {"x": 2})
            (held,) = await client.claim(req)
            assert held.id == limited.id and held.lease is not None
            before = await tokens()
            await client.complete(
                [Completion(task_id=limited.id, lease_id=held.lease.id, result={"x": 2})]
            )
            assert await changed(store, before) == {"any": True, "work": True, "done": True}
        finally:
            await client.close()

    loop.run_until_complete(scenario())


def test_a_process_hears_only_the_kinds_of_change_it_waits_for(
    pg_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    """Each kind of change has its own channel and a process listens to those it waits on:
    one waiting for results is not even sent the notifications of submits and claims (it
    counts every one it hears under "any")."""
    from offload.domain.models import AgentRegistration, ClaimRequest, Completion

    async def scenario() -> None:
        waiter = await connect(database_url=pg_url)
        other = await connect(database_url=pg_url)
        store = waiter.service.store
        assert isinstance(store, SqlStore)
        try:
            agent = await other.register_agent(AgentRegistration(name="w", capabilities={}))
            store.change_token("done")  # this process waits for results, nothing else
            await asyncio.sleep(0.5)  # listening now (and its one catch-up wake-up done)
            # Every notification heard moves the "any" counter. Read it as is: asking for
            # change_token("any") would make the process listen to everything.
            heard = store._generation["any"]
            task = await other.submit("util.echo", {"x": 1})
            req = ClaimRequest(agent_id=agent.id, capabilities=[], types=["util.echo"])
            (claimed,) = await other.claim(req)
            done = store.change_token("done")
            await asyncio.sleep(0.5)
            assert store._generation["any"] == heard, "heard a submit or a claim"
            assert claimed.lease is not None
            await other.complete(
                [Completion(task_id=task.id, lease_id=claimed.lease.id, result={"x": 1})]
            )
            assert await store.wait_for_change(5, since=done, kind="done")
        finally:
            await waiter.close()
            await other.close()

    loop.run_until_complete(scenario())


def test_the_listener_comes_back_after_its_connection_is_killed(
    pg_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        waiter = await connect(database_url=pg_url)
        other = await connect(database_url=pg_url)
        store = waiter.service.store
        assert isinstance(store, SqlStore)
        try:
            store.change_token("work")
            await asyncio.sleep(0.5)
            with psycopg.connect(pg_url, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
                ).fetchall()
            assert killed, "no LISTEN connection found"
            await asyncio.sleep(1.0)  # the store reconnects (after 0.1 s) and listens again
            token = store.change_token("work")
            await other.submit("util.echo", {"x": 1})
            # No polling here: only a notification makes this True.
            assert await store.wait_for_change(3, since=token, kind="work")
        finally:
            await waiter.close()
            await other.close()

    loop.run_until_complete(scenario())


def _other_listener_locks(url: str) -> list[bool]:
    """Whether each session holding or awaiting the 'other' listeners' lock has it."""
    from offload.storage.postgres.store import OTHER_LISTENERS_LOCK

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' "
            "AND ((classid::bigint << 32) | objid::bigint) = %s",
            (OTHER_LISTENERS_LOCK,),
        ).fetchall()
    return [bool(r[0]) for r in rows]


def test_claims_are_announced_only_while_a_live_stream_listens(
    pg_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    """PostgreSQL wakes every listening session for every NOTIFY, so a claim says nothing
    on the 'other' channel unless a live stream listens there; one that starts listening
    while a silent claim is committing waits for it before it reads."""
    from offload.domain.models import AgentRegistration, ClaimRequest
    from offload.storage.postgres.store import CHANNELS, OTHER_LISTENERS_LOCK

    def heard(conn: psycopg.Connection, within: float) -> list[str]:
        return [n.payload for n in conn.notifies(timeout=within, stop_after=1)]

    async def until(check: Callable[[], bool]) -> None:
        for _ in range(100):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("timed out")

    async def scenario() -> None:
        worker = await connect(database_url=pg_url)
        raw = psycopg.connect(pg_url, autocommit=True)  # listens without announcing itself
        raw.execute(f"LISTEN {CHANNELS['-']}")
        stream = None
        try:
            agent = await worker.register_agent(AgentRegistration(name="w", capabilities={}))
            req = ClaimRequest(agent_id=agent.id, capabilities=[], types=["util.echo"])
            await worker.submit("util.echo", {"x": 1})
            heard(raw, 0.2)  # whatever registering and submitting said
            assert len(await worker.claim(req)) == 1
            assert heard(raw, 0.5) == [], "a claim was announced with no stream listening"

            # A claim committing without a word holds the lock; a stream that starts
            # listening now must not read before that claim is visible.
            silent = psycopg.connect(pg_url)
            got = silent.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (OTHER_LISTENERS_LOCK,)
            ).fetchone()
            assert got == (True,)
            stream = await connect(database_url=pg_url)
            stream_store = stream.service.store
            assert isinstance(stream_store, SqlStore)
            stream_store.change_token("any")
            await until(lambda: _other_listener_locks(pg_url) == [False])
            silent.commit()
            silent.close()
            await until(lambda: _other_listener_locks(pg_url) == [True])

            # Now a claim is announced: to the stream and to anyone else listening.
            await asyncio.sleep(0.3)  # the listener's catch-up wake-up
            token = stream_store.change_token("any")
            await worker.submit("util.echo", {"x": 2})
            heard(raw, 0.2)
            assert len(await worker.claim(req)) == 1
            assert heard(raw, 2.0) == ["-"]
            assert await stream_store.wait_for_change(2, since=token, kind="any")
        finally:
            raw.close()
            await worker.close()
            if stream is not None:
                await stream.close()
        # The stream's connection is gone, and its lock with it.
        await until(lambda: _other_listener_locks(pg_url) == [])

    loop.run_until_complete(scenario())
