"""``r1lab prm label|train|eval``: step labels by rollouts, a process (or outcome) reward model,
and its step-level accuracy against exact labels.

    r1lab prm label --init runs/base --task chain --out labels.jsonl              Math-Shepherd labels
    r1lab prm label --init runs/base --prm.split test --out heldout.jsonl         held-out problems
    r1lab prm train --init runs/base --prm.data labels.jsonl --out runs/prm       BCE at step ends
    r1lab prm train ... --prm.kind orm --out runs/orm                              outcome RM
    r1lab prm eval  --init runs/prm --prm.data heldout.jsonl                      accuracy, AUC

``label`` samples ``traces_per_problem`` completions of ``n_problems`` problems from the policy,
splits each into steps, and labels every step three ways: exact (``Task.step_checks``), and
Math-Shepherd's hard and soft estimates from ``rollouts`` continuations of the step's prefix
(``r1lab.prm.labels``); it writes one JSON line per completion and prints the precision/recall of
the automatic labels against the exact ones. ``train`` is one linear loop inside ``TrainLoop``
(resume, stop, non-finite guard, save). ``eval`` scores a held-out label file.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import torch

from r1lab import rollout, tracking
from r1lab.config import Config
from r1lab.model import moe
from r1lab.prm import labels as labels_lib
from r1lab.prm.model import RewardModel, StepScorer, auc, bce_at, encode, grouped_auc, load_scorer
from r1lab.prm.steps import exact_labels, split_steps
from r1lab.recipes import common
from r1lab.recipes.loop import TrainLoop
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task

# --- label ---------------------------------------------------------------------------------------


def label(cfg: Config) -> Path:
    pc = cfg.prm
    if not cfg.init:
        raise common.StageError("prm label needs --init POLICY_RUN (the policy that writes and finishes the traces)")
    # a lower bound when a trace has a step: each problem's traces are one batch, each prefix's rollouts at least another
    common.check_sampling(max(pc.traces_per_problem, pc.rollouts), pc.sample.max_new_tokens, "prm.traces_per_problem / prm.rollouts")
    out = common.jsonl_out(cfg.out, "prm label", "LABELS.jsonl, the file the labelled steps go to")
    common.seed_everything(cfg.seed, cfg.threads)
    model, ckpt = common.load_model(cfg.init)
    tok = common.load_tokenizer(cfg.init)
    task = get_task(cfg.task, seed=cfg.seed)
    try:
        examples = task.examples(pc.split, pc.n_problems, cfg.seed)
    except ValueError as err:
        raise common.StageError(str(err)) from None
    gen = torch.Generator().manual_seed(cfg.seed)
    marker = pc.marker or None
    weights = RewardWeights()
    rows: list[dict[str, Any]] = []
    bar = tracking.progress(len(examples), desc="prm label")
    for ex in examples:
        ro = rollout.sample(model, [tok.prompt_ids(ex.question)], pc.sample, tok.eos_id, tok.pad_id, gen, repeats=pc.traces_per_problem)
        texts = [tok.decode_completion(ro.completion_ids(j)) for j in range(pc.traces_per_problem)]
        all_steps = [split_steps(t, marker) for t in texts]
        soft: list[list[float] | None] = [None] * len(texts)
        hard: list[list[bool] | None] = [None] * len(texts)
        if pc.rollouts > 0:  # every prefix of every trace of this problem in one batched call
            prefixes = [p for t in texts for p in labels_lib.step_prefixes(t, marker)]
            outcomes = labels_lib.policy_rollouts(model, tok, task, ex, pc.rollouts, pc.sample, gen)(prefixes) if prefixes else []
            at = 0
            for j, steps in enumerate(all_steps):
                est = labels_lib.estimate(outcomes[at : at + len(steps)]) if steps else labels_lib.StepLabels([], [])
                soft[j], hard[j] = est.soft, est.hard
                at += len(steps)
        for j, (text, steps) in enumerate(zip(texts, all_steps)):
            rows.append({"task": task.name, "split": pc.split, "question": ex.question, "gold": ex.answer, "completion": text,
                         "steps": steps, "correct": task.score(text, ex, weights).correct == 1.0,
                         "exact": exact_labels(task, ex, steps), "hard": hard[j], "soft": soft[j],
                         "rollouts": pc.rollouts, "marker": pc.marker})
        bar.update(1)
    bar.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)
    n_steps = sum(len(r["steps"]) for r in rows)
    print(f"prm label: {len(rows)} traces of {len(examples)} {pc.split} problems from {ckpt.path}, {n_steps} steps, "
          f"outcome accuracy {sum(r['correct'] for r in rows) / len(rows):.3f}; wrote {out}")
    table = quality_rows(rows)
    if table:
        print(tracking.format_table(table, title=f"automatic step labels against exact ones ({pc.rollouts} rollouts per step; 'good' = a right step)"))
    elif pc.rollouts > 0:
        print(f"prm label: task {task.name} has no exact step check (or no step was judged): no precision/recall to print")
    return out


def quality_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Precision/recall rows of the hard and the soft >= 0.5 labels against the exact labels."""
    gold = [g for r in rows if r["exact"] is not None and r["hard"] is not None for g in r["exact"]]
    if not any(g is not None for g in gold):
        return []
    out = []
    for name, pred in (("hard (any rollout right)", [h for r in rows if r["exact"] is not None and r["hard"] is not None for h in r["hard"]]),
                       ("soft >= 0.5", [s >= 0.5 for r in rows if r["exact"] is not None and r["soft"] is not None for s in r["soft"]])):
        q = labels_lib.label_quality(pred, gold)
        out.append({"labels": name, **{k: q[k] for k in ("steps", "accuracy", "precision_good", "recall_good", "precision_bad", "recall_bad")}})
    return out


# --- the label file ------------------------------------------------------------------------------


def read_data(path: str) -> list[dict[str, Any]]:
    """Rows of a label file, checked; StageError naming the file and line."""
    if not path:
        raise common.StageError("needs --prm.data LABELS.jsonl (written by `r1lab prm label`)")
    p = Path(path)
    if not p.is_file():
        raise common.StageError(f"--prm.data {p}: no such file")
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise common.StageError(f"{p}:{i}: not a JSON line ({err})") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("completion"), str):
            raise common.StageError(f"{p}:{i}: needs string fields \"question\" and \"completion\"")
        steps = split_steps(row["completion"], row.get("marker") or None)
        if steps != row.get("steps", steps):
            raise common.StageError(f"{p}:{i}: \"steps\" do not match the completion's steps")
        for key in ("exact", "hard", "soft"):
            value = row.get(key)
            if value is not None and (not isinstance(value, list) or len(value) != len(steps)):
                raise common.StageError(f"{p}:{i}: \"{key}\" must be null or a list of {len(steps)} labels, one per step")
        if not isinstance(row.get("correct"), bool):
            raise common.StageError(f"{p}:{i}: needs a boolean \"correct\" (the outcome)")
        rows.append(row)
    if not rows:
        raise common.StageError(f"--prm.data {p}: holds no rows")
    return rows


def targets(row: dict[str, Any], kind: str, source: str, where: str) -> list[tuple[int, float]]:
    """(step index or -1 for the answer step, target in [0, 1]) of one row."""
    out: list[tuple[int, float]] = []
    if kind == "prm":
        values = row.get(source)
        if values is None:
            raise common.StageError(f"{where}: no \"{source}\" labels (label with --prm.rollouts > 0, or train with --prm.labels exact)")
        out += [(i, float(v)) for i, v in enumerate(values) if v is not None]
    out.append((-1, float(row["correct"])))
    return out


# --- train ---------------------------------------------------------------------------------------


def train(cfg: Config) -> Path:
    pc = cfg.prm
    rows = read_data(pc.data)
    run_dir = common.run_dir_for(cfg, f"{pc.kind}")
    common.prepare_run_dir(run_dir, cfg)
    common.seed_everything(cfg.seed, cfg.threads)
    tok = common.load_tokenizer(run_dir)
    body = common.load_model(cfg.init)[0] if cfg.init else common.new_model(cfg.model, tok.vocab_size)
    model = RewardModel(body)
    items = []
    for i, row in enumerate(rows, 1):
        enc = encode(tok, row["question"], row["completion"], row.get("marker") or None)
        if len(enc.ids) > body.cfg.max_seq_len:
            raise common.StageError(f"{pc.data}:{i}: {len(enc.ids)} tokens exceed the model's max_seq_len={body.cfg.max_seq_len}")
        items.append((enc, [(enc.final if k < 0 else enc.step_ends[k], t) for k, t in targets(row, pc.kind, pc.labels, f"{pc.data}:{i}")]))
    data_rng = random.Random(cfg.seed)
    opt = common.make_optimizer(model, pc.lr, pc.weight_decay)
    loop = TrainLoop(cfg, run_dir, pc.kind, model, opt, total=pc.steps, generators={"data": data_rng})
    if loop.finished:
        return run_dir
    state = {"prm": {"kind": pc.kind, "marker": pc.marker, "labels": pc.labels, "data": pc.data}}
    print(f"prm train: {pc.kind} on {len(items)} labelled completions from {pc.data} ({pc.labels if pc.kind == 'prm' else 'outcome'} labels), {pc.steps} steps")
    model.train()
    with loop:
        for step in loop.steps():
            lr = loop.set_lr(common.lr_at(step, pc.lr, pc.warmup_steps, pc.steps, 0.1))
            batch = [items[j] for j in data_rng.sample(range(len(items)), min(pc.batch_size, len(items)))]
            ids_BT, mask_BT = rollout.left_pad([e.ids for e, _ in batch], tok.pad_id)
            T = ids_BT.shape[1]
            target_BT = torch.zeros(ids_BT.shape)
            weight_BT = torch.zeros(ids_BT.shape)
            for b, (e, tg) in enumerate(batch):
                for pos, t in tg:
                    target_BT[b, T - len(e.ids) + pos] = t
                    weight_BT[b, T - len(e.ids) + pos] = 1.0
            logits_BT, aux = model(ids_BT, mask_BT)
            bce = bce_at(logits_BT, target_BT, weight_BT)
            bad, grad_norm = loop.backward_step(bce + aux, pc.grad_clip)
            load_LE = moe.after_optimizer_step(model, step + 1, stepped=bad is None)
            metrics = {"prm/loss": bce.item(), "prm/aux_loss": aux.item(), "prm/lr": lr, "prm/grad_norm": grad_norm,
                       "prm/labelled_positions": int(weight_BT.sum()), "prm/skipped_nonfinite": int(bad is not None),
                       **moe.balance_metrics(model, load_LE)}
            loop.end_step(step + 1, metrics, bad=bad, load_LE=load_LE, postfix={"loss": f"{metrics['prm/loss']:.3f}"}, state=state)
    common.print_stage_summary(run_dir, pc.kind, ["prm/loss", "prm/lr"])
    print(f"prm train: final checkpoint {loop.last_path}")
    return run_dir


# --- eval ----------------------------------------------------------------------------------------


def evaluate(scorer: StepScorer, rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Step-level accuracy and AUC of a scorer against the exact labels of ``rows``, and the
    answer step's accuracy and AUC against the outcome, over all completions and within each
    problem (``grouped_auc``: what best-of-N reranking needs)."""
    scored = scorer.score_batch([(r["question"], r["completion"]) for r in rows])
    step_s, step_y, fin_s, fin_y, fin_q = [], [], [], [], []
    for r, (steps, final) in zip(rows, scored):
        fin_q.append(r["question"])
        for s, y in zip(steps, r["exact"] or []):
            if y is not None:
                step_s.append(s)
                step_y.append(bool(y))
        fin_s.append(final)
        fin_y.append(bool(r["correct"]))
    acc = lambda s, y: sum((a >= threshold) == b for a, b in zip(s, y)) / len(y) if y else math.nan  # noqa: E731
    return {"kind": scorer.kind, "traces": len(rows), "steps_judged": len(step_y), "step_good_rate": (sum(step_y) / len(step_y)) if step_y else math.nan,
            "step_accuracy": acc(step_s, step_y), "step_auc": auc(step_s, step_y),
            "outcome_accuracy": acc(fin_s, fin_y), "outcome_auc": auc(fin_s, fin_y),
            "outcome_auc_within_problem": grouped_auc(fin_s, fin_y, fin_q), "threshold": threshold}


def eval_stage(cfg: Config) -> Path:
    pc = cfg.prm
    if not cfg.init:
        raise common.StageError("prm eval needs --init REWARD_MODEL_RUN (from `r1lab prm train`)")
    rows = read_data(pc.data)
    common.seed_everything(cfg.seed, cfg.threads)
    try:
        scorer = load_scorer(cfg.init)
    except ValueError as err:
        raise common.StageError(str(err)) from None
    if any(r.get("split") != "test" for r in rows):
        print(f"prm eval: warning: {pc.data} holds rows not drawn from the test split: not a held-out evaluation")
    if not any(r.get("exact") for r in rows):
        print(f"prm eval: {pc.data} holds no exact step labels (its task has no step check): step metrics are NaN")
    try:
        result = evaluate(scorer, rows, pc.threshold)
    except ValueError as err:
        raise common.StageError(str(err)) from None
    init = Path(cfg.init)
    run = init.parent.parent if (init / "model.safetensors").is_file() else init  # a checkpoint folder's run
    out = Path(cfg.out) if cfg.out else run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"prm-{Path(pc.data).stem}.json"
    path.write_text(json.dumps({"init": cfg.init, "data": pc.data, **result}, indent=1), encoding="utf-8")
    print(tracking.format_table([result], title=f"reward model {cfg.init} on {pc.data} (exact step labels; threshold {pc.threshold})"))
    print(f"prm eval: wrote {path}")
    return path


def main(cfg: Config) -> Path:
    action = cfg.prm.action
    if action == "label":
        return label(cfg)
    if action == "train":
        return train(cfg)
    return eval_stage(cfg)
