"""API tokens and the audit log (PRODUCT.md §9).

Tokens are random 256-bit secrets shown once; only their SHA-256 is stored. A slow
password hash buys nothing for secrets this long, and a fast lookup keeps every request
cheap.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from offload.domain.errors import InvalidInput, OffloadError
from offload.domain.ids import new_id
from offload.domain.models import AuditEntry, NewToken, Principal, Role, TokenInfo
from offload.ports.clock import Clock, SystemClock
from offload.ports.store import Store

TOKEN_PREFIX = "ofk_"


class Unauthenticated(OffloadError):
    """No token, or one that is unknown or revoked."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(OffloadError):
    """A valid token whose role may not do this."""

    code = "forbidden"
    http_status = 403


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


class AuthService:
    """Create, check and revoke tokens; record and read the audit log."""

    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()

    async def create_token(
        self, user: str, role: Role | str = Role.USER, name: str | None = None
    ) -> NewToken:
        """A new token for ``user``; the secret is in the result and nowhere else."""
        user = user.strip()
        if not user:
            raise InvalidInput("user must not be empty", field="user")
        try:
            role = Role(role)
        except ValueError:
            raise InvalidInput(f"role {role!r}: use admin, user or agent", field="role") from None
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(
            id=new_id(),
            user=user,
            role=role,
            name=name,
            created_at=datetime.fromtimestamp(self.clock.now(), UTC),
        )
        await self.store.create_token(info, hash_token(secret))
        return NewToken(token=secret, info=info)

    async def authenticate(self, token: str | None) -> Principal:
        """The principal for a bearer token, or :class:`Unauthenticated`."""
        if not token:
            raise Unauthenticated(
                "missing bearer token: send 'Authorization: Bearer <token>' "
                "(create one with `offload token create --user NAME`)"
            )
        info = await self.store.find_token(hash_token(token.strip()), self.clock.now())
        if info is None:
            raise Unauthenticated("unknown or revoked token")
        return Principal(user=info.user, role=info.role, token_id=info.id)

    async def list_tokens(self) -> list[TokenInfo]:
        """Token records (no secrets)."""
        return await self.store.list_tokens()

    async def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke a token by id."""
        return await self.store.revoke_token(token_id, self.clock.now())

    async def audit(
        self,
        principal: Principal | None,
        action: str,
        target: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record a state-changing call."""
        await self.store.append_audit(AuditEntry(
            at=datetime.fromtimestamp(self.clock.now(), UTC),
            actor=principal.user if principal else None,
            role=principal.role.value if principal else None,
            action=action, target=target, status=status, details=details or {},
        ))  # fmt: skip

    async def list_audit(
        self, limit: int = 100, offset: int = 0, actor: str | None = None
    ) -> tuple[list[AuditEntry], int]:
        """Newest entries first, and the total."""
        return await self.store.list_audit(limit, offset, actor)


def require_role(principal: Principal, *roles: Role) -> None:
    """Raise :class:`Forbidden` unless the principal has one of ``roles``."""
    if principal.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden(f"this needs a token with role {allowed}; yours is {principal.role.value}")
