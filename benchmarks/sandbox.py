"""Sandbox cost: overhead per execution of a trivial program, throughput of the pool, HumanEval,
and the cost of each layer.

    python benchmarks/sandbox.py [--runs 500] [--workers N] [--layer-runs 150] [--no-layers]

Overhead is the judge's wall time for one ``Sandbox.run`` of ``pass`` (judge -> worker -> shim ->
child -> verdict bytes back), sequential, after a warm-up. Throughput is ``run_many`` of the same
program over all slots. HumanEval: the 164 canonical solutions judged as one batch (test
extraction, done once per process, is timed separately). Targets (issue 4): p50 <= 10 ms,
p99 <= 25 ms, >= 150 executions/s on 2 cores. Layer costs: the same trivial run with every layer
on, and with one layer turned off at a time (``Sandbox(disable=...)``), measured in interleaved
rounds so that a busy machine drifts all variants alike; a layer's cost is the p50 with it minus
the p50 without it. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import warnings
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


VARIANTS = ["all layers on", "seccomp", "landlock", "ipc namespace", "pid namespace", "minimal root", "cgroups"]


def layer_costs(runs: int, rounds: int = 3) -> dict[str, dict]:
    """p50/p99 of a trivial run per variant (each layer off alone), interleaved in ``rounds``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each variant is DEGRADED on purpose
        boxes = {name: Sandbox(workers=1, disable=set() if name == VARIANTS[0] else {name}) for name in VARIANTS}
    lat: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, float] = {name: 0.0 for name in VARIANTS}
    trivial = Program("pass")
    try:
        for box in boxes.values():
            for _ in range(10):
                box.run(trivial)
        for _ in range(rounds):
            for name, box in boxes.items():
                c = worker_cpu_s(box)
                for _ in range(runs // rounds):
                    t = time.perf_counter()
                    box.run(trivial)
                    lat[name].append((time.perf_counter() - t) * 1000)
                cpu[name] += worker_cpu_s(box) - c
    finally:
        for box in boxes.values():
            box.close()
    base = statistics.median(lat[VARIANTS[0]])
    per_run = {name: cpu[name] * 1000 / len(lat[name]) for name in VARIANTS}
    return {name: {"p50_ms": round(statistics.median(xs), 2), "p99_ms": round(percentile(xs, 99), 2),
                   "cost_ms": 0.0 if name == VARIANTS[0] else round(base - statistics.median(xs), 2),
                   "cpu_ms": round(per_run[name], 2), "cpu_cost_ms": round(per_run[VARIANTS[0]] - per_run[name], 2)}
            for name, xs in lat.items()}


def worker_cpu_s(box: Sandbox) -> float:
    """CPU seconds of a pool's workers and everything they reaped (shims, children): the cost of
    runs in CPU time, which a machine busy with other work inflates far less than wall time."""
    total = 0.0
    for slot in box._slots:
        with open(f"/proc/{slot.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--layer-runs", type=int, default=150, help="runs per variant for the layer costs")
    parser.add_argument("--no-layers", action="store_true", help="skip the cost of each layer")
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
    layers = {} if args.no_layers else layer_costs(args.layer_runs)

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
        "layer_cost_ms": {name: v["cost_ms"] for name, v in layers.items()},
        "layer_cpu_cost_ms": {name: v["cpu_cost_ms"] for name, v in layers.items()},
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
    if layers:
        print(f"\n{'layer (turned off alone)':28s} {'p50 ms':>8s} {'p99 ms':>8s} {'cost p50 ms':>12s} {'cpu ms/run':>11s} {'cost cpu ms':>12s}")
        for name, v in layers.items():
            print(f"{name:28s} {v['p50_ms']:8.2f} {v['p99_ms']:8.2f} {v['cost_ms']:12.2f} {v['cpu_ms']:11.2f} {v['cpu_cost_ms']:12.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
