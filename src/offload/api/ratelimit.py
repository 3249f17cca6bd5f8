"""Per-token submit rate limit: a token bucket per key, in memory (one per server process)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBuckets:
    """``rate`` tokens per second up to ``burst``, per key; :meth:`take` spends one."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens of ``key``'s bucket: 0.0 when allowed, else the seconds
        to wait before the same call would be."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / self.rate
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            # Full buckets are the same as no bucket: forget them to bound memory.
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst}
        self._buckets[key] = (tokens - cost, now)
        return 0.0
