"""The MCP server mounted at /mcp of a real ``offload serve``: tools work over streamable
HTTP with the same auth as the REST API, and tenants cannot see each other's tasks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from .conftest import ROOT, Processes, clean_env

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def mcp_session(base: str, token: str | None = None) -> AsyncIterator[Client]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
    ):
        yield client


async def call(client: Client, tool: str, args: dict[str, Any]) -> Any:
    result = await client.call_tool(tool, args)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    return result.is_error, result.structured_content, text


def make_token(env: dict[str, str], user: str, role: str = "user") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "offload.cli", "token", "create", "--user", user, "--role", role,
         "--json"], env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    data = json.loads(out)
    return str(data["token"])


async def test_tools_over_http_on_a_real_server(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    try:
        env = clean_env(tmp_path / "home")
        _, base = procs.serve(env)
        async with mcp_session(base) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"submit_agent_task", "wait_for_task", "get_task_status"} <= names
            err, task, _ = await call(
                client, "submit_agent_task", {"task_type": "math.factorial", "input": {"n": 10}}
            )
            assert not err
            err, _done, text = await call(
                client, "wait_for_task", {"task_id": task["id"], "timeout_s": 30}
            )
            assert not err and "3628800" in text, text
            err, _, text = await call(
                client, "submit_agent_task", {"task_type": "math.factorail", "input": {"n": 1}}
            )
            assert err and "math.factorial" in text
            steps = [
                {"ref": "count", "task_type": "util.echo", "input": {"n": 5}},
                {"ref": "fact", "task_type": "math.factorial",
                 "input": {"n": {"$ref": "count.result.n"}}, "depends_on": ["count"]},
            ]  # fmt: skip
            err, wf, text = await call(client, "submit_workflow", {"tasks": steps})
            assert not err, text
            err, done, text = await call(
                client, "wait_for_task", {"task_id": wf["workflow"]["id"], "timeout_s": 30}
            )
            assert not err and done["result"] == {"count": {"n": 5}, "fact": 120}, text
            err, nap, _ = await call(
                client, "submit_agent_task",
                {"task_type": "util.sleep", "input": {"seconds": 30}},
            )  # fmt: skip
            err, _, text = await call(client, "cancel_agent_task", {"task_id": nap["id"]})
            assert not err, text
            err, done, text = await call(
                client, "wait_for_task", {"task_id": nap["id"], "timeout_s": 20}
            )
            assert done["status"] == "cancelled", text
    finally:
        procs.stop_all()


async def test_http_tenancy_and_auth(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    try:
        env = clean_env(tmp_path / "home")
        alice = make_token(env, "alice")
        bob = make_token(env, "bob")
        _, base = procs.serve(env, "--auth")
        async with mcp_session(base, alice) as client:
            err, task, _ = await call(
                client, "submit_agent_task", {"task_type": "util.echo", "input": {"x": 1}}
            )
            assert not err
        async with mcp_session(base, bob) as client:
            err, _, text = await call(client, "get_task_status", {"task_id": task["id"]})
            assert err and "not found" in text
            err, listing, _ = await call(client, "get_agent_tasks", {})
            assert not err and listing["total"] == 0
        async with mcp_session(base, None) as client:
            err, _, text = await call(client, "get_queue_stats", {})
            assert err and "token" in text.lower()
    finally:
        procs.stop_all()
