"""The FastAPI application: :func:`create_app` wires routes, errors, middleware and the
background duties of a server (change feed, metrics tail, maintenance, embedded worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request

from offload import __version__
from offload.api import (
    errors,
    routes_agents,
    routes_flow,
    routes_reviews,
    routes_schedules,
    routes_system,
    routes_tasks,
    routes_workers,
    sse,
)
from offload.api.changes import ChangeFeed
from offload.api.config import ApiSettings, is_loopback
from offload.api.deps import ApiContext, TokenCache
from offload.api.local import ServerClient
from offload.api.metrics import Metrics
from offload.api.middleware import AuditLog, BodyLimit, LoopbackHostOnly
from offload.api.push import HttpPusher
from offload.api.ratelimit import TokenBuckets
from offload.client.base import AsyncClient
from offload.core.auth import AuthService
from offload.core.dispatch import Dispatcher
from offload.core.service import QueueService
from offload.mcp.http import mount_http

log = logging.getLogger("offload.api")

_TAGS = [
    {"name": "tasks", "description": "Submit, list, read, follow and control tasks."},
    {"name": "workflows", "description": "A parent task and a DAG of children."},
    {"name": "dlq", "description": "The dead-letter queue (failed tasks)."},
    {"name": "events", "description": "Live task events as Server-Sent Events."},
    {"name": "agents", "description": "Registered agents and workers."},
    {"name": "worker protocol", "description": "Claims, leases, progress and outcomes."},
    {"name": "system", "description": "Health, readiness, metrics, statistics, task types."},
    {"name": "admin", "description": "API tokens and the audit log (admin tokens)."},
]

_DESCRIPTION = """\
Offload's REST API: a durable task queue for AI agents.

Errors are always `{"error": {"code", "message", "details"}}`. With auth on, send
`Authorization: Bearer <token>` (`offload token create --user NAME --role user`).
"""


def create_app(
    service: QueueService, auth: AuthService, *, settings: ApiSettings | None = None
) -> FastAPI:
    """The API over ``service``. Its lifespan runs the change feed, the metrics tail, the
    maintenance loop and (``settings.worker_concurrency`` > 0) an embedded worker; it does
    not close the service's store (whoever opened it does)."""
    settings = settings or ApiSettings()
    feed = ChangeFeed(service)
    ctx = ApiContext(
        service=service,
        auth=auth,
        settings=settings,
        feed=feed,
        metrics=Metrics(service),
        limiter=TokenBuckets(settings.submit_rate, settings.submit_burst),
        tokens=TokenCache(settings.token_cache_s),
        dispatcher=Dispatcher(service, HttpPusher()),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _background(ctx):
            yield

    app = FastAPI(
        title="Offload",
        version=__version__,
        description=_DESCRIPTION,
        openapi_tags=_TAGS,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.offload = ctx
    errors.install(app)
    app.include_router(routes_tasks.router)
    app.include_router(routes_workers.router)
    app.include_router(routes_reviews.router)
    app.include_router(routes_agents.router)
    app.include_router(sse.router)
    app.include_router(routes_system.router)
    app.include_router(routes_flow.router)
    app.include_router(routes_schedules.router)
    app.include_router(routes_system.probes)
    app.add_middleware(AuditLog)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if not settings.auth:
        app.add_middleware(LoopbackHostOnly)

    # ---- MCP (streamable HTTP at /mcp) ----------------------------------------------------
    # `mcp_client_factory` authenticates each MCP request like the REST routes do and hands
    # back that tenant's client. This is the only MCP wiring in the API.
    security = None
    if not is_loopback(settings.host):
        from mcp.server.transport_security import TransportSecuritySettings

        # Off loopback, auth is mandatory (bearer tokens), which is what protects /mcp;
        # the SDK's Host-header check only knows loopback names.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    mount_http(app, mcp_client_factory(ctx), host=settings.host, transport_security=security)
    return app


def begin_drain(app: FastAPI) -> None:
    """Shutdown has begun: long polls and event streams answer now, readiness turns 503."""
    ctx: ApiContext = app.state.offload
    ctx.feed.close()


def mcp_client_factory(ctx: ApiContext) -> Callable[[Request | None], Awaitable[AsyncClient]]:
    """A per-request client factory for the ``/mcp`` mount: the request's bearer token
    decides the tenant (every task with auth off, or for admins)."""

    async def client_for(request: Request | None) -> AsyncClient:
        if not ctx.settings.auth:
            return ServerClient(ctx.service, ctx.feed)
        header = request.headers.get("authorization", "") if request is not None else ""
        scheme, _, token = header.partition(" ")
        principal = await ctx.authenticate(token if scheme.lower() == "bearer" else None)
        return ServerClient(ctx.service, ctx.feed, owner=principal.owner_scope)

    return client_for


@contextlib.asynccontextmanager
async def _background(ctx: ApiContext) -> AsyncIterator[None]:
    settings = ctx.settings
    stop = asyncio.Event()
    await ctx.metrics.start()
    jobs: list[asyncio.Task[Any]] = [
        asyncio.create_task(ctx.feed.run(), name="offload-feed"),
        asyncio.create_task(
            _maintain(ctx.service, settings.maintenance_interval_s, stop),
            name="offload-maintenance",
        ),
    ]
    # The push dispatcher (push, hybrid and auction queues; pull queues cost it nothing).
    dispatcher = ctx.dispatcher
    if dispatcher is not None:
        jobs.append(asyncio.create_task(dispatcher.run(stop, ctx.feed), name="offload-dispatch"))
    worker_job: asyncio.Task[None] | None = None
    if settings.worker_concurrency > 0:
        from offload.worker.runtime import Worker

        worker = Worker(
            ServerClient(ctx.service, ctx.feed),
            registry=ctx.service.registry,
            concurrency=settings.worker_concurrency,
            lease_ttl_s=settings.worker_lease_ttl_s,
            grace_s=settings.worker_grace_s,
            name=f"server-{socket.gethostname()}-{os.getpid()}",
        )
        worker_job = asyncio.create_task(worker.run_async(stop), name="offload-embedded-worker")
    try:
        yield
    finally:
        ctx.feed.close()
        stop.set()
        if worker_job is not None:
            try:
                await asyncio.wait_for(worker_job, settings.worker_grace_s + 10)
            except Exception:  # a worker that cannot stop must not block shutdown
                log.exception("embedded worker did not stop cleanly")
        await ctx.metrics.stop()
        if dispatcher is not None and isinstance(dispatcher.pusher, HttpPusher):
            await dispatcher.pusher.aclose()
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await job
                except Exception:
                    log.exception("%s failed while stopping", job.get_name())


async def _maintain(service: QueueService, interval_s: float, stop: asyncio.Event) -> None:
    """The reaper and friends (:meth:`QueueService.maintain`), surviving database hiccups."""
    while not stop.is_set():
        try:
            await service.maintain()
        except Exception as exc:  # idempotent: the next pass catches up
            log.warning("maintenance pass failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
