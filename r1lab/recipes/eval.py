"""Evaluate a checkpoint on a task split: n samples per problem, unbiased pass@k, maj@k, lengths,
and diversity (the pass@k curve for k = 1..n, distinct answers, distinct-n, entropy; see
``r1lab.evaluate``), drawn as ``<result>.pass_at_k.png``.

Problems and sampling are seeded by ``eval.seed`` so that two checkpoints (base and RL) are
measured on the same problems with the same random stream.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from r1lab import distributed, rollout, tracking
from r1lab.config import Config, EvalConfig
from r1lab.evaluate import EvalResult, ProblemSamples, best_of_k, summarize
from r1lab.model.transformer import Transformer
from r1lab.prm import StepScorer, aggregate, load_scorer
from r1lab.recipes import common, context
from r1lab.report import plots
from r1lab.rewards import RewardWeights, extract_answer
from r1lab.tasks import Task, get_task
from r1lab.tokenizer import BaseTokenizer

ROWS_PER_BATCH = 256  # sampled sequences per sampler call: large enough to amortise Python overhead


def evaluate_model(model: Transformer, tok: BaseTokenizer, task: Task, ecfg: EvalConfig, weights: RewardWeights, desc: str = "eval",
                   samples_out: Path | None = None, scorer: StepScorer | None = None) -> EvalResult:
    """Sample, score and summarise; with ``samples_out``, also write every scored sample there
    (``write_samples``), for the report's side-by-side completions and for ``r1lab label``. With a
    reward-model ``scorer`` (``eval.rerank``), also best-of-k reranking (``rerank_metrics``).

    Under torchrun each rank samples problems rank::world (its generator seeded by the eval seed
    and its rank) and the results are gathered on every rank."""
    examples = task.examples(ecfg.split, ecfg.n_problems, ecfg.seed)
    world, rank = distributed.world(), distributed.rank()
    gen = torch.Generator().manual_seed(ecfg.seed if world == 1 else ecfg.seed * 1_000_003 + rank)
    mine = range(rank, len(examples), world)  # this rank's problems (all of them in one process)
    rows = [(i, tok.prompt_ids(examples[i].question)) for i in mine for _ in range(ecfg.n_samples)]
    per_problem = [ProblemSamples(ex.question, ex.answer, [], [], [], []) for ex in examples]
    bar = tracking.progress(len(rows), desc=desc)
    for start in range(0, len(rows), ROWS_PER_BATCH):
        chunk = rows[start : start + ROWS_PER_BATCH]
        ro = rollout.sample(model, [ids for _, ids in chunk], ecfg.sample, tok.eos_id, tok.pad_id, gen)
        for j, (i, _) in enumerate(chunk):
            ids = ro.completion_ids(j)
            if ro.entropy is not None:
                per_token = ro.entropy[j][ro.completion_mask[j]]  # (C_j,)
                per_problem[i].entropies.append(float(per_token.mean()) if per_token.numel() else 0.0)
            text = tok.decode_completion(ids)
            score = task.score(text, examples[i], weights)
            ps = per_problem[i]
            ps.completions.append(text)
            ps.scores.append(score)
            ps.answers.append(extract_answer(text))
            ps.lengths.append(len(ids))
        bar.update(len(chunk))
    bar.close()
    if world > 1:
        for part in distributed.gather_objects([(i, per_problem[i]) for i in mine]):
            for i, ps in part:
                per_problem[i] = ps
    if samples_out is not None and distributed.is_main():
        write_samples(samples_out, task.name, per_problem)
    result = summarize(task.name, ecfg.split, per_problem, ecfg.ks, temperature=ecfg.sample.temperature, top_p=ecfg.sample.top_p, max_new_tokens=ecfg.sample.max_new_tokens, seed=ecfg.seed)
    if scorer is not None:
        result.metrics.update(rerank_metrics(scorer, per_problem, ecfg.ks, ecfg.rerank_aggregate))
    return result


def rerank_metrics(scorer: StepScorer, per_problem: list[ProblemSamples], ks: list[int], how: str) -> dict[str, float]:
    """``rerank_<kind>_<how>@k``: expected accuracy of keeping the best-scored of k samples
    (``evaluate.best_of_k``), each completion scored by ``prm.aggregate`` of its step scores and
    answer-step score; to read beside ``maj@k`` (majority vote) and ``pass@k`` (an oracle pick)."""
    picks: dict[int, list[float]] = {k: [] for k in ks}
    for ps in per_problem:
        scored = scorer.score_batch([(ps.question, text) for text in ps.completions])
        scores = [aggregate(steps, final, how) for steps, final in scored]
        for k in ks:
            picks[k].append(best_of_k(scores, ps.solved, k))
    return {f"rerank_{scorer.kind}_{how}@{k}": sum(v) / len(v) for k, v in picks.items()}


def write_samples(path: Path, task_name: str, per_problem: list[ProblemSamples]) -> None:
    """One JSON line per sample: task, question, gold, sample index, completion, extracted answer,
    reward, format, correct (full correctness, as pass@k counts it), length. Atomic replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for ps in per_problem:
            for j, (text, score, answer, length) in enumerate(zip(ps.completions, ps.scores, ps.answers, ps.lengths)):
                row = {"task": task_name, "question": ps.question, "gold": ps.answer, "sample": j, "completion": text,
                       "answer": answer, "reward": score.reward, "format": score.format, "correct": ps.solved[j], "length": length}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def save_result(result: EvalResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(result.to_json(), encoding="utf-8")
    tmp.replace(path)


def rerank_scorer(spec: str) -> StepScorer | None:
    """The reward model that ``eval.rerank`` (``prm:PATH`` or ``orm:PATH``) names, None when off;
    StageError when PATH holds no reward model or one of the other kind."""
    if not spec:
        return None
    kind, path = spec.split(":", 1)
    try:
        scorer = load_scorer(path)
    except ValueError as err:
        raise common.StageError(f"eval.rerank: {err}") from None
    if scorer.kind != kind:
        raise common.StageError(f"eval.rerank {spec}: {path} holds a {scorer.kind} reward model, not {kind}")
    return scorer


def plot_pass_curves(path: Path, results: dict[str, EvalResult], title: str) -> Path:
    """pass@k against k (log scale) for k = 1..n, one line per named result."""
    arms = {name: [(list(range(1, len(r.pass_curve) + 1)), r.pass_curve)] for name, r in results.items() if r.pass_curve}
    return plots.curves(path, arms, title=title, xlabel="k (samples)", ylabel="pass@k (unbiased)", logx=True)


def diversity_row(result: EvalResult) -> dict[str, float]:
    """The table row of a result's diversity: pass@1, pass@n, and the ``diversity`` figures."""
    n = result.n
    return {f"pass@{k}": result.pass_curve[k - 1] for k in sorted({1, n})} | result.diversity


def main(cfg: Config) -> Path:
    if not cfg.init:
        raise common.StageError("eval needs --init RUN_OR_CHECKPOINT_FOLDER")
    common.seed_everything(cfg.seed, cfg.threads)
    model, ckpt = common.load_model(cfg.init)
    model.to(distributed.device(cfg.device))  # sample on the GPU when there is one
    task = get_task(cfg.task, seed=cfg.seed)
    context.check_loaded(model.cfg.max_seq_len, cfg, task, common.load_tokenizer(cfg.init), "eval")  # before any sampling
    default = Path("runs") / "eval" if cfg.init.startswith(common.HF_PREFIX) else ckpt.path.parent.parent / "eval"
    out = Path(cfg.out) if cfg.out else default
    # A file name from the task name: jsonl:<path> holds slashes, gym:<name> a colon.
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", task.name).strip("_")
    path = out / f"{stem}-{cfg.eval.split}-step{ckpt.step}.json"
    result = evaluate_model(model, common.load_tokenizer(cfg.init), task, cfg.eval, RewardWeights(cfg.rl.format_weight, cfg.rl.correct_weight, cfg.rl.partial_weight),
                            samples_out=path.with_suffix(".samples.jsonl"), scorer=rerank_scorer(cfg.eval.rerank))
    if not distributed.is_main():  # under torchrun rank 0 writes and prints
        return path
    save_result(result, path)
    plot = plot_pass_curves(path.with_suffix(".pass_at_k.png"), {f"step {ckpt.step}": result},
                            f"pass@k on {task.name} ({cfg.eval.split}, {result.n_problems} problems, n={result.n})")
    print(tracking.format_table([{"checkpoint": str(ckpt.path), **result.metrics}], title=f"eval on {task.name} ({cfg.eval.split}, n={cfg.eval.n_samples}, T={cfg.eval.sample.temperature})"))
    print(tracking.format_table([diversity_row(result)], title="diversity: distinct answers per problem, distinct-n of the reasoning, mean token entropy (nats)"))
    print(f"eval: wrote {path}, {path.with_suffix('.samples.jsonl').name} and {plot.name}")
    return path
