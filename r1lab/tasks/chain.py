"""Integer chains: apply a few operations left to right, e.g. ``7+5*2-3`` is ((7+5)*2)-3 = 21.

The default task of ``r1lab zero``. One step (``12*2=24``) is easy for a tiny model; the whole
chain in one shot is not. So a worked solution that writes every intermediate value is far more
accurate than a direct answer, which is what lets RL *select* reasoning (DeepSeek-R1-Zero's rising
response length) instead of having to invent it.

The question is the bare chain: every prompt character costs a tiny model context and compute,
and the left-to-right convention is the task's definition (the worked solutions spell it out).

The same problem: two chains with the same numbers and the same operators (as multisets) and the
same answer. That covers swapped commutative operands (``5+7*2-3`` and ``7+5*2-3``: same later
steps, same answer) and reordered steps (``2*3*4`` and ``2*4*3``); splitting on the question text
put half of the test questions next to such a twin in training. The key is deliberately coarse:
a coarser key can only hold more out, never leak.
"""

from __future__ import annotations

import random
import re

from r1lab.tasks.base import Example, ProceduralTask, parse_step

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
"one worked step, ``12*2=24`` (also read by countdown, which adds ``/``)"


class ChainTask(ProceduralTask):
    name = "chain"

    def __init__(self, min_ops: int = 3, max_ops: int = 3, max_value: int = 99):
        self.min_ops, self.max_ops, self.max_value = min_ops, max_ops, max_value

    def generate(self, rng: random.Random) -> Example:
        while True:  # reject chains whose running value leaves [0, max_value]
            value = rng.randint(1, 9)
            expr, steps = str(value), []
            for _ in range(rng.randint(self.min_ops, self.max_ops)):
                op, operand = rng.choice("+-*"), rng.randint(2, 9)
                new = _OPS[op](value, operand)
                if not 0 <= new <= self.max_value:
                    break
                steps.append(f"{value}{op}{operand}={new}")
                expr += f"{op}{operand}"
                value = new
            else:
                return Example(question=expr, answer=str(value), solution="\n".join(steps))

    def difficulty(self, example: Example) -> str | None:
        """The number of operations (min_ops .. max_ops; all 3 by default)."""
        return f"{sum(example.question.count(op) for op in _OPS)} ops"

    def key(self, example: Example) -> str:
        numbers = sorted(int(n) for n in re.findall(r"\d+", example.question))
        ops = sorted(re.findall(r"[-+*]", example.question))
        return f"chain {numbers} {''.join(ops)} = {example.answer.strip()}"

    def check(self, answer: str, example: Example) -> float:
        gold = example.answer.strip()
        if not re.fullmatch(r"-?\d+", gold):  # a reference that is not an integer passes nothing
            return 0.0
        return 1.0 if answer.strip() == gold else 0.0

    def step_checks(self, example: Example, steps: list[str]) -> list[bool | None] | None:
        """The k-th ``a op b = c`` line is right iff it is the chain's k-th operation applied to the
        right running value, with the right result; other lines are not judged (None)."""
        first = re.match(r"\d+", example.question)
        if first is None:
            return [None] * len(steps)
        ops = re.findall(r"([-+*])(\d+)", example.question[first.end():])
        values = [int(first.group())]
        for op, b in ops:
            values.append(_OPS[op](values[-1], int(b)))
        out: list[bool | None] = []
        k = 0
        for line in steps:
            step = parse_step(line)
            if step is None:
                out.append(None)
                continue
            a, op, b, c = step
            out.append(k < len(ops) and (a, op, str(b)) == (values[k], *ops[k]) and c == values[k + 1])
            k += 1
        return out
