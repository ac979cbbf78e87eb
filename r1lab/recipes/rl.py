"""GRPO with verifiable rewards only: the DeepSeek-R1-Zero recipe (arXiv:2501.12948, sec. 2.2).

One linear loop: sample G completions for each of B train prompts with the policy itself (same
model code as training, KV cache), score them with the task's rule-based rewards, turn rewards into
group-normalised advantages, take the clipped policy-gradient step, and log, checkpoint and
periodically evaluate. The maths lives in ``r1lab.rl``; this file only wires it.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import torch

from r1lab import checkpoint, lora, rl, rollout, tracking
from r1lab.config import Config, EvalConfig
from r1lab.model import moe
from r1lab.recipes import common
from r1lab.recipes.eval import evaluate_model
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task


def run(cfg: Config, run_dir: Path, init: str | Path) -> Path:
    """Train from the checkpoint at ``init``; checkpoints go to ``run_dir``; returns the last one."""
    r = cfg.rl
    common.seed_everything(cfg.seed, cfg.threads)
    tok = common.load_tokenizer(init)
    task = get_task(cfg.task, seed=cfg.seed)
    weights = RewardWeights(format=r.format_weight, correct=r.correct_weight, partial=r.partial_weight)
    policy, init_ckpt = common.load_model(init)
    if cfg.lora.rank > 0:  # only the adapters train; the frozen base is the KL reference (adapters off)
        lora.apply(policy, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
    # The reference policy is the starting point, frozen; only kept when the KL term uses it.
    ref = copy.deepcopy(policy).eval().requires_grad_(False) if r.kl_coef > 0 and cfg.lora.rank == 0 else None
    opt = common.make_optimizer(policy, r.lr, r.weight_decay)
    data_rng = random.Random(cfg.seed)
    sample_gen = torch.Generator().manual_seed(cfg.seed)
    extra = {"ref_model": ref} if ref is not None else {}

    start, bad_steps = 0, 0
    ckpt = checkpoint.load_latest(run_dir) if cfg.resume else None
    if ckpt is not None:
        checkpoint.apply(policy, ckpt, opt, extra_models=extra)
        checkpoint.restore_rng(ckpt.rng, generators={"data": data_rng, "sample": sample_gen})
        start, bad_steps = ckpt.step, ckpt.state.get("bad_steps", 0)
        print(f"resuming RL from {ckpt.path} (step {start})")
        if start >= r.steps:
            return ckpt.path
    print(f"rl: GRPO on {task.name} from {init_ckpt.path}: {r.steps} steps x {r.prompts_per_step} prompts x {r.group_size} samples")

    eval_cfg = EvalConfig(n_problems=r.eval_problems, n_samples=2, ks=[1], seed=cfg.eval.seed, sample=cfg.eval.sample)
    last_path = ckpt.path if ckpt is not None else init_ckpt.path
    policy.train()
    loads = common.ExpertLoadLog(run_dir, resume_step=start if ckpt else None)
    with tracking.Tracker(run_dir, tensorboard=cfg.tensorboard, resume=ckpt is not None, resume_step=start if ckpt else None) as tracker, common.StopFlag() as stop, loads:
        bar = tracking.progress(range(start, r.steps), desc="rl", initial=start, total=r.steps)
        for step in bar:
            t0 = time.perf_counter()
            common.set_lr(opt, r.lr * min(1.0, (step + 1) / max(1, r.warmup_steps)))

            # 1. Sample G completions per prompt with the current policy.
            examples = [task.sample(data_rng, "train") for _ in range(r.prompts_per_step)]
            prompts = [tok.prompt_ids(ex.question) for ex in examples for _ in range(r.group_size)]
            ro = rollout.sample(policy, prompts, r.sample, tok.eos_id, tok.pad_id, sample_gen)
            t_sample = time.perf_counter() - t0

            # 2. Score with verifiable rewards; 3. group-normalised advantages.
            texts = [tok.decode_completion(ro.completion_ids(i)) for i in range(len(prompts))]
            scores = [task.score(text, examples[i // r.group_size], weights) for i, text in enumerate(texts)]
            rewards_N = torch.tensor([s.reward for s in scores])  # (B*G,)
            adv_N = rl.group_advantages(rewards_N, r.group_size, scale=r.scale_rewards)  # (B*G,)
            ref_logp = None
            if r.kl_coef > 0:
                with torch.no_grad(), lora.disabled(policy):
                    ref_logp, _ = rollout.policy_logprobs(ref if ref is not None else policy, ro.tokens, ro.attention_mask, r.sample.temperature, r.logprob_chunk)

            # 4. Clipped policy-gradient update(s) on this batch.
            t1 = time.perf_counter()
            load_LE = None
            for update in range(r.updates_per_batch):
                logp, aux = rollout.policy_logprobs(policy, ro.tokens, ro.attention_mask, r.sample.temperature, r.logprob_chunk)
                if update == 0:  # sampler and trainer ran the same weights: their log-probs must agree
                    mismatch = (logp.detach() - ro.logprobs)[ro.completion_mask].abs()
                out = rl.policy_loss(logp, ro.logprobs, adv_N, ro.completion_mask, r.clip_eps, ref_logp, r.kl_coef)
                loss = out.loss + aux
                opt.zero_grad(set_to_none=True)
                loss.backward()
                bad = common.nonfinite_guard(loss, policy)  # NaN/Inf: skip the rest of this batch's updates
                if bad is not None:
                    grad_norm = float("nan")
                    moe.after_optimizer_step(policy, 0, stepped=False)  # drop this pass's expert load
                    break
                grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), r.grad_clip if r.grad_clip > 0 else float("inf"))
                opt.step()
                load_LE = moe.after_optimizer_step(policy, step * r.updates_per_batch + update + 1)  # aux-free bias update
            t_train = time.perf_counter() - t1

            lengths = ro.completion_lengths.float()
            groups = rewards_N.view(-1, r.group_size)
            metrics = {
                "rollout/reward_mean": float(rewards_N.mean()),
                "rollout/reward_std": float(rewards_N.std()),
                "rollout/format_rate": sum(s.format for s in scores) / len(scores),
                "rollout/correct_rate": sum(s.correct for s in scores) / len(scores),
                "rollout/zero_var_group_frac": float((groups.std(dim=1) == 0).float().mean()),
                "rollout/mean_len": float(lengths.mean()),
                "rollout/truncated_frac": float((~ro.finished).float().mean()),
                "rollout/tokens_per_s": float(lengths.sum()) / t_sample,
                "rollout/logp_mismatch_max": float(mismatch.max()) if mismatch.numel() else 0.0,
                "train/loss": out.loss.item(),
                "train/kl": out.kl,
                "train/clip_frac": out.clip_frac,
                "train/grad_norm": float(grad_norm),
                "train/lr": opt.param_groups[0]["lr"],
                "train/skipped_nonfinite": int(bad is not None),
                "time/sample_s": t_sample,
                "time/train_s": t_train,
                **moe.balance_metrics(policy, load_LE),
            }
            loads.log(step + 1, load_LE)
            if r.eval_every and ((step + 1) % r.eval_every == 0 or step + 1 == r.steps):
                res = evaluate_model(policy, tok, task, eval_cfg, weights, desc="rl eval")
                metrics["eval/pass@1"] = res.metrics["pass@1"]
                metrics["eval/mean_len"] = res.metrics["mean_len"]
                policy.train()
            tracker.log(step + 1, metrics)
            bad_steps = common.count_bad_step(bad, bad_steps, step + 1, cfg.max_bad_steps, last_path)
            bar.set_postfix({"reward": f"{metrics['rollout/reward_mean']:.3f}", "len": f"{metrics['rollout/mean_len']:.1f}"}, refresh=False)
            if (step + 1) % cfg.save_every == 0 or step + 1 == r.steps or stop.requested:
                state = {**common.model_state(policy), "bad_steps": bad_steps}
                last_path = checkpoint.save(run_dir, step + 1, policy, opt, state=state, extra_models=extra,
                                            generators={"data": data_rng, "sample": sample_gen}, keep=cfg.keep_checkpoints)
            stop.check(step + 1, r.steps, last_path)
    return last_path


def main(cfg: Config) -> Path:
    if not cfg.init:
        raise common.StageError("rl needs --init RUN_OR_CHECKPOINT_FOLDER (a pretrained model)")
    run_dir = common.run_dir_for(cfg, "rl")
    common.prepare_run_dir(run_dir, cfg)
    path = run(cfg, run_dir, cfg.init)
    common.print_stage_summary(run_dir, "rl", ["rollout/reward_mean", "rollout/correct_rate", "rollout/mean_len", "rollout/zero_var_group_frac", "eval/pass@1"])
    print(f"rl: final checkpoint {path}")
    return run_dir
