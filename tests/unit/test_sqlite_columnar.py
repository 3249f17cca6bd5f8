"""The SQLite column-wise bulk insert writes exactly what row-by-row inserts would."""

from __future__ import annotations

import math
import sqlite3

from offload.storage.sqlite.store import _insert_columnar

COLUMNS = ("a", "b", "c", "d")


def _table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, a TEXT, b REAL, c INTEGER, d TEXT)")
    return conn


def _rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT a, b, c, d, typeof(a), typeof(b), typeof(c) FROM t").fetchall()


def test_columnar_matches_executemany() -> None:
    rows = [
        (f'it\'s "{i}" ✓' if i % 3 else None, 0.1 * i if i % 2 else None, 2**62 + i, "same")
        for i in range(40)
    ]
    one, many = _table(), _table()
    assert _insert_columnar(one.cursor(), "t", COLUMNS, rows)
    many.executemany("INSERT INTO t (a, b, c, d) VALUES (?, ?, ?, ?)", rows)
    assert _rows(one) == _rows(many)
    assert [r[:4] for r in _rows(one)] == rows


def test_values_json_cannot_carry_fall_back() -> None:
    cur = _table().cursor()
    assert not _insert_columnar(cur, "t", COLUMNS, [("x", math.nan, 1, "d"), ("y", 1.0, 1, "d")])
    assert not _insert_columnar(cur, "t", COLUMNS, [("x", 1.0, 2**70, "d"), ("y", 1.0, 1, "d")])
    assert not _insert_columnar(cur, "t", COLUMNS, [("x", 1.0, 1, b"raw"), ("y", 1.0, 1, "d")])
    assert cur.execute("SELECT count(*) FROM t").fetchone() == (0,)
