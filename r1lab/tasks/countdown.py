"""Countdown: reach a target with each given number used exactly once, e.g. ``Use 3 7 2 to make 23``.

The task of TinyZero (Pan et al. 2025, github.com/Jiayi-Pan/TinyZero), the smallest public
reproduction of DeepSeek-R1-Zero's "aha" dynamics: a verifiable answer (any expression that uses
exactly the given numbers and equals the target) with many valid solutions, so the model has to
search rather than recall.

Departures from TinyZero:

- Smaller numbers by default (1..20, target 1..100 instead of 1..99 and any reachable target), so
  that a tiny character-level model can do the arithmetic of one step. Both are constructor
  arguments.
- Instances are generated *backwards* from a random solution (combine two values with an
  operation, repeat), so every instance is solvable and comes with a worked solution, one step a
  line (``7*3=21`` then ``21+2=23``). Intermediate values stay positive integers, and ``/`` is
  only used when it divides exactly.
- The checker parses the answer with ``ast`` and a whitelist (``+ - * /``, parentheses, plain
  decimal integers) and evaluates it with exact fractions; TinyZero filters with a regex and calls
  ``eval`` on floats. Fractional intermediate values are accepted (``(8-8/4)*4``-style answers are
  right if exact), as in the 24 game; unary minus is not (each number must be used as given), and
  neither is ``= 23`` after the expression.

The same problem: the same multiset of numbers and the same target, whatever their order
(``Use 3 7 2 to make 23`` and ``Use 7 2 3 to make 23``): a twin's gold expression answers it.
Splitting on the question text gave 96.5% of test problems such a twin in training.
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from fractions import Fraction

from r1lab.tasks.base import Example, ProceduralTask, parse_step

# Longer answers cannot be a sensible expression over four small numbers; refusing them before
# parsing bounds the parser's work whatever the model writes.
MAX_ANSWER_CHARS = 100

_QUESTION_RE = re.compile(r"\AUse ((?:\d+ )*\d+) to make (\d+)\Z")
_ANSWER_CHARS_RE = re.compile(r"\A[0-9+\-*/() ]*\Z")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b  # ZeroDivisionError is the caller's to catch


def parse_question(question: str) -> tuple[list[int], int]:
    """The numbers and the target of a question ``Use 3 7 2 to make 23``."""
    match = _QUESTION_RE.match(question)
    if match is None:
        raise ValueError(f"not a countdown question: {question!r}")
    return [int(tok) for tok in match.group(1).split()], int(match.group(2))


def evaluate_expression(text: str) -> tuple[Fraction, list[int]]:
    """Value (exact) and the integer literals of an arithmetic expression over ``+ - * /``.

    Raises ValueError for anything else: other characters or operators, unary signs, calls,
    names, over-long text, division by zero. Never executes the text."""
    if len(text) > MAX_ANSWER_CHARS:
        raise ValueError(f"expression longer than {MAX_ANSWER_CHARS} characters")
    text = text.strip()
    # The character whitelist comes first: it rules out hex/underscore/unicode digit literals
    # that ``ast`` would happily turn into integers.
    if not text or not _ANSWER_CHARS_RE.match(text):
        raise ValueError("expression may only hold digits, + - * /, parentheses and spaces")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not an expression: {err.msg}") from None
    literals: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
            left, right = walk(node.left), walk(node.right)
            try:
                return _apply(_AST_OPS[type(node.op)], left, right)
            except ZeroDivisionError:
                raise ValueError("division by zero") from None
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals.append(node.value)
            return Fraction(node.value)
        raise ValueError(f"{type(node).__name__} is not allowed")

    return walk(tree.body), literals


def _render(node: tuple) -> tuple[str, int]:
    """Text of an expression tree with only the parentheses it needs, and its precedence."""
    if len(node) == 1:
        return str(node[0]), 3
    op, left, right = node
    (ltext, lprec), (rtext, rprec) = _render(left), _render(right)
    prec = _PRECEDENCE[op]
    if lprec < prec:
        ltext = f"({ltext})"
    # a-(b+c) and a/(b*c) need their parentheses; a+(b+c) and a*(b*c) do not.
    if rprec < prec or (rprec == prec and op in "-/"):
        rtext = f"({rtext})"
    return f"{ltext}{op}{rtext}", prec


class CountdownTask(ProceduralTask):
    name = "countdown"

    def __init__(self, n_numbers: int = 3, max_number: int = 20, max_target: int = 100):
        if n_numbers not in (3, 4):
            raise ValueError(f"countdown uses 3 or 4 numbers, got {n_numbers}")
        self.n_numbers, self.max_number, self.max_target = n_numbers, max_number, max_target

    def generate(self, rng: random.Random) -> Example:
        while True:  # reject the rare draws whose final value falls outside [1, max_target]
            numbers = [rng.randint(1, self.max_number) for _ in range(self.n_numbers)]
            # Each pool item: (value, expression tree); a tree is (n,) or (op, left, right).
            pool: list[tuple[int, tuple]] = [(n, (n,)) for n in numbers]
            steps = []
            while len(pool) > 1:
                (a, ta), (b, tb) = pool.pop(rng.randrange(len(pool))), pool.pop(rng.randrange(len(pool)))
                if a < b:  # keep subtraction results positive
                    (a, ta), (b, tb) = (b, tb), (a, ta)
                ops = ["+", "*"] + (["-"] if a > b else []) + (["/"] if a % b == 0 and b > 1 else [])
                op = rng.choice(ops)
                value = int(_apply(op, Fraction(a), Fraction(b)))
                steps.append(f"{a}{op}{b}={value}")
                pool.append((value, (op, ta, tb)))
            target, tree = pool[0]
            if 1 <= target <= self.max_target:
                question = f"Use {' '.join(map(str, numbers))} to make {target}"
                return Example(question=question, answer=_render(tree)[0], solution="\n".join(steps))

    def key(self, example: Example) -> str:
        numbers, target = parse_question(example.question)
        return f"countdown {sorted(numbers)} -> {target}"

    def check(self, answer: str, example: Example) -> float:
        try:
            numbers, target = parse_question(example.question)
        except ValueError:  # a question that cannot be parsed has no answer that passes
            return 0.0
        try:
            value, literals = evaluate_expression(answer)
        except ValueError:
            return 0.0
        return 1.0 if Counter(literals) == Counter(numbers) and value == target else 0.0

    def step_checks(self, example: Example, steps: list[str]) -> list[bool | None] | None:
        """An ``a op b = c`` line is right iff a and b are still on the table (the given numbers
        and earlier right results, each used once) and c is exactly a op b; a right step puts c on
        the table in place of a and b. Other lines are not judged (None)."""
        try:
            numbers, _ = parse_question(example.question)
        except ValueError:
            return [None] * len(steps)
        table = Counter(numbers)
        out: list[bool | None] = []
        for line in steps:
            step = parse_step(line)
            if step is None:
                out.append(None)
                continue
            a, op, b, c = step
            available = table[a] >= 1 and table[b] >= 1 and (a != b or table[a] >= 2)
            try:
                exact = _apply(op, Fraction(a), Fraction(b)) == c
            except ZeroDivisionError:
                exact = False
            out.append(available and exact)
            if available and exact:
                table -= Counter([a, b])
                table[c] += 1
        return out
