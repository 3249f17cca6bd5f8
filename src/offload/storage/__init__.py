"""Storage backends. :func:`open_store` is the composition root: it picks one by URL scheme."""

from __future__ import annotations

from offload.domain.errors import InvalidInput
from offload.domain.rules import DEFAULT_AGING_INTERVAL_S
from offload.ports.store import Store


async def open_store(url: str, *, aging_interval_s: float = DEFAULT_AGING_INTERVAL_S) -> Store:
    """Open (and migrate) the store for ``url``: ``sqlite:///path`` or ``postgresql://…``."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else "sqlite"
    store: Store
    if scheme == "sqlite" or "/" in scheme or scheme == "":
        from offload.storage.sqlite.store import SQLiteStore

        store = SQLiteStore(url, aging_interval_s=aging_interval_s)
    elif scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        from offload.storage.postgres.store import PostgresStore

        store = PostgresStore(url, aging_interval_s=aging_interval_s)
    else:
        raise InvalidInput(
            f"unsupported database URL scheme {scheme!r}; use sqlite:///path/to/offload.db",
            field="database_url",
        )
    await store.open()
    return store
