"""Errors with stable codes. Adapters map ``http_status`` and ``code`` to their wire format."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class OffloadError(Exception):
    """Base of every error Offload raises on purpose. ``code`` is stable; messages may change."""

    code: str = "error"
    http_status: int = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The ``{"code", "message", "details"}`` body used by the API, CLI ``--json`` and MCP."""
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(OffloadError):
    """The caller sent something malformed; the message names the field and the fix."""

    code = "invalid_input"
    http_status = 422

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        d = dict(details or {})
        if field is not None:
            d.setdefault("field", field)
        super().__init__(message, details=d)
        self.field = field


class UnknownTaskType(InvalidInput):
    """Submitting a type nobody registered."""

    code = "unknown_task_type"

    def __init__(self, name: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(
            f"unknown task type {name!r}{hint} (run `offload types` to list them)",
            field="type",
            details={"type": name, "suggestions": suggestions},
        )


class DependencyError(InvalidInput):
    """A ``depends_on`` that names an unknown task, the task itself, or closes a cycle."""

    code = "invalid_dependency"


class NotFound(OffloadError):
    """No such task (or not yours)."""

    code = "not_found"
    http_status = 404

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found", details={"kind": kind, "id": ident})


class Conflict(OffloadError):
    """The request is well formed but the current state refuses it."""

    code = "conflict"
    http_status = 409


class IllegalTransition(Conflict):
    """A lifecycle move the transition table forbids (complete a cancelled task, …)."""

    code = "illegal_transition"

    def __init__(self, task_id: str, current: str, target: str, why: str | None = None) -> None:
        super().__init__(
            f"task {task_id} is {current}; " + (why or f"it cannot become {target}"),
            details={"task_id": task_id, "status": current, "target": target},
        )


class StaleLease(Conflict):
    """The lease presented has expired or the task was re-claimed; the result is discarded."""

    code = "stale_lease"

    def __init__(self, task_id: str, lease_id: str | None) -> None:
        super().__init__(
            f"lease {lease_id} on task {task_id} is no longer valid (expired or re-claimed)",
            details={"task_id": task_id, "lease_id": lease_id},
        )


class TooLarge(OffloadError):
    """Body, input or list over a limit."""

    code = "too_large"
    http_status = 413


class WaitTimeout(OffloadError):
    """``wait`` gave up before the task finished; the task itself goes on."""

    code = "wait_timeout"
    http_status = 408

    def __init__(self, task_id: str, status: str, timeout: float) -> None:
        super().__init__(
            f"task {task_id} is still {status} after {timeout:g}s",
            details={"task_id": task_id, "status": status, "timeout": timeout},
        )


class Unavailable(OffloadError):
    """A backend or server cannot be reached right now; retry later."""

    code = "unavailable"
    http_status = 503


class Fatal(Exception):
    """Raise from a handler to fail the task at once, with no retry."""

    retryable = False


class Retry(Exception):
    """Raise from a handler to ask for another attempt (optionally after ``delay_s``)."""

    retryable = True

    def __init__(self, message: str = "retry requested", *, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


def validation_items(
    errors: Iterable[Mapping[str, Any]], *, extra: str = "unexpected field", empty: str = "body"
) -> list[dict[str, str]]:
    """One ``{field, message, type}`` per pydantic error: the field as a dotted path
    (without the ``body``/``query``/… prefix a request adds; ``empty`` for the whole value),
    the message without pydantic's "Value error, " prefix; ``extra`` says what an unknown
    field is called."""
    items = []
    for err in errors:
        kind = str(err.get("type", ""))
        msg = extra if kind == "extra_forbidden" else str(err.get("msg", ""))
        parts = [str(p) for p in err.get("loc", ())]
        if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
            parts = parts[1:]
        items.append(
            {
                "field": ".".join(parts) or empty,
                "message": msg.removeprefix("Value error, "),
                "type": kind,
            }
        )
    return items


def summarize(items: list[dict[str, str]], limit: int) -> str:
    """``field: message; …`` for the first ``limit`` items, then how many more."""
    shown = "; ".join(f"{i['field']}: {i['message']}" for i in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
