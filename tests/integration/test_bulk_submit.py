"""``submit_all``: any number of tasks in batches of up to 1,000, two under way at once, on
both backends, over HTTP and from the synchronous client; a failed batch says which tasks
were created."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import offload
from offload.client.factory import connect
from offload.client.http import HttpClient
from offload.client.local import LocalClient
from offload.domain.errors import InvalidInput, UnknownTaskType
from offload.domain.models import TaskFilter, TaskSpec
from tests.api.conftest import running_server

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'offload.db'}"
    return str(request.getfixturevalue("pg_server").new_database())


def _specs(n: int, tag: str) -> list[TaskSpec]:
    return [TaskSpec(type="util.echo", input={"i": i}, tags=[tag]) for i in range(n)]


async def _stored_positions(client: offload.AsyncClient, tag: str) -> list[int]:
    page = await client.list(TaskFilter(tag=tag, limit=1000, offset=0))
    positions = [t.input["i"] for t in page.tasks]
    offset = len(page.tasks)
    while offset < page.total:
        more = await client.list(TaskFilter(tag=tag, limit=1000, offset=offset))
        positions += [t.input["i"] for t in more.tasks]
        offset += len(more.tasks)
    return sorted(positions)


def test_submit_all_stores_every_task_in_order(backend_url: str) -> None:
    async def run() -> None:
        client = await connect(database_url=backend_url)
        try:
            seen: list[tuple[int, int]] = []
            tasks = await client.submit_all(
                _specs(2_500, "bulk"), progress=lambda done, total: seen.append((done, total))
            )
            assert [t.input["i"] for t in tasks] == list(range(2_500))
            assert len({t.id for t in tasks}) == 2_500
            assert await _stored_positions(client, "bulk") == list(range(2_500))
            # One call per batch, counting up to the total.
            assert [d for d, _ in seen] == sorted(d for d, _ in seen)
            assert len(seen) == 3 and seen[-1] == (2_500, 2_500)
            assert await client.submit_all([]) == []
            one = await client.submit_all(_specs(1, "one"), in_flight=1)
            assert one[0].input == {"i": 0}
        finally:
            await client.close()

    asyncio.run(run())


def test_a_failed_batch_names_the_task_and_what_was_created(backend_url: str) -> None:
    async def run() -> None:
        client = await connect(database_url=backend_url)
        try:
            specs = _specs(2_500, "fails")
            specs[1_500] = TaskSpec(type="no.such.type", tags=["fails"])
            with pytest.raises(UnknownTaskType) as caught:
                await client.submit_all(specs)
            err = caught.value
            assert err.details["index"] == 1_500
            assert err.message.startswith("task #1500: unknown task type 'no.such.type'")
            created = err.details["created"]
            # The batch before the bad one was under way beside it; the one after may or
            # may not have started before the failure was seen. Nothing else was created.
            assert created[0] == [0, 1_000]
            assert created in ([[0, 1_000]], [[0, 1_000], [2_000, 2_500]])
            assert "tasks #0-#999" in err.message and "the others were not" in err.message
            expected = [i for a, b in created for i in range(a, b)]
            assert await _stored_positions(client, "fails") == expected

            with pytest.raises(InvalidInput, match="in_flight must be 1-8"):
                await client.submit_all(_specs(3, "x"), in_flight=0)
        finally:
            await client.close()

    asyncio.run(run())


def test_building_a_big_batch_lets_the_loop_run(backend_url: str) -> None:
    """A 1,000-task batch is built in slices: other coroutines (a server's other requests,
    the batch under way beside it) run in between instead of waiting for the whole build."""

    async def run() -> None:
        client = await connect(database_url=backend_url)
        assert isinstance(client, LocalClient)
        store = client.service.store
        ticks = 0
        at_insert: list[int] = []
        insert = store.insert_tasks

        async def counted(tasks: Any, now: float) -> Any:
            at_insert.append(ticks)  # the build is over when the insert starts
            return await insert(tasks, now)

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        try:
            await client.submit_many(_specs(1, "warm"))  # caches filled, connections open
            store.insert_tasks = counted  # type: ignore[method-assign]
            beat = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            start = ticks
            made = await client.submit_many(_specs(1_000, "sliced"))
            beat.cancel()
            assert len(made) == 1_000
            # One slice of 25 tasks between yields: 39 yields in all.
            assert at_insert[0] - start >= 30
        finally:
            await client.close()

    asyncio.run(run())


def test_submit_all_over_http_and_from_the_sync_client(tmp_path: Path) -> None:
    with running_server(tmp_path, auth=False) as live:

        async def run() -> None:
            client = HttpClient(live.url)
            try:
                tasks = await client.submit_all(_specs(1_200, "http"), in_flight=3)
                assert [t.input["i"] for t in tasks] == list(range(1_200))
                assert await _stored_positions(client, "http") == list(range(1_200))
            finally:
                await client.close()

        asyncio.run(run())
        with offload.Client(url=live.url) as sync:
            made = sync.submit_all(
                [{"type": "util.echo", "input": {"i": i}, "tags": ["sync"]} for i in range(1_001)]
            )
            assert [t.input["i"] for t in made] == list(range(1_001))
            with pytest.raises(offload.InvalidInput, match="task #1000:"):
                sync.submit_all(
                    [{"type": "util.echo", "input": {"i": i}} for i in range(1_000)]
                    + [{"type": "no.such.type"}, {"type": "util.echo"}]
                )
