"""Fast JSON answers: pydantic's Rust serializer straight to bytes.

Routes still declare their ``response_model`` (it documents the answer in OpenAPI); they
return these responses so the models are serialised once, without being validated again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.responses import Response

from offload.domain.models import Task

_TASKS: TypeAdapter[list[Task]] = TypeAdapter(list[Task])
_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def model(value: BaseModel, status_code: int = 200) -> Response:
    """One model as the whole body."""
    return Response(value.model_dump_json(), status_code=status_code, media_type="application/json")


def wrapped(key: str, items: Sequence[BaseModel], status_code: int = 200) -> Response:
    """``{key: [items…]}``."""
    body = b'{"' + key.encode() + b'":' + _ANY.dump_json(list(items)) + b"}"
    return Response(body, status_code=status_code, media_type="application/json")


def tasks(items: Sequence[Task], status_code: int = 200, key: str = "tasks") -> Response:
    """``{"tasks": [...]}``."""
    body = b'{"' + key.encode() + b'":' + _TASKS.dump_json(list(items)) + b"}"
    return Response(body, status_code=status_code, media_type="application/json")


def data(value: Any, status_code: int = 200) -> Response:
    """Any JSON-ready value (models anywhere inside are serialised as models)."""
    return Response(_ANY.dump_json(value), status_code=status_code, media_type="application/json")
