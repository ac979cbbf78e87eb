"""Timing shared by the benchmark scripts (run as `python benchmarks/<name>.py`, so this folder is
on sys.path): the median of repeats after one warm-up call, as DESIGN.md's measurement contract asks."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_s(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """``clock=time.process_time`` measures the process's CPU seconds instead of wall seconds:
    on a shared machine they leave out the time spent waiting for a core."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)
