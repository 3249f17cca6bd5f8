"""PostgreSQL under concurrency and lost replies: transactions racing on the same rows from
separate connection pools (truly concurrent), and a connection that drops after COMMIT.
Each test failed before the fix it guards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from offload.client.base import Client
from offload.client.factory import connect
from offload.domain.models import AgentRegistration, ClaimRequest, TaskSpec
from offload.storage.postgres.store import PostgresStore


@contextlib.asynccontextmanager
async def _two_clients(pg_url: str) -> AsyncIterator[tuple[Client, Client]]:
    """Two clients, each with its own connection pool: their transactions truly overlap."""
    a = await connect(database_url=pg_url)
    try:
        b = await connect(database_url=pg_url)
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()


def test_dependent_submitted_while_its_upstream_completes_is_not_stranded(pg_url: str) -> None:
    """A dependent inserted in the instant its upstream completes: the insert reads the
    upstream under a row lock, so either the completion sees the new dependent (and
    releases it) or the insert sees the completion. Without the lock, a dependent could
    stay blocked on a task that had already completed."""
    from offload.domain.models import Completion

    async def scenario() -> list[str]:
        stranded: list[str] = []
        async with _two_clients(pg_url) as (worker, submitter):
            agent = await worker.register_agent(AgentRegistration(name="w", capabilities={}))
            req = ClaimRequest(agent_id=agent.id, capabilities=[], types=["util.echo"], max=1)
            for i in range(60):
                up = await worker.submit("util.echo", {"i": i})
                (claimed,) = await worker.claim(req)
                assert claimed.lease is not None
                done = Completion(task_id=up.id, lease_id=claimed.lease.id, result={"i": i})
                # Dependents of another type, so the claims above never pick them up.
                later = TaskSpec(type="util.sleep", input={"seconds": 0}, depends_on=[up.id])
                (ack,), (down,) = await asyncio.gather(
                    worker.complete([done]), submitter.submit_many([later])
                )
                assert ack.ok
                if (await submitter.get(down.id)).status.value == "blocked":
                    stranded.append(down.id)
        return stranded

    assert asyncio.run(scenario()) == []


def test_concurrent_submits_with_one_idempotency_key_make_one_task(pg_url: str) -> None:
    """Two submits racing with the same idempotency key (a client retrying while its first
    request is still in flight) both get the one task, not a constraint error."""

    async def scenario() -> list[tuple[str, str]]:
        async with _two_clients(pg_url) as (a, b):
            pairs = []
            for i in range(30):
                spec = TaskSpec(type="util.echo", input={"i": i}, idempotency_key=f"k{i}")
                (x,), (y,) = await asyncio.gather(a.submit_many([spec]), b.submit_many([spec]))
                pairs.append((x.id, y.id))
            assert (await a.list(limit=0)).total == 30
            return pairs

    assert all(x == y for x, y in asyncio.run(scenario()))


def test_concurrent_schedules_with_one_name_make_one_and_a_conflict(pg_url: str) -> None:
    """Two schedules created at once with one name: one is made, the other is refused
    with the same Conflict a second, later create gets, not a database error."""
    from offload.domain.errors import Conflict
    from offload.domain.schedules import ScheduleSpec

    async def scenario() -> None:
        async with _two_clients(pg_url) as (a, b):
            for i in range(10):
                spec = ScheduleSpec(
                    name=f"nightly-{i}", every_s=3600, task=TaskSpec(type="util.echo")
                )
                made = await asyncio.gather(
                    a.create_schedule(spec), b.create_schedule(spec), return_exceptions=True
                )
                assert sorted(type(m).__name__ for m in made) == ["Conflict", "Schedule"], made
                assert any(isinstance(m, Conflict) for m in made)

    asyncio.run(scenario())


def test_a_submit_whose_commit_reply_is_lost_returns_the_stored_tasks(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after COMMIT reached the server but before its reply: the
    store replays the transaction, meets its own rows, and answers with what is stored,
    not an error that would make the caller submit the same work twice."""
    import psycopg

    real = PostgresStore._attempt
    dropped: list[str] = []

    def once(self: PostgresStore, conn: object, fn: object, *rest: object) -> object:
        out = real(self, conn, fn, *rest)  # type: ignore[arg-type]
        if getattr(fn, "__name__", "") == "_insert_tasks" and not dropped:
            dropped.append("after commit")
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return out

    monkeypatch.setattr(PostgresStore, "_attempt", once)

    async def scenario() -> tuple[list[object], int]:
        client = await connect(database_url=pg_url)
        try:
            specs = [TaskSpec(type="util.echo", input={"i": i}) for i in range(3)]
            specs.append(TaskSpec(type="util.echo", input={"i": 3}, idempotency_key="once"))
            made = await client.submit_many(specs)
            return [t.input for t in made], (await client.list(limit=0)).total
        finally:
            await client.close()

    inputs, total = asyncio.run(scenario())
    assert dropped == ["after commit"]
    assert inputs == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}] and total == 4


def test_racing_submits_on_shared_upstreams_do_not_deadlock(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two batches whose tasks depend on the same existing tasks, listed in opposite orders:
    the upstream rows are locked in id order, so neither waits for the other in a cycle
    (PostgreSQL would detect the deadlock after a second and one batch would be retried)."""

    async def scenario() -> None:
        async with _two_clients(pg_url) as (a, b):
            made = await a.submit_many(
                [TaskSpec(type="util.echo", input={"u": i}) for i in range(8)]
            )
            ups = [t.id for t in made]
            for _ in range(5):
                one, other = (
                    [
                        TaskSpec(type="util.sleep", input={"seconds": 0}, depends_on=[u])
                        for u in order
                    ]
                    for order in (ups, ups[::-1])
                )
                await asyncio.gather(a.submit_many(one), b.submit_many(other))

    with caplog.at_level("WARNING", logger="offload"):
        asyncio.run(scenario())
    assert not [r for r in caplog.records if "deadlock" in r.getMessage()]


def test_a_bid_accepted_while_its_auction_closes_is_counted(pg_url: str) -> None:
    """A bid placed in the instant its auction closes: either it is refused (the auction is
    closed) or the close counts it; never accepted and then ignored."""
    from offload.domain.agents import BidSpec

    async def scenario() -> list[str]:
        ignored: list[str] = []
        async with _two_clients(pg_url) as (a, b):
            agent = await a.register_agent(AgentRegistration(name="bidder", capabilities={}))
            for i in range(30):
                task = await a.submit("util.echo", {"i": i})
                now = a.service.clock.now()
                assert await a.service.store.open_auction(task.id, now, 10.0)
                placed, bids = await asyncio.gather(
                    b.service.store.place_bid(task.id, BidSpec(agent_id=agent.id, cost=1.0), now),
                    a.service.store.close_auction(task.id, now),
                    return_exceptions=True,
                )
                if not isinstance(placed, BaseException) and bids == []:
                    ignored.append(task.id)
        return ignored

    assert asyncio.run(scenario()) == []
