"""PostgreSQL bulk submits stage a run's per-task values in a temporary table: it survives
a session reset (a pooler's DISCARD ALL), keeps nothing past a commit, and a role that may
not create temporary tables still bulk-submits (as whole rows)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from urllib.parse import urlparse, urlunparse

import psycopg

from offload.client.factory import connect
from offload.client.local import LocalClient
from offload.domain.models import TaskFilter, TaskSpec
from offload.storage.postgres.store import PgDialect, PostgresStore
from tests.pgcluster import PgCluster


def _specs(n: int, tag: str) -> list[TaskSpec]:
    return [TaskSpec(type="util.echo", input={"i": i}, tags=[tag]) for i in range(n)]


def _staged_rows(conn: psycopg.Connection) -> int | None:
    """Rows in this session's staging table (None: the session has none)."""
    if conn.execute("SELECT to_regclass('pg_temp.offload_new_tasks')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT count(*) FROM pg_temp.offload_new_tasks").fetchone()
    return None if row is None else int(row[0])


def test_staging_survives_a_session_reset_and_keeps_nothing(pg_url: str) -> None:
    async def scenario() -> None:
        # One pooled connection, so every call below runs on the same session.
        client = await connect(database_url=f"{pg_url}?pool_min=1&pool_max=1")
        assert isinstance(client, LocalClient)
        store = client.service.store
        assert isinstance(store, PostgresStore) and store.d.alike_min_rows == 200
        try:
            await client.submit_many(_specs(300, "a"))
            with store.pool.connection() as conn:
                assert _staged_rows(conn) == 0  # emptied at commit
                conn.execute("DISCARD ALL")  # what a pooler does between clients
                assert _staged_rows(conn) is None
            await client.submit_many(_specs(300, "b"))
            with store.pool.connection() as conn:
                assert _staged_rows(conn) == 0
            for tag in ("a", "b"):
                page = await client.list(TaskFilter(tag=tag, limit=1000))
                assert sorted(t.input["i"] for t in page.tasks) == list(range(300))
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_role_without_temporary_tables_bulk_submits_whole_rows(
    pg_server: PgCluster, pg_url: str
) -> None:
    role = f"notemp_{uuid.uuid4().hex[:8]}"
    db = urlparse(pg_url).path.lstrip("/")
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'REVOKE TEMPORARY ON DATABASE "{db}" FROM PUBLIC')
        admin.execute(f'GRANT CREATE, USAGE ON SCHEMA public TO "{role}"')
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            admin.execute(f'GRANT ALL ON ALL {kind} IN SCHEMA public TO "{role}"')
    url = urlunparse(
        urlparse(pg_url)._replace(netloc=f"{role}@{urlparse(pg_url).netloc.split('@')[-1]}")
    )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            refused = conn.execute(
                "SELECT has_database_privilege(current_database(), 'TEMPORARY')"
            ).fetchone()
            assert refused == (False,)

        async def scenario() -> None:
            client = await connect(database_url=url)
            assert isinstance(client, LocalClient)
            store = client.service.store
            assert isinstance(store, PostgresStore) and store.d.alike_min_rows is None
            # Other stores of the process keep staging.
            assert PgDialect.alike_min_rows == 200
            try:
                made = await client.submit_all(_specs(1_500, "whole"))
                assert [t.input["i"] for t in made] == list(range(1_500))
                assert (await client.list(TaskFilter(tag="whole", limit=0))).total == 1_500
            finally:
                await client.close()

        asyncio.run(scenario())
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{role}"')
        pg_server.sql(f'DROP ROLE IF EXISTS "{role}"')


def test_a_bulk_submit_through_dropped_connections_stores_each_task_once(pg_url: str) -> None:
    """Connections dropped while batches are staged, moved or committed: each batch is sent
    again on a new connection (its staging table made anew) or, where its commit had
    landed, answered from what is stored. Every task exists once."""
    stop = False
    killed = 0

    def killer() -> None:
        nonlocal killed
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for _ in range(400):  # bounded: about 4 s at most
                if stop:
                    return
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state <> 'idle' AND query LIKE '%offload_new_tasks%'"
                ).fetchall()
                killed += sum(1 for r in rows if r[0])
                if killed >= 3:
                    return
                time.sleep(0.01)

    async def scenario() -> None:
        nonlocal stop
        client = await connect(database_url=pg_url)
        try:
            thread = threading.Thread(target=killer)
            thread.start()
            made: list = []
            for round_ in range(10):  # until the killer has cut a few batches short
                made += await client.submit_all(_specs(2_000, f"r{round_}"))
                if killed >= 3:
                    break
            stop = True
            thread.join(10)
            assert killed >= 1
            assert len({t.id for t in made}) == len(made)
            total = (await client.list(TaskFilter(limit=0))).total
            assert total == len(made)
            for t in made[:: len(made) // 20]:
                assert (await client.get(t.id)).input == t.input
        finally:
            stop = True
            await client.close()

    asyncio.run(scenario())
