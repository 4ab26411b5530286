"""Shared measurement helpers for the benchmark scripts (not a benchmark itself)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def pin_to_one_core() -> None:
    """Measure single-core cost: pin this process to the first CPU it may use."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def median_per_op(fn: Callable[[], object], n: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean seconds per call across ``n`` calls."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n)
    return statistics.median(samples)
