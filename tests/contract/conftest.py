"""Fixtures for the store contract suite: one service per test, per backend.

Backends are parameters, so the PostgreSQL backend joins by adding its URL factory here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from offload.core.registry import Registry
from offload.core.service import QueueService
from offload.ports.clock import ManualClock
from offload.storage import open_store

BACKENDS = ["sqlite", "postgres"]


def make_registry() -> Registry:
    """A registry with small types for contract tests (no handlers needed)."""
    reg = Registry()

    @reg.task("t.echo")
    def echo(value: Any = None) -> Any:
        return value

    @reg.task("t.num", capabilities=[])
    def num(n: int) -> int:
        return n

    @reg.task("t.gpu", capabilities=["gpu"])
    def gpu(x: int = 0) -> int:
        return x

    @reg.task("t.cached", cache_ttl_s=60)
    def cached(n: int) -> int:
        return n * 2

    reg.declare("research", capabilities=["research"], description="free-form")
    return reg


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'offload.db'}"
    server = request.getfixturevalue("pg_server")
    return str(server.new_database())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class Harness:
    """Runs async service calls from sync tests on one private loop."""

    def __init__(
        self, service: QueueService, loop: asyncio.AbstractEventLoop, clock: ManualClock
    ) -> None:
        self.service = service
        self.loop = loop
        self.clock = clock

    def __call__(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def svc(backend_url: str, clock: ManualClock) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()

    async def build() -> QueueService:
        store = await open_store(backend_url)
        return QueueService(store, make_registry(), clock=clock)

    service = loop.run_until_complete(build())
    try:
        yield Harness(service, loop, clock)
    finally:
        loop.run_until_complete(service.store.close())
        loop.close()


async def _noop() -> AsyncIterator[None]:  # pragma: no cover - keeps typing tools calm
    yield None
