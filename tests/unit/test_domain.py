"""Unit tests for the pure domain: lifecycle table, aliases, rules, retry decisions, ids."""

from __future__ import annotations

import pytest

from offload.domain.errors import DependencyError, IllegalTransition, InvalidInput
from offload.domain.ids import new_id
from offload.domain.models import (
    Condition,
    DependencyOn,
    RetryPolicy,
    TaskFilter,
    TaskSpec,
    validated,
)
from offload.domain.rules import (
    EdgeState,
    Outcome,
    backoff_delay,
    check_acyclic,
    decide_failure,
    edge_state,
    effective_priority,
    evaluate_condition,
    find_refs,
    resolve_refs,
    sort_key,
    validate_json_size,
)
from offload.domain.status import (
    ALIASES,
    TERMINAL,
    TRANSITIONS,
    Status,
    can_transition,
    check_transition,
    expand_statuses,
    sources_of,
)

S = Status


def test_every_status_has_a_row_and_terminal_ones_stay_put() -> None:
    assert set(TRANSITIONS) == set(Status)
    assert TRANSITIONS[S.COMPLETED] == frozenset()
    for s in TERMINAL - {S.COMPLETED}:
        assert TRANSITIONS[s] <= {S.QUEUED, S.BLOCKED}  # only a dead-letter retry


@pytest.mark.parametrize(
    ("a", "b", "ok"),
    [
        (S.QUEUED, S.ASSIGNED, True),
        (S.ASSIGNED, S.RUNNING, True),
        (S.RUNNING, S.COMPLETED, True),
        (S.RUNNING, S.SCHEDULED, True),
        (S.CANCELLED, S.COMPLETED, False),
        (S.COMPLETED, S.CANCELLED, False),
        (S.QUEUED, S.COMPLETED, False),
        (S.FAILED, S.QUEUED, True),
        (S.PAUSED, S.QUEUED, True),
        (S.REVIEWING, S.QUEUED, True),
    ],
)
def test_transition_table(a: Status, b: Status, ok: bool) -> None:
    assert can_transition(a, b) is ok
    if not ok:
        with pytest.raises(IllegalTransition) as exc:
            check_transition("t1", a, b)
        assert exc.value.http_status == 409 and exc.value.code == "illegal_transition"


def test_sources_of() -> None:
    assert S.RUNNING in sources_of(S.COMPLETED)
    assert S.QUEUED not in sources_of(S.COMPLETED)


def test_aliases() -> None:
    assert expand_statuses(["pending"]) == {S.BLOCKED, S.SCHEDULED, S.QUEUED}
    assert expand_statuses(["active"]) == {S.ASSIGNED, S.RUNNING, S.REVIEWING}
    assert expand_statuses(["done"]) == TERMINAL
    assert expand_statuses(["queued,running"]) == {S.QUEUED, S.RUNNING}
    assert "pending" in ALIASES
    with pytest.raises(InvalidInput, match="unknown status"):
        expand_statuses(["sleeping"])


def test_priority_names() -> None:
    assert TaskSpec(type="x", priority="critical").priority == 10
    assert TaskSpec(type="x", priority="low").priority == 2
    assert TaskSpec(type="x", priority=7).priority == 7
    with pytest.raises(ValueError, match="priority"):
        TaskSpec(type="x", priority=11)
    with pytest.raises(ValueError, match="priority"):
        TaskSpec(type="x", priority="urgent")


def test_bare_dependency_ids() -> None:
    spec = TaskSpec(type="x", depends_on=["a", {"task_id": "b", "on": "failed"}])
    assert [(d.task_id, d.on) for d in spec.depends_on] == [
        ("a", DependencyOn.COMPLETED),
        ("b", DependencyOn.FAILED),
    ]


@pytest.mark.parametrize(
    ("op", "value", "result", "ok"),
    [
        ("==", 3, {"x": 3}, True),
        ("!=", 3, {"x": 3}, False),
        (">", 2, {"x": 3}, True),
        (">=", 3, {"x": 3}, True),
        ("<", 3, {"x": 3}, False),
        ("<=", 3, {"x": 3}, True),
        ("in", [1, 3], {"x": 3}, True),
        ("contains", "b", {"x": "abc"}, True),
        ("exists", None, {"x": 0}, True),
        ("exists", None, {"y": 0}, False),
        (">", "a", {"x": 3}, False),  # type mismatch is false, not an error
    ],
)
def test_conditions(op: str, value: object, result: object, ok: bool) -> None:
    assert evaluate_condition(Condition(path="x", op=op, value=value), result) is ok


def test_edge_states() -> None:
    c, f = DependencyOn.COMPLETED, DependencyOn.FAILED
    assert edge_state(c, None, S.RUNNING, None) is EdgeState.WAIT
    assert edge_state(c, None, S.COMPLETED, None) is EdgeState.SATISFIED
    assert edge_state(c, None, S.FAILED, None) is EdgeState.IMPOSSIBLE
    assert edge_state(f, None, S.FAILED, None) is EdgeState.SATISFIED
    assert edge_state(DependencyOn.FINISHED, None, S.CANCELLED, None) is EdgeState.SATISFIED
    when = Condition(path="ok", op="==", value=True)
    assert edge_state(c, when, S.COMPLETED, {"ok": False}) is EdgeState.IMPOSSIBLE


def test_refs() -> None:
    value = {"a": {"$ref": "up.result.total"}, "b": [{"$ref": "other.status"}], "c": 1}
    assert find_refs(value) == {"up", "other"}
    records = {"up": {"result": {"total": 5}}, "other": {"status": "completed"}}
    assert resolve_refs(value, records.get) == {"a": 5, "b": ["completed"], "c": 1}


def test_cycles() -> None:
    check_acyclic({"a": ["b"], "b": ["c"], "c": []})
    with pytest.raises(DependencyError, match="a -> b -> a"):
        check_acyclic({"a": ["b"], "b": ["a"]})
    with pytest.raises(DependencyError, match="itself"):
        check_acyclic({"a": ["a"]})


def test_backoff() -> None:
    exp = RetryPolicy(base_s=1, factor=2, cap_s=10, jitter=False)
    assert [backoff_delay(exp, n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    jittered = RetryPolicy(base_s=1, factor=2, cap_s=10, jitter=True)
    assert backoff_delay(jittered, 3, rng=lambda: 0.5) == 2.0
    assert backoff_delay(RetryPolicy(backoff="none"), 3) == 0
    assert backoff_delay(RetryPolicy(backoff="fixed", base_s=5, jitter=False), 9) == 5


def test_decide_failure() -> None:
    p = RetryPolicy(jitter=False)
    kw = {"policy": p, "now": 0.0, "deadline": None}
    assert decide_failure(attempt=1, max_retries=3, retryable=True, **kw).outcome is Outcome.RETRY
    assert decide_failure(attempt=4, max_retries=3, retryable=True, **kw).outcome is Outcome.DEAD
    assert decide_failure(attempt=1, max_retries=3, retryable=False, **kw).outcome is Outcome.DEAD
    late = decide_failure(attempt=1, max_retries=3, retryable=True, policy=p, now=0.0, deadline=0.5)
    assert late.outcome is Outcome.DEAD and "deadline" in late.reason
    asked = decide_failure(attempt=1, max_retries=3, retryable=True, requested_delay_s=7, **kw)
    assert asked.delay_s == 7


def test_aging_key_ranks_like_linear_aging() -> None:
    # An old priority-2 task (waited 7 intervals) outranks a fresh priority-8 one.
    assert sort_key(0, 2, 60) < sort_key(7 * 60 + 1, 8, 60)
    assert effective_priority(2, 7 * 60 + 1) == 9
    assert effective_priority(9, 10_000) == 10


def test_ids_are_time_sortable_and_unique() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == 5000
    assert ids[0][14] == "7"


def test_a_status_filter_may_be_one_string() -> None:
    assert TaskFilter(status="failed").status == ["failed"]
    assert TaskFilter(status="failed, cancelled").status == ["failed", "cancelled"]
    assert TaskFilter(status=["done"]).status == ["done"]


def test_validated_names_the_field_and_the_fix() -> None:
    with pytest.raises(InvalidInput) as err:
        validated(TaskSpec, {"type": "util.echo", "priority": 42, "colour": "red"})
    assert err.value.field == "priority"
    assert err.value.message == (
        "priority: priority 42: use 1-10 or low|normal|high|critical; colour: unknown option"
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_input_with_nan_or_infinity_is_refused_not_stored_as_null(bad: float) -> None:
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        validate_json_size({"a": [1, {"b": bad}], "c": None}, 1000, "input")
    assert validate_json_size({"a": 1.5, "c": None}, 1000, "input") == b'{"a":1.5,"c":null}'


def test_backoff_never_overflows_or_waits_past_the_longest_delay() -> None:
    from offload.domain.rules import MAX_DELAY_S

    huge = RetryPolicy(base_s=1e308, factor=1e308, cap_s=1e308, jitter=False)
    for attempt in (1, 2, 50):
        assert backoff_delay(huge, attempt) == MAX_DELAY_S
    fixed = RetryPolicy(backoff="fixed", base_s=1e308, jitter=True)
    assert backoff_delay(fixed, 3) == MAX_DELAY_S
    asked = decide_failure(
        attempt=1,
        max_retries=3,
        policy=RetryPolicy(),
        retryable=True,
        now=0.0,
        deadline=None,
        requested_delay_s=1e308,
    )
    assert asked.delay_s == MAX_DELAY_S


def test_nan_and_infinity_are_not_times() -> None:
    with pytest.raises(ValueError, match="finite"):
        RetryPolicy(base_s=float("inf"))
    with pytest.raises(ValueError, match="finite"):
        TaskSpec(type="util.echo", timeout_s=float("nan"))


def test_a_stored_time_beyond_the_calendar_still_reads() -> None:
    from datetime import UTC, datetime

    from offload.storage.rows import _datetime

    assert _datetime(1e308) == datetime.max.replace(tzinfo=UTC)
    assert _datetime(-1e308) == datetime.min.replace(tzinfo=UTC)
    assert _datetime(0.0) == datetime(1970, 1, 1, tzinfo=UTC)


def test_every_error_a_caller_may_catch_is_importable_from_offload() -> None:
    import offload
    from offload.domain import errors

    public = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception) and not name.startswith("_")
    }
    assert public <= set(offload.__all__)
    assert all(getattr(offload, name) is getattr(errors, name) for name in public)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"metadata": {"blob": "x" * 70_000}}, "metadata: 70,0"),
        ({"tags": ["ok", "t" * 101]}, "tags.1: String should have at most 100 characters"),
        ({"capabilities": ["c"] * 51}, "capabilities: List should have at most 50 items"),
    ],
    ids=["metadata", "tag", "capabilities"],
)
def test_a_spec_past_its_limits_is_refused_naming_the_field(given: dict, says: str) -> None:
    # Returned with the task by every read: labels stay small (data goes in the input).
    with pytest.raises(InvalidInput) as caught:
        validated(TaskSpec, {"type": "util.echo", **given})
    assert says in caught.value.message
    validated(TaskSpec, {"type": "util.echo", "metadata": {"blob": "x" * 60_000}})
