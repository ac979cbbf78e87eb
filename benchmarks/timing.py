"""Timing shared by the benchmark scripts (run as `python benchmarks/<name>.py`, so this folder is
on sys.path): the median of repeats after one warm-up call, as DESIGN.md's measurement contract asks."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
