"""GRPO on images: ``r1lab rl --init <janus run> --task scenes:und|scenes:gen|scenes:both``.

R1's recipe (GRPO with verifiable rewards, DeepSeek-R1 arXiv:2501.12948) applied to the Janus
model of ``r1lab janus`` in both directions, as Janus-Pro's successors do with images:

* ``scenes:und``: a training image (scene or digit) and its question in the R1 template; G
  answers are sampled and scored by the R1 reward (``rewards.score``: format + exact answer).
* ``scenes:gen``: a training drawing prompt; G images are sampled (64 VQ codes each, no
  guidance), decoded by the run's frozen VQ-VAE and judged by the exact detector (scenes) or the
  digit classifier (digits): the verdict, 0 or 1, is the reward (``rl.correct_weight``); with
  ``rl.partial_weight`` > 0 the share of grid cells drawn right adds graded credit.
* ``scenes:both``: half the prompts of each step of each kind.

The maths is r1lab's, once (``r1lab.rl``): group advantages (``rl.advantage``,
``rl.scale_rewards``), the clipped surrogate with an optional KL to the frozen start
(``rl.kl_coef``), the same loss settings as text RL (``recipes.rl.loss_settings``). The loop is a
``TrainLoop`` (resume, stop flag, non-finite guard). Log-probs come from one forward pass over
the mixed sequences (``sequence.target_logprobs``); there is one update per batch, so the old
log-probs are the current ones, detached (ratio 1 on the first and only update, as R1's
``updates_per_batch`` 1). Departures from text RL: no dynamic sampling, LoRA, process rewards or
prompt curricula (refused in one line); images are sampled without classifier-free guidance
(the policy's own distribution); evaluation reports both.

Run folder: ``<out>/checkpoints``, ``metrics.jsonl``, ``eval/janus_rl.json`` (held-out
understanding pass@1 and generation accuracy before and after).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from r1lab import checkpoint, rl, tracking
from r1lab.config import Config
from r1lab.janus import digits, scenes
from r1lab.janus import sequence as S
from r1lab.recipes import common, janus
from r1lab.recipes.loop import TrainLoop
from r1lab.rewards import RewardWeights, score

PREFIX = "scenes:"
MODES = ("und", "gen", "both")


def is_janus_run(init: str | Path) -> bool:
    """Whether ``init`` is the folder of an ``r1lab janus`` run (its VQ stage and a config)."""
    p = Path(str(init))
    return (p / "config.yaml").is_file() and (p / "vq").is_dir() and any((p / s).is_dir() for s in janus.STAGES)


def mode_of(task: str) -> str:
    mode = task[len(PREFIX):] if task.startswith(PREFIX) else ""
    if mode not in MODES:
        raise common.StageError(f"task {task!r}: RL from a janus run needs --task scenes:und, scenes:gen or scenes:both")
    return mode


def start_checkpoint(init: Path) -> Path:
    """The janus run's last trained stage's newest checkpoint."""
    for stage in reversed(janus.STAGES):
        ckpt = checkpoint.load_latest(init / stage)
        if ckpt is not None:
            return ckpt.path
    raise common.StageError(f"--init {init}: the janus run has no trained stage (align, unified or instruct)")


def _check(cfg: Config) -> None:
    for key, bad in (("rl.dynamic_sampling", cfg.rl.dynamic_sampling), ("lora.rank", cfg.lora.rank > 0), ("rl.reward", cfg.rl.reward != "outcome"),
                     ("rl.updates_per_batch", cfg.rl.updates_per_batch != 1), ("rl.extra_rewards", bool(cfg.rl.extra_rewards)),
                     ("data.prompts", cfg.data.prompts != "uniform")):
        if bad:
            raise common.StageError(f"config key {key}: not supported by RL from a janus run (scenes:*)")


def rewards_und(tok, texts: list[str], items: list[janus.Item], r) -> tuple[list[float], list[float]]:
    """(R1 reward, exact correctness) of each answer."""
    weights = RewardWeights(r.format_weight, r.correct_weight, 0.0)
    s = [score(t, lambda a, it=it: janus.exact(a, it.answer), weights) for t, it in zip(texts, items)]
    return [x.reward for x in s], [x.correct for x in s]


def rewards_gen(images: np.ndarray, items: list[janus.Item], r) -> tuple[list[float], list[float], list[float]]:
    """(reward, verdict, share of cells right) of each drawn image: the verdict is the exact
    detector's (scenes) or the digit classifier's (digits); cells: 1/0 for digits."""
    clf = digits.classifier()
    verdict, cells = [], []
    for im, it in zip(images, items):
        if it.kind == "digit":
            ok = float(clf.predict(im[None])[0] == it.label)
            verdict.append(ok)
            cells.append(ok)
        else:
            verdict.append(float(scenes.detect(im) == it.scene))
            cells.append(scenes.cell_agreement(im, it.scene))
    return [r.correct_weight * v + r.partial_weight * c for v, c in zip(verdict, cells)], verdict, cells


def evaluate(model, vq, tok, run_cfg: Config, r) -> dict:
    """Held-out understanding pass@1 (2 samples per question) and generation accuracy with and
    without guidance, on ``rl.eval_problems`` questions and scene prompts (plus ten digits)."""
    j = dataclasses.replace(run_cfg.janus, eval_questions=r.eval_problems, eval_prompts=r.eval_problems, eval_samples=2)
    cfg = dataclasses.replace(run_cfg, janus=j)
    was = model.training
    model.eval()
    und = janus.eval_understanding(model, tok, cfg, vq)
    plain, _ = janus.eval_generation(model, vq, tok, cfg, 1.0)
    guided, _ = janus.eval_generation(model, vq, tok, cfg, j.cfg_scale)
    model.train(was)
    return {"und_greedy": und["greedy_accuracy"], "und_blind_majority": und["blind_majority"], "und_pass@1": und["pass@1"], "und_scene_pass@1": und.get("scene_pass@1"), "und_digit_pass@1": und.get("digit_pass@1"),
            "gen_scene_acc": plain["scene_accuracy"], "gen_digit_acc": plain["digit_accuracy"],
            "gen_scene_acc_guided": guided["scene_accuracy"], "gen_digit_acc_guided": guided["digit_accuracy"]}


def run(cfg: Config, run_dir: Path, init: Path, mode: str) -> Path:
    r = cfg.rl
    _check(cfg)
    run_cfg = janus.run_config(init)
    digits.indices("train"), digits.indices("test"), digits.classifier()  # scikit-learn's import draws from Python's RNG: before seeding
    common.seed_everything(cfg.seed, cfg.threads)
    tok = common.load_tokenizer(init)
    vq = janus.load_vq(run_cfg, checkpoint.load_latest(init / "vq").path)
    start = start_checkpoint(init)
    policy = janus.load_janus(run_cfg, start, tok)
    ref = copy.deepcopy(policy).eval().requires_grad_(False) if r.kl_coef > 0 else None
    opt = common.make_optimizer(policy, r.lr, r.weight_decay)
    data_rng = random.Random(cfg.seed)
    sample_gen = torch.Generator().manual_seed(cfg.seed)
    G, j = r.group_size, run_cfg.janus
    settings = _loss_settings(r)
    loop = TrainLoop(cfg, run_dir, "rl", policy, opt, total=r.steps, generators={"data": data_rng, "sample": sample_gen},
                     extra_models={"ref_model": ref} if ref is not None else {}, start_path=start)
    if loop.finished:
        return loop.last_path
    before = loop.state.get("before") or evaluate(policy, vq, tok, run_cfg, r)
    print(f"rl: GRPO on images ({PREFIX}{mode}) from {start}: {r.steps} steps x {r.prompts_per_step} prompts x {G} samples; "
          f"before: understanding pass@1 {before['und_pass@1']:.3f}, drawing {before['gen_scene_acc']:.3f} scenes / {before['gen_digit_acc']:.2f} digits")
    policy.train()
    after = before
    with loop:
        for step in loop.steps():
            t0 = time.perf_counter()
            loop.set_lr(r.lr * min(1.0, (step + 1) / max(1, r.warmup_steps)))
            items = [janus.draw_item(data_rng, "train", j.digit_fraction) for _ in range(r.prompts_per_step)]
            kinds = [mode if mode != "both" else ("und", "gen")[i % 2] for i in range(len(items))]
            und_items = [it for it, k in zip(items, kinds) if k == "und" for _ in range(G)]
            gen_items = [it for it, k in zip(items, kinds) if k == "gen" for _ in range(G)]
            rows: list[S.Row] = []
            rewards: list[float] = []
            metrics: dict[str, float] = {}
            policy.eval()
            if und_items:
                prefixes = [janus.question_prefix(tok, it.pixels, it.question, janus.shared(run_cfg, vq)) for it in und_items]
                ids = S.generate_text(policy, prefixes, tok.pad_id, tok.eos_id, janus.ANSWER_TOKENS, r.sample.temperature, sample_gen)
                rew, correct = rewards_und(tok, [tok.decode(x) for x in ids], und_items, r)
                for p, x in zip(prefixes, ids):  # the answer, closed by eos when the sampler wrote one
                    rows.append(p + [S.Text(x + ([tok.eos_id] if len(x) < janus.ANSWER_TOKENS else []), loss=True)])
                rewards += rew
                metrics.update({"rl/und_reward": float(np.mean(rew)), "rl/und_correct": float(np.mean(correct))})
            if gen_items:
                prompts = [janus.prompt_ids(tok, it.prompt) for it in gen_items]
                codes, _ = S.generate_codes(policy, prompts, tok.pad_id, j.image_temperature, sample_gen)
                with torch.no_grad():
                    images = vq.decode(codes).numpy()
                rew, verdict, cells = rewards_gen(images, gen_items, r)
                rows += [[S.Text(p), S.Codes(c.tolist())] for p, c in zip(prompts, codes)]
                rewards += rew
                metrics.update({"rl/gen_reward": float(np.mean(rew)), "rl/gen_correct": float(np.mean(verdict)), "rl/gen_cells": float(np.mean(cells))})
            policy.train()
            t_sample = time.perf_counter() - t0
            # Rows are grouped G by G in prompt order: understanding groups first, then drawing.
            rewards_N = torch.tensor(rewards)  # (N,)
            adv_N = rl.advantages(rewards_N, G, r.advantage, r.scale_rewards)  # (N,)
            batch = S.assemble(policy, rows, tok.pad_id)
            logp_NT, mask_NT = S.target_logprobs(policy, batch, r.sample.temperature, j.image_temperature)
            ref_logp = None
            if ref is not None:
                with torch.no_grad():
                    ref_logp, _ = S.target_logprobs(ref, S.assemble(ref, rows, tok.pad_id), r.sample.temperature, j.image_temperature)
            out = rl.policy_loss(logp_NT, logp_NT.detach(), adv_N, mask_NT, r.clip_eps, ref_logp, r.kl_coef, settings=settings,
                                 kl_estimator=r.kl_estimator)
            bad, grad_norm = loop.backward_step(out.loss, r.grad_clip)
            metrics.update({"rl/reward_mean": float(rewards_N.mean()), "rl/loss": out.loss.item(), "rl/kl": out.kl, "rl/grad_norm": grad_norm,
                            "rl/zero_var_group_frac": float(rl.zero_variance_groups(rewards_N, G).float().mean()),
                            "time/sample_s": t_sample, "time/step_s": time.perf_counter() - t0})
            if loop.due(r.eval_every, step + 1):
                after = evaluate(policy, vq, tok, run_cfg, r)
                metrics.update({f"eval/{k}": v for k, v in after.items() if v is not None})
            loop.end_step(step + 1, metrics, bad=bad, state={"before": before},
                          postfix={"reward": f"{metrics['rl/reward_mean']:.3f}"})
    if not loop.due(r.eval_every, r.steps):  # eval_every 0: evaluate once at the end
        after = evaluate(policy, vq, tok, run_cfg, r)
    result = {"mode": mode, "init": str(start), "steps": r.steps, "before": before, "after": after}
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval" / "janus_rl.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    rows_t = [{"": name, **{k: v for k, v in fig.items()}} for name, fig in (("before", before), ("after", after))]
    print(tracking.format_table(rows_t, title=f"rl on images ({PREFIX}{mode}): held-out figures ({r.eval_problems} questions, 2 samples; "
                                               f"{r.eval_problems} scene prompts + 10 digits, guided = scale {j.cfg_scale:g})"))
    return loop.last_path


def _loss_settings(r) -> rl.LossSettings:
    from r1lab.recipes.rl import loss_settings  # the text recipe's, one definition

    return loss_settings(r)


def main(cfg: Config) -> Path:
    """Entry from ``r1lab rl`` when ``--init`` is a janus run."""
    init = Path(cfg.init)
    if not is_janus_run(init):
        raise common.StageError(f"--init {init}: task {cfg.task} needs an `r1lab janus` run folder (with vq/ and its stages)")
    mode = mode_of(cfg.task)
    run_dir = common.run_dir_for(cfg, "rl")
    common.prepare_run_dir(run_dir, cfg)
    path = run(cfg, run_dir, init, mode)
    print(f"rl: final checkpoint {path}")
    return run_dir
