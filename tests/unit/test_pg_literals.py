"""The PostgreSQL store's own literals are exactly psycopg's, for every value."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("psycopg")

from psycopg import DataError
from psycopg.adapt import Transformer

from offload.storage.postgres.store import sql_literal

LITERAL = Transformer().as_literal


def _same(value: Any) -> None:
    assert sql_literal(value, LITERAL) == LITERAL(value).decode(), value


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, 1, -1, 2**31, -(2**63), 2**64, 0.0, -0.0, 1.5, -2.25, 100.0,
        1796648596.4967759, 1e300, -1e-300, 5e-324, math.nan, math.inf, -math.inf,
        "", "abc", "it's", "''", "a\\b", "\\", "é ✓ 𝄞", "x\ny\tz", "-- not a comment",
        "E'x'", '"quoted"', "$$dollar$$",
    ],
)  # fmt: skip
def test_edge_values(value: Any) -> None:
    _same(value)


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()))
def test_any_scalar(value: Any) -> None:
    if isinstance(value, str) and "\x00" in value:
        # psycopg refuses NUL, which PostgreSQL text cannot hold; so do we (through it).
        with pytest.raises(DataError):
            sql_literal(value, LITERAL)
        return
    _same(value)


def test_other_types_go_to_psycopg() -> None:
    class Text(str):
        pass

    calls: list[Any] = []

    def fallback(value: Any) -> bytes:
        calls.append(value)
        return LITERAL(value)

    for value in (Text("x"), b"bytes", [1, 2]):
        assert sql_literal(value, fallback) == LITERAL(value).decode()
    assert len(calls) == 3
