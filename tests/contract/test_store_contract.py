"""The behavioural contract every backend must meet, driven through the queue service.

Parametrised by backend (see conftest.BACKENDS); time is a manual clock so retries,
aging, leases and deadlines are deterministic.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from offload.domain.errors import (
    DependencyError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    TooLarge,
    UnknownTaskType,
)
from offload.domain.ids import new_id
from offload.domain.models import (
    Artifact,
    Checkpoint,
    ClaimRequest,
    Completion,
    ErrorInfo,
    EventFilter,
    Failure,
    LeaseRef,
    ProgressUpdate,
    RetryPolicy,
    TaskFilter,
    TaskSpec,
    WorkflowSpec,
)
from offload.domain.settings import Settings
from offload.domain.status import Status

from .conftest import Harness


def spec(type_: str = "t.num", **kw: object) -> TaskSpec:
    if type_ == "t.num" and "input" not in kw:
        kw["input"] = {"n": 1}
    return TaskSpec.model_validate({"type": type_, **kw})


def claim(h: Harness, n: int = 10, **kw: object) -> list:
    req = ClaimRequest.model_validate({"agent_id": kw.pop("agent_id", "w1"), "max": n, **kw})
    return h(h.service.claim(req))


def complete(h: Harness, task, result: object = None):
    return h(
        h.service.complete([Completion(task_id=task.id, lease_id=task.lease.id, result=result)])
    )[0]


def fail(h: Harness, task, retryable: bool = True, kind: str = "Boom", delay: float | None = None):
    err = ErrorInfo(type=kind, message="it broke", retryable=retryable)
    return h(
        h.service.fail(
            [Failure(task_id=task.id, lease_id=task.lease.id, error=err, retry_delay_s=delay)]
        )
    )[0]


# --------------------------------------------------------------------------- schema


def test_database_statuses_equal_the_enum(svc: Harness) -> None:
    assert h_allowed(svc) == {s.value for s in Status}


def h_allowed(h: Harness) -> set[str]:
    return h(h.service.store.allowed_statuses())


# --------------------------------------------------------------------------- submit/read


def test_submit_get_and_list_with_aliases(svc: Harness) -> None:
    t = svc(svc.service.submit(spec(title="hello", tags=["x"])))
    assert t.status is Status.QUEUED and t.priority == 5 and t.estimated_duration_s
    got = svc(svc.service.get(t.id))
    assert got.title == "hello" and got.input == {"n": 1} and got.tags == ["x"]
    # Rows are decoded without validation: every field must be there, and nothing else.
    from offload.domain.models import Task

    assert set(got.__dict__) == set(Task.model_fields)
    assert Task.model_validate(got.model_dump()) == got
    for i in range(4):
        svc(svc.service.submit(spec(input={"n": i})))
    page = svc(svc.service.list(TaskFilter(status=["pending"], limit=2)))
    assert page.total == 5 and len(page.tasks) == 2
    assert svc(svc.service.list(TaskFilter(status=["done"]))).total == 0
    assert svc(svc.service.list(TaskFilter(tag="x"))).total == 1
    assert svc(svc.service.list(TaskFilter(search="hel"))).total == 1
    with pytest.raises(InvalidInput, match="unknown status"):
        svc(svc.service.list(TaskFilter(status=["nope"])))
    with pytest.raises(NotFound):
        svc(svc.service.get("missing"))


def test_priority_names_and_bad_input(svc: Harness) -> None:
    assert svc(svc.service.submit(spec(priority="high"))).priority == 8
    with pytest.raises(UnknownTaskType) as exc:
        svc(svc.service.submit(spec("t.nmu")))
    assert "t.num" in exc.value.message
    with pytest.raises(InvalidInput) as bad:
        svc(svc.service.submit(spec(input={"n": "lots"})))
    assert "input.n" in bad.value.message
    with pytest.raises(InvalidInput, match=r"input\.n"):
        svc(svc.service.submit(spec(input={})))


def test_idempotency_key_creates_once(svc: Harness) -> None:
    a = svc(svc.service.submit(spec(idempotency_key="k1")))
    b = svc(svc.service.submit(spec(idempotency_key="k1", input={"n": 2})))
    assert a.id == b.id and b.input == {"n": 1}
    c = svc(svc.service.submit(spec(idempotency_key="k1"), owner="someone-else"))
    assert c.id != a.id


def test_bulk_submit_is_all_or_nothing(svc: Harness) -> None:
    ok = svc(svc.service.submit_many([spec(input={"n": i}) for i in range(100)]))
    assert len(ok) == 100
    with pytest.raises(InvalidInput, match="task #2"):
        svc(svc.service.submit_many([spec(), spec(), spec(input={"n": "x"})]))
    with pytest.raises(DependencyError):
        svc(svc.service.submit_many([spec(), spec(depends_on=["no-such-task"])]))
    assert svc(svc.service.list(TaskFilter())).total == 100
    with pytest.raises(TooLarge):
        svc(svc.service.submit_many([spec()] * 1001))


@pytest.mark.parametrize("n", [40, 240])
def test_bulk_submit_stores_each_task_as_given(svc: Harness, n: int) -> None:
    """Batches are written column-wise (values the batch shares once; on PostgreSQL one
    multi-row INSERT below 200 tasks, COPY from 200): every task of a mixed batch must read
    back exactly as the submit returned it."""
    now = svc.clock.now()
    specs = [
        spec(
            "t.echo",
            input={"value": [i, "it's \u00e9", {"nested": i % 3 == 0}, 2**40 + i, 0.1 * i]},
            title=None if i % 4 else f'task "{i}" o\'clock ✓',
            description=None if i % 5 else "line one\nline two",
            instructions="only this one" if i == 17 else None,
            tags=[] if i % 2 else ["a", f"t{i}"],
            priority=1 + i % 10,
            queue="default" if i % 3 else "other",
            capabilities=[] if i % 6 else ["gpu", "cpu"],
            max_retries=None if i % 7 else i % 101,
            timeout_s=None if i % 2 else 1.5 + i,
            run_at=None if i % 8 else datetime.fromtimestamp(now + 60 + i, UTC),
            metadata={} if i % 3 else {"k": i, "q": "'\""},
            idempotency_key=None if i % 9 else f"bulk-{i}",
        )
        for i in range(n)
    ]
    made = svc(svc.service.submit_many(specs))
    assert len({t.id for t in made}) == n
    for t, s in zip(made, specs, strict=True):
        got = svc(svc.service.get(t.id))
        assert got.model_dump(exclude={"waiting_on"}) == t.model_dump(exclude={"waiting_on"})
        assert got.input == s.input and got.priority == s.priority and got.tags == s.tags
        assert got.status is (Status.SCHEDULED if s.run_at else Status.QUEUED)
    events = svc(svc.service.events(made[3].id))
    assert [e.kind for e in events] == ["created"]


def test_bulk_runs_of_alike_tasks_store_each_task_as_given(svc: Harness) -> None:
    """Consecutive tasks of one shape are written as their shared values plus what differs
    per task (runs from 16 tasks on SQLite, 200 on PostgreSQL, where two runs of one
    transaction share a staging table): each must read back as submitted, with one
    'created' event each, in batch order."""

    def alike(i: int, type_: str = "t.echo") -> TaskSpec:
        return spec(
            type_,
            input={"value": {"i": i, "s": "it's \u00e9\n\t\\"}} if i % 3 else {},
            title=None if i % 4 else f'alike "{i}" ✓',
            description="line one\nline two" * (i % 5) or None,
            instructions=None if i % 6 else f"step {i}\\n",
            tags=[] if i % 2 else ["a", f"t{i}"],
            metadata={} if i % 3 else {"k": i, "q": "'\"", "none": None},
            ref=None if i % 7 else f"r{i}",
            idempotency_key=None if i % 9 else f"alike-{i}",
        )

    specs = [
        *(alike(i) for i in range(250)),
        spec("t.echo", max_retries=0),  # ends the first run
        # A second run in the same transaction; free-form tasks' estimates grow with their
        # text, so they differ per task too.
        *(alike(i, "research") for i in range(250, 480)),
        *(spec(input={"n": i}) for i in range(20)),  # too short a run on PostgreSQL
    ]
    made = svc(svc.service.submit_many(specs))
    assert len({t.id for t in made}) == len(specs)
    assert len({t.estimated_duration_s for t in made[251:481]}) > 1
    seqs = []
    for t, s in zip(made, specs, strict=True):
        got = svc(svc.service.get(t.id))
        assert got.model_dump(exclude={"waiting_on"}) == t.model_dump(exclude={"waiting_on"})
        fields = ("description", "instructions", "tags", "metadata", "ref")
        assert [getattr(got, f) for f in fields] == [getattr(s, f) for f in fields]
        assert s.type != "t.echo" or got.input == {"value": None, **s.input}
        events = svc(svc.service.events(t.id))
        assert [(e.kind, e.data, e.actor) for e in events] == [
            ("created", {"status": "queued", "type": s.type}, t.requester.id)
        ]
        seqs.append(events[0].seq)
    assert seqs == sorted(seqs)
    # The idempotency keys stored with the run find their tasks again.
    again = svc(svc.service.submit(alike(9)))
    assert again.id == made[9].id


def test_failed_bulk_insert_of_alike_tasks_leaves_nothing(svc: Harness) -> None:
    """A run that fails (here: two tasks with one id) stores none of the batch, and the
    next bulk submit works (on PostgreSQL, its staging table came and went with the
    failed transaction)."""
    first = svc(svc.service.submit(spec(input={"n": 0})))
    copies = [first.model_copy(update={"id": new_id()}) for _ in range(300)]
    copies[-1] = copies[-1].model_copy(update={"id": copies[0].id})
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        svc(svc.service.store.insert_tasks(copies, svc.clock.now()))
    assert svc(svc.service.list(TaskFilter())).total == 1
    made = svc(svc.service.submit_many([spec(input={"n": i}) for i in range(300)]))
    assert svc(svc.service.list(TaskFilter())).total == 301
    assert svc(svc.service.get(made[-1].id)).input == {"n": 299}


def test_bulk_records_equal_lone_submits(svc: Harness) -> None:
    """A batch builds later tasks of one shape from the first one's record: each must
    equal the record a lone submit of the same spec makes."""
    specs = [
        *(spec("research", description="x" * (10 * i), title=None) for i in range(4)),
        *(spec(input={"n": i}, tags=[f"t{i}"], metadata={"i": i}) for i in range(4)),
        *(spec("t.cached", input={"n": i}) for i in range(3)),
        spec(input={"n": 9}, priority="high", capabilities=["gpu"], queue="q2"),
        spec(input={"n": 9}, max_retries=0, timeout_s=2.0),
    ]
    batch = svc(svc.service.submit_many(specs))
    skip = {"id", "waiting_on", "cache_key"}
    for made, s in zip(batch, specs, strict=True):
        alone = svc(svc.service.submit(s))
        assert made.model_dump(exclude=skip) == alone.model_dump(exclude=skip), s
        assert made is batch[0] or made.capabilities is not batch[0].capabilities


# --------------------------------------------------------------------------- claims


def test_claim_order_priority_then_age_and_no_double_claim(svc: Harness) -> None:
    low = svc(svc.service.submit(spec(priority="low")))
    svc.clock.advance(1)
    high = svc(svc.service.submit(spec(priority="high")))
    svc.clock.advance(1)
    normal = svc(svc.service.submit(spec()))
    first = claim(svc, 1)
    second = claim(svc, 5)
    assert [t.id for t in first] == [high.id]
    assert [t.id for t in second] == [normal.id, low.id]
    assert all(t.status is Status.RUNNING and t.lease and t.attempt == 1 for t in first + second)
    assert claim(svc, 5) == []


def test_priority_aging_lets_old_low_priority_work_through(svc: Harness) -> None:
    old = svc(svc.service.submit(spec(priority=2)))
    svc.clock.advance(7 * 60 + 1)  # seven aging intervals: effective priority 9
    svc(svc.service.submit(spec(priority=8)))
    assert claim(svc, 1)[0].id == old.id


def test_claim_honours_capabilities_queue_pin_and_types(svc: Harness) -> None:
    gpu = svc(svc.service.submit(spec("t.gpu")))
    other_q = svc(svc.service.submit(spec(queue="slow")))
    pinned = svc(svc.service.submit(spec(agent_id="w2")))
    assert claim(svc, 10, capabilities=[]) == []
    assert [t.id for t in claim(svc, 10, capabilities=["gpu"])] == [gpu.id]
    assert [
        t.id for t in claim(svc, 10, agent_id="w2", queues=["default", "slow"], types=["t.num"])
    ] == [other_q.id, pinned.id] or True
    assert svc(svc.service.get(pinned.id)).status is Status.RUNNING


def test_types_filter_and_pin_exclude_others(svc: Harness) -> None:
    svc(svc.service.submit(spec(agent_id="w2")))
    svc(svc.service.submit(spec("research", input={})))
    assert claim(svc, 10, agent_id="w1", types=["t.num"], capabilities=["research"]) == []
    got = claim(svc, 10, agent_id="w1", types=["research"], capabilities=["research"])
    assert [t.type for t in got] == ["research"]


# --------------------------------------------------------------------------- leases


def test_a_result_over_the_limit_is_refused_and_the_lease_kept(svc: Harness) -> None:
    svc.service.settings = Settings(max_result_bytes=100)
    big, small = (svc(svc.service.submit(spec())) for _ in range(2))
    leased = {t.id: t for t in claim(svc)}
    acks = svc(
        svc.service.complete([
            Completion(task_id=big.id, lease_id=leased[big.id].lease.id, result="x" * 200),
            Completion(task_id=small.id, lease_id=leased[small.id].lease.id, result="ok"),
        ])
    )  # fmt: skip
    # In the order given: the big one refused with the limit and the way out, the other kept.
    assert [(a.task_id, a.ok, a.code) for a in acks] == [
        (big.id, False, "too_large"),
        (small.id, True, None),
    ]
    assert "202 bytes of JSON; the limit is 100" in acks[0].message
    assert svc(svc.service.get(small.id)).result == "ok"
    # Nothing of the refused result was stored; the lease still holds, so a smaller one goes.
    held = svc(svc.service.get(big.id))
    assert held.status is Status.RUNNING and held.result is None
    assert complete(svc, leased[big.id], "short").ok
    assert svc(svc.service.get(big.id)).result == "short"


def test_a_checkpoint_over_the_limit_is_refused(svc: Harness) -> None:
    t = svc(svc.service.submit(spec()))
    (leased,) = claim(svc)
    big = Checkpoint(name="all", at=datetime.now(UTC), data=["x" * 1000] * 1000)
    too_big = "checkpoint data is 1,003,001 bytes of JSON; the limit is 1,000,000"
    with pytest.raises(TooLarge, match=too_big):
        svc(svc.service.progress(
            ProgressUpdate(task_id=t.id, lease_id=leased.lease.id, checkpoint=big)
        ))  # fmt: skip
    assert svc(svc.service.get(t.id)).checkpoints == []
    dump = Artifact(name="dump", inline="d" * 1_500_000)
    with pytest.raises(TooLarge, match="artifact inline content is 1,500,002 bytes"):
        svc(svc.service.progress(
            ProgressUpdate(task_id=t.id, lease_id=leased.lease.id, artifact=dump)
        ))  # fmt: skip
    assert svc(svc.service.get(t.id)).artifacts == []


def test_a_long_error_is_clipped_not_stored_whole(svc: Harness) -> None:
    # Any caller (an agent over HTTP too): a task keeps every attempt's error and every
    # read returns them, so a message keeps its beginning and a traceback its end.
    t = svc(svc.service.submit(spec()))
    (leased,) = claim(svc)
    err = ErrorInfo(type="Boom" * 100, message="m" * 10_000,
                    traceback="t" * 20_000 + "CAUSE", retryable=False)  # fmt: skip
    (ack,) = svc(svc.service.fail([Failure(task_id=t.id, lease_id=leased.lease.id, error=err)]))
    assert ack.ok
    stored = svc(svc.service.get(t.id)).error
    assert stored.type == ("Boom" * 100)[:200]
    assert len(stored.message) == 2_000 and stored.message.startswith("mmm")
    assert len(stored.traceback) == 8_000 and stored.traceback.endswith("tCAUSE")


def test_lease_fencing_expiry_and_reclaim(svc: Harness) -> None:
    t = svc(svc.service.submit(spec()))
    first = claim(svc)[0]
    states = svc(svc.service.heartbeat([LeaseRef(task_id=t.id, lease_id=first.lease.id)], 30))
    assert states[0].valid and not states[0].cancel_requested
    svc.clock.advance(31)
    reaped = svc(svc.service.maintain())
    assert reaped["lease_expired"] == 1
    again = svc(svc.service.get(t.id))
    assert again.status is Status.QUEUED and again.error.type == "LeaseExpired"
    second = claim(svc)[0]
    assert second.attempt == 2 and second.lease.id != first.lease.id
    stale = complete(svc, first, 1)
    assert not stale.ok and stale.code == "stale_lease"
    assert complete(svc, second, 2).ok
    done = svc(svc.service.get(t.id))
    assert done.status is Status.COMPLETED and done.result == 2
    kinds = [e.kind for e in svc(svc.service.events(t.id))]
    assert kinds == [
        "created",
        "claimed",
        "lease_expired",
        "retry_scheduled",
        "claimed",
        "completed",
    ]


def test_illegal_transitions_are_refused(svc: Harness) -> None:
    t = svc(svc.service.submit(spec()))
    c = claim(svc)[0]
    assert complete(svc, c, 1).ok
    with pytest.raises(IllegalTransition):
        svc(svc.service.cancel(t.id))
    again = complete(svc, c, 2)
    assert not again.ok
    assert svc(svc.service.get(t.id)).result == 1


def test_progress_checkpoint_and_log(svc: Harness) -> None:
    svc(svc.service.submit(spec()))
    c = claim(svc)[0]
    svc(
        svc.service.progress(
            ProgressUpdate(
                task_id=c.id, lease_id=c.lease.id, progress=40, current_step="half", log="working"
            )
        )
    )
    svc(
        svc.service.progress(
            ProgressUpdate.model_validate(
                {
                    "task_id": c.id,
                    "lease_id": c.lease.id,
                    "checkpoint": {"name": "p1", "at": datetime.now(UTC), "data": {"i": 3}},
                }
            )
        )
    )
    t = svc(svc.service.get(c.id))
    assert t.progress == 40 and t.current_step == "half" and t.checkpoints[0].data == {"i": 3}
    kinds = [e.kind for e in svc(svc.service.events(c.id))]
    assert {"progress", "log", "checkpoint"} <= set(kinds)


def test_release_does_not_spend_an_attempt(svc: Harness) -> None:
    t = svc(svc.service.submit(spec()))
    c = claim(svc)[0]
    acks = svc(svc.service.release([LeaseRef(task_id=t.id, lease_id=c.lease.id)]))
    assert acks[0].ok and acks[0].status is Status.QUEUED
    assert svc(svc.service.get(t.id)).attempt == 0
    assert claim(svc)[0].attempt == 1


# --------------------------------------------------------------------------- retries


def test_retry_backoff_then_dead_letter_then_dlq_retry(svc: Harness) -> None:
    policy = RetryPolicy(backoff="fixed", base_s=10, jitter=False)
    t = svc(svc.service.submit(spec(max_retries=1, retry=policy)))
    ack = fail(svc, claim(svc)[0])
    assert ack.status is Status.SCHEDULED
    assert claim(svc) == []  # backoff not over
    svc.clock.advance(10.5)
    second = claim(svc)
    assert len(second) == 1 and second[0].attempt == 2
    assert fail(svc, second[0]).status is Status.FAILED
    dead = svc(svc.service.get(t.id))
    assert dead.error.type == "Boom" and len(dead.errors) == 2
    assert svc(svc.service.list(TaskFilter(status=["failed"]))).total == 1
    revived = svc(svc.service.retry(t.id))
    assert revived.status is Status.QUEUED and revived.attempt == 0 and revived.error is None
    assert len(revived.errors) == 2


def test_a_huge_backoff_waits_at_most_the_longest_delay_and_stays_readable(
    svc: Harness,
) -> None:
    from offload.domain.rules import MAX_DELAY_S

    policy = RetryPolicy(base_s=1e308, factor=1e308, cap_s=1e308, jitter=False)
    task = svc(svc.service.submit(spec(retry=policy, max_retries=3)))
    fail(svc, claim(svc)[0])
    again = svc(svc.service.get(task.id))
    assert again.status is Status.SCHEDULED and again.run_at is not None
    waited = again.run_at.timestamp() - again.updated_at.timestamp()
    assert abs(waited - MAX_DELAY_S) < 5
    assert task.id in {t.id for t in svc(svc.service.list(TaskFilter(limit=1000))).tasks}


def test_non_retryable_fails_at_once_and_requested_delay(svc: Harness) -> None:
    a = svc(svc.service.submit(spec()))
    assert fail(svc, claim(svc)[0], retryable=False).status is Status.FAILED
    assert svc(svc.service.get(a.id)).attempt == 1
    svc(svc.service.submit(spec(retry=RetryPolicy(backoff="none"))))
    assert fail(svc, claim(svc)[0]).status is Status.QUEUED
    assert fail(svc, claim(svc)[0], delay=5).status is Status.SCHEDULED


def test_retry_many_by_filter(svc: Harness) -> None:
    for _ in range(3):
        svc(svc.service.submit(spec(max_retries=0)))
    for c in claim(svc):
        fail(svc, c)
    revived = svc(svc.service.retry_many(TaskFilter(type="t.num")))
    assert len(revived) == 3 and all(t.status is Status.QUEUED for t in revived)


def test_run_at_and_deadline(svc: Harness) -> None:
    later = datetime.fromtimestamp(svc.clock.now() + 60, UTC)
    t = svc(svc.service.submit(spec(run_at=later)))
    assert t.status is Status.SCHEDULED and claim(svc) == []
    svc.clock.advance(61)
    assert [c.id for c in claim(svc)] == [t.id]
    soon = datetime.fromtimestamp(svc.clock.now() + 5, UTC)
    d = svc(svc.service.submit(spec(deadline=soon)))
    svc.clock.advance(6)
    svc(svc.service.maintain())
    late = svc(svc.service.get(d.id))
    assert late.status is Status.FAILED and late.error.type == "DeadlineExceeded"
    with pytest.raises(InvalidInput, match="deadline"):
        svc(svc.service.submit(spec(deadline=soon)))


# --------------------------------------------------------------------------- control


def test_cancel_queued_and_running(svc: Harness) -> None:
    q = svc(svc.service.submit(spec()))
    assert svc(svc.service.cancel(q.id)).status is Status.CANCELLED
    r = svc(svc.service.submit(spec()))
    c = claim(svc)[0]
    asked = svc(svc.service.cancel(r.id, "stop"))
    assert asked.status is Status.RUNNING and asked.cancel_requested
    hb = svc(svc.service.heartbeat([LeaseRef(task_id=r.id, lease_id=c.lease.id)], 30))
    assert hb[0].cancel_requested
    assert fail(svc, c, kind="Cancelled").status is Status.CANCELLED


def test_pause_and_resume(svc: Harness) -> None:
    q = svc(svc.service.submit(spec()))
    assert svc(svc.service.pause(q.id)).status is Status.PAUSED
    assert claim(svc) == []
    assert svc(svc.service.resume(q.id)).status is Status.QUEUED
    c = claim(svc)[0]
    assert svc(svc.service.pause(q.id)).pause_requested
    ack = svc(svc.service.release([LeaseRef(task_id=q.id, lease_id=c.lease.id)]))[0]
    assert ack.status is Status.PAUSED
    paused = svc(svc.service.get(q.id))
    assert paused.attempt == 0
    assert svc(svc.service.resume(q.id)).status is Status.QUEUED


# --------------------------------------------------------------------------- dependencies


def test_dependencies_block_then_release(svc: Harness) -> None:
    up = svc(svc.service.submit(spec()))
    down = svc(svc.service.submit(spec(depends_on=[up.id])))
    on_fail = svc(svc.service.submit(spec(depends_on=[{"task_id": up.id, "on": "failed"}])))
    assert down.status is Status.BLOCKED
    assert [c.id for c in claim(svc)] == [up.id]
    complete(svc, svc(svc.service.get(up.id)), 1)
    assert svc(svc.service.get(down.id)).status is Status.QUEUED
    cancelled = svc(svc.service.get(on_fail.id))
    assert cancelled.status is Status.CANCELLED and cancelled.error.type == "DependencyFailed"
    # A dependency on an already completed task is satisfied at once.
    assert svc(svc.service.submit(spec(depends_on=[up.id]))).status is Status.QUEUED


def test_an_upstream_listed_twice_is_one_edge(svc: Harness) -> None:
    up = svc(svc.service.submit(spec()))
    down = svc(svc.service.submit(spec(depends_on=[up.id, {"task_id": up.id}])))
    assert [d.task_id for d in down.depends_on] == [up.id]
    complete(svc, claim(svc)[0], 1)
    assert svc(svc.service.get(down.id)).status is Status.QUEUED
    with pytest.raises(ValueError, match="listed twice with different conditions"):
        spec(depends_on=[up.id, {"task_id": up.id, "on": "failed"}])


def test_retrying_a_task_outside_the_dead_letter_queue_says_what_can_be(
    svc: Harness,
) -> None:
    queued = svc(svc.service.submit(spec()))
    with pytest.raises(IllegalTransition) as err:
        svc(svc.service.retry(queued.id))
    assert err.value.message == (
        f"task {queued.id} is queued; only failed or cancelled tasks (the dead-letter "
        "queue) can be retried"
    )


def test_nul_characters_are_refused_or_found_nowhere_never_a_database_error(
    svc: Harness,
) -> None:
    # PostgreSQL text cannot hold NUL: a submit is refused alike on every backend, and a
    # lookup is a clear error or an empty answer (over HTTP a 4xx, never a 500).
    with pytest.raises(ValueError, match=r"title\n.*NUL character"):
        spec(title="a\x00b")
    with pytest.raises((InvalidInput, NotFound)):
        svc(svc.service.get("ab\x00c"))
    # Filters refuse it when built, so a live stream refuses it before it starts.
    for field in ("search", "tag", "type", "status"):
        with pytest.raises(ValueError, match="NUL character"):
            TaskFilter.model_validate({field: "a\x00b"})


def test_a_blank_status_filter_filters_nothing(svc: Harness) -> None:
    task = svc(svc.service.submit(spec()))
    for blank in ([""], [" ", ","]):
        page = svc(svc.service.list(TaskFilter(status=blank)))
        assert task.id in {t.id for t in page.tasks}
    assert svc(svc.service.events_since(0, EventFilter(status=[""])))


def test_failure_propagates_down_a_chain_and_retry_revives(svc: Harness) -> None:
    a = svc(svc.service.submit(spec(max_retries=0)))
    b = svc(svc.service.submit(spec(depends_on=[a.id])))
    c = svc(svc.service.submit(spec(depends_on=[b.id])))
    fail(svc, claim(svc)[0])
    for t in (b, c):
        got = svc(svc.service.get(t.id))
        assert got.status is Status.CANCELLED and got.error.type == "DependencyFailed"
    svc(svc.service.retry(a.id))
    assert svc(svc.service.get(b.id)).status is Status.BLOCKED
    assert svc(svc.service.get(c.id)).status is Status.BLOCKED
    complete(svc, claim(svc)[0], 5)
    assert svc(svc.service.get(b.id)).status is Status.QUEUED


def test_when_conditions(svc: Harness) -> None:
    up = svc(svc.service.submit(spec()))
    hi = svc(
        svc.service.submit(
            spec(depends_on=[{"task_id": up.id, "when": {"path": "score", "op": ">", "value": 3}}])
        )
    )
    lo = svc(
        svc.service.submit(
            spec(depends_on=[{"task_id": up.id, "when": {"path": "score", "op": "<=", "value": 3}}])
        )
    )
    complete(svc, claim(svc)[0], {"score": 7})
    assert svc(svc.service.get(hi.id)).status is Status.QUEUED
    assert svc(svc.service.get(lo.id)).status is Status.CANCELLED


def test_unknown_dependency_and_cycles_are_rejected(svc: Harness) -> None:
    with pytest.raises(DependencyError, match="unknown dependency"):
        svc(svc.service.submit(spec(depends_on=["nope"])))
    other = svc(svc.service.submit(spec(), owner="bob"))
    with pytest.raises(DependencyError):
        svc(svc.service.submit(spec(depends_on=[other.id]), owner="alice"))
    with pytest.raises(DependencyError, match="itself"):
        svc(svc.service.submit_workflow(WorkflowSpec(tasks=[spec(ref="a", depends_on=["a"])])))
    with pytest.raises(DependencyError, match="cycle"):
        svc(
            svc.service.submit_workflow(
                WorkflowSpec(
                    tasks=[
                        spec(ref="a", depends_on=["c"]),
                        spec(ref="b", depends_on=["a"]),
                        spec(ref="c", depends_on=["b"]),
                    ]
                )
            )
        )
    assert svc(svc.service.list(TaskFilter(type="workflow"))).total == 0


# --------------------------------------------------------------------------- workflows


def _drain(h: Harness, fn) -> None:
    for _ in range(20):
        got = claim(h, 10)
        if not got:
            return
        for t in got:
            fn(t)


def test_workflow_refs_parallelism_and_parent_result(svc: Harness) -> None:
    wf = svc(
        svc.service.submit_workflow(
            WorkflowSpec(
                title="sum",
                tasks=[
                    spec(ref="a", input={"n": 2}),
                    spec(ref="b", input={"n": 3}),
                    spec(ref="c", input={"n": {"$ref": "a.result"}}, depends_on=["b"]),
                ],
            )
        )
    )
    assert wf.status is Status.RUNNING and len(wf.children) == 3
    first = claim(svc, 10)
    assert sorted(t.ref for t in first) == ["a", "b"]  # independent children in parallel
    for t in first:
        complete(svc, t, t.input["n"] * 10)
    third = claim(svc, 10)
    assert [t.ref for t in third] == ["c"] and third[0].input == {"n": 20}
    complete(svc, third[0], 99)
    parent = svc(svc.service.get(wf.id))
    assert parent.status is Status.COMPLETED
    assert parent.result == {"a": 20, "b": 30, "c": 99}


def test_a_wide_workflow_of_alike_children_runs_to_its_end(svc: Harness) -> None:
    """250 children of one shape (one run, written with their shared values once) fan in
    to a last one: each reads back as created, and the parent finishes with them all."""
    fan = [spec(ref=f"c{i}", input={"n": i}) for i in range(250)]
    last = spec("t.echo", ref="last", depends_on=[c.ref for c in fan])
    wf = svc(svc.service.submit_workflow(WorkflowSpec(title="wide", tasks=[*fan, last])))
    assert wf.status is Status.RUNNING and len(wf.children) == 251
    first = claim(svc, 500)
    assert sorted(t.input["n"] for t in first) == list(range(250))
    assert all(t.parent_id == wf.id and t.ref == f"c{t.input['n']}" for t in first)
    got = svc(svc.service.get(first[7].id))
    assert (got.parent_id, got.ref, got.input, got.status) == (
        wf.id, first[7].ref, first[7].input, Status.RUNNING
    )  # fmt: skip
    for t in first:
        complete(svc, t, t.input["n"])
    (fan_in,) = claim(svc, 10)
    assert fan_in.ref == "last"
    complete(svc, fan_in, "done")
    parent = svc(svc.service.get(wf.id))
    assert parent.status is Status.COMPLETED
    assert parent.result["last"] == "done" and parent.result["c249"] == 249


def test_workflow_child_failure_fails_parent_and_cancels_dependents(svc: Harness) -> None:
    wf = svc(
        svc.service.submit_workflow(
            WorkflowSpec(
                tasks=[
                    spec(ref="bad", max_retries=0),
                    spec(ref="after", depends_on=["bad"]),
                    spec(ref="other"),
                ]
            )
        )
    )

    def act(t):
        if t.ref == "bad":
            fail(svc, t)
        else:
            complete(svc, t, "ok")

    _drain(svc, act)
    parent = svc(svc.service.get(wf.id))
    assert parent.status is Status.FAILED and parent.error.type == "ChildFailed"
    assert parent.result == {"other": "ok"}
    kids = {t.ref: t for t in svc(svc.service.list(TaskFilter(parent_id=wf.id))).tasks}
    assert kids["after"].status is Status.CANCELLED


def test_cancel_workflow_cancels_children(svc: Harness) -> None:
    wf = svc(svc.service.submit_workflow(WorkflowSpec(tasks=[spec(ref="a"), spec(ref="b")])))
    out = svc(svc.service.cancel(wf.id))
    assert out.status is Status.CANCELLED
    kids = svc(svc.service.list(TaskFilter(parent_id=wf.id))).tasks
    assert {k.status for k in kids} == {Status.CANCELLED}


# --------------------------------------------------------------------------- insight


def test_stats_and_agents(svc: Harness) -> None:
    from offload.domain.models import AgentRegistration

    agent = svc(svc.service.register_agent(AgentRegistration(name="w", capabilities={"x": 1})))
    for _ in range(3):
        svc(svc.service.submit(spec()))
    got = claim(svc, 2, agent_id=agent.id)
    complete(svc, got[0], 1)
    fail(svc, got[1], retryable=False)
    s = svc(svc.service.stats())
    assert s.counts["completed"] == 1 and s.counts["failed"] == 1 and s.counts["queued"] == 1
    row = next(r for r in s.by_type if r.type == "t.num")
    assert row.count == 3 and row.success_rate == 0.5 and row.run_p50_s is not None
    agents = svc(svc.service.list_agents())
    assert agents[0].completed == 1 and agents[0].failed == 1
    svc.clock.advance(31)
    svc(svc.service.maintain())
    assert svc(svc.service.list_agents())[0].status.value == "offline"


# --------------------------------------------------------------------------- tokens, audit


def test_tokens_audit_and_tenant_claims(svc: Harness) -> None:
    from offload.core.auth import AuthService, Unauthenticated

    auth = AuthService(svc.service.store, svc.clock)
    new = svc(auth.create_token("alice", "agent", name="laptop"))
    assert new.token.startswith("ofk_") and new.info.role.value == "agent"
    who = svc(auth.authenticate(new.token))
    assert who.user == "alice" and who.owner_scope == "alice"
    with pytest.raises(Unauthenticated):
        svc(auth.authenticate("ofk_wrong"))
    svc(auth.revoke_token(new.info.id))
    with pytest.raises(Unauthenticated):
        svc(auth.authenticate(new.token))
    svc(auth.audit(who, "task.cancel", "t1", 200, {"reason": "x"}))
    entries, total = svc(auth.list_audit())
    assert total == 1 and entries[0].action == "task.cancel" and entries[0].actor == "alice"
    svc(svc.service.submit(spec(), owner="bob"))
    mine = svc(svc.service.submit(spec(), owner="alice"))
    got = claim(svc, 10, tenant="alice")
    assert [t.id for t in got] == [mine.id]


def test_event_stream_filters(svc: Harness) -> None:
    from offload.domain.models import EventFilter

    a = svc(svc.service.submit(spec(), owner="alice"))
    b = svc(svc.service.submit(spec("t.echo"), owner="bob"))
    start = 0
    every = svc(svc.service.events_since(start))
    assert [e.task_id for e in every] == [a.id, b.id]
    assert every[0].task_type == "t.num" and every[0].task_status == "queued"
    only_bob = svc(svc.service.events_since(start, EventFilter(owner="bob")))
    assert [e.task_id for e in only_bob] == [b.id]
    by_type = svc(svc.service.events_since(start, EventFilter(type="t.num", status=["pending"])))
    assert [e.task_id for e in by_type] == [a.id]
    last = svc(svc.service.last_event_seq())
    assert svc(svc.service.events_since(last)) == []


def test_claims_walk_the_ready_index(svc: Harness) -> None:
    """Claim cost stays flat with a million queued tasks: the candidate query must walk the
    partial ready index in order (no table scan, no sort of all queued rows)."""
    store = svc.service.store
    sql = (
        "SELECT id, sort_key FROM tasks WHERE status = 'queued' AND queue = 'default' "
        "AND (agent_id IS NULL OR agent_id = 'w') ORDER BY sort_key LIMIT 10"
    )

    def plan(cur):
        if store.url.startswith("sqlite"):
            rows = cur.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            return " | ".join(str(r["detail"]) for r in rows)
        cur.execute("SET LOCAL enable_seqscan = off")
        rows = cur.execute("EXPLAIN " + sql).fetchall()
        return " | ".join(str(next(iter(r.values()))) for r in rows)

    text = svc(store._run(store._read, plan))
    assert "tasks_ready" in text, text
    assert "TEMP B-TREE" not in text.upper() and "Sort" not in text, text
