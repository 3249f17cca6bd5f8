"""Bulk inserts of alike tasks write exactly the rows a whole-row insert would."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from offload.domain.models import Task
from offload.storage.rows import (
    ALIKE_VARYING,
    TASK_INSERT_COLUMNS,
    alike_key,
    expand_alike,
    task_to_row,
    varying_row,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _task(**kw: Any) -> Task:
    values: dict[str, Any] = {
        "id": "t-1", "type": "util.echo", "status": "queued", "created_at": NOW,
        "updated_at": NOW, "queued_at": NOW, "title": 'a "title" ✓', "description": "d\nd",
        "instructions": "do it", "input": {"value": [1, "é", None, 0.1]}, "tags": ["a", "b"],
        "metadata": {"k": "'\""}, "ref": "r1", "idempotency_key": "key-1",
        "estimated_duration_s": 61.5, "capabilities": ["gpu"], "priority": 7,
        "timeout_s": 2.5, "max_retries": 1,
    }  # fmt: skip
    values.update(kw)
    return Task.model_validate(values)


def test_every_insert_column_is_varying_or_shared() -> None:
    assert set(ALIKE_VARYING) <= set(TASK_INSERT_COLUMNS)
    assert len(set(ALIKE_VARYING)) == len(ALIKE_VARYING)


@pytest.mark.parametrize(
    "task",
    [_task(), _task(title=None, description=None, instructions=None, tags=[], metadata={},
                    ref=None, idempotency_key=None, estimated_duration_s=None, input={})],
)  # fmt: skip
def test_varying_values_are_the_whole_rows_own(task: Task) -> None:
    whole = task_to_row(task, {}, 12.5)
    at = {c: i for i, c in enumerate(TASK_INSERT_COLUMNS)}
    assert varying_row(task) == tuple(whole[at[c]] for c in ALIKE_VARYING)
    shared = {c: v for c, v in zip(TASK_INSERT_COLUMNS, whole, strict=True)}
    for c in ALIKE_VARYING:
        shared.pop(c)
    assert expand_alike(shared, [varying_row(task)]) == [whole]


def test_tasks_differing_only_in_varying_columns_are_alike() -> None:
    a = _task()
    b = _task(id="t-2", title=None, description="other", instructions=None,
              input={"value": 2}, tags=[], metadata={"x": 1}, ref=None,
              idempotency_key="key-2", estimated_duration_s=1.0)  # fmt: skip
    assert alike_key(a, 1.0) == alike_key(b, 1.0)
    assert alike_key(a, 1.0) != alike_key(b, 2.0)


@pytest.mark.parametrize(
    "change",
    [{"priority": 8}, {"queue": "q2"}, {"owner": "o"}, {"capabilities": []},
     {"max_retries": 2}, {"timeout_s": None}, {"status": "scheduled"}, {"agent_id": "w"},
     {"requester": {"kind": "agent", "id": "other"}}, {"deadline": NOW}],
)  # fmt: skip
def test_any_other_difference_makes_tasks_unalike(change: dict[str, Any]) -> None:
    assert alike_key(_task(), 1.0) != alike_key(_task(**change), 1.0)
