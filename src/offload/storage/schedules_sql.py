"""Schedules in the database: the timetables and their exactly-once firings (§4.9)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from offload.domain.errors import Conflict, NotFound
from offload.domain.models import Task
from offload.domain.schedules import Schedule, ScheduleSpec
from offload.storage.hooks import BackendHooks
from offload.storage.rows import loads

R = TypeVar("R")


def _schedule(r: dict[str, Any]) -> Schedule:
    spec = ScheduleSpec.model_validate(loads(r["spec"]))
    return Schedule(
        **spec.model_dump(),
        id=r["id"],
        owner=r["owner"],
        paused=bool(r["paused"]),
        next_fire_at=datetime.fromtimestamp(r["next_fire_at"], UTC),
        last_fired_at=(
            datetime.fromtimestamp(r["last_fired_at"], UTC) if r["last_fired_at"] else None
        ),
        created_at=datetime.fromtimestamp(r["created_at"], UTC),
    )


class SchedulesSql(BackendHooks):
    """Schedule store operations (see :class:`offload.ports.store.Store`)."""

    def _insert_tasks(self, cur: Any, tasks: list[Task], now: float) -> list[Task]:
        raise NotImplementedError

    async def create_schedule(
        self, schedule_id: str, spec: ScheduleSpec, owner: str | None, next_at: float, now: float
    ) -> Schedule:
        """Store a new schedule (:class:`Conflict` when the owner has one of that name)."""

        def w(cur: Any) -> Schedule:
            if cur.execute(
                "SELECT 1 FROM schedules WHERE coalesce(owner, '') = ? AND name = ?",
                (owner or "", spec.name),
            ).fetchone():
                raise Conflict(
                    f"a schedule named {spec.name!r} exists; remove it first or pick another name",
                    details={"name": spec.name},
                )
            cur.execute(
                "INSERT INTO schedules (id, name, owner, spec, paused, next_fire_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                (schedule_id, spec.name, owner, spec.model_dump_json(exclude_none=True),
                 next_at, now, now),
            )  # fmt: skip
            return self._one_schedule(cur, schedule_id, owner)

        return await self._run(self._write, w)

    def _one_schedule(self, cur: Any, ident: str, owner: str | None) -> Schedule:
        row = cur.execute(
            "SELECT * FROM schedules WHERE (id = ? OR name = ?)"
            + (" AND owner = ?" if owner is not None else "")
            + " ORDER BY id LIMIT 1",
            (ident, ident, owner) if owner is not None else (ident, ident),
        ).fetchone()
        if row is None:
            raise NotFound("schedule", ident)
        return _schedule(row)

    async def get_schedule(self, ident: str, owner: str | None = None) -> Schedule:
        """One schedule by id or name."""
        return await self._run(self._read, self._one_schedule, ident, owner)

    async def list_schedules(self, owner: str | None = None) -> list[Schedule]:
        """Every schedule (of ``owner`` when given)."""

        def q(cur: Any) -> list[Schedule]:
            rows = cur.execute(
                "SELECT * FROM schedules"
                + (" WHERE owner = ?" if owner is not None else "")
                + " ORDER BY name",
                (owner,) if owner is not None else (),
            ).fetchall()
            return [_schedule(r) for r in rows]

        return await self._run(self._read, q)

    async def delete_schedule(self, ident: str, owner: str | None = None) -> Schedule:
        """Remove a schedule; tasks it created stay."""

        def w(cur: Any) -> Schedule:
            found = self._one_schedule(cur, ident, owner)
            cur.execute("DELETE FROM schedules WHERE id = ?", (found.id,))
            cur.execute("DELETE FROM schedule_firings WHERE schedule_id = ?", (found.id,))
            return found

        return await self._run(self._write, w)

    async def pause_schedule(
        self, ident: str, paused: bool, next_at: Callable[[Schedule], float] | None,
        owner: str | None, now: float,
    ) -> Schedule:  # fmt: skip
        """Pause, or resume (from ``next_at(schedule)``: missed firings are not run)."""

        def w(cur: Any) -> Schedule:
            found = self._one_schedule(cur, ident, owner)
            nxt = next_at(found) if (next_at is not None and not paused) else None
            cur.execute(
                "UPDATE schedules SET paused = ?, updated_at = ?"
                + (", next_fire_at = ?" if nxt is not None else "")
                + " WHERE id = ?",
                (int(paused), now, nxt, found.id)
                if nxt is not None
                else (int(paused), now, found.id),
            )
            return self._one_schedule(cur, found.id, None)

        return await self._run(self._write, w)

    async def due_schedules(self, now: float) -> list[Schedule]:
        """Unpaused schedules whose next firing time has come."""

        def q(cur: Any) -> list[Schedule]:
            rows = cur.execute(
                "SELECT * FROM schedules WHERE paused = 0 AND next_fire_at <= ? "
                "ORDER BY next_fire_at LIMIT 100",
                (now,),
            ).fetchall()
            return [_schedule(r) for r in rows]

        return await self._run(self._read, q)

    async def fire_schedule(
        self,
        schedule_id: str,
        firings: Sequence[tuple[float, Task]],
        next_at: float,
        now: float,
    ) -> list[Task]:
        """Create the task of each firing not yet recorded, and advance the timetable.

        The firing row and its task share one transaction; the unique (schedule_id,
        fire_time) key lets exactly one of several racing servers create each task.
        """

        def w(cur: Any) -> list[Task]:
            created: list[Task] = []
            for fire_time, task in firings:
                cur.execute(
                    "INSERT INTO schedule_firings (schedule_id, fire_time, task_id) "
                    "VALUES (?, ?, ?) ON CONFLICT (schedule_id, fire_time) DO NOTHING",
                    (schedule_id, fire_time, task.id),
                )
                if cur.rowcount == 1:
                    created += self._insert_tasks(cur, [task], now)
            cur.execute(
                "UPDATE schedules SET next_fire_at = ?, updated_at = ?"
                + (", last_fired_at = ?" if firings else "")
                + " WHERE id = ? AND next_fire_at < ?",
                ((next_at, now, max(f for f, _ in firings), schedule_id, next_at)
                 if firings else (next_at, now, schedule_id, next_at)),
            )  # fmt: skip
            # Firings older than a day are history the unique key no longer needs.
            cur.hold(
                "DELETE FROM schedule_firings WHERE schedule_id = ? AND fire_time < ?",
                (schedule_id, now - 86400.0),
            )
            return created

        return await self._run(self._write, w)
