"""What RL trains on, as pure functions: a difficulty curriculum driven by the policy's pass rate,
pass-rate curation (keep prompts that are neither always nor never solved), and the pre-RL
signal check (is there anything for outcome rewards to select?).

* Curriculum: reasoning-gym's difficulty levels (Stojanovski et al. 2025, arXiv:2505.24760,
  sec. 4, "curriculum learning"): start at the easiest level, move one level up when the policy's
  recent train correct rate (mean over the last ``window`` RL steps) reaches ``up``, one down when
  it falls to ``down``. Departure: the paper raises levels on a fixed accuracy threshold only; the
  way down is ours, so that a level that proves too hard does not stall the run.
* Curation: the band filter of DAPO's dynamic sampling (arXiv:2503.14476, sec. 3.2) and of
  Kimi k1.5's / Polaris's offline difficulty filtering, applied to a pool of prompts whose pass
  rates are *estimated* under the current policy (n samples each) and refreshed during RL.
* Signal: pass@k of the base on train problems; with pass@8 near zero, GRPO's group advantages
  are zero for almost every group and RL has nothing to select (the R1-Zero recipe presumes a base
  that is sometimes right).

``Judge`` is the one seam to a model: a function from (examples, n) to n correctness verdicts
per example. ``recipes/prompts.py`` builds it from a policy; tests give a toy one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from r1lab.evaluate import pass_at_k
from r1lab.tasks.base import Example

Judge = Callable[[list[Example], int], list[list[bool]]]
"(examples, n) -> for each example, the correctness of n samples"


def pass_rates(judge: Judge, examples: list[Example], n: int) -> list[float]:
    """Each example's estimated pass rate: the fraction of ``n`` samples that are correct."""
    return [sum(v) / n for v in judge(examples, n)]


def mean_pass_at_k(verdicts: Sequence[Sequence[bool]], k: int) -> float:
    """Mean unbiased pass@k over problems, each with its own samples' verdicts."""
    return sum(pass_at_k(len(v), sum(v), k) for v in verdicts) / max(len(verdicts), 1)


def in_band(rates: Sequence[float], low: float, high: float) -> list[int]:
    """Indices of the rates in the closed band [low, high]."""
    return [i for i, r in enumerate(rates) if low <= r <= high]


def low_signal(pass_k: float, threshold: float) -> bool:
    """Whether RL has little to select: the base's pass@k is below ``threshold``."""
    return pass_k < threshold


@dataclass
class Curriculum:
    """A difficulty level in ``[0, max_level]`` moved by the recent correct rate; JSON-able
    (``state``/``from_state``) so that a resumed run continues with the same level and window."""

    max_level: int
    up: float
    down: float
    window: int
    level: int = 0
    recent: list[float] = field(default_factory=list)

    def observe(self, rate: float) -> int:
        """Record one RL step's train correct rate; return the (possibly moved) level. The window
        restarts after every move, so each level is judged on its own steps."""
        self.recent = (self.recent + [float(rate)])[-self.window:]
        if len(self.recent) == self.window:
            mean = sum(self.recent) / self.window
            if mean >= self.up and self.level < self.max_level:
                self.level, self.recent = self.level + 1, []
            elif mean <= self.down and self.level > 0:
                self.level, self.recent = self.level - 1, []
        return self.level

    def window_rate(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else float("nan")

    def state(self) -> dict:
        return {"level": self.level, "max_level": self.max_level, "recent": list(self.recent)}

    def load(self, state: dict) -> None:
        self.level, self.max_level, self.recent = int(state["level"]), int(state["max_level"]), [float(r) for r in state["recent"]]
