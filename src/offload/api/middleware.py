"""ASGI middleware: the request body limit and the audit log of write calls.

Both are plain ASGI (no ``BaseHTTPMiddleware``), so streaming answers such as the event
stream pass through untouched.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offload.api.config import is_loopback
from offload.api.deps import AUDIT_DETAILS_KEY, AUDIT_SKIP_KEY, PRINCIPAL_KEY

log = logging.getLogger("offload.api")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: Write routes left out of the audit log: frequent liveness and progress calls (the task
#: event log records progress) and waits that change nothing.
NOT_AUDITED = frozenset(
    {
        "/v1/leases/heartbeat",
        "/v1/agents/{agent_id}/heartbeat",
        "/v1/tasks/{task_id}/progress",
    }
)


#: Bodies over the limit but under this are read (and dropped) before the 413, so the
#: client can read the answer; bigger ones are answered at once and the connection closed.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class BodyTooLarge(HTTPException):
    """The request body is over the server's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit))
        self.limit = limit


def _too_large_message(limit: int) -> str:
    return (
        f"request body is over the limit of {limit:,} bytes (OFFLOAD_MAX_BODY_BYTES on the "
        "server): send less in one request"
    )


def _too_large_body(limit: int) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "code": "too_large",
                "message": _too_large_message(limit),
                "details": {"limit": limit},
            }
        }
    )


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413: at once from Content-Length, or as soon
    as a chunked body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    if declared <= DRAIN_LIMIT_BYTES:
                        # Read what the client is sending before answering: a client still
                        # writing when the connection closes sees a reset, not the 413.
                        await _drain(receive)
                    await self._refuse(send, limit)
                    return
                break
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        body = _too_large_body(limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class AuditLog:
    """After each write call under ``/v1/``: who (the token's user and role), what (method
    and route), which target (the path's id), when, and the answer's status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITE_METHODS
            or not scope["path"].startswith("/v1/")
        ):
            await self.app(scope, receive, send)
            return
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            await self._record(scope, status)

    @staticmethod
    async def _record(scope: Scope, status: int) -> None:
        principal = scope.get(PRINCIPAL_KEY)
        if principal is None or scope.get(AUDIT_SKIP_KEY):
            return  # unauthenticated (401s are logged, not audited) or nothing changed
        route = scope.get("route")
        template = getattr(route, "path", None) or scope["path"]
        if template in NOT_AUDITED:
            return
        params: dict[str, Any] = scope.get("path_params") or {}
        target = next(iter(params.values()), None)
        try:
            await scope["app"].state.offload.auth.audit(
                principal,
                f"{scope['method']} {template}",
                target=str(target) if target is not None else None,
                status=status,
                details=scope.get(AUDIT_DETAILS_KEY) or {},
            )
        except Exception as exc:  # the call itself already answered; keep serving
            log.warning("audit entry not written (%s %s): %s", scope["method"], template, exc)


class LoopbackHostOnly:
    """Without auth, answer only requests addressed to a loopback name: a web page cannot
    reach the unauthenticated API through DNS rebinding."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _loopback_host(scope):
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(
            {
                "error": {
                    "code": "forbidden",
                    "message": "this server runs without auth and answers only to "
                    "localhost/127.0.0.1/[::1]; restart it with --auth to serve other names",
                    "details": {},
                }
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _loopback_host(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1").strip()
            if host.startswith("["):
                host = host[1 : host.find("]")] if "]" in host else host
            else:
                host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
            return is_loopback(host)
    return True  # HTTP/1.0 without Host: only a local client would do that here
