"""Opening a PostgreSQL store: refusals that waiting cannot cure fail at once with the
server's reason; a server that is not reachable yet is waited for."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse, urlunparse

import pytest

from offload.domain.errors import InvalidInput, Unavailable
from offload.storage import open_store
from offload.storage.postgres import store as pg_store
from offload.storage.postgres.store import PostgresStore


def _with(url: str, *, user: str | None = None, port: int | None = None, path: str = "") -> str:
    p = urlparse(url)
    netloc = f"{user or p.username}@{p.hostname}:{port or p.port}"
    return urlunparse(p._replace(netloc=netloc, path=path or p.path))


def _open(url: str) -> float:
    """Open and close a store; the seconds it took."""

    async def run() -> None:
        store = await open_store(url)
        await store.close()

    start = time.monotonic()
    asyncio.run(run())
    return time.monotonic() - start


@pytest.mark.parametrize(
    ("option", "fix"),
    [
        ("pool_max=abc", "pool_max='abc' in the database URL: use a whole number of at least 1"),
        ("pool_max=0", "pool_max='0' in the database URL: use a whole number of at least 1"),
        ("pool_min=-1", "pool_min='-1' in the database URL: use a whole number of at least 0"),
    ],
)
def test_bad_pool_sizes_are_refused_with_the_fix(pg_url: str, option: str, fix: str) -> None:
    with pytest.raises(InvalidInput) as err:
        PostgresStore(f"{pg_url}?{option}")
    assert err.value.message == fix


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"path": "/no_such_db"}, 'database "no_such_db" does not exist'),
        ({"user": "no_such_role"}, 'role "no_such_role" does not exist'),
    ],
)
def test_a_refusal_waiting_cannot_cure_fails_at_once(
    pg_url: str, change: dict[str, str], reason: str
) -> None:
    url = _with(pg_url, **change)  # type: ignore[arg-type]
    start = time.monotonic()
    with pytest.raises(Unavailable) as err:
        _open(url)
    # Before this, the pool retried silently for 30 s and then gave no reason.
    assert time.monotonic() - start < 10
    assert err.value.message.startswith("cannot connect to PostgreSQL at 127.0.0.1:")
    assert err.value.message.endswith(reason)


def test_a_bad_url_option_fails_at_once(pg_url: str) -> None:
    with pytest.raises(Unavailable, match='invalid sslmode value: "bogus"'):
        _open(f"{pg_url}?sslmode=bogus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_retried_until_the_wait_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pg_store, "CONNECT_WAIT_S", 1.0)
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/offload"
    start = time.monotonic()
    with pytest.raises(Unavailable, match="Connection refused"):
        _open(url)
    assert 0.5 < time.monotonic() - start < 10


class _LateProxy:
    """A loopback TCP proxy to the real server that starts listening only after ``delay``:
    a database that comes up after the process that needs it."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.port = _free_port()
        self._target = target_port
        self._delay = delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        time.sleep(self._delay)
        with socket.create_server(("127.0.0.1", self.port)) as server:
            server.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(("127.0.0.1", self._target))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_a_server_that_comes_up_later_is_waited_for(pg_url: str) -> None:
    proxy = _LateProxy(int(urlparse(pg_url).port or 5432), delay=1.5)
    try:
        took = _open(_with(pg_url, port=proxy.port))
    finally:
        proxy.stop()
    assert 1.0 < took < 20


def test_the_cli_names_the_missing_database_in_one_line(pg_url: str) -> None:
    url = _with(pg_url, path="/no_such_db")
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "offload.cli", "task", "list", "--database-url", url],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - start < 20
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0] == (
        f"error: cannot connect to PostgreSQL at 127.0.0.1:{urlparse(url).port}/no_such_db: "
        'database "no_such_db" does not exist'
    )
