"""Secure execution of model-written code: the kernel is the trust boundary (see DESIGN.md,
"Code rewards"). ``run_tests(code, CallTests(...))`` is the one call most users need.

Layout: ``layers.py`` (Linux primitives), ``worker.py`` (the pre-forked zygote and the child),
``pool.py`` (slots and the batch API), ``judge.py`` (verdicts), ``values.py`` (typed JSON),
``attacks.py`` (the adversarial programs every machine should stop).
"""

from r1lab.sandbox.judge import CallTests, Label, Verdict, judge_calls, judge_stdout, run_tests, run_tests_many
from r1lab.sandbox.layers import Layers, Limits
from r1lab.sandbox.pool import Execution, Program, Sandbox, default_sandbox

__all__ = [
    "CallTests", "Execution", "Label", "Layers", "Limits", "Program", "Sandbox", "Verdict",
    "default_sandbox", "judge_calls", "judge_stdout", "run_tests", "run_tests_many",
]
