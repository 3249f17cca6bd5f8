"""The MCP server through the official MCP client.

Over stdio: ``python -m offload.mcp`` as a subprocess on a temporary SQLite database, with a
``python -m offload.worker`` subprocess computing the tasks. In process: ``Client(server)``
on the same server object the stdio command builds (fast; no worker, tasks are claimed and
completed through the client protocol by the test). Over HTTP: :func:`mount_http` on a
Starlette app served by uvicorn, with per-request tenancy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent
from starlette.applications import Starlette
from starlette.requests import Request

from offload.client.base import AsyncClient
from offload.client.factory import connect, open_service
from offload.client.local import LocalClient
from offload.domain.errors import OffloadError
from offload.domain.models import ClaimRequest, Completion
from offload.domain.status import ALIASES, Status
from offload.mcp.errors import ERROR_META_KEY
from offload.mcp.http import mount_http
from offload.mcp.server import build_server
from offload.mcp.stdio import SharedClient
from offload.mcp.tools import StatusName

pytestmark = pytest.mark.slow

TOOLS = {
    "submit_agent_task",
    "get_task_status",
    "cancel_agent_task",
    "get_agent_tasks",
    "list_task_types",
    "wait_for_task",
    "submit_workflow",
    "get_queue_stats",
    "retry_task",
    "list_reviews",
    "review_task",
    "schedule_task",
    "list_schedules",
    "remove_schedule",
}
WORKER_OPTIONS = ("--concurrency", "4", "--lease-ttl", "10", "--grace", "2")
READ_ONLY = {
    "get_task_status",
    "get_agent_tasks",
    "list_task_types",
    "wait_for_task",
    "list_reviews",
    "list_schedules",
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("offload-mcp")


@pytest.fixture(scope="module")
def db_url(home: Path) -> str:
    return f"sqlite:///{home / 'x.db'}"


@pytest.fixture(scope="module")
def worker(home: Path, db_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """One worker subprocess for the module's stdio tests."""
    log_path = home / "worker.log"
    env = {k: v for k, v in os.environ.items() if k not in ("OFFLOAD_URL", "OFFLOAD_TOKEN")}
    env["OFFLOAD_HOME"] = str(home)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offload.worker", "--database-url", db_url, *WORKER_OPTIONS],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _stdio(home: Path, db_url: str) -> Client:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "offload.mcp"],
        # PYTHONPATH passes through so the server runs the code under test (a worktree's
        # src/), not whichever copy the virtualenv has installed.
        env={"OFFLOAD_DATABASE_URL": db_url, "OFFLOAD_HOME": str(home)}
        | {k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
    )
    return Client(params, read_timeout_seconds=60)


def _text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def _ok(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    # A one-line summary first, then the same data as JSON text for clients that ignore
    # structured content.
    assert len(result.content) == 2
    return result.structured_content


async def _error(client: Client, tool: str, args: dict[str, Any], *needles: str) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, _text(result)
    text = _text(result)
    assert "How to fix:" in text, text
    for needle in needles:
        assert needle in text, text
    # No structured content on errors: the TypeScript SDK validates it against the output
    # schema even when isError is set, which would hide the message behind a schema error.
    assert result.structured_content is None
    assert result.meta and result.meta[ERROR_META_KEY]["code"], result.meta
    return text


# -- stdio: the real command, the official client --------------------------------------


@pytest.mark.anyio
async def test_stdio_lists_tools_with_schemas_resources_and_prompt(home: Path, db_url: str) -> None:
    async with _stdio(home, db_url) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) >= TOOLS
        for tool in tools.values():
            assert tool.description and len(tool.description) > 150, tool.name
            assert tool.output_schema is not None, tool.name
            assert tool.annotations is not None, tool.name
            for name, prop in tool.input_schema.get("properties", {}).items():
                assert prop.get("description"), f"{tool.name}.{name} has no description"

        submit = tools["submit_agent_task"].input_schema
        assert submit["required"] == ["task_type"]
        priority = submit["properties"]["priority"]
        assert priority["default"] == "normal"
        enum = next(p["enum"] for p in priority["anyOf"] if "enum" in p)
        assert enum == ["low", "normal", "high", "critical"]
        number = next(p for p in priority["anyOf"] if p.get("type") == "integer")
        assert (number["minimum"], number["maximum"]) == (1, 10)
        assert "math.factorial" in submit["properties"]["task_type"]["description"]
        assert tools["wait_for_task"].input_schema["required"] == ["task_id"]
        listing = tools["get_agent_tasks"].input_schema["properties"]
        assert listing["limit"]["maximum"] == 100
        step = tools["submit_workflow"].input_schema["$defs"]["WorkflowStep"]
        assert sorted(step["required"]) == ["ref", "task_type"]

        for name in READ_ONLY | {"get_queue_stats"}:
            assert tools[name].annotations.read_only_hint is True, name
        cancel = tools["cancel_agent_task"].annotations
        assert cancel.destructive_hint is True and cancel.read_only_hint is False
        assert tools["submit_agent_task"].annotations.destructive_hint is False

        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        assert resources == ["offload://task-types"]
        templates = (await client.list_resource_templates()).resource_templates
        assert {t.uri_template for t in templates} == {
            "offload://tasks/{task_id}",
            "offload://tasks/{task_id}/result",
        }
        catalogue = json.loads(
            (await client.read_resource("offload://task-types")).contents[0].text
        )
        by_name = {t["name"]: t for t in catalogue["task_types"]}
        assert by_name["math.factorial"]["input_schema"]["required"] == ["n"]

        prompts = (await client.list_prompts()).prompts
        assert [p.name for p in prompts] == ["offload_guide"]
        guide = await client.get_prompt("offload_guide", {"job": "sum 5,000 invoice rows"})
        text = guide.messages[0].content.text
        assert "submit_agent_task" in text and "wait_for_task" in text
        assert "sum 5,000 invoice rows" in text
        assert client.instructions and "wait_for_task" in client.instructions


@pytest.mark.anyio
async def test_stdio_factorial_round_trip(
    home: Path, db_url: str, worker: subprocess.Popen[bytes]
) -> None:
    transcript: list[dict[str, Any]] = []

    async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await client.call_tool(tool, args)
        transcript.append(
            {
                "tool": tool,
                "arguments": args,
                "is_error": result.is_error,
                "summary": result.content[0].text,
                "structured": result.structured_content,
            }
        )
        assert not result.is_error, _text(result)
        assert result.structured_content is not None
        return result.structured_content

    async with _stdio(home, db_url) as client:
        types = await call(client, "list_task_types", {"search": "math"})
        assert {"math.factorial", "math.evaluate"} <= {t["name"] for t in types["task_types"]}

        task = await call(
            client, "submit_agent_task", {"task_type": "math.factorial", "input": {"n": 10}}
        )
        assert task["status"] == "queued" and not task["done"]
        assert "wait_for_task" in task["next_step"]

        done = await call(client, "wait_for_task", {"task_id": task["id"], "timeout_s": 30})
        assert done["done"] and done["status"] == "completed", done
        assert done["result"] == 3628800
        assert "3628800" in transcript[-1]["summary"]

        status = await _ok(client, "get_task_status", {"task_id": task["id"]})
        assert status["result"] == 3628800

        record = json.loads(
            (await client.read_resource(f"offload://tasks/{task['id']}")).contents[0].text
        )
        assert record["task"]["result"] == 3628800
        assert {"created", "claimed"} <= {e["kind"] for e in record["events"]}

    target = os.environ.get("OFFLOAD_MCP_TRANSCRIPT")
    if target:  # docs/mcp.md shows a transcript captured this way
        Path(target).write_text(json.dumps(transcript, indent=2) + "\n", encoding="utf-8")


@pytest.mark.anyio
async def test_stdio_workflow_feeds_one_step_into_the_next(
    home: Path, db_url: str, worker: subprocess.Popen[bytes]
) -> None:
    steps = [
        {"ref": "count", "task_type": "util.echo", "input": {"n": 5}},
        {
            "ref": "fact",
            "task_type": "math.factorial",
            "input": {"n": {"$ref": "count.result.n"}},
            "depends_on": ["count"],
        },
    ]
    async with _stdio(home, db_url) as client:
        submitted = await _ok(client, "submit_workflow", {"tasks": steps, "title": "5!"})
        assert set(submitted["steps"]) == {"count", "fact"}
        wf_id = submitted["workflow"]["id"]
        done = await _ok(client, "wait_for_task", {"task_id": wf_id, "timeout_s": 30})
        assert done["status"] == "completed", done
        assert done["result"] == {"count": {"n": 5}, "fact": 120}

        children = await _ok(client, "get_agent_tasks", {"parent_id": wf_id})
        assert children["total"] == 2
        assert {t["status"] for t in children["tasks"]} == {"completed"}


@pytest.mark.anyio
async def test_stdio_cancel_a_running_sleep_then_retry_it(
    home: Path, db_url: str, worker: subprocess.Popen[bytes]
) -> None:
    async with _stdio(home, db_url) as client:
        task = await _ok(
            client, "submit_agent_task", {"task_type": "util.sleep", "input": {"seconds": 30}}
        )
        with anyio.fail_after(15):
            while (await _ok(client, "get_task_status", {"task_id": task["id"]}))[
                "status"
            ] != "running":
                await anyio.sleep(0.1)
        await _ok(client, "cancel_agent_task", {"task_id": task["id"], "reason": "not needed"})
        done = await _ok(client, "wait_for_task", {"task_id": task["id"], "timeout_s": 15})
        assert done["status"] == "cancelled", done

        # Cancelling again changes nothing (the tool is marked idempotent).
        twice = await _ok(client, "cancel_agent_task", {"task_id": task["id"]})
        assert twice["status"] == "cancelled"

        again = await _ok(client, "retry_task", {"task_id": task["id"]})
        assert again["status"] in ("queued", "assigned", "running")
        await _ok(client, "cancel_agent_task", {"task_id": task["id"]})


@pytest.mark.anyio
async def test_stdio_bad_calls_are_tool_errors_and_the_server_lives_on(
    home: Path, db_url: str
) -> None:
    async with _stdio(home, db_url) as client:
        text = await _error(
            client,
            "submit_agent_task",
            {"task_type": "math.factorail", "input": {"n": 10}},
            "unknown task type 'math.factorail'",
            "math.factorial",
            "list_task_types",
        )
        assert text.index("math.factorial") < text.index("How to fix")

        await _error(client, "submit_agent_task", {"input": {"n": 10}}, "task_type", "required")
        await _error(
            client,
            "submit_agent_task",
            {"task_type": "math.factorial", "input": {"n": "ten"}},
            "input.n",
            "valid integer",
            '"required":["n"]',  # the type's input schema, to fix the call with
        )
        await _error(
            client,
            "submit_agent_task",
            {"task_type": "math.factorial", "input": {"n": 3}, "priority": "urgent"},
            "priority",
            "'urgent'",
            '"low", "normal"',
        )
        await _error(
            client,
            "submit_agent_task",
            {"task_type": "math.factorial", "parameters": {"n": 3}},
            "'parameters' (did you mean 'input'?)",
        )
        await _error(client, "get_task_status", {"task_id": "no-such-task"}, "not found")
        await _error(client, "wait_for_task", {"task_id": "x", "timeout_s": 500}, "timeout_s")
        await _error(
            client,
            "submit_workflow",
            {
                "tasks": [
                    {"ref": "a", "task_type": "util.echo", "depends_on": ["b"]},
                    {"ref": "b", "task_type": "util.echo", "depends_on": ["a"]},
                ]
            },
            "cycle",
        )
        with pytest.raises(MCPError, match="not found"):
            await client.read_resource("offload://tasks/no-such-task")

        # Still serving: a good call after all of that works.
        types = await _ok(client, "list_task_types", {"include_schemas": False})
        assert types["count"] >= 11
        assert all(t["input_schema"] is None for t in types["task_types"])


# -- in process: Client(server), fast ---------------------------------------------------


@asynccontextmanager
async def _in_process(url: str) -> AsyncIterator[tuple[Client, AsyncClient]]:
    shared = SharedClient(lambda: connect(database_url=url))
    try:
        async with Client(build_server(shared)) as client:
            yield client, await shared()
    finally:
        await shared.aclose()


async def _finish(backend: AsyncClient, result: Any) -> None:
    """Play the worker: claim the next task and complete it with ``result``."""
    [task] = await backend.claim(ClaimRequest(agent_id="test", max=1))
    assert task.lease is not None
    await backend.complete([Completion(task_id=task.id, lease_id=task.lease.id, result=result)])


def test_status_filter_enum_matches_the_lifecycle() -> None:
    assert set(StatusName.__args__) == {s.value for s in Status} | set(ALIASES)


@pytest.mark.anyio
async def test_long_results_come_back_in_pages(tmp_path: Path) -> None:
    async with _in_process(f"sqlite:///{tmp_path / 'x.db'}") as (client, backend):
        task = await _ok(client, "submit_agent_task", {"task_type": "util.echo", "input": {}})
        big = {"rows": [f"row {i:05d}" for i in range(3000)]}
        await _finish(backend, big)

        first = await _ok(
            client, "get_task_status", {"task_id": task["id"], "max_result_chars": 1000}
        )
        assert first["result"] is None and first["result_offset"] == 0
        assert len(first["result_page"]) == 1000 and first["next_result_offset"] == 1000
        assert (
            "result_offset" in first["next_step"]
            and f"offload://tasks/{task['id']}/result" in (first["next_step"])
        )
        pages, offset = [first["result_page"]], first["next_result_offset"]
        while offset is not None:
            page = await _ok(
                client,
                "get_task_status",
                {"task_id": task["id"], "result_offset": offset, "max_result_chars": 100_000},
            )
            pages.append(page["result_page"])
            offset = page["next_result_offset"]
        assert json.loads("".join(pages)) == big

        # The default page is 20,000 characters; wait_for_task pages the same way.
        waited = await _ok(client, "wait_for_task", {"task_id": task["id"]})
        assert len(waited["result_page"]) == 20_000 and waited["result_chars"] > 20_000
        # The resource has it whole.
        whole = await client.read_resource(f"offload://tasks/{task['id']}/result")
        assert json.loads(whole.contents[0].text) == big
        # A finished task cannot be cancelled: refused with the reason, not a crash.
        await _error(client, "cancel_agent_task", {"task_id": task["id"]}, "completed")


@pytest.mark.anyio
async def test_listing_is_capped_and_paged(tmp_path: Path) -> None:
    async with _in_process(f"sqlite:///{tmp_path / 'x.db'}") as (client, _):
        for i in range(3):
            await _ok(client, "submit_agent_task", {"task_type": "util.echo", "input": {"i": i}})
        page = await _ok(client, "get_agent_tasks", {"limit": 2})
        assert len(page["tasks"]) == 2 and page["total"] == 3 and page["next_offset"] == 2
        rest = await _ok(client, "get_agent_tasks", {"limit": 2, "offset": 2})
        assert len(rest["tasks"]) == 1 and rest["next_offset"] is None
        await _error(
            client, "get_agent_tasks", {"limit": 101}, "limit", "less than or equal to 100"
        )
        await _error(client, "get_agent_tasks", {"status": ["bogus"]}, "status")
        queued = await _ok(client, "get_agent_tasks", {"status": ["pending"]})
        assert queued["total"] == 3

        stats = await _ok(client, "get_queue_stats", {})
        assert stats["pending"] == 3 and stats["counts"]["queued"] == 3

        not_yet = await _ok(
            client, "wait_for_task", {"task_id": page["tasks"][0]["id"], "timeout_s": 0}
        )
        assert not not_yet["done"] and "wait_for_task" in not_yet["next_step"]


@pytest.mark.anyio
async def test_free_form_agent_work_and_failures(tmp_path: Path) -> None:
    async with _in_process(f"sqlite:///{tmp_path / 'x.db'}") as (client, _):
        task = await _ok(
            client,
            "submit_agent_task",
            {
                "task_type": "research",
                "title": "Compare queues",
                "description": "Compare Celery and Hatchet retries",
                "priority": 8,
                "tags": ["report"],
            },
        )
        assert task["priority"] == 8 and task["title"] == "Compare queues"
        listed = await _ok(client, "get_agent_tasks", {"tag": "report"})
        assert [t["id"] for t in listed["tasks"]] == [task["id"]]
        await _error(client, "retry_task", {"task_id": task["id"]}, "queued")

        # A dependency on a task that does not exist is refused at submit.
        await _error(
            client,
            "submit_agent_task",
            {"task_type": "util.echo", "depends_on": ["no-such-task"]},
            "no-such-task",
        )
        idem = {"task_type": "util.echo", "input": {"k": 1}, "idempotency_key": "k1"}
        first = await _ok(client, "submit_agent_task", idem)
        second = await _ok(client, "submit_agent_task", idem)
        assert first["id"] == second["id"]


# -- HTTP: mount_http with per-request tenancy ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.anyio
async def test_http_mount_serves_each_request_with_its_own_tenant(tmp_path: Path) -> None:
    service = await open_service(f"sqlite:///{tmp_path / 'x.db'}")

    class Unauthenticated(OffloadError):
        code = "unauthenticated"

    async def client_for(request: Request | None) -> AsyncClient:
        # What the API's factory does: authenticate, then hand out that tenant's client.
        token = request.headers.get("authorization", "") if request is not None else ""
        if not token.startswith("Bearer "):
            raise Unauthenticated("a bearer token is required")
        return LocalClient(service, owner=token.removeprefix("Bearer "))

    app = Starlette()
    mount_http(app, client_for)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))

    @asynccontextmanager
    async def as_user(name: str | None) -> AsyncIterator[Client]:
        headers = {"authorization": f"Bearer {name}"} if name else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
            async with Client(transport) as client:
                yield client

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            with anyio.fail_after(10):
                while not server.started:
                    await anyio.sleep(0.02)
            try:
                async with as_user("alice") as alice:
                    args = {"task_type": "math.factorial", "input": {"n": 5}}
                    mine = await _ok(alice, "submit_agent_task", args)
                    assert (await _ok(alice, "get_agent_tasks", {}))["total"] == 1
                async with as_user("bob") as bob:
                    await _error(bob, "get_task_status", {"task_id": mine["id"]}, "not found")
                    assert (await _ok(bob, "get_agent_tasks", {}))["total"] == 0
                async with as_user(None) as anonymous:
                    await _error(anonymous, "get_queue_stats", {}, "bearer token", "OFFLOAD_TOKEN")
            finally:
                server.should_exit = True
    finally:
        await service.store.close()


@pytest.mark.anyio
async def test_agents_schedule_recurring_work(tmp_path: Path) -> None:
    async with _in_process(f"sqlite:///{tmp_path / 'x.db'}") as (client, _):
        made = await _ok(
            client,
            "schedule_task",
            {"name": "weekday-report", "task_type": "util.echo", "parameters": {"r": 1},
             "cron": "0 9 * * 1-5", "timezone": "Europe/Paris"},
        )  # fmt: skip
        assert made["when"] == "cron 0 9 * * 1-5 (Europe/Paris)" and not made["paused"]
        listed = await _ok(client, "list_schedules", {})
        assert [s["name"] for s in listed["schedules"]] == ["weekday-report"]
        await _error(
            client, "schedule_task",
            {"name": "x", "task_type": "util.echo", "cron": "daily at nine"}, "cron",
        )  # fmt: skip
        await _error(
            client, "schedule_task", {"name": "y", "task_type": "util.echo"}, "exactly one"
        )
        removed = await _ok(client, "remove_schedule", {"name": "weekday-report"})
        assert removed["id"] == made["id"]
        await _error(client, "remove_schedule", {"name": "weekday-report"}, "not found")
