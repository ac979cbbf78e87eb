"""Where RL's training prompts come from (``data.prompts``), and the pre-RL signal check.

    uniform     every step draws prompts_per_step train problems uniformly (R1; the default)
    curriculum  draws from a reasoning-gym difficulty level moved by the recent correct rate
    pass_rate   draws from a pool of prompts whose pass rate under the current policy, estimated
                with data.samples samples each, lies in [data.band_low, data.band_high];
                re-estimated every data.refresh_every steps, its sampling cost logged

The rule of each lives in ``r1lab/curriculum.py``; this file wires it to a policy. A source is
one small object the RL loop calls at four places (``before_step``, ``draw``, ``observe``,
``state``); its RNGs ride in the checkpoint with the loop's own, so a resumed run is
bit-identical. The uniform source draws exactly as the loop did before (same RNG calls), so the
default run's numbers are unchanged.

The signal check (``signal_check``) estimates the base's pass@1 and pass@k on train problems
with a private generator and warns in one line when RL has little to select.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from r1lab import curriculum, rollout
from r1lab.config import Config, SampleConfig
from r1lab.recipes.common import StageError
from r1lab.tasks import Example, Task
from r1lab.tasks.gym import GymTask
from r1lab.tokenizer import BaseTokenizer

ROWS_PER_CALL = 256
"sampled sequences per sampler call when estimating pass rates"


class ModelJudge:
    """``curriculum.Judge`` of a policy: samples ``n`` completions per example with ``gen`` and
    scores them exactly (``task.check`` through the R1 template). Counts what it spent
    (``samples``, ``tokens``): the cost of estimation, which curation must pay out of its budget."""

    def __init__(self, model, tok: BaseTokenizer, task: Task, sample: SampleConfig, gen: torch.Generator):
        self.model, self.tok, self.task, self.sample, self.gen = model, tok, task, sample, gen
        self.samples = self.tokens = 0

    def __call__(self, examples: list[Example], n: int) -> list[list[bool]]:
        from r1lab.rewards import RewardWeights

        out: list[list[bool]] = []
        per_call = max(1, ROWS_PER_CALL // n)
        for start in range(0, len(examples), per_call):
            chunk = examples[start : start + per_call]
            ro = rollout.sample(self.model, [self.tok.prompt_ids(ex.question) for ex in chunk], self.sample, self.tok.eos_id,
                                self.tok.pad_id, self.gen, repeats=n)
            for i, ex in enumerate(chunk):
                verdicts = []
                for j in range(n):
                    text = self.tok.decode_completion(ro.completion_ids(i * n + j))
                    verdicts.append(self.task.score(text, ex, RewardWeights()).correct == 1.0)
                out.append(verdicts)
            self.samples += len(chunk) * n
            self.tokens += int(ro.completion_lengths.sum())
        return out


# ---------------------------------------------------------------------------------------------
# The pre-RL signal check


def signal_check(cfg: Config, model, tok: BaseTokenizer, task: Task, who: str, out: Path | None = None) -> dict:
    """Estimate the base's pass@1 and pass@``data.samples`` on ``data.signal_problems`` train
    problems (a private RNG and generator: the run's own streams are untouched) and print one
    line; a warning naming the levers when pass@k is below ``data.signal_threshold``. Returns the
    figures (also written to ``out`` as JSON when given)."""
    d = cfg.data
    n = d.signal_problems
    pool = task.pool("train")
    examples = task.examples("train", n if pool is None else min(n, len(pool)), seed=cfg.eval.seed + 1)
    judge = ModelJudge(model, tok, task, cfg.rl.sample, torch.Generator().manual_seed(cfg.eval.seed + 1))
    verdicts = judge(examples, d.samples)
    k = d.samples
    report = {"problems": len(examples), "n": k, "pass@1": curriculum.mean_pass_at_k(verdicts, 1), f"pass@{k}": curriculum.mean_pass_at_k(verdicts, k),
              "threshold": d.signal_threshold, "temperature": cfg.rl.sample.temperature}
    report["low_signal"] = curriculum.low_signal(report[f"pass@{k}"], d.signal_threshold)
    head = f"{who}: base on {len(examples)} train problems of {task.name}: pass@1 {report['pass@1']:.3f}, pass@{k} {report[f'pass@{k}']:.3f}"
    if report["low_signal"]:
        print(f"{head} < {d.signal_threshold}: warning: RL has little to select (almost every GRPO group is all wrong); levers: "
              f"a curriculum (--data.prompts curriculum), pass-rate curation (--data.prompts pass_rate, r1lab curate), "
              f"worked solutions in the corpus (--pretrain.worked_fraction), a larger budget (--pretrain.steps, --rl.sample.max_new_tokens)")
    else:
        print(f"{head}: RL has signal to select from")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


# ---------------------------------------------------------------------------------------------
# Prompt sources


class Uniform:
    """Uniform draws from the train split: exactly the RNG calls of the original loop."""

    def __init__(self, task: Task):
        self.task = task
        self.generators: dict = {}

    def before_step(self, step: int, policy) -> None:
        pass

    def draw(self, rng: random.Random, n: int) -> list[Example]:
        return [self.task.sample(rng, "train") for _ in range(n)]

    def observe(self, correct: list[float]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}

    def state(self) -> dict | None:
        return None

    def load(self, state: dict | None) -> None:
        pass


class CurriculumSource(Uniform):
    """Draws from the current level's pool (``GymTask.level_pool``, generated when first reached);
    ``observe`` feeds each step's train correct rate to ``curriculum.Curriculum``. Problems whose
    prompt plus the budget does not fit the model are left out of a level; a level with none left
    is never entered (the move up is undone and that level becomes the ceiling)."""

    def __init__(self, cfg: Config, task: Task, tok: BaseTokenizer, max_len: int):
        if not isinstance(task, GymTask) or task.levels() == 0:
            raise StageError(f"data.prompts curriculum needs a reasoning-gym dataset with curriculum support; {task.name} has none")
        super().__init__(task)
        self.fits = lambda ex: len(tok.prompt_ids(ex.question)) + cfg.rl.sample.max_new_tokens <= max_len
        d = cfg.data
        if d.start_level > task.levels() or not self._pool(d.start_level):
            raise StageError(f"data.start_level {d.start_level}: {task.name} has levels 0..{task.levels()}, and the level must hold "
                             f"problems whose prompt plus rl.sample.max_new_tokens fits model.max_seq_len={max_len}")
        self.curriculum = curriculum.Curriculum(max_level=task.levels(), up=d.level_up, down=d.level_down, window=d.window, level=d.start_level)

    def _pool(self, level: int) -> list[Example]:
        return [ex for ex in self.task.level_pool(level) if self.fits(ex)]

    def draw(self, rng: random.Random, n: int) -> list[Example]:
        pool = self._pool(self.curriculum.level)
        return [rng.choice(pool) for _ in range(n)]

    def observe(self, correct: list[float]) -> None:
        before = self.curriculum.level
        if self.curriculum.observe(sum(correct) / len(correct)) > before and not self._pool(self.curriculum.level):
            self.curriculum.level = self.curriculum.max_level = before  # nothing fits up there: stay

    def metrics(self) -> dict[str, float]:
        return {"curriculum/level": self.curriculum.level, "curriculum/window_rate": self.curriculum.window_rate()}

    def state(self) -> dict:
        return {"curriculum": self.curriculum.state()}

    def load(self, state: dict | None) -> None:
        if state:
            self.curriculum.load(state["curriculum"])


class PassRateSource(Uniform):
    """Draws from the prompts whose estimated pass rate is in the band; the pool is re-estimated
    every ``data.refresh_every`` steps under the current policy from ``data.candidates`` fresh
    train prompts. When none is in the band, the whole candidate set is kept (logged as
    ``curation/fallback``), so a run never stops for want of prompts."""

    def __init__(self, cfg: Config, task: Task, tok: BaseTokenizer):
        super().__init__(task)
        self.cfg, self.tok = cfg, tok
        self.pick_rng = random.Random(cfg.seed + 17)
        self.gen = torch.Generator().manual_seed(cfg.seed + 17)
        self.generators = {"curate_pick": self.pick_rng, "curate_sample": self.gen}
        self.pool: list[Example] = []
        self.rates: list[float] = []
        self.cost = {"samples": 0, "tokens": 0, "refreshes": 0, "fallback": 0}

    def before_step(self, step: int, policy) -> None:
        d = self.cfg.data
        if step % d.refresh_every and self.pool:
            return
        candidates = list({ex.question: ex for ex in (self.task.sample(self.pick_rng, "train") for _ in range(d.candidates))}.values())
        judge = ModelJudge(policy, self.tok, self.task, self.cfg.rl.sample, self.gen)
        rates = curriculum.pass_rates(judge, candidates, d.samples)
        keep = curriculum.in_band(rates, d.band_low, d.band_high)
        fallback = not keep
        keep = keep or list(range(len(candidates)))
        self.pool, self.rates = [candidates[i] for i in keep], [rates[i] for i in keep]
        self.cost = {"samples": self.cost["samples"] + judge.samples, "tokens": self.cost["tokens"] + judge.tokens,
                     "refreshes": self.cost["refreshes"] + 1, "fallback": int(fallback)}

    def draw(self, rng: random.Random, n: int) -> list[Example]:
        return [rng.choice(self.pool) for _ in range(n)]

    def metrics(self) -> dict[str, float]:
        return {"curation/pool": len(self.pool), "curation/pool_pass_rate": sum(self.rates) / max(len(self.rates), 1),
                "curation/estimate_samples": self.cost["samples"], "curation/estimate_tokens": self.cost["tokens"],
                "curation/refreshes": self.cost["refreshes"], "curation/fallback": self.cost["fallback"]}

    def state(self) -> dict:
        return {"pool": [[ex.question, ex.answer, ex.solution] for ex in self.pool], "rates": self.rates, "cost": self.cost}

    def load(self, state: dict | None) -> None:
        if state:
            self.pool = [Example(q, a, s) for q, a, s in state["pool"]]
            self.rates, self.cost = list(state["rates"]), dict(state["cost"])


def make_source(cfg: Config, task: Task, tok: BaseTokenizer, max_len: int) -> Uniform:
    """The prompt source ``data.prompts`` names."""
    if cfg.data.prompts == "curriculum":
        return CurriculumSource(cfg, task, tok, max_len)
    if cfg.data.prompts == "pass_rate":
        return PassRateSource(cfg, task, tok)
    return Uniform(task)
