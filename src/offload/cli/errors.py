"""How the CLI reports failures: one line on stderr, an optional hint, an exit code.

``main()`` calls :func:`describe` for every expected exception; commands raise
(:class:`CliError` or an ``OffloadError``) and never print errors themselves.
"""

from __future__ import annotations

import json
from typing import Any

#: Exit codes: 0 ok, 1 user error or unsuccessful task, 2 usage error (Typer's own).
EXIT_ERROR = 1
EXIT_USAGE = 2

_HINTS: dict[str, str] = {
    "not_found": "run `offload task list` to see task ids",
    "wait_timeout": "the task goes on; `offload task wait ID` waits again",
    "unavailable": "check OFFLOAD_URL / OFFLOAD_DATABASE_URL, then try again",
}


#: Where to look for what was not found, by kind (tasks: the default hint).
_NOT_FOUND_HINTS: dict[str, str] = {
    "resource": "run `offload resource list` to see resources",
    "limit": "run `offload limit list` to see limited task types",
    "schedule": "run `offload schedule list` to see schedules",
}


class CliError(Exception):
    """An error the CLI itself detects (bad option value, missing file, failed task…)."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        exit_code: int = EXIT_ERROR,
        code: str = "cli_error",
        details: dict[str, Any] | None = None,
        reported: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.code = code
        self.details: dict[str, Any] = details or {}
        #: True when the command already wrote its ``--json`` answer (a failed task's record).
        self.reported = reported


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _validation_message(exc: Any) -> str:
    # pydantic.ValidationError, imported lazily by the caller.
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        msg = "unexpected field" if err.get("type") == "extra_forbidden" else err.get("msg", "")
        parts.append(f"{loc}: {msg}")
    more = exc.error_count() - len(parts)
    tail = f" (+{more} more)" if more > 0 else ""
    return f"invalid {exc.title}: " + "; ".join(parts) + tail


def describe(exc: BaseException) -> tuple[dict[str, Any], str | None, int] | None:
    """``({code, message, details}, hint, exit_code)`` for an expected error, else None.

    None means "a bug": the caller lets it propagate with its traceback.
    """
    from pydantic import ValidationError

    from offload.domain.errors import OffloadError

    if isinstance(exc, CliError):
        body = {"code": exc.code, "message": _one_line(exc.message), "details": exc.details}
        return body, exc.hint, exc.exit_code
    if isinstance(exc, OffloadError):
        body = exc.to_dict()
        body["message"] = _one_line(exc.message)
        hint = exc.details.get("hint") if isinstance(exc.details.get("hint"), str) else None
        if hint is None and exc.code == "not_found":
            hint = _NOT_FOUND_HINTS.get(str(exc.details.get("kind")))
        return body, hint or _HINTS.get(exc.code), EXIT_ERROR
    if isinstance(exc, ValidationError):
        body = {
            "code": "invalid_input",
            "message": _validation_message(exc),
            "details": {"errors": json.loads(exc.json(include_url=False))},
        }
        return body, None, EXIT_ERROR
    if isinstance(exc, json.JSONDecodeError):
        msg = f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        return {"code": "invalid_json", "message": msg, "details": {}}, None, EXIT_ERROR
    if isinstance(exc, FileNotFoundError):
        msg = f"no such file: {exc.filename}" if exc.filename else _one_line(str(exc))
        return {"code": "file_not_found", "message": msg, "details": {}}, None, EXIT_ERROR
    if isinstance(exc, OSError):
        what = exc.strerror or type(exc).__name__
        msg = f"{what}: {exc.filename}" if exc.filename else _one_line(f"{what}: {exc}")
        return {"code": "os_error", "message": msg, "details": {}}, None, EXIT_ERROR
    return None
