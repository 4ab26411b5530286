"""Token buckets keyed by peer address or sender participant (SPEC.md "Federation endpoint").

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; each
request takes one. Buckets live in memory only: a restart forgives everyone, which is the
safe direction. The table is bounded so that a flood of distinct keys (spoofed senders,
many addresses) cannot grow memory without limit: when it is full, buckets that have
refilled completely carry no information and are dropped first, and if none has, the
least recently used half goes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 10_000


class RateLimiter:
    def __init__(self, *, rate: float, burst: float, monotonic: Callable[[], float],
                 max_keys: int = MAX_KEYS) -> None:
        self._rate = rate
        self._burst = burst
        self._monotonic = monotonic
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, key: str) -> bool:
        """Take a token for ``key``; ``False`` if its bucket is empty."""
        now = self._monotonic()
        tokens, at = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self._max_keys:
            self._evict(now)
        self._buckets[key] = (tokens, now)
        return allowed

    def _evict(self, now: float) -> None:
        full = [k for k, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self._rate >= self._burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            while len(self._buckets) > self._max_keys // 2:
                self._buckets.popitem(last=False)
