"""The simulator's rate limit: Backpack's per-account budget (docs/exchange.md §8)."""
from __future__ import annotations

import threading
import time
from typing import Callable


class RateLimiter:
    """Fixed one-minute windows per key: Backpack's 2000 requests/minute, 30 for historical data."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def check(self, key: str, limit: int | None = None) -> float | None:
        """None when allowed, else the seconds until the window resets."""
        limit = self.per_minute if limit is None else limit
        if limit <= 0:
            return None
        now = self._clock()
        with self._lock:
            start, n = self._windows.get(key, (now, 0))
            if now - start >= 60:
                start, n = now, 0
            if n >= limit:
                return max(0.0, 60 - (now - start))
            self._windows[key] = (start, n + 1)
        return None
