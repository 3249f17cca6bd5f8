"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

``OffloadError`` keeps its ``http_status``; request validation becomes 422 naming the
field (400 when the body is not JSON at all); unknown routes and methods keep 404/405; a
bug is a logged 500 with no internals in the body.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from offload.core.auth import Unauthenticated
from offload.domain.errors import OffloadError, summarize, validation_items

log = logging.getLogger("offload.api")


class RateLimited(OffloadError):
    """Too many submits for this token; retry after ``retry_after_s``."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, retry_after_s: float, rate: float, burst: float) -> None:
        wait = max(1, math.ceil(retry_after_s))
        super().__init__(
            f"submit rate limit reached ({rate:g}/s, burst {burst:g}); retry in {wait}s",
            details={"retry_after_s": wait, "rate_per_s": rate, "burst": burst},
        )
        self.retry_after = wait


class ErrorBody(BaseModel):
    """What went wrong: a stable ``code``, a message for people, structured ``details``."""

    code: str = Field(description="stable machine-readable code, e.g. not_found, stale_lease")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    """The body of every non-2xx answer."""

    error: ErrorBody


_DESCRIPTIONS = {
    400: "Malformed request (body is not JSON)",
    401: "Missing, unknown or revoked bearer token",
    403: "The token's role may not do this",
    404: "No such resource (or not yours)",
    409: "The current state refuses it (illegal transition, stale lease)",
    413: "Body, input or batch over a limit",
    422: "Invalid field (the message names it)",
    429: "Submit rate limit reached (see Retry-After)",
    503: "The database is unreachable or the server is shutting down",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for ``codes`` with the error body."""
    return {c: {"model": ErrorResponse, "description": _DESCRIPTIONS[c]} for c in codes}


#: Statuses any authenticated route may answer.
COMMON = (400, 401, 403, 422, 429, 503)


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    """A JSON error answer."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status)


def validation_details(errors: list[Any]) -> tuple[str, dict[str, Any]]:
    """A one-line message naming the fields, and ``details`` with every error."""
    items = validation_items(errors)
    details: dict[str, Any] = {"errors": items}
    if items:
        details["field"] = items[0]["field"]
    return f"invalid request: {summarize(items, 5)}", details


async def _offload_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OffloadError)
    response = error_response(exc.http_status, exc.code, exc.message, exc.details)
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        ctx = bad_json[0].get("ctx") or {}
        why = ctx.get("error") or bad_json[0].get("msg", "")
        return error_response(
            400, "invalid_json", f"request body is not valid JSON: {why}", {"field": "body"}
        )
    if isinstance(exc.body, bytes | bytearray) and exc.body:
        # A body that was not read as JSON: its Content-Type is missing or another type.
        # (Refusing to guess keeps browsers' no-preflight requests out: CSRF on localhost.)
        return error_response(
            400,
            "invalid_json",
            "send the body as JSON with the header 'Content-Type: application/json'",
            {"field": "body", "content_type": request.headers.get("content-type")},
        )
    message, details = validation_details(errors)
    return error_response(422, "invalid_input", message, details)


async def _pydantic_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    message, details = validation_details(list(exc.errors(include_url=False)))
    return error_response(422, "invalid_input", message, details)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path} (see /openapi.json)"
    response = error_response(exc.status_code, code, message)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal server error (logged on the server)")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(OffloadError, _offload_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _pydantic_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
