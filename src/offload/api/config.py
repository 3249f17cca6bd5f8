"""Settings of the HTTP server (``offload serve``), read from options or ``OFFLOAD_*``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from offload.domain.errors import InvalidInput

#: The loopback names a server may bind without auth.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: only this machine can connect."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_HOSTS:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    return raw in ("1", "true", "yes", "on")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(
            f"{name}={raw!r} is not a number; set a number or unset it", field=name
        ) from None


@dataclass(frozen=True)
class ApiSettings:
    """How the API behaves. ``ApiSettings.from_env()`` reads the ``OFFLOAD_*`` variables."""

    #: Require bearer tokens. Off, every request acts as a local admin (loopback only).
    auth: bool = False
    #: Per-token submit rate (requests per second) and burst (token bucket).
    submit_rate: float = 1000.0
    submit_burst: float = 2000.0
    #: Largest request body accepted (413 above it). Task input is capped at 1 MB by the
    #: service itself (``Settings.max_input_bytes``).
    max_body_bytes: int = 5_000_000
    #: Longest a long-poll (wait, watch, claims, changes) may hold a request.
    max_wait_s: float = 60.0
    #: How long a checked token stays trusted without another database lookup.
    token_cache_s: float = 5.0
    #: Concurrency of the embedded worker; 0 runs none (``--no-worker``).
    worker_concurrency: int = 0
    #: How long the embedded worker lets running tasks finish at shutdown.
    worker_grace_s: float = 10.0
    #: Lease length of the embedded worker (None: ``$OFFLOAD_LEASE_TTL`` or 30 s).
    worker_lease_ttl_s: float | None = None
    #: Seconds between maintenance passes (reaper, due tasks, deadlines).
    maintenance_interval_s: float = 1.0
    #: The address the server binds (the MCP mount uses it for its host checks).
    host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, **overrides: object) -> ApiSettings:
        """Defaults, then ``OFFLOAD_AUTH``, ``OFFLOAD_SUBMIT_RATE``, ``OFFLOAD_SUBMIT_BURST``,
        ``OFFLOAD_MAX_BODY_BYTES``, then ``overrides`` (None values are ignored)."""
        values: dict[str, object] = {}
        auth = _env_bool("OFFLOAD_AUTH")
        if auth is not None:
            values["auth"] = auth
        values["submit_rate"] = _env_float("OFFLOAD_SUBMIT_RATE", cls.submit_rate)
        values["submit_burst"] = _env_float("OFFLOAD_SUBMIT_BURST", cls.submit_burst)
        values["max_body_bytes"] = int(_env_float("OFFLOAD_MAX_BODY_BYTES", cls.max_body_bytes))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
