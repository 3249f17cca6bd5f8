"""A throwaway PostgreSQL 15 cluster for tests, started from the machine's binaries.

``initdb`` refuses root, so as root the server runs as the ``postgres`` OS user in a
``mkdtemp`` directory chowned to it (pytest's own temp dirs are 0700 and block that user).
``OFFLOAD_TEST_POSTGRES_URL`` points the suite at an existing server instead.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

PG_BIN = Path(os.environ.get("OFFLOAD_PG_BIN", "/usr/lib/postgresql/15/bin"))
TEMPLATE = "offload_template"


def binaries_present() -> bool:
    """True when initdb and pg_ctl are installed."""
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid}


@dataclass
class PgCluster:
    """A running cluster (or an external server) and helpers to make test databases."""

    base_url: str
    datadir: Path | None = None
    root: Path | None = None
    port: int = 0
    fsync: bool = False
    _made: list[str] = field(default_factory=list)

    # -- lifecycle --------------------------------------------------------------
    @classmethod
    def start(cls, *, fsync: bool = False) -> PgCluster:
        """initdb + pg_ctl start on a free loopback port (≈ 1 s)."""
        root = Path(tempfile.mkdtemp(prefix="offload-pg-"))
        cred = _as_postgres()
        if cred:
            os.chown(root, int(cred["user"]), int(cred["group"]))  # type: ignore[call-overload]
        datadir = root / "data"
        subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(datadir), "--auth=trust", "--no-sync",
             "-U", "postgres", "-E", "UTF8"],
            check=True, capture_output=True, **cred,  # type: ignore[arg-type]
        )  # fmt: skip
        cluster = cls(base_url="", datadir=datadir, root=root, port=_free_port(), fsync=fsync)
        cluster.base_url = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        cluster.pg_ctl("start")
        return cluster

    def pg_ctl(self, action: str) -> None:
        """Run ``pg_ctl start|stop|restart`` on this cluster (waits for it)."""
        assert self.datadir is not None and self.root is not None
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            f"-c max_connections=200 -c shared_buffers=128MB "
            + ("" if self.fsync else "-c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off")
        )  # fmt: skip
        args = [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-w", "-t", "60",
                "-l", str(self.root / "server.log")]  # fmt: skip
        if action in ("start", "restart"):
            args += ["-o", opts]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        subprocess.run([*args, action], check=True, capture_output=True, **_as_postgres())  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop the server and remove its files (external servers: drop our databases)."""
        if self.datadir is None:
            for name in self._made:
                self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        try:
            self.pg_ctl("stop")
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)

    # -- databases --------------------------------------------------------------
    def url(self, dbname: str) -> str:
        """URL of a database on this server."""
        return urlunparse(urlparse(self.base_url)._replace(path=f"/{dbname}"))

    def sql(self, statement: str) -> None:
        """Run one statement in autocommit on the maintenance database."""
        import psycopg

        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(statement)

    def make_template(self) -> None:
        """Create and migrate the template database once."""
        from offload.storage import open_store

        self.sql(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{TEMPLATE}"')
        self._made.append(TEMPLATE)

        async def migrate() -> None:
            store = await open_store(self.url(TEMPLATE))
            await store.close()

        asyncio.run(migrate())

    def new_database(self) -> str:
        """A fresh, migrated database cloned from the template; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        self._made.append(name)
        return self.url(name)
