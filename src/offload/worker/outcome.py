"""How an attempt ended, decided in one place (PRODUCT.md §4.3-4.4, STYLE.md §5).

Every attempt the worker runs ends in exactly one :class:`Completion` or :class:`Failure`
built here, whatever way it ended: a returned value, an exception, a timeout or a cancel
or pause request. The store then applies the retry rule to failures.
"""

from __future__ import annotations

import math
import traceback
from typing import Any

import orjson
from pydantic import BaseModel

from offload.domain.errors import Fatal, InvalidInput, Retry
from offload.domain.models import (
    MAX_TRACEBACK_CHARS,
    NOT_FINITE,
    Completion,
    ErrorInfo,
    Failure,
    clip_message,
    clip_traceback,
    strict_json,
)
from offload.domain.rules import result_too_large

#: Tracebacks are stored with the error; keep the tail (where the cause is) within this size.
TRACEBACK_LIMIT = MAX_TRACEBACK_CHARS

_SCALARS = (str, int, float, bool, type(None))


def attempt_outcome(
    task_id: str,
    lease_id: str,
    *,
    result: Any = None,
    error: BaseException | None = None,
    cancelled: bool = False,
    timeout_s: float | None = None,
    max_result_bytes: int | None = None,
) -> Completion | Failure:
    """The report for one finished attempt.

    Precedence: a cancel or pause request (``cancelled``) wins, then a timeout (``timeout_s``
    set when the attempt ran out of time), then an exception (``error``), then the result.
    A result that is not JSON, or whose JSON is over ``max_result_bytes``, fails the attempt
    (``InvalidResult``, not retried: the handler would return the same again).
    """
    if cancelled:
        # The store turns this into `cancelled` or `paused`: the task carries the request.
        return _failure(task_id, lease_id, "Cancelled", "stopped on a cancel or pause request")
    if timeout_s is not None:
        return _failure(
            task_id, lease_id, "Timeout", f"attempt exceeded its timeout of {timeout_s:g}s"
        )
    if error is not None:
        return _error_failure(task_id, lease_id, error)
    try:
        value = to_json(result, max_result_bytes)
    except TypeError as exc:
        return _failure(
            task_id,
            lease_id,
            "InvalidResult",
            f"the handler returned a value that is not JSON: {exc}",
            retryable=False,
        )
    except ResultTooLarge as exc:
        return _failure(task_id, lease_id, "InvalidResult", str(exc), retryable=False)
    return Completion(task_id=task_id, lease_id=lease_id, result=value)


class ResultTooLarge(ValueError):
    """A result whose JSON is over the limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(result_too_large(size, limit))


def to_json(value: Any, max_bytes: int | None = None) -> Any:
    """``value`` as plain JSON data (pydantic models dumped); ``TypeError`` if it has none,
    :class:`ResultTooLarge` if its JSON is over ``max_bytes``."""
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            raise TypeError(f"it {NOT_FINITE}")
        # Only a long string can be over a limit (escapes take up to 6 bytes a character).
        if max_bytes is not None and isinstance(value, str) and len(value) * 6 > max_bytes:
            size = len(orjson.dumps(value))
            if size > max_bytes:
                raise ResultTooLarge(size, max_bytes)
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    # A round trip through orjson turns tuples, dataclasses, datetimes, UUIDs, numpy scalars…
    # into JSON once here, so the store never meets a value it cannot encode.
    try:
        text = strict_json(value, orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from None
    except ValueError as exc:
        raise TypeError(f"it {exc}") from None
    if max_bytes is not None and len(text) > max_bytes:
        raise ResultTooLarge(len(text), max_bytes)
    return orjson.loads(text)


def _error_failure(task_id: str, lease_id: str, error: BaseException) -> Failure:
    message = _message(error)
    if isinstance(error, Retry):
        return _failure(task_id, lease_id, "Retry", message, retry_delay_s=error.delay_s)
    if isinstance(error, Fatal | InvalidInput):
        return _failure(
            task_id,
            lease_id,
            type(error).__name__,
            message,
            retryable=False,
            tb=format_traceback(error),
        )
    return _failure(task_id, lease_id, type(error).__name__, message, tb=format_traceback(error))


def _failure(
    task_id: str,
    lease_id: str,
    kind: str,
    message: str,
    *,
    retryable: bool = True,
    retry_delay_s: float | None = None,
    tb: str | None = None,
) -> Failure:
    return Failure(
        task_id=task_id,
        lease_id=lease_id,
        error=ErrorInfo(type=kind, message=message, traceback=tb, retryable=retryable),
        retry_delay_s=retry_delay_s,
    )


def _message(error: BaseException) -> str:
    try:
        text = str(error) or type(error).__name__
    except Exception:  # a broken __str__ must not cost the attempt its outcome
        text = f"{type(error).__name__} (its message could not be read)"
    return clip_message(text)


def format_traceback(error: BaseException) -> str:
    """The formatted traceback, its tail kept when longer than :data:`TRACEBACK_LIMIT`."""
    return clip_traceback("".join(traceback.format_exception(error)))
