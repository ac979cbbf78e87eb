"""``scenes:und``, ``scenes:gen``, ``scenes:both``: the image tasks of ``r1lab rl --init <janus run>``.

The registry's name for RL on images (``r1lab.recipes.janus_rl`` does the work: it draws scenes
and digits itself, with their pixels). Text-only stages cannot read an image, so drawing a
problem from this task for them fails in one line instead of training on captions without
pictures.
"""

from __future__ import annotations

import random

from r1lab.tasks.base import Example, Split, Task

MODES = ("und", "gen", "both")


class SceneTask(Task):
    def __init__(self, mode: str):
        if mode not in MODES:
            raise ValueError(f"unknown task scenes:{mode}; choose scenes:und (answer questions about images), scenes:gen (draw) or scenes:both")
        self.mode, self.name = mode, f"scenes:{mode}"

    def sample(self, rng: random.Random, split: Split) -> Example:
        raise ValueError(f"task {self.name} needs images: it is only for r1lab rl --init <janus run> (see docs/janus.md)")

    def check(self, answer: str, example: Example) -> float:
        return float(answer.strip() == example.answer)
