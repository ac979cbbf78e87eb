"""Worked solutions for reasoning-gym datasets whose metadata determines one, for the pretraining
corpus's worked style (``Example.solution``), as the procedural tasks have.

R1-Zero-style RL selects a solution style the base already uses sometimes (DESIGN.md, "the zero
demo"); a from-scratch base that never saw a worked solution has nothing to select. These
datasets carry enough metadata to write one, one short line per step, in the ``a op b = c`` form
the procedural tasks use:

    basic_arithmetic   the expression, evaluated one operation at a time (precedence, brackets)
    chain_sum          the terms, added left to right
    leg_counting       count x legs per animal, then the running total
    letter_counting    each word that holds the letter with its count, then the running total
    gcd                Euclid's algorithm on the (two) numbers
    base_conversion    the value in base 10, then repeated division by the target base

Every solver checks itself: a solution whose last value does not equal the dataset's answer is
dropped (``""``), so no document teaches a wrong answer. Every other dataset has no solution.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from fractions import Fraction
from typing import Any

Entry = dict[str, Any]

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _num(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else str(float(v))


def _arith(expr: str) -> tuple[list[str], Fraction] | None:
    """Steps and value of an arithmetic expression, one binary operation per step."""
    steps: list[str] = []

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = ev(node.left), ev(node.right)
            op = _OPS[type(node.op)]
            c = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
            if c is None:
                raise ZeroDivisionError
            steps.append(f"{_num(a)}{op}{_num(b)}={_num(c)}")
            return c
        raise ValueError("unsupported expression")

    try:
        value = ev(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None
    return steps, value


def basic_arithmetic(entry: Entry) -> str:
    out = _arith(entry["metadata"]["expression"])
    return "\n".join(out[0]) if out and _num(out[1]) == str(entry["answer"]) else ""


def chain_sum(entry: Entry) -> str:
    return basic_arithmetic(entry)  # left to right is Python's order for + and -


def leg_counting(entry: Entry) -> str:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    total, steps = 0, []
    for animal, count in entry["metadata"]["animals"].items():
        legs = ANIMALS[animal] * count
        steps.append(f"{animal}: {count}*{ANIMALS[animal]}={legs}")
        if steps[:-1]:
            steps.append(f"{total}+{legs}={total + legs}")
        total += legs
    return "\n".join(steps) if str(total) == str(entry["answer"]) else ""


def letter_counting(entry: Entry) -> str:
    letter = entry["metadata"]["target_letter"]
    total, steps = 0, []
    for word in entry["metadata"]["span"]:
        c = word.lower().count(letter)
        if c:
            steps.append(f"{word}: {c}")
            if total:
                steps.append(f"{total}+{c}={total + c}")
            total += c
    return "\n".join(steps) if str(total) == str(entry["answer"]) else ""


def gcd(entry: Entry) -> str:
    numbers = entry["metadata"]["numbers"]
    if len(numbers) != 2:
        return ""
    a, b = max(numbers), min(numbers)
    steps = []
    while b:
        steps.append(f"{a}={a // b}*{b}+{a % b}")
        a, b = b, a % b
    return "\n".join(steps) if str(a) == str(entry["answer"]) else ""


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def base_conversion(entry: Entry) -> str:
    m = entry["metadata"]
    value, src, dst = int(m["decimal_value"]), int(m["source_base"]), int(m["target_base"])
    steps = [f"{m['source_repr']} in base {src} = {value}"]
    digits, v = [], value
    while True:
        steps.append(f"{v}={v // dst}*{dst}+{v % dst}")
        digits.append(_DIGITS[v % dst])
        v //= dst
        if not v:
            break
    answer = "".join(reversed(digits))
    return "\n".join(steps) if answer == str(entry["answer"]) else ""


SOLVERS: dict[str, Callable[[Entry], str]] = {
    "basic_arithmetic": basic_arithmetic,
    "chain_sum": chain_sum,
    "leg_counting": leg_counting,
    "letter_counting": letter_counting,
    "gcd": gcd,
    "base_conversion": base_conversion,
}
"dataset -> worked solution from an entry's metadata (``\"\"`` when it cannot be checked)"


def solution(dataset: str, entry: Entry) -> str:
    """The worked solution of ``entry`` of ``dataset``, or ``""`` when there is none."""
    solver = SOLVERS.get(dataset)
    if solver is None:
        return ""
    try:
        return solver(entry)
    except (KeyError, TypeError, ValueError):  # metadata of another shape (another version): no solution
        return ""
