"""Pointer hops: follow a map of letters a few steps, e.g. ``a>c b>a c>b|a3`` asks where three
hops from ``a`` land (a -> c -> b -> a).

Multi-hop composition is the textbook case where a step-by-step trace helps a Transformer: one
hop is a single look-up (copy the letter after ``x>``), several hops in one forward pass need one
layer of look-up per hop. A tiny model learns the worked trace quickly and the direct answer
barely at all, so RL has a far better style to select.

The same problem: the same start and the same pointers followed (``a>c c>b b>a`` for ``a3``); the
rest of the map is distractors, so two maps that agree on the path are twins. The key is that
path, so a test path is never followed in training.
"""

from __future__ import annotations

import random
import string

from r1lab.tasks.base import Example, ProceduralTask


class HopsTask(ProceduralTask):
    name = "hops"

    def __init__(self, n_letters: int = 8, min_hops: int = 3, max_hops: int = 3):
        self.letters = string.ascii_lowercase[:n_letters]
        self.min_hops, self.max_hops = min_hops, max_hops

    def generate(self, rng: random.Random) -> Example:
        # One cycle through all letters: no fixed points or short loops that would let a direct
        # answer shortcut the hops.
        cycle = list(self.letters)
        rng.shuffle(cycle)
        pointer = {a: b for a, b in zip(cycle, cycle[1:] + cycle[:1])}
        start, hops = rng.choice(self.letters), rng.randint(self.min_hops, self.max_hops)
        steps, here = [], start
        for _ in range(hops):
            steps.append(f"{here}>{pointer[here]}")
            here = pointer[here]
        table = " ".join(f"{k}>{pointer[k]}" for k in self.letters)
        return Example(question=f"{table}|{start}{hops}", answer=here, solution="\n".join(steps))

    def key(self, example: Example) -> str:
        table, query = example.question.split("|")
        pointer = dict(pair.split(">") for pair in table.split())
        here, path = query[0], [query[0]]
        for _ in range(int(query[1:])):
            here = pointer[here]
            path.append(here)
        return "hops " + ">".join(path)

    def check(self, answer: str, example: Example) -> float:
        if not example.answer.strip():
            return 0.0
        return 1.0 if answer.strip() == example.answer else 0.0
