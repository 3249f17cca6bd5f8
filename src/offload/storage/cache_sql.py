"""The result cache in the database (PRODUCT.md §4.10).

A completed task whose ``cache_ttl_s`` is set leaves its result under its ``cache_key``
(type, type version and canonical input, hashed by the service); a later submit with the
same key, within the TTL, is created already ``completed`` with that result and
``cache_hit: true``, and no handler runs. Invalidation: the TTL, a new type version (a new
key) and :meth:`CacheSql.clear_cache`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from offload.storage.hooks import BackendHooks

R = TypeVar("R")

#: Expired entries removed per maintenance pass.
PURGE_BATCH = 1000


class CacheSql(BackendHooks):
    """Result-cache store operations (see :class:`offload.ports.store.Store`)."""

    def _cache_get(self, cur: Any, key: str, now: float) -> tuple[bool, str | None]:
        """(hit, result JSON text) for a live entry."""
        row = cur.execute(
            "SELECT result FROM result_cache WHERE key = ? AND expires_at > ?", (key, now)
        ).fetchone()
        return (False, None) if row is None else (True, row["result"])

    def _cache_put(
        self, cur: Any, rows: Sequence[Mapping[str, Any]], results: Mapping[str, Any], now: float
    ) -> None:
        """Store the results of just-completed tasks that carry a cache key."""
        for r in rows:
            if r["cache_key"] is None or r["cache_ttl_s"] is None:
                continue
            cur.hold(
                "INSERT INTO result_cache (key, type, result, task_id, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "result = excluded.result, task_id = excluded.task_id, "
                "created_at = excluded.created_at, expires_at = excluded.expires_at",
                (r["cache_key"], r["type"], results.get(r["id"]), r["id"], now,
                 now + float(r["cache_ttl_s"])),
            )  # fmt: skip

    async def clear_cache(self, task_type: str | None = None) -> int:
        """Drop cached results (of one type, or all); returns how many."""

        def w(cur: Any) -> int:
            if task_type is None:
                cur.execute("DELETE FROM result_cache")
            else:
                cur.execute("DELETE FROM result_cache WHERE type = ?", (task_type,))
            return int(cur.rowcount)

        return await self._run(self._write, w)

    async def cache_stats(self, now: float) -> dict[str, int]:
        """Live cached results per type."""

        def q(cur: Any) -> dict[str, int]:
            return {
                r["type"]: int(r["n"])
                for r in cur.execute(
                    "SELECT type, count(*) AS n FROM result_cache WHERE expires_at > ? "
                    "GROUP BY type ORDER BY type",
                    (now,),
                )
            }

        return await self._run(self._read, q)

    def _purge_cache(self, cur: Any, now: float) -> int:
        rows = cur.execute(
            "SELECT key FROM result_cache WHERE expires_at <= ? LIMIT ?", (now, PURGE_BATCH)
        ).fetchall()
        if rows:
            keys = [r["key"] for r in rows]
            cur.execute(
                f"DELETE FROM result_cache WHERE key IN ({', '.join('?' * len(keys))})", keys
            )
        return len(rows)
