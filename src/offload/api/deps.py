"""Request dependencies: the server context, the caller (bearer auth) and the submit quota.

Auth off (loopback only), every request acts as the local admin and new tasks get no
owner, exactly as the local SDK and CLI do. Auth on, the token decides: admins see all;
users and agents see and act on their own tasks (others' are 404) and claim their own work.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from offload.api.errors import RateLimited
from offload.core.auth import AuthService, Forbidden, require_role
from offload.core.service import QueueService
from offload.domain.errors import NotFound
from offload.domain.models import Principal, Role

if TYPE_CHECKING:
    from offload.api.changes import ChangeFeed
    from offload.api.config import ApiSettings
    from offload.api.metrics import Metrics
    from offload.api.ratelimit import TokenBuckets
    from offload.core.dispatch import Dispatcher

#: Where the authenticated principal is left in the ASGI scope (the audit log reads it).
PRINCIPAL_KEY = "offload.principal"
#: Set by a route when a write call changed nothing worth auditing (an empty claim).
AUDIT_SKIP_KEY = "offload.audit_skip"
#: Extra ``details`` for the audit entry of this call.
AUDIT_DETAILS_KEY = "offload.audit_details"

LOCAL_ADMIN = Principal(user="local", role=Role.ADMIN)


class TokenCache:
    """Checked tokens trusted for ``ttl_s`` (keyed by their hash): no lookup per request."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, token: str) -> tuple[str, Principal | None]:
        """The cache key for ``token`` and its principal if still trusted."""
        key = hashlib.sha256(token.encode()).hexdigest()
        hit = self._entries.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return key, hit[0]
        return key, None

    def put(self, key: str, principal: Principal) -> None:
        """Trust ``principal`` for this key for ``ttl_s``."""
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (principal, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        """Forget every token (after a revoke)."""
        self._entries.clear()


@dataclass
class ApiContext:
    """Everything a route needs, built once by :func:`offload.api.app.create_app`."""

    service: QueueService
    auth: AuthService
    settings: ApiSettings
    feed: ChangeFeed
    metrics: Metrics
    limiter: TokenBuckets
    tokens: TokenCache = field(default_factory=lambda: TokenCache(5.0))
    #: The push dispatcher (push, hybrid and auction queues).
    dispatcher: Dispatcher | None = None

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of a bearer token (cached briefly), or ``Unauthenticated``."""
        if token and self.tokens.ttl_s > 0:
            key, principal = self.tokens.get(token)
            if principal is not None:
                return principal
            principal = await self.auth.authenticate(token)
            self.tokens.put(key, principal)
            return principal
        return await self.auth.authenticate(token)


def context(request: Request) -> ApiContext:
    """The server context of this app."""
    ctx: ApiContext = request.app.state.offload
    return ctx


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and what they may see."""

    principal: Principal
    #: False when auth is off (the caller is the local admin and tasks get no owner).
    authenticated: bool

    @property
    def is_admin(self) -> bool:
        """Admins (and everyone when auth is off) see every task."""
        return self.principal.role is Role.ADMIN

    @property
    def scope(self) -> str | None:
        """The owner restriction of reads and control calls (None: every task)."""
        return self.principal.owner_scope if self.authenticated else None

    @property
    def owner(self) -> str | None:
        """The owner of tasks this caller submits."""
        return self.principal.user if self.authenticated else None

    @property
    def actor(self) -> str | None:
        """The name written as ``actor`` in task events."""
        return self.principal.user if self.authenticated else None

    def require(self, *roles: Role) -> None:
        """``Forbidden`` unless the caller has one of ``roles`` (no-op with auth off)."""
        if self.authenticated:
            require_role(self.principal, *roles)

    def owner_filter(self, requested: str | None) -> str | None:
        """The owner a listing is restricted to; only admins may name someone else."""
        if self.scope is None:
            return requested
        if requested not in (None, self.scope):
            raise Forbidden("only admins may list other users' tasks (drop the owner filter)")
        return self.scope

    def submit_owner(self, requested: str | None) -> str | None:
        """The owner of a new task: admins may submit on someone's behalf."""
        if self.is_admin:
            return requested if requested is not None else self.owner
        if requested not in (None, self.principal.user):
            raise Forbidden("only admins may submit tasks on behalf of another user")
        return self.owner

    async def visible(self, service: QueueService, task_ids: builtins.list[str]) -> set[str]:
        """The ids among ``task_ids`` this caller may act on (the lease protocol)."""
        if self.scope is None:
            return set(task_ids)
        mine: set[str] = set()
        for task_id in dict.fromkeys(task_ids):
            try:
                await service.get(task_id, self.scope)
            except NotFound:
                continue
            mine.add(task_id)
        return mine


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API token from `offload token create` (not needed on a loopback "
    "server started without --auth).",
)


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Authenticate the request (401 without a valid token when auth is on)."""
    ctx = context(request)
    if not ctx.settings.auth:
        caller = Caller(LOCAL_ADMIN, authenticated=False)
    else:
        token = credentials.credentials if credentials is not None else None
        caller = Caller(await ctx.authenticate(token), authenticated=True)
    request.scope[PRINCIPAL_KEY] = caller.principal
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_submitter(request: Request, caller: CallerDep) -> Caller:
    """The caller, once its token's submit quota allows another submit (else 429)."""
    if caller.authenticated:
        limiter = context(request).limiter
        key = caller.principal.token_id or caller.principal.user
        wait = limiter.take(key)
        if wait > 0:
            raise RateLimited(wait, limiter.rate, limiter.burst)
    return caller


async def get_context(request: Request) -> ApiContext:
    """The server context (async: a sync dependency would cost a thread-pool hop)."""
    return context(request)


SubmitterDep = Annotated[Caller, Depends(get_submitter)]
ContextDep = Annotated[ApiContext, Depends(get_context)]


def audit_details(request: Request, **details: object) -> None:
    """Add ``details`` to this call's audit entry."""
    request.scope.setdefault(AUDIT_DETAILS_KEY, {}).update(details)


def skip_audit(request: Request) -> None:
    """This write call changed nothing: no audit entry."""
    request.scope[AUDIT_SKIP_KEY] = True
