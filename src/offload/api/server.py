"""Run the API under uvicorn: ``offload serve`` and the tests use :class:`ApiServer`.

Shutdown (SIGTERM/SIGINT, or :meth:`ApiServer.stop`) is graceful: the listening socket
closes, long polls and event streams answer at once, requests in flight finish (up to
``graceful_timeout_s``), then the embedded worker drains and hands back what it cannot
finish, and the store closes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from offload.api.app import begin_drain, create_app
from offload.api.config import ApiSettings, is_loopback
from offload.core.auth import AuthService
from offload.core.heap import freeze_startup_heap
from offload.core.service import QueueService
from offload.domain.errors import InvalidInput, Unavailable

log = logging.getLogger("offload.api")


def check_bind(host: str, auth: bool) -> None:
    """Refuse a non-loopback address without auth, saying how to turn auth on."""
    if not auth and not is_loopback(host):
        raise InvalidInput(
            f"refusing to listen on {host} without auth (anyone who can reach it could read "
            "and run tasks): create a token with `offload token create --user admin --role "
            "admin`, then start with --auth (or OFFLOAD_AUTH=1)",
            field="host",
        )


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (port 0: any free port); one clear error if not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise InvalidInput(f"cannot resolve host {host!r}: {exc.strerror}", field="host") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise Unavailable(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            details={"hint": "pick another --port, or stop whatever is using it"},
        ) from None
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling the app as soon as shutdown begins."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(begin_drain, self._app)
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal once it has stopped, which would kill the process
        # before the store closes; a graceful stop here ends in a normal exit instead.
        self._captured_signals.clear()


class ApiServer:
    """One uvicorn server for ``app`` on ``sock`` (see :func:`listen`)."""

    def __init__(
        self,
        app: FastAPI,
        sock: socket.socket,
        *,
        log_level: str = "warning",
        access_log: bool = False,
        graceful_timeout_s: float = 10.0,
    ) -> None:
        self.app = app
        self.sock = sock
        config = uvicorn.Config(
            app,
            log_level=log_level.lower(),
            access_log=access_log,
            lifespan="on",
            timeout_graceful_shutdown=int(max(1, graceful_timeout_s)),
            timeout_keep_alive=30,
            server_header=False,
        )
        self._server = _Uvicorn(config, app)

    @property
    def address(self) -> tuple[str, int]:
        """Host and port actually bound."""
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def started(self) -> bool:
        """True once the server accepts requests."""
        return bool(self._server.started)

    async def serve(self) -> None:
        """Serve until stopped (signals are handled when on the main thread)."""
        self._server.loop = asyncio.get_running_loop()
        await self._server.serve(sockets=[self.sock])

    def stop(self) -> None:
        """Begin a graceful shutdown; safe from any thread."""
        loop = self._server.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(begin_drain, self.app)
        self._server.should_exit = True


async def serve(
    service: QueueService,
    settings: ApiSettings,
    sock: socket.socket,
    *,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve the API over ``service`` on ``sock`` until a signal stops it."""
    auth = AuthService(service.store, service.clock)
    if settings.auth and not [t for t in await auth.list_tokens() if not t.revoked]:
        log.warning(
            "auth is on but no token exists yet: create one with "
            "`offload token create --user admin --role admin`"
        )
    app = create_app(service, auth, settings=settings)
    # Everything loaded so far (modules, schemas, the registry) lives as long as the process:
    # keeping it out of the collector's scans shortens the pauses that make latency tails.
    gc.collect()
    freeze_startup_heap()
    await ApiServer(app, sock, log_level=log_level, access_log=access_log).serve()
