"""Time-sortable identifiers (UUIDv7 layout: 48-bit unix ms, version, random)."""

from __future__ import annotations

import random
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id() -> str:
    """A UUIDv7-style id; ids made later in one process sort after earlier ones."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            # Same (or earlier) millisecond: bump a 12-bit counter so ids stay monotonic.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = 0
        counter = _counter
    # Uniqueness comes from the clock and counter; the random tail separates processes, so
    # the module PRNG (seeded from the OS and reseeded after fork) is enough: no syscall.
    rand = random.getrandbits(62)
    # 48-bit ms | version 7 | 12-bit counter | variant 0b10 | 62 random bits, as hex groups.
    return "%08x-%04x-%04x-%04x-%012x" % (  # noqa: UP031 (one formatting step, no slicing)
        ms >> 16, ms & 0xFFFF, 0x7000 | counter, 0x8000 | (rand >> 48), rand & 0xFFFFFFFFFFFF
    )  # fmt: skip
