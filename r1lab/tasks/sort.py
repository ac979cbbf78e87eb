"""Sorting a short list: ``Sort: 15 2 9 1`` -> ``1 2 9 15``, or letters ``Sort: d a c`` -> ``a c d``.

A task that is not arithmetic, so that an experiment can tell "the model learnt to reason" from
"the model learnt to add": the worked solution is selection sort, one step a line, where each line
holds the whole state (the sorted prefix, a bar, the rest), so that every line follows from the
previous one alone, as the intermediate values of the chain task do:

    1 | 15 2 9
    1 2 | 15 9
    1 2 9 | 15
    1 2 9 15

Integers go up to 99 by default so that numeric and character order differ (``9`` before
``15``): a model that sorts the text of the tokens is wrong. Repeated items are allowed.

The same problem: the same multiset of items (``Sort: 15 2 9`` and ``Sort: 9 15 2``), so the key
is the sorted list, the answer itself; splitting on the question text left 12% of test lists with
a permutation in training.
"""

from __future__ import annotations

import random
import string
from typing import Callable, Literal

from r1lab.tasks.base import Example, ProceduralTask

Kind = Literal["int", "letter"]


def selection_sort_steps(items: list[str], key: Callable[[str], int | str]) -> list[str]:
    """The lines of a selection sort of ``items``: ``prefix | rest`` per step, then the result."""
    done, rest, lines = [], list(items), []
    while len(rest) > 1:
        smallest = min(rest, key=key)  # min() returns the first of equal items: a stable sort
        rest.remove(smallest)
        done.append(smallest)
        lines.append(f"{' '.join(done)} | {' '.join(rest)}")
    lines.append(" ".join(done + rest))
    return lines


class SortTask(ProceduralTask):
    name = "sort"

    def __init__(self, min_len: int = 4, max_len: int = 6, max_value: int = 99,
                 kinds: tuple[Kind, ...] = ("int", "letter")):
        if not 2 <= min_len <= max_len:
            raise ValueError(f"need 2 <= min_len <= max_len, got {min_len}, {max_len}")
        if not kinds or any(kind not in ("int", "letter") for kind in kinds):
            raise ValueError(f"kinds must be a non-empty tuple of 'int'/'letter', got {kinds!r}")
        self.min_len, self.max_len, self.max_value, self.kinds = min_len, max_len, max_value, kinds

    def generate(self, rng: random.Random) -> Example:
        size, kind = rng.randint(self.min_len, self.max_len), rng.choice(self.kinds)
        if kind == "int":
            items, key = [str(rng.randint(0, self.max_value)) for _ in range(size)], int
        else:
            items, key = [rng.choice(string.ascii_lowercase) for _ in range(size)], str
        lines = selection_sort_steps(items, key)
        return Example(question=f"Sort: {' '.join(items)}", answer=lines[-1], solution="\n".join(lines))

    def difficulty(self, example: Example) -> str | None:
        """The list's length (min_len .. max_len items)."""
        return f"{len(example.question.removeprefix('Sort: ').split())} items"

    def key(self, example: Example) -> str:
        items = example.question.removeprefix("Sort: ").split()
        numeric = all(item.isdigit() for item in items)
        return "sort " + " ".join(sorted(items, key=int if numeric else str))

    def check(self, answer: str, example: Example) -> float:
        if not example.answer.split():  # an empty reference passes nothing
            return 0.0
        # Tokens, not text: "1  2 5" and "1 2 5 " are right, "1,2,5" is not.
        return 1.0 if answer.split() == example.answer.split() else 0.0
