"""Where the node's time and randomness come from.

Rules of this module:

1. ``caseway.protocol`` never reads the clock or draws randomness (BRIEF §1). The node does,
   in exactly one place: a :class:`Clock` and a :class:`RandomSource` handed to each
   component at construction. No component calls ``time.time()`` or ``os.urandom`` itself.
2. Wall-clock time is integer Unix seconds, the unit the protocol and the database use.
   ``monotonic`` is only for measuring intervals in memory (rate limiting, request
   durations); it is never stored.
3. Tests inject :class:`FakeClock` and :class:`SeededRandom`, so a retry schedule spanning
   days can be asserted without sleeping, and a run can be repeated exactly.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> int:
        """Wall-clock Unix time in whole seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going backwards (intervals only)."""
        ...


class RandomSource(Protocol):
    def bytes(self, n: int) -> bytes:
        """``n`` unpredictable bytes (message ids, sealed-box ephemeral keys, nonces)."""
        ...

    def uniform(self) -> float:
        """A float in [0, 1) for retry jitter (need not be cryptographic, but is)."""
        ...


class SystemClock:
    def now(self) -> int:
        return int(time.time())

    def monotonic(self) -> float:
        return time.monotonic()


class SystemRandom:
    def bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def uniform(self) -> float:
        return int.from_bytes(os.urandom(7), "big") / float(1 << 56)


class FakeClock:
    """A clock that moves only when told to. ``monotonic`` follows ``now``."""

    def __init__(self, start: int) -> None:
        self._now = start
        self._offset = 0.0

    def now(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return float(self._now) + self._offset

    def advance(self, seconds: float) -> None:
        whole = int(seconds)
        self._now += whole
        self._offset += seconds - whole

    def set(self, now: int) -> None:
        if now < self._now:
            raise ValueError("a FakeClock never goes backwards")
        self._now = now


class SeededRandom:
    """Deterministic bytes from BLAKE2b in counter mode over a seed: tests only.

    Never use it in a running node; message ids and ephemeral keys would be predictable.
    """

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0

    def bytes(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            self._counter += 1
            out += hashlib.blake2b(self._counter.to_bytes(8, "big"), key=self._seed[:64],
                                   digest_size=64).digest()
        return bytes(out[:n])

    def uniform(self) -> float:
        return int.from_bytes(self.bytes(7), "big") / float(1 << 56)
