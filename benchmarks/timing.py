"""Timing shared by the benchmark scripts (run as `python benchmarks/<name>.py`, so this folder is
on sys.path): the median of repeats after one warm-up call, as DESIGN.md's measurement contract asks."""

from __future__ import annotations

import random
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


def medians_interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                        clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """``median_s`` of several functions, timed in turns (one warm-up each, then each repeat runs
    every function once, in an order shuffled per repeat from a fixed seed), so that a load
    change on a shared machine, or what a function leaves to the next (caches, freed memory),
    hits all sides alike."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        random.Random(r).shuffle(names)
        for name in names:
            t = clock()
            fns[name]()
            times[name].append(clock() - t)
    return {name: statistics.median(v) for name, v in times.items()}
