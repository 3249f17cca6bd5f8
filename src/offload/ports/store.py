"""The storage port. One small protocol; each backend implements it once (PRODUCT.md §6).

Every method is one transaction. Status changes are conditional updates checked against
:mod:`offload.domain.status`, dependency and retry rules come from :mod:`offload.domain.rules`,
and each change appends to the task event log in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from offload.domain.models import (
    Ack,
    Agent,
    AgentRegistration,
    AuditEntry,
    ClaimRequest,
    Completion,
    EventFilter,
    Failure,
    LeaseRef,
    LeaseState,
    ProgressUpdate,
    Stats,
    Task,
    TaskEvent,
    TaskFilter,
    TokenInfo,
)
from offload.domain.review import ReviewDecision, ReviewFilter
from offload.ports.agents import AgentStore
from offload.ports.flow import FlowStore

#: What a waiter waits for: ``any`` change (live event streams), ``work`` that may have
#: become claimable (idle workers), or a task that may have ``done`` (waiters for results).
#: Waking for a kind it does not need costs a waiter a read, and on a busy 2-core machine
#: that read competes with the work it waits for.
ChangeKind = Literal["any", "work", "done"]
CHANGE_KINDS: tuple[ChangeKind, ...] = ("any", "work", "done")


class Store(AgentStore, FlowStore, Protocol):
    """Durable task storage with lease-based claims."""

    url: str

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def schema_version(self) -> int:
        """The newest migration applied."""
        ...

    async def allowed_statuses(self) -> set[str]:
        """Status values the database itself accepts (its CHECK constraint)."""
        ...

    # -- tasks -------------------------------------------------------------
    async def insert_tasks(self, tasks: Sequence[Task], now: float) -> list[Task]:
        """Insert all or none.

        ``depends_on`` may name existing tasks of the same owner or earlier tasks of the
        batch. The store sets each task's initial status from its dependencies' current
        state (``blocked``/``scheduled``/``queued``, or ``cancelled`` if one can no longer
        hold). A task whose ``(owner, idempotency_key)`` exists already is returned as
        stored instead of inserted. Unknown dependency ids raise ``DependencyError``.
        """
        ...

    async def get_task(self, task_id: str, owner: str | None = None) -> Task | None:
        """One task (with ``children``), or None. ``owner`` restricts to that owner's."""
        ...

    async def list_tasks(self, flt: TaskFilter) -> tuple[list[Task], int]:
        """A page of tasks, newest first, and the total matching."""
        ...

    async def events(self, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[TaskEvent]:
        """A task's events after ``after_seq``, oldest first."""
        ...

    async def events_since(
        self, after_seq: int, limit: int = 1000, flt: EventFilter | None = None
    ) -> list[TaskEvent]:
        """Events after ``after_seq`` (all, or those ``flt`` selects), with each task's type
        and current status: the live stream's source."""
        ...

    async def last_event_seq(self) -> int:
        """The newest event's ``seq`` (0 when there are none)."""
        ...

    # -- the worker protocol ---------------------------------------------------
    async def claim(self, req: ClaimRequest, now: float) -> list[Task]:
        """Lease up to ``req.max`` eligible queued tasks, best first, and mark them running."""
        ...

    async def heartbeat(
        self, leases: Sequence[LeaseRef], ttl_s: float, now: float
    ) -> list[LeaseState]:
        """Extend live leases; report stale ones and pending cancel/pause requests."""
        ...

    async def progress(self, update: ProgressUpdate, now: float) -> LeaseState:
        """Record progress, a log line, a checkpoint or an artifact (fenced by the lease)."""
        ...

    async def complete(self, items: Sequence[Completion], now: float) -> list[Ack]:
        """Finish attempts successfully; resolves dependents and workflow parents."""
        ...

    async def fail(self, items: Sequence[Failure], now: float) -> list[Ack]:
        """Record failed attempts; the retry rule decides retry or dead-letter."""
        ...

    async def release(self, leases: Sequence[LeaseRef], now: float) -> list[Ack]:
        """Hand leases back without spending an attempt (graceful shutdown)."""
        ...

    # -- control -----------------------------------------------------------
    async def cancel(
        self, task_id: str, now: float, *, owner: str | None, actor: str | None, reason: str | None
    ) -> Task:
        """Cancel now, or ask the holder to stop if the task is running."""
        ...

    async def pause(
        self, task_id: str, now: float, *, owner: str | None, actor: str | None
    ) -> Task:
        """Pause a pending task now, or ask the holder to stop if it is running."""
        ...

    async def resume(
        self, task_id: str, now: float, *, owner: str | None, actor: str | None
    ) -> Task:
        """Return a paused task to blocked/scheduled/queued as its state requires."""
        ...

    async def retry(
        self, task_ids: Sequence[str], now: float, *, owner: str | None, actor: str | None
    ) -> list[Task]:
        """Move failed/cancelled tasks back to the queue with a fresh attempt budget."""
        ...

    # -- review ------------------------------------------------------------
    async def decide_review(
        self,
        task_id: str,
        decision: ReviewDecision,
        now: float,
        *,
        owner: str | None,
        actor: str | None,
    ) -> Task:
        """Approve or reject a task in ``reviewing`` (:class:`Conflict` otherwise)."""
        ...

    async def list_reviews(self, flt: ReviewFilter) -> tuple[list[Task], int]:
        """Tasks whose review matches ``flt``, oldest request first, and the total."""
        ...

    async def maintain(self, now: float) -> dict[str, int]:
        """Reap expired leases, promote due scheduled tasks, fail tasks past their deadline.

        Idempotent and safe to run from any number of processes at once.
        """
        ...

    # -- insight -----------------------------------------------------------
    async def stats(self, now: float, owner: str | None = None) -> Stats:
        """Counts by status and per-type figures."""
        ...

    async def mean_durations(self) -> dict[str, float]:
        """Mean run time of recent completed tasks, by type (for estimates)."""
        ...

    # -- agents ------------------------------------------------------------
    async def register_agent(self, reg: AgentRegistration, now: float) -> Agent:
        """Create or update an agent record."""
        ...

    async def agent_heartbeat(
        self, agent_id: str, metadata: dict[str, object] | None, now: float
    ) -> Agent:
        """Mark an agent alive (back online if it was offline)."""
        ...

    async def deregister_agent(self, agent_id: str, now: float) -> None:
        """Mark an agent offline (its leases expire normally)."""
        ...

    async def list_agents(self) -> list[Agent]:
        """Every agent with its live load."""
        ...

    # -- tokens and audit ------------------------------------------------------
    async def create_token(self, info: TokenInfo, token_hash: str) -> TokenInfo:
        """Store a token record under the hash of its secret."""
        ...

    async def find_token(self, token_hash: str, now: float) -> TokenInfo | None:
        """The live (not revoked) token with this hash; records its use."""
        ...

    async def list_tokens(self) -> list[TokenInfo]:
        """Every token record."""
        ...

    async def revoke_token(self, token_id: str, now: float) -> TokenInfo:
        """Revoke a token."""
        ...

    async def append_audit(self, entry: AuditEntry) -> None:
        """Record one state-changing call."""
        ...

    async def list_audit(
        self, limit: int = 100, offset: int = 0, actor: str | None = None
    ) -> tuple[list[AuditEntry], int]:
        """Newest audit entries first, and the total."""
        ...

    # -- change notification ---------------------------------------------------
    def change_token(self, kind: ChangeKind = "any") -> int:
        """An opaque counter of observed changes of ``kind``; pass it to
        :meth:`wait_for_change` (with the same kind) so a change that lands between reading
        data and starting to wait is not missed."""
        ...

    async def wait_for_change(
        self, timeout: float, since: int | None = None, kind: ChangeKind = "any"
    ) -> bool:
        """Return True when the data may have changed (in a way of ``kind``) since ``since``
        (a :meth:`change_token` of the same kind; default: since this call), or False after
        ``timeout`` seconds. Cheap enough to call in a loop. A backend that cannot tell
        kinds apart treats every change as every kind."""
        ...

    def heard_finished(self, task_id: str, since: int) -> Task | None:
        """The finished record of ``task_id`` if a notification this process received
        after ``since`` (a ``"done"`` :meth:`change_token`) carried it, else None: read the
        task instead. Lets a waiter skip a read after being woken; never a stale record
        (a task run again after ``since`` is only announced by its newer record)."""
        ...
