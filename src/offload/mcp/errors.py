"""Tool errors an agent can act on: what was wrong and how to fix the call.

Every failure a tool anticipates comes back as an MCP tool result with ``isError`` set, a
text that ends with how to fix the call, and ``_meta["offload/error"] = {code, message,
details, hint}`` (the body the REST API and ``--json`` use, plus the hint).

Errors carry no ``structuredContent``: the TypeScript SDK (Claude Desktop, Claude Code and
most clients) validates it against the tool's output schema even when ``isError`` is set, so
an error body there would replace the helpful message with a schema complaint.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError

from offload.domain.errors import OffloadError, UnknownTaskType

#: The ``_meta`` key of a tool error's machine-readable body.
ERROR_META_KEY = "offload/error"

#: Hints for error codes whose messages do not say how to fix the call themselves.
_HINTS: dict[str, str] = {
    "not_found": (
        "check the task id (copy it from the answer of submit_agent_task or get_agent_tasks); "
        "you only see tasks you submitted"
    ),
    "illegal_transition": "get_task_status shows where the task stands now",
    "conflict": "get_task_status shows where the task stands now",
    "invalid_dependency": (
        "depends_on must name existing tasks (or, in submit_workflow, other steps' refs) "
        "without cycles"
    ),
    "too_large": (
        "send less: a smaller input, fewer tasks, or store big data elsewhere and pass a reference"
    ),
    "unavailable": (
        "Offload's database or server is unreachable; try again shortly, or ask the user to "
        "check OFFLOAD_URL / OFFLOAD_DATABASE_URL"
    ),
    "unauthenticated": (
        "the token is missing, unknown or revoked; ask the user to configure OFFLOAD_TOKEN "
        "(or the Authorization header of the MCP server entry)"
    ),
    "forbidden": (
        "this token is not allowed to do that; ask the user for a token with the right role"
    ),
    "rate_limited": "too many calls; wait a little and try again",
    "invalid_input": "correct what the message names and call again",
}

#: Argument names agents reach for, and the one each tool takes instead.
_ALIASES: dict[str, str] = {
    "parameters": "input",
    "params": "input",
    "args": "input",
    "arguments": "input",
    "type": "task_type",
    "name": "task_type",
    "id": "task_id",
    "timeout": "timeout_s",
    "steps": "tasks",
}

# Segments pydantic adds to an error's location for union members ("literal['low']", "int").
_UNION_TAG = re.compile(r"[\[\-]|^(int|str|float|bool|none|dict|list)$")


def error_result(
    message: str,
    *,
    code: str,
    hint: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> CallToolResult:
    """An ``isError`` tool result: the message, then how to fix the call."""
    text = message if not hint else f"{message}\nHow to fix: {hint}"
    body = {"code": code, "message": message, "details": dict(details or {}), "hint": hint}
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        is_error=True,
        _meta={ERROR_META_KEY: body},
    )


def offload_error_result(exc: OffloadError, *, hint: str | None = None) -> CallToolResult:
    """An :class:`OffloadError` as a tool error, with a hint for its code."""
    message = " ".join(exc.message.split())
    if isinstance(exc, UnknownTaskType):
        name = exc.details.get("type")
        suggestions = list(exc.details.get("suggestions") or [])
        message = f"unknown task type {name!r}"
        if suggestions:
            message += f"; did you mean {' or '.join(repr(s) for s in suggestions)}?"
        first = (
            f"use task_type={suggestions[0]!r} if that is what you meant; " if suggestions else ""
        )
        hint = hint or first + "call list_task_types to see every type and its input schema"
    if hint is None:
        hint = exc.details.get("hint") if isinstance(exc.details.get("hint"), str) else None
    if hint is None and str(exc.details.get("field") or "").startswith("input"):
        hint = "make the input match the type's input_schema (list_task_types shows it)"
    return error_result(
        message, code=exc.code, hint=hint or _HINTS.get(exc.code), details=exc.details
    )


def _clean_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_TAG.search(part):
            out += f".{part}" if out else part
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``(path, problem)`` per invalid argument; union members are folded into one line."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for err in exc.errors():
        grouped.setdefault(_clean_path(err["loc"]), []).append(dict(err))
    out: list[tuple[str, str]] = []
    for path, errs in grouped.items():
        first = errs[0]
        if first["type"] == "missing":
            problem = "is required but missing"
        elif first["type"] == "extra_forbidden":
            problem = "is not an accepted field"
        elif len(errs) > 1:
            problem = f"has a value that is not accepted (got {_shown(first.get('input'))})"
        else:
            msg = str(first["msg"])
            problem = f"{msg[:1].lower()}{msg[1:]} (got {_shown(first.get('input'))})"
        out.append((path or "arguments", problem))
    return out


def argument_error_result(
    tool: str, exc: ValidationError, input_schema: Mapping[str, Any] | None
) -> CallToolResult:
    """Arguments that fail a tool's input schema, named one by one with their meaning."""
    props: Mapping[str, Any] = (input_schema or {}).get("properties", {})
    lines = []
    fields = []
    for path, problem in validation_errors(exc):
        top = re.split(r"[.\[]", path, maxsplit=1)[0]
        fields.append(path)
        line = f"- {path} {problem}"
        desc = props.get(top, {}).get("description")
        if desc:
            line += f". {top}: {desc}"
        lines.append(line)
    message = f"invalid arguments for {tool}:\n" + "\n".join(lines)
    return error_result(
        message,
        code="invalid_arguments",
        hint="correct the arguments named above and call the tool again",
        details={"tool": tool, "fields": fields},
    )


def unknown_arguments_result(
    tool: str, unknown: list[str], input_schema: Mapping[str, Any]
) -> CallToolResult:
    """Arguments the tool does not take (they would be silently ignored otherwise)."""
    accepted = list(input_schema.get("properties", {}))
    parts = []
    for name in unknown:
        guess = _ALIASES.get(name) if _ALIASES.get(name) in accepted else None
        close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
        guess = guess or (close[0] if close else None)
        parts.append(f"{name!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
    return error_result(
        f"{tool} does not take the argument(s) {', '.join(parts)}",
        code="invalid_arguments",
        hint=f"{tool} takes: {', '.join(accepted)}",
        details={"tool": tool, "unknown": unknown, "accepted": accepted},
    )


def unknown_tool_result(name: str, tools: list[str]) -> CallToolResult:
    """A call to a tool this server does not have."""
    close = difflib.get_close_matches(name, tools, n=1, cutoff=0.5)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return error_result(
        f"no tool named {name!r}{guess}",
        code="unknown_tool",
        hint=f"the tools are: {', '.join(sorted(tools))}",
        details={"tool": name},
    )
