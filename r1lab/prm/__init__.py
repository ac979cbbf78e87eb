"""Process reward models: steps, exact and automatic step labels, a scalar-head scorer.

    from r1lab.prm import split_steps, load_scorer
    steps = split_steps(completion, marker=None)     # the <think> lines, stripped, non-empty
    scorer = load_scorer("runs/prm")                 # a StepScorer
    scores = scorer(question, completion)            # one float in (0, 1) per step

See ``steps`` (segmentation, exact labels), ``labels`` (Math-Shepherd rollout labels) and
``model`` (the reward model, its loss and the scorer); docs/prm.md for the CLI.
"""

from r1lab.prm.model import RewardModel, StepScorer, aggregate, load_scorer
from r1lab.prm.steps import exact_labels, split_steps, step_spans, token_step_ends

__all__ = ["RewardModel", "StepScorer", "aggregate", "exact_labels", "load_scorer", "split_steps", "step_spans", "token_step_ends"]
