"""Real servers for the API tests.

``LiveServer`` runs ``create_app`` under uvicorn on a free loopback port, in a thread with
its own event loop and a temporary SQLite database (tokens are created in that database
before it starts). ``ServeProcess`` runs the real ``offload serve`` command in a
subprocess. Tests talk to both over real HTTP only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import offload
from offload.api.app import create_app
from offload.api.config import ApiSettings
from offload.api.server import ApiServer, listen
from offload.client.factory import open_service
from offload.core.auth import AuthService

ROOT = Path(__file__).resolve().parents[2]

#: Tokens every auth-on test server has: name -> (user, role).
TOKENS = {
    "admin": ("root", "admin"),
    "alice": ("alice", "user"),
    "bob": ("bob", "user"),
    "alice-agent": ("alice", "agent"),
    "bob-agent": ("bob", "agent"),
}


@dataclass
class LiveServer:
    """A running API server and the secrets of its tokens."""

    url: str
    db_url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def http(self, token: str | None = None, **kw: Any) -> httpx.Client:
        """An httpx client; ``token`` names one of :data:`TOKENS` (or None)."""
        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def sdk(self, token: str | None = None) -> offload.Client:
        """The SDK over HTTP."""
        return offload.Client(self.url, token=self.tokens[token] if token else None)


class ServerThread:
    """``create_app`` under uvicorn in a background thread."""

    def __init__(self, db_url: str, settings: ApiSettings, with_tokens: bool) -> None:
        self.db_url = db_url
        self.settings = settings
        self.with_tokens = with_tokens
        self.tokens: dict[str, str] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: ApiServer | None = None
        self._thread = threading.Thread(target=self._main, name="api-server", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        service = await open_service(self.db_url)
        try:
            auth = AuthService(service.store, service.clock)
            if self.with_tokens:
                for name, (user, role) in TOKENS.items():
                    self.tokens[name] = (await auth.create_token(user, role, name)).token
            app = create_app(service, auth, settings=self.settings)
            self._server = ApiServer(app, listen("127.0.0.1", 0), graceful_timeout_s=5)
            serving = asyncio.create_task(self._server.serve())
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            self._ready.set()
            await serving
        finally:
            await service.store.close()

    def start(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("API server did not start in 30 s")
        if self._error is not None or self._server is None:
            raise RuntimeError(f"API server failed to start: {self._error!r}")
        host, port = self._server.address
        return LiveServer(url=f"http://{host}:{port}", db_url=self.db_url, tokens=self.tokens)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "API server thread did not stop"


@contextlib.contextmanager
def running_server(
    tmp: Path,
    *,
    auth: bool,
    with_tokens: bool | None = None,
    db_url: str | None = None,
    **settings: Any,
) -> Iterator[LiveServer]:
    """A live server on a fresh database (SQLite unless ``db_url``) for the block."""
    db_url = db_url or f"sqlite:///{tmp / f'api-{uuid.uuid4().hex[:8]}.db'}"
    thread = ServerThread(
        db_url,
        ApiSettings(auth=auth, **settings),
        with_tokens=auth if with_tokens is None else with_tokens,
    )
    live = thread.start()
    try:
        yield live
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Auth on, no embedded worker (tests drive the worker protocol themselves)."""
    with running_server(tmp_path_factory.mktemp("api"), auth=True) as live:
        yield live


@pytest.fixture(scope="module")
def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Auth off (loopback), an embedded worker of 4."""
    with running_server(
        tmp_path_factory.mktemp("open"), auth=False, worker_concurrency=4, worker_grace_s=2
    ) as live:
        yield live


def unique(prefix: str = "q") -> str:
    """A fresh name (queues, tags) so tests sharing a server do not see each other's work."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- the real command in a subprocess -------------------------------------------------------
_SCRIPT = Path(sys.executable).with_name("offload")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "offload.cli"]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a subprocess: no inherited server, a private OFFLOAD_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env |= {
        "OFFLOAD_HOME": str(home),
        "OFFLOAD_DATABASE_URL": f"sqlite:///{home / 'offload.db'}",
        # This checkout's package first: the shared venv's editable install may be another.
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "COLUMNS": "200",
    }
    return env | extra


class Processes:
    """Subprocesses of one test; each is SIGKILLed at teardown if still running."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.procs.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        for p, path in self.procs:
            if p is proc:
                return path.read_text(errors="replace")
        return ""

    def serve(
        self, env: dict[str, str], *args: str, name: str = "serve"
    ) -> tuple[subprocess.Popen[bytes], str]:
        """Start ``offload serve --port 0 …``; returns the process and its base URL."""
        proc = self.spawn([*COMMAND, "serve", "--port", "0", *args], env, name)
        url: list[str] = []

        def bound() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"offload serve exited: {self.log(proc)}")
            found = re.search(r"http://127\.0\.0\.1:(\d+)", self.log(proc))
            if found and not url:
                url.append(found.group(0))
            if not url:
                return False
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url[0] + "/readyz", timeout=2).status_code == 200
            return False

        wait_until(bound, 30, "offload serve to answer /readyz")
        return proc, url[0]

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        for proc, _ in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Spawn subprocesses; all are killed at teardown."""
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()
