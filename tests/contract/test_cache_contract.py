"""The result cache on both backends (PRODUCT.md §4.10)."""

from __future__ import annotations

import pytest

from offload.domain.errors import UnknownTaskType
from offload.domain.models import Dependency, ErrorInfo, Failure
from offload.domain.status import Status

from .conftest import Harness
from .test_store_contract import claim, complete, spec


def run_once(h: Harness, type_: str = "t.cached", n: int = 1, **kw: object) -> str:
    task = h(h.service.submit(spec(type_, input={"n": n}, **kw)))
    assert task.status is Status.QUEUED and not task.cache_hit
    (leased,) = claim(h, 1)
    assert complete(h, leased, {"doubled": n * 2}).ok
    return task.id


def test_a_second_submit_is_served_from_the_cache(svc: Harness) -> None:
    first = run_once(svc)
    again = svc(svc.service.submit(spec("t.cached", input={"n": 1})))
    assert again.status is Status.COMPLETED and again.cache_hit
    assert again.result == {"doubled": 2} and again.id != first
    assert claim(svc, 5) == [], "a hit never reaches a worker"
    created = svc(svc.service.events(again.id))[0]
    assert created.kind == "created" and created.data["cache_hit"] is True
    # Another input is another key.
    other = svc(svc.service.submit(spec("t.cached", input={"n": 2})))
    assert other.status is Status.QUEUED and not other.cache_hit


def test_ttl_expiry_and_per_task_ttl(svc: Harness) -> None:
    run_once(svc)
    svc.clock.advance(61)
    assert not svc(svc.service.submit(spec("t.cached", input={"n": 1}))).cache_hit
    # Any type can be cached per task.
    task = svc(svc.service.submit(spec("t.num", input={"n": 5}, cache_ttl_s=30)))
    (leased,) = [t for t in claim(svc, 5) if t.id == task.id]
    complete(svc, leased, 5)
    assert svc(svc.service.submit(spec("t.num", input={"n": 5}, cache_ttl_s=30))).cache_hit
    assert not svc(svc.service.submit(spec("t.num", input={"n": 5}))).cache_hit


def test_version_bump_and_clear_invalidate(svc: Harness) -> None:
    run_once(svc)
    svc.service.registry.get("t.cached").version = 2
    assert not svc(svc.service.submit(spec("t.cached", input={"n": 1}))).cache_hit
    svc.service.registry.get("t.cached").version = 1
    assert svc(svc.service.submit(spec("t.cached", input={"n": 1}))).cache_hit
    assert svc(svc.service.clear_cache("t.cached")) == 1
    assert not svc(svc.service.submit(spec("t.cached", input={"n": 1}))).cache_hit
    with pytest.raises(UnknownTaskType):
        svc(svc.service.clear_cache("t.nope"))


def test_failures_and_dependent_tasks_are_not_cached(svc: Harness) -> None:
    upstream = svc(svc.service.submit(spec("t.num")))
    dep = svc(
        svc.service.submit(
            spec("t.cached", input={"n": 3}, depends_on=[Dependency(task_id=upstream.id)])
        )
    )
    assert dep.cache_key is None
    first = svc(svc.service.submit(spec("t.cached", input={"n": 4})))
    assert first.cache_key is not None
    leased = [t for t in claim(svc, 5) if t.id == first.id]
    svc(
        svc.service.fail(
            [
                Failure(
                    task_id=first.id,
                    lease_id=leased[0].lease.id,
                    error=ErrorInfo(type="Boom", message="no", retryable=False),
                )
            ]
        )
    )
    assert not svc(svc.service.submit(spec("t.cached", input={"n": 4}))).cache_hit


def test_one_tenant_never_gets_another_tenants_result(svc: Harness) -> None:
    mine = svc(svc.service.submit(spec("t.cached", input={"n": 9}), "tenant-a"))
    (leased,) = claim(svc, 1)
    assert leased.id == mine.id
    complete(svc, leased, {"secret": "a"})
    assert svc(svc.service.submit(spec("t.cached", input={"n": 9}), "tenant-a")).cache_hit
    theirs = svc(svc.service.submit(spec("t.cached", input={"n": 9}), "tenant-b"))
    assert not theirs.cache_hit and theirs.result is None
