"""Sandbox cost: overhead per execution of a trivial program, throughput of the pool, and HumanEval.

    python benchmarks/sandbox.py [--runs 500] [--workers N]

Overhead is the judge's wall time for one ``Sandbox.run`` of ``pass`` (judge -> worker -> shim ->
child -> verdict bytes back), sequential, after a warm-up. Throughput is ``run_many`` of the same
program over all slots. HumanEval: the 164 canonical solutions judged as one batch (test
extraction, done once per process, is timed separately). Targets (issue 4): p50 <= 10 ms,
p99 <= 25 ms, >= 150 executions/s on 2 cores. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from r1lab.sandbox import Program, Sandbox  # noqa: E402
from r1lab.sandbox import pool as sandbox_pool  # noqa: E402


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    start = time.perf_counter()
    box = Sandbox(workers=args.workers)
    startup_s = time.perf_counter() - start
    sandbox_pool._default = box  # the HumanEval task uses the process-wide pool: make it this one
    trivial = Program("pass")
    for _ in range(20):
        box.run(trivial)
    lat = []
    for _ in range(args.runs):
        t = time.perf_counter()
        ex = box.run(trivial)
        lat.append((time.perf_counter() - t) * 1000)
        assert ex.exit_code == 0
    t = time.perf_counter()
    batch = box.run_many([trivial] * (args.runs * 2))
    exec_per_s = len(batch) / (time.perf_counter() - t)
    assert all(e.exit_code == 0 for e in batch)

    from r1lab.tasks.humaneval import HumanEvalTask

    task = HumanEvalTask()
    examples = task.all_examples()
    t = time.perf_counter()
    task.tests(task.problems[0])
    extract_s = time.perf_counter() - t
    t = time.perf_counter()
    verdicts = task.verdicts([ex.answer for ex in examples], examples)
    he_s = time.perf_counter() - t
    he_passed = sum(v.ok for v in verdicts)
    workers = box.workers
    box.close()

    result = {
        "p50_ms": round(statistics.median(lat), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "exec_per_s": round(exec_per_s, 1),
        "humaneval_passed": he_passed,
        "humaneval_total": len(examples),
        "humaneval_s": round(he_s, 2),
        "humaneval_per_s": round(len(examples) / he_s, 1),
        "humaneval_extract_s": round(extract_s, 2),
        "startup_s": round(startup_s, 3),
        "workers": workers,
        "cores": os.cpu_count(),
        "mode": box.mode,
    }
    print(box.layers.summary())
    print(f"{'measure':34s} {'value':>10s}  target")
    rows = [
        ("overhead p50 (ms, trivial program)", result["p50_ms"], "<= 10"),
        ("overhead p99 (ms)", result["p99_ms"], "<= 25"),
        (f"throughput (exec/s, {workers} workers)", result["exec_per_s"], ">= 150"),
        ("HumanEval canonical passed", f"{he_passed}/{len(examples)}", "164/164"),
        ("HumanEval judge time (s)", result["humaneval_s"], ""),
        ("HumanEval test extraction (s)", result["humaneval_extract_s"], "once per process"),
        ("pool start-up (s)", result["startup_s"], ""),
    ]
    for name, value, target in rows:
        print(f"{name:34s} {value!s:>10s}  {target}")
    print(f"threads: 1 judge thread, {workers} worker processes; cores: {os.cpu_count()}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
