"""Composition root for clients: which client, which store, which registry."""

from __future__ import annotations

import asyncio
import os

from offload.client.base import AsyncClient
from offload.client.local import LocalClient
from offload.core.registry import Registry, default_registry, load_task_modules
from offload.core.service import QueueService
from offload.domain.settings import Settings
from offload.storage import open_store
from offload.tasks import register_builtins


async def open_service(
    database_url: str | None = None, *, registry: Registry | None = None
) -> QueueService:
    """Open the store for ``database_url`` (default: ``$OFFLOAD_DATABASE_URL`` or the
    embedded file) and build the service over it, with the built-in task types."""
    settings = Settings.from_env()
    if database_url:
        settings = Settings(**{**settings.__dict__, "database_url": database_url})
    registry = registry or default_registry
    register_builtins(registry)
    # $OFFLOAD_IMPORTS: the user's task modules, so submits validate against their schemas.
    load_task_modules(settings.imports)
    store = await open_store(settings.database_url, aging_interval_s=settings.aging_interval_s)
    service = QueueService(store, registry, settings=settings)
    # Limits declared in code become the database's (where every claimer enforces them).
    await service.sync_declared_limits()
    return service


async def connect(
    url: str | None = None,
    *,
    token: str | None = None,
    database_url: str | None = None,
    registry: Registry | None = None,
) -> AsyncClient:
    """A client for ``url`` (HTTP server) or, without one, the local database."""
    url = url or (None if database_url else os.environ.get("OFFLOAD_URL"))
    if url:
        _check_server_url(url)
        from offload.client.http import HttpClient

        # As with a local database: a worker on this client runs the built-in types and
        # $OFFLOAD_IMPORTS' (the server validates submits against its own registry).
        register_builtins(registry or default_registry)
        load_task_modules(Settings.from_env().imports)
        return HttpClient(url, token=token or os.environ.get("OFFLOAD_TOKEN") or None)
    return LocalClient(await open_service(database_url, registry=registry))


def _check_server_url(url: str) -> None:
    """Refuse a server URL that could never be reached, saying what is wrong with it."""
    from urllib.parse import urlsplit

    from offload.domain.errors import InvalidInput

    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"server URL {url!r} must start with http:// or https://", field="url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise InvalidInput(f"server URL {url!r} is not a valid URL: {exc}", field="url") from None
    if not parts.hostname:
        raise InvalidInput(
            f"server URL {url!r} names no host; e.g. http://127.0.0.1:8000", field="url"
        )


def upgrade_database(database_url: str | None = None) -> int:
    """Apply pending migrations (``offload db upgrade``); returns the schema version."""

    async def run() -> int:
        service = await open_service(database_url)
        try:
            return await service.store.schema_version()
        finally:
            await service.store.close()

    return asyncio.run(run())
