"""Composition root for clients: which client, which store, which registry."""

from __future__ import annotations

import asyncio
import os

from offload.client.base import AsyncClient
from offload.client.local import LocalClient
from offload.core.registry import Registry, default_registry
from offload.core.service import QueueService
from offload.domain.errors import Unavailable
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
    for module in settings.imports:
        import_task_module(module)
    store = await open_store(settings.database_url, aging_interval_s=settings.aging_interval_s)
    return QueueService(store, registry, settings=settings)


def import_task_module(module: str) -> None:
    """Import a module that defines ``@offload.task`` types; a clear error if it fails."""
    import importlib

    from offload.domain.errors import InvalidInput

    try:
        importlib.import_module(module)
    except Exception as exc:
        raise InvalidInput(f"cannot import task module {module!r}: {exc}",
                           field="imports") from exc  # fmt: skip


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
        raise Unavailable(
            f"cannot reach {url}: this version has no HTTP client yet; unset OFFLOAD_URL to "
            "use the local database"
        )
    return LocalClient(await open_service(database_url, registry=registry))


def upgrade_database(database_url: str | None = None) -> int:
    """Apply pending migrations (``offload db upgrade``); returns the schema version."""

    async def run() -> int:
        service = await open_service(database_url)
        try:
            return await service.store.schema_version()
        finally:
            await service.store.close()

    return asyncio.run(run())
