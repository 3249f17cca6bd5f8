"""``HttpClient`` and ``LocalClient`` are one protocol: the same calls raise the same
exception classes with the same codes, locally and over HTTP."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from offload.client.base import AsyncClient
from offload.client.factory import connect
from offload.client.http import HttpClient, error_from_response
from offload.core.auth import Forbidden, Unauthenticated
from offload.domain.errors import (
    DependencyError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    OffloadError,
    StaleLease,
    TooLarge,
    Unavailable,
    UnknownTaskType,
    WaitTimeout,
)
from offload.domain.models import (
    Ack,
    AgentRegistration,
    Checkpoint,
    ClaimRequest,
    Completion,
    LeaseRef,
    ProgressUpdate,
    TaskSpec,
)
from offload.domain.status import Status
from tests.api.conftest import LiveServer, running_server, unique

pytestmark = pytest.mark.timeout(60)

Scenario = Callable[[AsyncClient], Awaitable[Any]]


async def _leased(client: AsyncClient) -> tuple[str, str]:
    queue = unique()
    await client.submit("util.echo", {"a": 1}, queue=queue)
    (task,) = await client.claim(ClaimRequest(agent_id="parity", queues=[queue]))
    assert task.lease is not None
    return task.id, task.lease.id


async def stale_progress(client: AsyncClient) -> Any:
    task_id, lease_id = await _leased(client)
    await client.complete([Completion(task_id=task_id, lease_id=lease_id, result=1)])
    return await client.progress(ProgressUpdate(task_id=task_id, lease_id=lease_id, progress=5))


async def cancel_completed(client: AsyncClient) -> Any:
    task_id, lease_id = await _leased(client)
    await client.complete([Completion(task_id=task_id, lease_id=lease_id, result=1)])
    return await client.pause(task_id)


async def wait_too_short(client: AsyncClient) -> Any:
    task = await client.submit("util.echo", {}, queue=unique())
    return await client.wait(task.id, timeout=0.2)


SCENARIOS: dict[str, tuple[Scenario, type[BaseException], str | None]] = {
    "unknown task": (lambda c: c.get("nope"), NotFound, "not_found"),
    "unknown type": (lambda c: c.submit("no.such"), UnknownTaskType, "unknown_task_type"),
    "bad input": (
        lambda c: c.submit("math.factorial", {"n": "x"}),
        InvalidInput,
        "invalid_input",
    ),
    "bad option": (
        lambda c: c.submit("util.echo", priority="urgent"),
        InvalidInput,
        "invalid_input",
    ),
    "unknown option": (lambda c: c.submit("util.echo", bogus=1), InvalidInput, "invalid_input"),
    "unknown status filter": (lambda c: c.list(status="bogus"), InvalidInput, "invalid_input"),
    "NaN in input": (
        lambda c: c.submit("util.echo", {"x": [1.0, float("nan")]}),
        InvalidInput,
        "invalid_input",
    ),
    "unknown dependency": (
        lambda c: c.submit("util.echo", depends_on=["missing"]),
        DependencyError,
        "invalid_dependency",
    ),
    "batch too large": (
        lambda c: c.submit_many([TaskSpec(type="util.echo")] * 1001),
        TooLarge,
        "too_large",
    ),
    "input too large": (
        lambda c: c.submit("util.echo", {"b": "x" * 1_100_000}),
        TooLarge,
        "too_large",
    ),
    "stale lease": (stale_progress, StaleLease, "stale_lease"),
    "illegal transition": (cancel_completed, IllegalTransition, "illegal_transition"),
    "wait timeout": (wait_too_short, WaitTimeout, "wait_timeout"),
    "unknown agent heartbeat": (lambda c: c.agent_heartbeat("nope"), NotFound, "not_found"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("parity"), auth=False) as live:
        yield live


def _no_ids(text: str) -> str:
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)


async def _outcome(client: AsyncClient, scenario: Scenario) -> BaseException:
    try:
        await scenario(client)
    except BaseException as exc:
        return exc
    raise AssertionError("no error raised")


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_exception_locally_and_over_http(
    name: str, server: LiveServer, tmp_path: Path
) -> None:
    scenario, expected, code = SCENARIOS[name]

    async def both() -> tuple[BaseException, BaseException]:
        local = await connect(database_url=f"sqlite:///{tmp_path / 'local.db'}")
        remote = await connect(server.url)
        assert isinstance(remote, HttpClient)
        try:
            return await _outcome(local, scenario), await _outcome(remote, scenario)
        finally:
            await local.close()
            await remote.close()

    local_exc, remote_exc = asyncio.run(both())
    assert type(local_exc) is expected, repr(local_exc)
    assert type(remote_exc) is type(local_exc), (repr(local_exc), repr(remote_exc))
    if code is not None:
        assert isinstance(remote_exc, OffloadError) and isinstance(local_exc, OffloadError)
        assert remote_exc.code == local_exc.code == code
        assert _no_ids(remote_exc.message) == _no_ids(local_exc.message)
        if isinstance(local_exc, InvalidInput):
            assert isinstance(remote_exc, InvalidInput)
            assert remote_exc.field == local_exc.field


def test_worker_protocol_round_trip_over_http(server: LiveServer) -> None:
    async def run() -> None:
        client = HttpClient(server.url)
        try:
            agent = await client.register_agent(AgentRegistration(name="parity-worker"))
            queue = unique()
            task = await client.submit("util.echo", {"v": 2}, queue=queue)
            request = ClaimRequest(agent_id=agent.id, queues=[queue], max=5)
            (leased,) = await client.claim(request)
            assert leased.id == task.id and leased.lease is not None
            lease = LeaseRef(task_id=task.id, lease_id=leased.lease.id)
            (state,) = await client.heartbeat([lease], 30)
            assert state.valid
            (ack,) = await client.release([lease])
            assert ack.ok
            assert await client.claim(request.model_copy(update={"queues": [unique()]})) == []
            (again,) = await client.claim(request)
            assert again.lease is not None
            # An empty claim, then a submit racing the wait: the wait still sees it.
            assert await client.claim(request.model_copy(update={"queues": [unique()]})) == []
            await client.submit("util.echo", {}, queue=unique())
            start = time.monotonic()
            assert await client.wait_for_work(5) is True
            assert time.monotonic() - start < 2
            acks = await client.complete(
                [Completion(task_id=again.id, lease_id=again.lease.id, result={"v": 2})]
            )
            assert acks[0].ok
            done = await client.wait(task.id, timeout=5)
            assert done.result == {"v": 2} and done.attempt == 1  # a release spends none
            assert set(await client.maintain()) >= {"lease_expired", "promoted"}
            await client.deregister_agent(agent.id)
            agents = {a.id: a for a in await client.list_agents()}
            assert agents[agent.id].status.value == "offline"
        finally:
            await client.close()

    asyncio.run(run())


def test_big_bodies_and_big_results_over_http(server: LiveServer) -> None:
    async def run() -> None:
        client = HttpClient(server.url)
        try:
            # A body over the server's limit is answered 413 after it is read, so the
            # client gets the reason rather than a reset connection ("cannot reach").
            with pytest.raises(TooLarge, match="request body is over the limit"):
                await client.submit("util.echo", {"blob": "x" * 6_000_000})
            agent = await client.register_agent(AgentRegistration(name="big-results"))
            queue = unique()
            tasks = [await client.submit("util.echo", {"i": i}, queue=queue) for i in range(9)]
            leased = await client.claim(ClaimRequest(agent_id=agent.id, queues=[queue], max=9))
            assert len(leased) == 9
            lease = {t.id: t.lease.id for t in leased if t.lease is not None}
            # A result over the server's 4 MB limit: refused, the lease kept.
            over = tasks[0]
            with pytest.raises(TooLarge, match="OFFLOAD_MAX_RESULT_BYTES"):
                await client._post(
                    f"/v1/tasks/{over.id}/complete", Ack,
                    orjson.dumps({"lease_id": lease[over.id], "result": "x" * 4_100_000}),
                )  # fmt: skip
            assert (await client.get(over.id)).status is Status.RUNNING
            # A checkpoint over its 1 MB limit is refused the same way.
            with pytest.raises(TooLarge, match="checkpoint data is"):
                await client.progress(ProgressUpdate(
                    task_id=over.id, lease_id=lease[over.id],
                    checkpoint=Checkpoint(name="all", at=datetime.now(UTC), data="c" * 1_500_000),
                ))  # fmt: skip
            # Eight results of 0.9 MB: 7 MB in all, over the 5 MB body limit as one request;
            # the client sends them in several, and every one is stored.
            rest = [
                Completion(task_id=t.id, lease_id=lease[t.id], result="r" * 900_000)
                for t in tasks[1:]
            ]
            acks = await client.complete(rest)
            assert [(a.task_id, a.ok) for a in acks] == [(c.task_id, True) for c in rest]
            assert len((await client.get(tasks[8].id)).result) == 900_000
            (ack,) = await client.complete(
                [Completion(task_id=over.id, lease_id=lease[over.id], result="fits")]
            )
            assert ack.ok
        finally:
            await client.close()

    asyncio.run(run())


def test_error_bodies_map_to_the_local_classes() -> None:
    def body(code: str, **details: Any) -> bytes:
        import json

        return json.dumps(
            {"error": {"code": code, "message": f"{code}!", "details": details}}
        ).encode()

    assert type(error_from_response(401, body("unauthenticated"))) is Unauthenticated
    assert type(error_from_response(403, body("forbidden"))) is Forbidden
    exc = error_from_response(422, body("invalid_input", field="n"))
    assert type(exc) is InvalidInput and exc.field == "n" and exc.message == "invalid_input!"
    limited = error_from_response(429, body("rate_limited", retry_after_s=1))
    assert limited.code == "rate_limited" and limited.http_status == 429
    assert type(error_from_response(502, b"<html>bad gateway</html>")) is Unavailable
    odd = error_from_response(418, b"teapot")
    assert odd.code == "http_error" and "teapot" in odd.message


def test_an_unreachable_server_is_unavailable() -> None:
    async def run() -> None:
        client = HttpClient("http://127.0.0.1:9", timeout=2)
        try:
            with pytest.raises(Unavailable, match="cannot reach"):
                await client.stats()
        finally:
            await client.close()

    asyncio.run(run())
    with pytest.raises(InvalidInput, match="http://"):
        asyncio.run(connect("ftp://example"))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("localhost:8000", "must start with http:// or https://"),
        ("http://", "names no host"),
        ("http://[::1", "is not a valid URL: Invalid IPv6 URL"),
        ("http://example:99999", "is not a valid URL: Port out of range"),
    ],
)
def test_a_server_url_that_cannot_work_is_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(InvalidInput) as err:
        asyncio.run(connect(url))
    assert err.value.message.startswith(f"server URL {url!r}")
    assert why in err.value.message
