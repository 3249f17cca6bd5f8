"""Flow control on both backends: concurrency and rate limits, resources, strategies."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import psycopg
import pytest

from offload.domain.errors import Conflict, InvalidInput, NotFound, UnknownTaskType
from offload.domain.flow import ConcurrencyStrategy, LimitSpec, QueueSettingsSpec, WaitingOn
from offload.domain.models import ClaimRequest, TaskSpec
from offload.domain.status import Status
from offload.storage import open_store
from offload.storage.flow_sql import FAIR_INDEX

from .conftest import Harness
from .test_store_contract import claim, complete, fail, spec


def limit(h: Harness, task_type: str = "t.echo", **kw: object) -> None:
    h(h.service.set_limit(task_type, LimitSpec.model_validate(kw)))


def submit(h: Harness, n: int, task_type: str = "t.echo", **kw: object) -> list[str]:
    specs = [spec(task_type, **kw) for _ in range(n)]
    return [t.id for t in h(h.service.submit_many(specs))]


def test_no_limits_means_the_fast_path_and_no_limit_key(svc: Harness) -> None:
    ids = submit(svc, 3)
    assert svc(svc.service.get(ids[0])).limit_key is None
    assert len(claim(svc, 10)) == 3


def test_concurrency_limit_per_type(svc: Harness) -> None:
    limit(svc, concurrency=2)
    ids = submit(svc, 5)
    first = claim(svc, 10)
    assert len(first) == 2
    assert claim(svc, 10) == []
    waiting = svc(svc.service.get(ids[4]))
    assert waiting.status is Status.QUEUED and waiting.waiting_on is WaitingOn.CONCURRENCY
    complete(svc, first[0])
    assert len(claim(svc, 10)) == 1
    # A failure frees the slot too (the retry waits its backoff, another task goes).
    fail(svc, first[1], retryable=False)
    assert len(claim(svc, 10)) == 1


def test_concurrency_key_splits_the_type(svc: Harness) -> None:
    limit(svc, "t.num", concurrency=1, concurrency_key="input.n")
    a = [t.id for t in svc(svc.service.submit_many([spec(input={"n": 1}) for _ in range(3)]))]
    b = svc(svc.service.submit(spec(input={"n": 2})))
    # Key 1's backlog sits ahead in the queue, yet key 2 is not starved by it.
    got = claim(svc, 10)
    assert sorted(t.id for t in got) == sorted([a[0], b.id])
    assert svc(svc.service.get(a[1])).limit_key != b.limit_key


def test_limits_do_not_block_other_types(svc: Harness) -> None:
    limit(svc, concurrency=1)
    submit(svc, 3)
    submit(svc, 2, "t.num")
    got = claim(svc, 10)
    assert sorted(t.type for t in got) == ["t.echo", "t.num", "t.num"]


def test_rate_limit_admits_the_budget_then_refills(svc: Harness) -> None:
    limit(svc, rate_limit="2/s")
    submit(svc, 8)
    # A cold key starts with one token: the rate, not a burst on top of it.
    assert len(claim(svc, 10)) == 1
    assert claim(svc, 10) == []
    wake = svc.service.store.flow_wake_at
    assert wake is not None and wake == pytest.approx(svc.clock.now() + 0.5)
    svc.clock.advance(0.5)
    assert len(claim(svc, 10)) == 1
    svc.clock.advance(10)
    # After a pause the bucket holds one second's worth, no more.
    assert len(claim(svc, 10)) == 2
    assert claim(svc, 10) == []


def test_rate_limit_waiting_reason(svc: Harness) -> None:
    limit(svc, rate_limit="1/m")
    ids = submit(svc, 2)
    assert len(claim(svc, 5)) == 1
    rest = ids[1] if svc(svc.service.get(ids[1])).status is Status.QUEUED else ids[0]
    assert svc(svc.service.get(rest)).waiting_on is WaitingOn.RATE_LIMIT


def test_resources_serialize_and_units_return_on_every_outcome(svc: Harness) -> None:
    svc(svc.service.set_resource("gpu", 1))
    ids = submit(svc, 3, resources={"gpu": 1})
    first = claim(svc, 10)
    assert len(first) == 1
    assert claim(svc, 10) == []
    assert svc(svc.service.get(ids[1])).waiting_on is WaitingOn.RESOURCE
    (gpu,) = svc(svc.service.list_resources())
    assert (gpu.capacity, gpu.in_use, gpu.waiting) == (1, 1, 2)
    complete(svc, first[0])
    second = claim(svc, 10)
    assert len(second) == 1
    # Lease expiry (a dead holder) gives the unit back as well.
    svc.clock.advance(60)
    svc(svc.service.maintain())
    assert len(claim(svc, 10)) == 1


def test_resources_with_several_units_and_capacity_changes(svc: Harness) -> None:
    svc(svc.service.set_resource("browser", 4))
    submit(svc, 3, resources={"browser": 2})
    submit(svc, 2)  # needs nothing: never held back
    got = claim(svc, 10)
    assert sum(1 for t in got if t.resources) == 2 and len(got) == 4
    svc(svc.service.set_resource("browser", 6))
    assert len(claim(svc, 10)) == 1


def test_unknown_resource_is_refused_at_submit(svc: Harness) -> None:
    with pytest.raises(InvalidInput, match="unknown resource 'tpu'"):
        svc(svc.service.submit(spec("t.echo", resources={"tpu": 1})))
    with pytest.raises(ValueError, match="at least 1 unit"):
        TaskSpec(type="t.echo", resources={"gpu": 0})


def test_resource_in_use_cannot_be_deleted(svc: Harness) -> None:
    svc(svc.service.set_resource("gpu", 1))
    submit(svc, 1, resources={"gpu": 1})
    with pytest.raises(Conflict, match="need resource 'gpu'"):
        svc(svc.service.delete_resource("gpu"))
    with pytest.raises(NotFound):
        svc(svc.service.delete_resource("nope"))


def test_cancel_newest_strategy(svc: Harness) -> None:
    limit(svc, concurrency=2, strategy=ConcurrencyStrategy.CANCEL_NEWEST)
    ids = submit(svc, 3)
    third = svc(svc.service.get(ids[2]))
    assert third.status is Status.CANCELLED
    assert third.error is not None and third.error.type == "ConcurrencyLimit"
    assert svc(svc.service.get(ids[0])).status is Status.QUEUED


def test_cancel_in_progress_strategy(svc: Harness) -> None:
    limit(svc, concurrency=1, strategy=ConcurrencyStrategy.CANCEL_IN_PROGRESS)
    (old,) = submit(svc, 1)
    (running,) = claim(svc, 1)
    assert running.id == old
    (new,) = submit(svc, 1)
    # The running one is asked to stop; the new one runs once the slot frees.
    assert svc(svc.service.get(old)).cancel_requested
    assert svc(svc.service.get(new)).status is Status.QUEUED
    (queued_old,) = submit(svc, 1)
    assert svc(svc.service.get(new)).status is Status.CANCELLED
    assert svc(svc.service.get(queued_old)).status is Status.QUEUED


def test_limit_validation_and_removal(svc: Harness) -> None:
    with pytest.raises(InvalidInput, match="COUNT/PERIOD"):
        LimitSpec(rate_limit="fast")
    with pytest.raises(InvalidInput, match="dot path"):
        LimitSpec(concurrency=1, concurrency_key="user_id")
    with pytest.raises(InvalidInput, match="concurrency and/or a rate_limit"):
        svc(svc.service.set_limit("t.echo", LimitSpec()))
    with pytest.raises(UnknownTaskType):
        svc(svc.service.set_limit("t.nope", LimitSpec(concurrency=1)))
    limit(svc, concurrency=1, rate_limit="100/m")
    (lim,) = svc(svc.service.list_limits())
    assert (lim.type, lim.concurrency, lim.rate_limit) == ("t.echo", 1, "100/m")
    ids = submit(svc, 3)
    assert len(claim(svc, 10)) == 1
    svc(svc.service.delete_limit("t.echo"))
    assert svc(svc.service.get(ids[2])).limit_key is None
    assert len(claim(svc, 10)) == 2
    with pytest.raises(NotFound):
        svc(svc.service.delete_limit("t.echo"))


def _owned(h: Harness, owner: str, n: int, **kw: object) -> list[str]:
    return [t.id for t in h(h.service.submit_many([spec("t.echo", **kw) for _ in range(n)], owner))]


def test_fairness_owner_alternates_across_tenants(svc: Harness) -> None:
    from offload.domain.flow import QueueSettingsSpec

    svc(svc.service.set_queue_settings("default", QueueSettingsSpec(fairness="owner")))
    _owned(svc, "tenant-a", 200)
    b = _owned(svc, "tenant-b", 5)
    _owned(svc, "tenant-c", 2)
    first = claim(svc, 6)
    owners = [t.owner for t in first]
    # One turn each, in order of their oldest task, then again.
    assert owners[:3] == ["tenant-a", "tenant-b", "tenant-c"]
    assert owners.count("tenant-b") == 2
    got_b = {t.id for t in first} & set(b)
    for _ in range(3):
        got_b |= {t.id for t in claim(svc, 6)} & set(b)
    assert got_b == set(b), "B's five ran within four claims despite A's 200"
    (queue,) = svc(svc.service.list_queue_settings())
    assert queue.fairness.value == "owner"


def test_fairness_keeps_priority_first(svc: Harness) -> None:
    from offload.domain.flow import QueueSettingsSpec

    svc(svc.service.set_queue_settings("default", QueueSettingsSpec(fairness="owner")))
    _owned(svc, "tenant-a", 5, priority=9)
    _owned(svc, "tenant-b", 5, priority=2)
    assert {t.owner for t in claim(svc, 5)} == {"tenant-a"}


def _fair_index(url: str) -> bool:
    """Whether the owner-fair claim's index is there (and usable), read from the database."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            found = db.execute(
                f"SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = '{FAIR_INDEX}'"
            ).fetchone()
        return found is not None
    with psycopg.connect(url) as pg:
        row = pg.execute(
            f"SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{FAIR_INDEX}')"
        ).fetchone()
    return row == (True,)


def _drop_fair_index(url: str) -> None:
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            db.execute(f"DROP INDEX {FAIR_INDEX}")
            db.commit()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(f"DROP INDEX {FAIR_INDEX}")


def _fairness(h: Harness, queue: str, fairness: str) -> None:
    h(h.service.set_queue_settings(queue, QueueSettingsSpec.model_validate({"fairness": fairness})))


def test_the_owner_index_exists_only_while_a_queue_is_fair(svc: Harness, backend_url: str) -> None:
    # Every queued task in it costs its submit an index entry, and only fair claims read it.
    assert not _fair_index(backend_url)
    _fairness(svc, "a", "owner")
    _fairness(svc, "b", "owner")
    assert _fair_index(backend_url)
    _fairness(svc, "a", "none")
    assert _fair_index(backend_url), "queue b is still fair"
    _fairness(svc, "b", "none")
    assert not _fair_index(backend_url)


def test_opening_the_store_restores_the_owner_index(svc: Harness, backend_url: str) -> None:
    _fairness(svc, "default", "owner")
    # As a crash between the settings' commit and the index build would leave it.
    _drop_fair_index(backend_url)
    assert not _fair_index(backend_url)

    async def reopen() -> None:
        store = await open_store(backend_url)
        await store.close()

    svc(reopen())
    assert _fair_index(backend_url)
    if not backend_url.startswith("sqlite"):
        # A CONCURRENTLY build that failed half way leaves an invalid index: built again.
        with psycopg.connect(backend_url, autocommit=True) as pg:
            pg.execute(
                "UPDATE pg_index SET indisvalid = false "
                f"WHERE indexrelid = to_regclass('{FAIR_INDEX}')"
            )
        assert not _fair_index(backend_url)
        svc(reopen())
        assert _fair_index(backend_url)


def test_a_fair_claim_without_its_index_still_alternates(svc: Harness, backend_url: str) -> None:
    # The index only makes the fair claim fast: while it is being built, claims are right.
    _fairness(svc, "default", "owner")
    _drop_fair_index(backend_url)
    _owned(svc, "tenant-a", 30)
    _owned(svc, "tenant-b", 3)
    assert [t.owner for t in claim(svc, 4)][:2] == ["tenant-a", "tenant-b"]


def test_a_limited_claim_does_not_wait_for_an_index_build(svc: Harness, backend_url: str) -> None:
    # Another process building the owner-fair index holds its lock for the whole build.
    if backend_url.startswith("sqlite"):
        pytest.skip("SQLite builds the index inside its write transaction")
    from offload.storage.postgres.store import FAIR_INDEX_LOCK

    limit(svc, concurrency=5)
    submit(svc, 3)
    with psycopg.connect(backend_url, autocommit=True) as builder:
        builder.execute("SELECT pg_advisory_lock(%s)", (FAIR_INDEX_LOCK,))
        try:
            req = ClaimRequest.model_validate({"agent_id": "w1", "max": 2})
            claimed = svc(asyncio.wait_for(svc.service.claim(req), 5))
        finally:
            builder.execute("SELECT pg_advisory_unlock(%s)", (FAIR_INDEX_LOCK,))
    assert len(claimed) == 2


def test_without_fairness_a_flood_goes_first(svc: Harness) -> None:
    _owned(svc, "tenant-a", 50)
    _owned(svc, "tenant-b", 5)
    assert {t.owner for t in claim(svc, 20)} == {"tenant-a"}


def test_push_dispatch_leaves_limited_tasks_to_claims(svc: Harness) -> None:
    # Only claims enforce limits and resources, so the push dispatcher never places them.
    limit(svc, concurrency=1)
    submit(svc, 2)
    svc(svc.service.set_resource("gpu", 1))
    svc(svc.service.submit(spec("t.num", resources={"gpu": 1})))
    free = svc(svc.service.submit(spec("t.num")))
    got = svc(svc.service.store.dispatchable("default", 1, 10))
    assert [t.id for t in got] == [free.id]
