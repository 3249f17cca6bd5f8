"""Settings read from the environment (``OFFLOAD_*``), with the defaults of PRODUCT.md."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from offload.domain.errors import InvalidInput


def offload_home() -> Path:
    """``$OFFLOAD_HOME`` or ``~/.offload``."""
    return Path(os.environ.get("OFFLOAD_HOME") or Path.home() / ".offload")


def default_database_url() -> str:
    """``$OFFLOAD_DATABASE_URL`` or the embedded SQLite file under :func:`offload_home`."""
    url = os.environ.get("OFFLOAD_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{offload_home() / 'offload.db'}"


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(
            f"{name}={raw!r} is not a number; set a number or unset it", field=name
        ) from None


def _bytes_env(name: str, default: int) -> int:
    """A positive byte count from the environment (``4000000``, ``4e6``)."""
    value = _float_env(name, float(default))
    if not 1 <= value < 2**63:
        raise InvalidInput(f"{name} must be a positive number of bytes", field=name)
    return int(value)


@dataclass(frozen=True)
class Settings:
    """Runtime knobs; ``Settings.from_env()`` reads ``OFFLOAD_*``."""

    database_url: str = field(default_factory=default_database_url)
    url: str | None = None
    token: str | None = None
    lease_ttl_s: float = 30.0
    aging_interval_s: float = 60.0
    max_input_bytes: int = 1_000_000
    #: A result bigger than this (as JSON) is refused: the attempt fails with
    #: ``InvalidResult`` (bulky output belongs in an artifact). Under the server's request
    #: body limit, so one completion always fits in one request.
    max_result_bytes: int = 4_000_000
    imports: tuple[str, ...] = ()
    #: Agents heartbeat this often; one that misses three beats is marked offline.
    agent_heartbeat_s: float = 10.0

    @classmethod
    def from_env(cls) -> Settings:
        """Build settings from the process environment."""
        imports = tuple(
            m.strip() for m in os.environ.get("OFFLOAD_IMPORTS", "").split(",") if m.strip()
        )
        return cls(
            database_url=default_database_url(),
            url=os.environ.get("OFFLOAD_URL") or None,
            token=os.environ.get("OFFLOAD_TOKEN") or None,
            lease_ttl_s=_float_env("OFFLOAD_LEASE_TTL", 30.0),
            aging_interval_s=_float_env("OFFLOAD_AGING_INTERVAL", 60.0),
            imports=imports,
            agent_heartbeat_s=_float_env("OFFLOAD_AGENT_HEARTBEAT", 10.0),
            max_result_bytes=_bytes_env("OFFLOAD_MAX_RESULT_BYTES", cls.max_result_bytes),
        )
