"""Unit tests of the API's small parts: rate buckets, bind checks, settings, the change
feed, metrics from events and validation messages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest

from offload.api.changes import ChangeFeed
from offload.api.config import ApiSettings, is_loopback
from offload.api.errors import validation_details
from offload.api.metrics import Metrics
from offload.api.ratelimit import TokenBuckets
from offload.api.server import check_bind
from offload.domain.errors import InvalidInput
from offload.domain.models import TaskEvent


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # empty: one token in 0.5 s
    assert buckets.take("b") == 0.0  # buckets are per key
    now[0] = 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    now[0] = 100.0
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # capped at the burst
    assert buckets.take("a") > 0
    assert TokenBuckets(rate=0, burst=1).take("x") == 0.0  # rate 0: no limit


def test_loopback_and_the_bind_check() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com", "10.0.0.1"):
        assert not is_loopback(host), host
    check_bind("127.0.0.1", auth=False)
    check_bind("0.0.0.0", auth=True)
    with pytest.raises(InvalidInput, match="--auth"):
        check_bind("0.0.0.0", auth=False)


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_AUTH", "1")
    monkeypatch.setenv("OFFLOAD_SUBMIT_RATE", "5")
    monkeypatch.setenv("OFFLOAD_MAX_BODY_BYTES", "1000")
    settings = ApiSettings.from_env(worker_concurrency=3, auth=None)
    assert settings.auth is True and settings.submit_rate == 5.0
    assert settings.max_body_bytes == 1000 and settings.worker_concurrency == 3
    assert ApiSettings.from_env(auth=False).auth is False  # an option beats the environment
    monkeypatch.setenv("OFFLOAD_SUBMIT_RATE", "fast")
    with pytest.raises(InvalidInput, match="OFFLOAD_SUBMIT_RATE='fast' is not a number"):
        ApiSettings.from_env()


class _FakeService:
    """Just what the change feed reads: a change token that moves, and a wait on it."""

    def __init__(self) -> None:
        self.token = 0
        self.changed = asyncio.Event()

    def change_token(self) -> int:
        return self.token

    async def wait_for_work(self, timeout: float, since: int | None = None) -> bool:
        if since is not None and since != self.token:
            return True
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            return False
        self.changed.clear()
        return True

    def commit(self) -> None:
        self.token += 1
        self.changed.set()


def test_change_feed_wakes_every_waiter_and_never_misses_a_marked_change() -> None:
    async def run() -> None:
        service = _FakeService()
        feed = ChangeFeed(service)  # type: ignore[arg-type]
        watcher = asyncio.create_task(feed.run())
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(feed.wait(5)) for _ in range(3)]
        await asyncio.sleep(0.01)
        service.commit()
        assert await asyncio.gather(*waiters) == [True, True, True]
        # A change between mark() and wait() is not lost.
        mark = feed.mark()
        service.commit()
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(feed.wait(5, since=mark), 1) is True
        assert await feed.wait(0.05) is False  # nothing new
        feed.close()
        assert await feed.wait(5) is False and feed.closed
        watcher.cancel()

    asyncio.run(run())


def _event(seq: int, kind: str, task_id: str, at: float, **data: Any) -> TaskEvent:
    return TaskEvent(
        seq=seq, task_id=task_id, at=datetime.fromtimestamp(at, UTC), kind=kind,
        data=data or None, task_type="util.echo",
    )  # fmt: skip


def test_metrics_follow_the_event_log() -> None:
    metrics = Metrics(service=None)  # type: ignore[arg-type]
    for ev in [
        _event(1, "created", "a", 100.0, status="queued", type="util.echo"),
        _event(2, "claimed", "a", 102.0),
        _event(3, "retry_scheduled", "a", 103.0, delay_s=1.0),
        _event(4, "claimed", "a", 105.0),
        _event(5, "completed", "a", 105.5),
        _event(6, "created", "b", 106.0, status="queued"),
        _event(7, "claimed", "b", 106.0),
        _event(8, "lease_expired", "b", 140.0),
        _event(9, "cancelled", "b", 141.0),
    ]:
        metrics.observe(ev)
    text = generate_latest(metrics.registry).decode()
    assert 'offload_tasks_submitted_total{type="util.echo"} 2.0' in text
    assert 'offload_tasks_finished_total{status="completed",type="util.echo"} 1.0' in text
    assert 'offload_tasks_finished_total{status="cancelled",type="util.echo"} 1.0' in text
    assert "offload_retries_total 1.0" in text and "offload_leases_expired_total 1.0" in text
    # wait: 2 s (first claim), 1 s (after the retry's 1 s backoff), 0 s (b)
    assert 'offload_task_wait_seconds_count{type="util.echo"} 3.0' in text
    assert 'offload_task_wait_seconds_sum{type="util.echo"} 3.0' in text
    # run: only the attempt that completed (the first ended in a retry, b's lease expired)
    assert 'offload_task_run_seconds_count{type="util.echo"} 1.0' in text
    assert 'offload_task_run_seconds_sum{type="util.echo"} 0.5' in text


def test_validation_messages_name_the_fields() -> None:
    message, details = validation_details(
        [
            {"loc": ("body", "tasks", 0, "priority"), "msg": "bad priority", "type": "value_error"},
            {"loc": ("query", "limit"), "msg": "too small", "type": "greater_than_equal"},
            {"loc": ("body", "bogus"), "msg": "Extra inputs", "type": "extra_forbidden"},
        ]
    )
    assert message == (
        "invalid request: tasks.0.priority: bad priority; limit: too small; bogus: unexpected field"
    )
    assert details["field"] == "tasks.0.priority" and len(details["errors"]) == 3
