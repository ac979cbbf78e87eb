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


def medians_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """``median_s`` of several functions, timed in turns (one warm-up each, then each repeat runs
    every function once), so that a load change on a shared machine hits all sides alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}
