"""PostgreSQL statement handling: hot statements are prepared once per connection, and a
connection whose prepared statements vanished (a pooler reset its session) recovers."""

from __future__ import annotations

import asyncio
import re

import pytest

from offload.client.factory import connect
from offload.domain.models import AgentRegistration, ClaimRequest, Completion, TaskSpec
from offload.storage.postgres.store import PostgresStore


def _prepared(store: PostgresStore) -> set[str]:
    with store.pool.connection() as conn:
        rows = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
    return {r[0] for r in rows}


def test_claims_and_reads_are_prepared_and_survive_a_session_reset(pg_url: str) -> None:
    async def scenario() -> None:
        # One pooled connection, so every call below runs on the same session.
        client = await connect(database_url=f"{pg_url}?pool_min=1&pool_max=1")
        store = client.service.store
        assert isinstance(store, PostgresStore)
        try:
            agent = await client.register_agent(AgentRegistration(name="w", capabilities={}))
            req = ClaimRequest(agent_id=agent.id, capabilities=[], types=["util.echo"])
            first = await client.submit("util.echo", {"n": 1})
            assert [t.id for t in await client.claim(req)] == [first.id]
            assert (await client.get(first.id)).id == first.id
            names = await asyncio.to_thread(_prepared, store)
            assert len([n for n in names if n.startswith("offload_")]) >= 2

            # The session loses them behind our back; the next calls prepare them again.
            def reset() -> None:
                with store.pool.connection() as conn:
                    conn.execute("DEALLOCATE ALL")

            await asyncio.to_thread(reset)
            second = await client.submit("util.echo", {"n": 2})
            assert [t.id for t in await client.claim(req)] == [second.id]
            assert (await client.get(second.id)).id == second.id
            assert await asyncio.to_thread(_prepared, store) >= names
        finally:
            await client.close()

    asyncio.run(scenario())


def _prepared_texts(store: PostgresStore) -> list[str]:
    with store.pool.connection() as conn:
        rows = conn.execute(
            "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'offload_%'"
        ).fetchall()
    return [r[0] for r in rows]


def test_single_submits_and_completions_are_prepared_with_the_same_rows(pg_url: str) -> None:
    async def scenario() -> None:
        client = await connect(database_url=f"{pg_url}?pool_min=1&pool_max=1")
        store = client.service.store
        assert isinstance(store, PostgresStore)
        try:
            agent = await client.register_agent(AgentRegistration(name="w", capabilities={}))
            req = ClaimRequest(agent_id=agent.id, capabilities=[], types=["util.echo"])
            for round_ in range(2):
                task = await client.submit("util.echo", {"n": round_}, tags=["t"])
                [held] = await client.claim(req)
                assert held.lease is not None
                [ack] = await client.complete(
                    [Completion(task_id=held.id, lease_id=held.lease.id, result={"ok": 1})]
                )
                assert ack.ok
                done = await client.get(task.id)
                assert done.status.value == "completed" and done.result == {"ok": 1}
                assert done.finished_at is not None and done.tags == ["t"]
                kinds = [e.kind for e in await client.events(task.id)]
                assert kinds[0] == "created" and kinds[-1] == "completed"
                # The text shows the query that carried each PREPARE.
                texts = " ".join(await asyncio.to_thread(_prepared_texts, store))
                # A submit is one statement: its task, its 'created' event, its NOTIFY.
                submit = (
                    r"WITH i0 AS \(INSERT INTO tasks \([^;]*\), i1 AS \(INSERT INTO "
                    r"task_events \([^;]*\) SELECT pg_notify\('offload_work', 'w'\)"
                )
                assert re.search(r"PREPARE offload_\w+ AS " + submit, texts), texts
                body = re.escape("WITH u AS (UPDATE tasks SET status = CASE")
                assert re.search(r"PREPARE offload_\w+ AS " + body, texts), texts
                if round_ == 0:
                    # A pooler's reset drops them; the second round prepares them again.
                    def reset() -> None:
                        with store.pool.connection() as conn:
                            conn.execute("DEALLOCATE ALL")

                    await asyncio.to_thread(reset)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_preparing_can_be_turned_off_for_transaction_poolers(pg_url: str) -> None:
    async def scenario() -> None:
        client = await connect(database_url=f"{pg_url}?pool_max=1&prepare=false")
        store = client.service.store
        assert isinstance(store, PostgresStore)
        try:
            task = await client.submit("util.echo", {"n": 1})
            assert (await client.get(task.id)).id == task.id
            assert not [
                n for n in await asyncio.to_thread(_prepared, store) if n.startswith("offload_")
            ]
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_bad_prepare_option_is_refused_with_the_fix(pg_url: str) -> None:
    from offload.domain.errors import InvalidInput

    with pytest.raises(InvalidInput, match="prepare=true or prepare=false"):
        PostgresStore(f"{pg_url}?prepare=maybe")


def test_round_trips_per_operation(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counts docs/deploy.md promises: submit 1, claim 1, complete 1, read 1. A task
    that others depend on costs the one-trip attempt plus the full completion, which
    resolves its dependents in the same transaction (8 statements today)."""
    import psycopg

    from offload.domain.models import Completion

    sent: list[str] = []
    real = psycopg.ClientCursor.execute

    def counting(
        self: psycopg.ClientCursor[object], query: object, *a: object, **k: object
    ) -> object:
        sent.append(str(query))
        return real(self, query, *a, **k)  # type: ignore[arg-type]

    async def scenario() -> dict[str, int]:
        client = await connect(database_url=pg_url)
        counts: dict[str, int] = {}
        try:
            agent = await client.register_agent(AgentRegistration(name="w", capabilities={}))
            req = ClaimRequest(agent_id=agent.id, capabilities=[], types=["util.echo"])
            for _ in range(2):  # the first round warms caches (flow settings, estimates)
                sent.clear()
                task = await client.submit("util.echo", {"n": 1})
                counts["submit"] = len(sent)
                sent.clear()
                (claimed,) = await client.claim(req)
                counts["claim"] = len(sent)
                sent.clear()
                assert claimed.lease is not None
                await client.complete(
                    [Completion(task_id=task.id, lease_id=claimed.lease.id, result={"n": 1})]
                )
                counts["complete"] = len(sent)
                sent.clear()
                await client.get(task.id)
                counts["read"] = len(sent)
            # A task with a dependent: the one-trip completion skips it, the full one runs.
            upstream = await client.submit("util.echo", {"n": 2})
            after = await client.submit_many(
                [TaskSpec(type="util.echo", input={"n": 3}, depends_on=[upstream.id])]
            )
            (claimed,) = await client.claim(req)
            assert claimed.id == upstream.id and claimed.lease is not None
            sent.clear()
            (ack,) = await client.complete(
                [Completion(task_id=upstream.id, lease_id=claimed.lease.id, result={"n": 2})]
            )
            counts["complete_with_dependent"] = len(sent)
            assert ack.ok and (await client.get(after[0].id)).status.value == "queued"
            (stale,) = await client.complete(
                [Completion(task_id=upstream.id, lease_id=claimed.lease.id, result={"n": 2})]
            )
            assert not stale.ok and stale.code == "stale_lease"
        finally:
            await client.close()
        return counts

    monkeypatch.setattr(psycopg.ClientCursor, "execute", counting)
    assert asyncio.run(scenario()) == {
        "submit": 1, "claim": 1, "complete": 1, "read": 1, "complete_with_dependent": 9
    }  # fmt: skip


def test_literals_are_exact_even_where_the_database_turns_off_standard_strings(
    pg_url: str,
) -> None:
    """Arguments are written as literals by the store itself (quotes doubled), which must
    read back exactly under either setting of standard_conforming_strings."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        conn.execute(f'ALTER DATABASE "{name[0]}" SET standard_conforming_strings = off')
    tricky = ["it's", "a\\b", "\\'; SELECT 1; --", "'' \\\\ ''", "é ✓ 𝄞", "-- x", "$$"]

    async def scenario() -> None:
        client = await connect(database_url=pg_url)
        try:
            agent = await client.register_agent(AgentRegistration(name="w", capabilities={}))
            for text in tricky:
                task = await client.submit(
                    "util.echo", {"text": text, "n": -1, "x": -0.5}, title=text, tags=[text]
                )
                stored = await client.get(task.id)
                assert (stored.title, stored.tags, stored.input) == (
                    text,
                    [text],
                    {"text": text, "n": -1, "x": -0.5},
                )
                # The claim renders the agent's own values; the completion a result.
                req = ClaimRequest(agent_id=agent.id, capabilities=[], types=["util.echo"])
                (claimed,) = await client.claim(req)
                assert claimed.lease is not None
                await client.complete(
                    [Completion(task_id=task.id, lease_id=claimed.lease.id, result=text)]
                )
                assert (await client.get(task.id)).result == text
        finally:
            await client.close()

    asyncio.run(scenario())


def test_single_row_inserts_are_joined_only_across_tables(pg_url: str) -> None:
    """Held single-row inserts travel as one statement when their tables differ; two into
    one table stay two statements, in order (the parts of one statement run in no set
    order, and an event log must keep its order)."""
    import psycopg
    from psycopg.rows import dict_row

    from offload.storage.postgres.store import _Cursor
    from offload.storage.sql import EVENT_COLUMNS

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE joined_probe (n int)")
        sent: list[str] = []
        raw = psycopg.ClientCursor(conn, row_factory=dict_row)
        real = raw.execute

        def recording(query: object, *a: object, **k: object) -> object:
            sent.append(str(query))
            return real(query, *a, **k)  # type: ignore[arg-type]

        raw.execute = recording  # type: ignore[method-assign]
        cur = _Cursor(raw, "COMMIT")
        cur.hold("BEGIN")
        event = ("joined-probe", 1.0, "first", None, "{}")
        cur.insert_rows("pg_temp.joined_probe", ["n"], [(1,)])
        cur.insert_rows("task_events", EVENT_COLUMNS, [event])
        cur.insert_rows("task_events", EVENT_COLUMNS, [(*event[:2], "second", *event[3:])])
        cur.appended(["created"])
        cur.announce()
        cur.hold("COMMIT")
        cur.flush()
        [batch] = sent
        executes = [s for s in batch.split("; ") if s.startswith("EXECUTE")]
        # The probe row and the first event in one statement; the second event after it,
        # in the statement that also carries the NOTIFY.
        assert len(executes) == 2, batch
        bodies = dict(
            p.removeprefix("PREPARE ").split(" AS ", 1)
            for p in batch.split("; ")
            if p.startswith("PREPARE ")
        )
        first, second = (bodies[e.split("(", 1)[0].split()[1]] for e in executes)
        assert first.startswith("WITH i0 AS (INSERT INTO pg_temp.joined_probe"), first
        assert first.count("INSERT INTO task_events") == 1 and "pg_notify" not in first
        assert second.count("INSERT INTO task_events") == 1 and "pg_notify" in second
        kinds = conn.execute(
            "SELECT kind FROM task_events WHERE task_id = 'joined-probe' ORDER BY seq"
        ).fetchall()
        assert [k[0] for k in kinds] == ["first", "second"]
        assert conn.execute("SELECT n FROM joined_probe").fetchall() == [(1,)]
