"""Reasoning steps: where a completion's ``<think>`` text is cut into steps, and their exact labels.

A step is one non-empty line of the ``<think>`` block (Lightman et al. 2023, "Let's Verify Step by
Step", arXiv:2305.20050, and Math-Shepherd, arXiv:2312.08935, label solution lines too), or, with
a ``marker``, one piece between occurrences of the marker (Math-Shepherd's "Step k:" style).
Without a ``<think>`` block the text before ``<answer>`` is the reasoning. Steps are stripped;
empty ones are dropped.

``step_spans`` gives each step's character span inside the completion, so that a process reward
model can read its score at the token that ends the step (``r1lab.prm.model``); ``split_steps``
is the text of those spans. The exact label of a step is the task's own ``Task.step_checks``
(chain and countdown verify every ``a op b = c`` line), used as gold against automatic labels and
learned scores.
"""

from __future__ import annotations

from r1lab.rewards import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from r1lab.tasks.base import Example, Task
from r1lab.tokenizer import BaseTokenizer


def reasoning_span(completion: str) -> tuple[int, int]:
    """(start, end) character offsets of the reasoning text: the inside of the first ``<think>``
    block (to the end of the text when it is not closed), else everything before ``<answer>``."""
    start = completion.find(THINK_OPEN)
    if start >= 0:
        begin = start + len(THINK_OPEN)
        end = completion.find(THINK_CLOSE, begin)
        return begin, (end if end >= 0 else len(completion))
    end = completion.find(ANSWER_OPEN)
    return 0, (end if end >= 0 else len(completion))


def step_spans(completion: str, marker: str | None = None) -> list[tuple[int, int]]:
    """(start, end) character offsets in ``completion`` of each step, white space stripped, empty
    steps dropped. ``marker`` None or empty: steps are lines; else the text is cut at every
    occurrence of ``marker`` (the marker itself belongs to no step). A marker that never occurs
    leaves the whole reasoning as one step."""
    begin, end = reasoning_span(completion)
    sep = marker or "\n"
    spans = []
    pos = begin
    while pos <= end:
        cut = completion.find(sep, pos, end)
        piece_end = end if cut < 0 else cut
        s, e = pos, piece_end
        while s < e and completion[s].isspace():
            s += 1
        while e > s and completion[e - 1].isspace():
            e -= 1
        if e > s:
            spans.append((s, e))
        if cut < 0:
            break
        pos = cut + len(sep)
    return spans


def split_steps(completion: str, marker: str | None = None) -> list[str]:
    """The steps of a completion's reasoning (see ``step_spans``): stripped, non-empty."""
    return [completion[s:e] for s, e in step_spans(completion, marker)]


def exact_labels(task: Task, example: Example, steps: list[str]) -> list[bool | None] | None:
    """Gold step labels from the task's exact check: True right, False wrong, None a step the
    check cannot read; None as a whole when the task has no exact check."""
    checks = task.step_checks(example, list(steps))
    if checks is not None and len(checks) != len(steps):
        raise ValueError(f"task {task.name!r}: step_checks gave {len(checks)} verdicts for {len(steps)} steps")
    return checks


def token_step_ends(tok: BaseTokenizer, completion_ids: list[int], marker: str | None = None) -> list[int]:
    """Index in ``completion_ids`` of the token that ends each step of the decoded completion
    (the token holding the step's last character): where a process reward for the step lands on
    the sampled tokens. The completion is ``tok.decode_completion(completion_ids)`` (it stops at
    eos); a token's end is the length of the text decoded up to it, so tokens that decode to
    several characters (``<think>``, BPE merges) are handled."""
    text = tok.decode_completion(completion_ids)
    ends = [len(tok.decode_completion(completion_ids[: j + 1])) for j in range(len(completion_ids))]  # char end of each token
    out, j = [], 0
    for _, end in step_spans(text, marker):
        while ends[j] < end:
            j += 1
        out.append(j)
    return out
