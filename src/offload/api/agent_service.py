"""``offload agent serve``: a push agent as an HTTP service (PRODUCT.md §5).

The service registers itself with an Offload server (``endpoint`` = its own URL),
heartbeats with cpu and memory figures, and answers the dispatcher:

* ``POST /execute`` — a task with its lease: ``200 {"status": "accepted", "agent_id"}``
  when there is room, ``503`` when busy or draining. Accepted work runs through the
  registered handlers (:class:`~offload.worker.push.PushWorker`), which report progress
  and the outcome over the API.
* ``POST /bid-request`` — an auction invitation: the agent prices the task and bids
  through ``POST /v1/tasks/{id}/bids`` (``202``).
* ``GET /health`` — ``{status, agent_id, is_available, current_task, version}``.
* ``GET /status`` — cpu %, memory %, tasks completed, last heartbeat and more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from offload import __version__
from offload.domain.errors import InvalidInput
from offload.domain.models import Task
from offload.worker.push import PushWorker

log = logging.getLogger("offload.agent")


def create_agent_app(worker: PushWorker) -> FastAPI:
    """The push agent's HTTP surface over ``worker``."""
    app = FastAPI(title="Offload push agent", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and whether the agent takes work now."""
        running = worker.current_tasks
        return {
            "status": "ok" if worker.running else "starting",
            "agent_id": worker.agent_id or worker.fixed_id,
            "is_available": worker.is_available,
            "current_task": running[0] if running else None,
            "version": __version__,
        }

    @app.get("/status")
    async def status() -> dict[str, Any]:
        """Resources (psutil), counts and the last heartbeat."""
        return worker.status_report()

    @app.post("/execute")
    async def execute(request: Request) -> Response:
        """Take a task (with its lease) or answer 503 busy."""
        task = _task(await request.body())
        if task is None:
            return _error(422, "invalid_input", "body must be a task with a lease")
        if not worker.offer(task):
            return _error(503, "busy", "agent is busy or draining; try another agent")
        return JSONResponse({"status": "accepted", "agent_id": worker.agent_id})

    @app.post("/bid-request")
    async def bid_request(request: Request) -> Response:
        """An auction invitation: bid through the API in the background."""
        task = _task(await request.body())
        if task is None:
            return _error(422, "invalid_input", "body must be a task")
        asyncio.get_running_loop().create_task(worker.place_bid(task))
        return JSONResponse({"status": "considering", "agent_id": worker.agent_id}, 202)

    return app


def _task(body: bytes) -> Task | None:
    try:
        return Task.model_validate_json(body)
    except ValueError:
        return None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": {}}}, status)


class _AgentServer(uvicorn.Server):
    """uvicorn, telling the worker to drain as soon as shutdown begins."""

    def __init__(self, config: uvicorn.Config, worker: PushWorker) -> None:
        super().__init__(config)
        self._worker = worker

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._worker.stop()
        super().handle_exit(sig, frame)
        # Exit normally once stopped (uvicorn would re-raise the signal).
        self._captured_signals.clear()


async def serve_agent(worker: PushWorker, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``worker`` on ``sock`` until a signal: start the worker (which registers and
    heartbeats), then answer HTTP; at shutdown stop taking work and let running tasks
    finish within the worker's grace period."""
    app = create_agent_app(worker)
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, lifespan="off", server_header=False
    )
    server = _AgentServer(config, worker)
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run_async(stop), name="offload-agent-worker")
    try:
        while not worker.running:
            if runner.done():
                runner.result()  # registration failed: raise its error
                raise InvalidInput("the agent stopped before it registered", field="server")
            await asyncio.sleep(0.02)
        await server.serve(sockets=[sock])
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
