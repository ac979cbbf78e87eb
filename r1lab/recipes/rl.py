"""RL with verifiable rewards: the DeepSeek-R1-Zero recipe (arXiv:2501.12948, sec. 2.2) and the
GRPO family after it (Dr. GRPO, DAPO, GSPO, CISPO, SAPO, RLOO, REINFORCE++), chosen in config.

One linear loop: sample G completions for each of B train prompts with the policy itself (same
model code as training, KV cache; with DAPO dynamic sampling, redraw until B groups carry signal),
score them with the task's rule-based rewards (plus any extra reward functions), turn rewards into
advantages, take mu passes of clipped policy-gradient steps over mini-batches (accumulating over
micro-batches), and log, checkpoint and periodically evaluate. The maths lives in ``r1lab.rl``;
this file only wires it.

Under torchrun (DDP or FSDP2, docs/distributed.md) every rank draws the same world x B prompts and
keeps groups rank::world, so a GRPO group never spans ranks; it samples them with its own generator
(seeded by seed and rank; FSDP2 gathers the full weights for the sampling phase), advantages are
computed over the gathered rewards of all ranks, the loss is normalised by the global token
(sequence) count, gradients are averaged by DDP or FSDP2, expert loads summed before the bias
update, and the periodic evaluation is split across ranks. DAPO's redraws stop when every rank
holds its B groups (agreed by an all-reduce) or at the cap. Sampling and training run on the
model's device (``--device``); rewards and advantages are computed on the CPU.
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from r1lab import distributed, lora, monitor, prm, rl, rollout
from r1lab.config import Config, EvalConfig, RLConfig
from r1lab.model import moe
from r1lab.recipes import common, context, prompts
from r1lab.recipes.eval import evaluate_model
from r1lab.recipes.loop import TrainLoop
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tasks.base import Example, Task
from r1lab.tokenizer import BaseTokenizer


def _think_present(completion: str, example: Example) -> float:
    """1 when a non-empty <think> block opens the completion (R1 asks to show the reasoning)."""
    head, sep, _ = completion.partition("</think>")
    return 1.0 if sep and head.strip().startswith("<think>") and head.strip() != "<think>" else 0.0


def _chars(completion: str, example: Example) -> float:
    """Completion length in hundreds of characters; a negative weight makes it a length penalty."""
    return len(completion) / 100.0


REWARDS: dict[str, Callable[[str, Example], float]] = {"think_present": _think_present, "chars": _chars}
"extra reward functions: plain ``(completion text, example) -> float``, chosen by rl.extra_rewards"


def loss_settings(r: RLConfig) -> rl.LossSettings:
    return rl.LossSettings(r.loss_type, r.clip_eps, r.clip_eps_high or r.clip_eps, r.dual_clip, r.sapo_tau_pos,
                           r.sapo_tau_neg, r.aggregation, norm_len=r.sample.max_new_tokens)


def reward_components(texts: list[str], examples: list[Example], ro: rollout.Rollout, task, r: RLConfig, weights: RewardWeights) -> tuple[torch.Tensor, dict[str, torch.Tensor], list]:
    """(total reward (N,), the components (N,) that add up to it by name, the task's Scores).

    ``task`` is the task's own R1 reward (format and correctness, combined as ``task.score``
    defines); the others are added to it, each already weighted."""
    scores = [task.score(text, ex, weights) for text, ex in zip(texts, examples)]
    total = torch.tensor([s.reward for s in scores])  # (N,) the task's own reward, unchanged by default
    parts = {"task": total}
    if r.overlong == "soft":
        buffer = r.overlong_buffer or max(1, r.sample.max_new_tokens // 5)
        parts["overlong"] = r.overlong_weight * rl.soft_overlong_penalty(ro.completion_lengths.cpu(), r.sample.max_new_tokens, buffer)
        total = total + parts["overlong"]
    for name, w in zip(r.extra_rewards, r.extra_reward_weights):
        parts[name] = torch.tensor([w * REWARDS[name](text, ex) for text, ex in zip(texts, examples)])
        total = total + parts[name]
    return total, parts, scores


def _chunks(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    return list(rows.split(size)) if size > 0 else [rows]


def backward_minibatch(policy, ro: rollout.Rollout, mb: torch.Tensor, loss_mask: torch.Tensor, old_logp: torch.Tensor, adv_N: torch.Tensor,
                       ref_logp: torch.Tensor | None, is_weight: torch.Tensor | None, r: RLConfig, settings: rl.LossSettings,
                       stats: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate the gradient of mini-batch ``mb`` (row indices) over micro-batches of
    ``r.micro_batch_size`` rows; the shares add up to the mini-batch's loss (``rl.aggregate``).
    Returns (the mini-batch loss, detached; |trainer - sampler| log-prob of its completion tokens)
    and adds token-weighted metric sums to ``stats``."""
    N = ro.tokens.shape[0]
    mb_mask = loss_mask[mb]
    totals = (float(mb_mask.sum()), float((mb_mask.sum(-1) > 0).sum()))
    world = distributed.world()
    if world > 1:  # normalise by all ranks' tokens; DDP's gradient mean over ranks is undone by x world
        totals = tuple(distributed.all_reduce_(torch.tensor(totals, dtype=torch.float64)).tolist())
    mb_loss, mismatch = torch.zeros(()), []
    for micro in _chunks(mb, r.micro_batch_size):
        rows = slice(None) if len(micro) == N else micro  # the whole batch: no copy
        if r.entropy_coef > 0:
            logp, ent, aux = rollout.policy_logprobs_entropy(policy, ro.tokens[rows], ro.attention_mask[rows], r.sample.temperature, r.pack,
                                                             ro.completion_mask[rows], r.share_prompt)
        else:
            (logp, aux), ent = rollout.policy_logprobs(policy, ro.tokens[rows], ro.attention_mask[rows], r.sample.temperature, r.logprob_chunk, r.pack,
                                                       ro.completion_mask[rows], r.share_prompt), None
        mismatch.append((logp.detach() - ro.logprobs[rows])[ro.completion_mask[rows]].abs())
        kl_loss = ref_logp is not None and not r.kl_in_reward
        out = rl.policy_loss(logp, old_logp[rows], adv_N[rows], loss_mask[rows], r.clip_eps, ref_logp[rows] if kl_loss else None,
                             r.kl_coef if kl_loss else 0.0, settings, r.kl_estimator,
                             is_weight[rows] if is_weight is not None else None, ent, r.entropy_coef, totals)
        share = len(micro) / len(mb)  # MoE aux loss is a mean per forward: weight it by rows
        loss = out.loss + aux if share == 1.0 else out.loss + aux * share
        (loss * world if world > 1 else loss).backward()
        mb_loss = mb_loss + out.loss.detach()
        n_tok = float(loss_mask[rows].sum())
        for key, v in (("clip_low", out.clip_low_frac), ("clip_high", out.clip_high_frac), ("kl", out.kl), ("ratio", out.ratio_mean), ("entropy", out.entropy)):
            stats[key] += v * n_tok
        stats["tokens"] += n_tok
    return mb_loss, torch.cat(mismatch)


@dataclass
class StepRewards:
    """The steps of a batch of completions, for process-reward advantages (``rl.process_advantages``)."""

    rewards: list[list[float]]  # per completion: a reward per reasoning step, then the answer step's
    ends: list[list[int]]  # the rollout column of each of those steps' last token
    agree: int = 0  # learned PRM only: steps whose score (>= 0.5) agrees with the exact label
    judged: int = 0  # steps with an exact label


def oracle_checks(task: Task) -> bool:
    """Whether ``task`` has exact step checks (``Task.step_checks`` not None)."""
    return task.step_checks(task.sample(random.Random(0), "train"), []) is not None


def step_rewards(texts: list[str], examples: list[Example], scores: list, ro: rollout.Rollout, tok: BaseTokenizer, task: Task,
                 scorer: prm.StepScorer | None, marker: str) -> StepRewards:
    """Score every step: with ``scorer`` the learned PRM's probability, else the task's exact check
    (1 right, 0 wrong or unreadable). The answer step (the whole completion, ending at its last
    token) scores the PRM's answer head, or the verifier's correctness for the oracle."""
    out = StepRewards([], [])
    learned = scorer.score_batch([(ex.question, t) for ex, t in zip(examples, texts)]) if scorer is not None else None
    for i, (text, ex) in enumerate(zip(texts, examples)):
        spans = prm.step_spans(text, scorer.marker if scorer is not None else (marker or None))
        checks = task.step_checks(ex, [text[a:b] for a, b in spans]) or [None] * len(spans)
        if learned is not None:
            values = [*learned[i][0], learned[i][1]]
            for v, c in zip(learned[i][0], checks):
                if c is not None:
                    out.judged += 1
                    out.agree += int((v >= 0.5) == c)
        else:
            values = [1.0 if c else 0.0 for c in checks] + [float(scores[i].correct)]
        cols = ro.completion_mask[i].nonzero().squeeze(-1).tolist()
        ids = ro.tokens[i, cols].tolist()
        stop = ids.index(tok.eos_id) if tok.eos_id in ids else len(ids)  # the answer step ends at the last token before eos
        out.rewards.append(values)
        out.ends.append([cols[j] for j in prm.token_step_ends(tok, ids, scorer.marker if scorer is not None else (marker or None))]
                        + [cols[max(stop - 1, 0)]])
    return out


EVENTS_FILE = "events.jsonl"
"the reward-hacking monitor's events of an RL run, one JSON object a line"
MONITOR_FILE = "monitor.json"
"the monitor's summary of an RL run (events by kind, the first one)"


def write_events(run_dir: Path, events: list[dict]) -> None:
    """Rewrite the events file with ``events`` (on start and resume: a killed process's events
    after its last checkpoint are dropped, and fire again identically). Atomic replace."""
    path = Path(run_dir) / EVENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    tmp.replace(path)


def report_events(run_dir: Path, events: list[monitor.Event], metrics: dict) -> None:
    """A warning line on stderr, a line in the events file and a ``monitor/flag_<kind>`` metric per event."""
    with open(Path(run_dir) / EVENTS_FILE, "a", encoding="utf-8") as f:
        for e in events:
            print(f"monitor: WARNING step {e.step}: {e.kind}: {e.message}", file=sys.stderr, flush=True)
            f.write(json.dumps({"step": e.step, "kind": e.kind, "message": e.message, "values": e.values}) + "\n")
            metrics[f"monitor/flag_{e.kind}"] = 1.0


def run(cfg: Config, run_dir: Path, init: str | Path) -> Path:
    """Train from the checkpoint at ``init``; checkpoints go to ``run_dir``; returns the last one."""
    r = cfg.rl
    unknown = [n for n in r.extra_rewards if n not in REWARDS]
    if unknown:
        raise common.StageError(f"rl.extra_rewards: unknown reward {unknown[0]!r}; known: {sorted(REWARDS)}")
    common.seed_everything(cfg.seed, cfg.threads)
    tok = common.load_tokenizer(init)
    task = get_task(cfg.task, seed=cfg.seed)
    weights = RewardWeights(format=r.format_weight, correct=r.correct_weight, partial=r.partial_weight)
    settings = loss_settings(r)
    policy, init_ckpt = common.load_model(init)
    if cfg.lora.rank > 0:  # only the adapters train; the frozen base is the KL reference (adapters off)
        lora.apply(policy, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
    dev = distributed.device(cfg.device)  # sampling and training on the GPU when there is one; rewards and advantages on the CPU
    policy.to(dev)
    G, max_len = r.group_size, policy.cfg.max_seq_len
    context.check_loaded(max_len, cfg, task, tok, "rl")  # prompt + budget fit, before any sampling
    source = prompts.make_source(cfg, task, tok, max_len)  # data.prompts: uniform (R1), curriculum or pass-rate curation
    scorer = None  # process rewards: a learned PRM, or (None) the task's exact step checks
    if r.reward != "outcome":
        if r.prm:
            try:
                scorer = prm.load_scorer(r.prm)
            except ValueError as err:
                raise common.StageError(f"rl.prm: {err}") from None
            if scorer.model.cfg.max_seq_len < max_len:
                raise common.StageError(f"rl.prm: {r.prm} reads at most {scorer.model.cfg.max_seq_len} tokens, the policy writes up to {max_len}")
        elif not oracle_checks(task):
            raise common.StageError(f"rl.reward {r.reward}: task {task.name!r} has no exact step checks; give a trained reward model with --rl.prm PATH")
    # The reference policy is the starting point, frozen; only built when the KL term uses it
    # (with LoRA it is the policy itself with its adapters switched off: no second copy).
    ref = copy.deepcopy(policy).eval().requires_grad_(False) if r.kl_coef > 0 and cfg.lora.rank == 0 else None
    world, rank = distributed.world(), distributed.rank()
    if world > 1:
        _check_distributed(cfg, policy.cfg)
    # Sampling runs the plain module on each rank (FSDP2: its gathered weights); the trainer's forward goes through DDP/FSDP2.
    train_policy = distributed.wrap(policy, cfg.dist, dev, find_unused=policy.mtp is not None)
    opt = common.make_optimizer(policy, r.lr, r.weight_decay)
    data_rng = random.Random(cfg.seed)  # the same on every rank: the global prompt list
    sample_gen = torch.Generator().manual_seed(cfg.seed if world == 1 else cfg.seed * 1_000_003 + rank)
    extra = {"ref_model": ref} if ref is not None else {}

    loop = TrainLoop(cfg, run_dir, "rl", policy, opt, total=r.steps, generators={"data": data_rng, "sample": sample_gen, **source.generators},
                     extra_models=extra, start_path=init_ckpt.path)
    if loop.finished:
        return loop.last_path
    source.load(loop.state.get("prompts"))
    if cfg.data.signal_check and not loop.resumed:
        with distributed.gathered(policy):
            prompts.signal_check(cfg, policy, tok, task, "rl", run_dir / "signal.json" if distributed.is_main() else None)
    reward_name = "" if r.reward == "outcome" else f"{r.reward} reward ({'PRM ' + r.prm if r.prm else 'exact step checks'}), "
    print(f"rl: {reward_name}{r.advantage}/{r.loss_type} on {task.name} from {init_ckpt.path}: {r.steps} steps x {r.prompts_per_step} prompts x {G} samples")

    eval_cfg = EvalConfig(n_problems=r.eval_problems, n_samples=2, ks=[1], seed=cfg.eval.seed, sample=cfg.eval.sample)
    # The reward-hacking monitor only observes: its probe samples with its own generator, so the
    # policy's samples and every other metric are the same with it on or off (tested).
    watch = monitor.Monitor(r.monitor, loop.state.get("monitor")) if r.monitor.enabled else None
    probe_cfg = EvalConfig(n_problems=r.monitor.probe_problems, n_samples=1, ks=[1], seed=r.monitor.probe_seed, sample=r.sample)
    if watch is not None and distributed.is_main():  # under torchrun rank 0 writes the run's files
        write_events(run_dir, watch.events)
    policy.train()
    with loop:
        for step in loop.steps():
            t0 = time.perf_counter()
            loop.set_lr(r.lr * min(1.0, (step + 1) / max(1, r.warmup_steps)))
            distributed.unshard(policy)  # FSDP2: full weights on every rank while sampling (ranks decode different numbers of steps)
            source.before_step(step, policy)

            # 1. Sample G completions per prompt with the current policy; 2. score them. With DAPO
            # dynamic sampling, draw again until B groups whose rewards differ are kept (or the cap).
            kept: list[tuple[list[Example], rollout.Rollout, list[str], torch.Tensor, dict, list]] = []
            n_kept, drawn, rounds, t_score, n_fill = 0, 0, 0, 0.0, 0
            while True:
                examples = source.draw(data_rng, r.prompts_per_step * world)[rank::world]  # whole groups per rank
                rounds += 1
                if n_kept < r.prompts_per_step:  # under torchrun a full rank still draws (one shared prompt stream) but samples no more
                    gen = [group_generator(cfg.seed, step, rounds, i) for i in range(rank, r.prompts_per_step * world, world)] if r.group_seeds else sample_gen
                    ro = rollout.sample(policy, [tok.prompt_ids(ex.question) for ex in examples], r.sample, tok.eos_id, tok.pad_id, gen, repeats=G)
                    ts = time.perf_counter()
                    row_examples = [ex for ex in examples for _ in range(G)]
                    texts = [tok.decode_completion(ro.completion_ids(i)) for i in range(len(row_examples))]
                    total, parts, scores = reward_components(texts, row_examples, ro, task, r, weights)
                    t_score += time.perf_counter() - ts
                    drawn += len(examples)
                    if not r.dynamic_sampling:
                        kept.append((row_examples, ro, texts, total, parts, scores))
                        break
                    useful = ~rl.zero_variance_groups(total, G)  # (B,)
                    take = useful.nonzero().squeeze(-1)[: r.prompts_per_step - n_kept]
                    if len(take) or (rounds >= r.max_sample_rounds and not kept):
                        n_kept += len(take)
                        if not len(take):
                            take = torch.arange(len(examples))  # nothing useful at all: train on the last draw (no signal)
                        elif world > 1 and rounds >= r.max_sample_rounds and n_kept < r.prompts_per_step:
                            # Ranks must run as many micro-batches as each other: top up with this draw's
                            # degenerate groups, masked out of the loss (the last rows of the batch).
                            n_fill = (r.prompts_per_step - n_kept) * G
                            take = torch.cat([take, (~useful).nonzero().squeeze(-1)[: r.prompts_per_step - n_kept]])
                        rows = (take[:, None] * G + torch.arange(G)).reshape(-1)
                        kept.append(([row_examples[i] for i in rows], rollout.select(ro, rows), [texts[i] for i in rows],
                                     total[rows], {k: v[rows] for k, v in parts.items()}, [scores[i] for i in rows]))
                # Under torchrun the ranks agree to stop when every rank holds its groups (or at the cap).
                if rounds >= r.max_sample_rounds or not distributed.any_rank(n_kept < r.prompts_per_step):
                    break
            distributed.reshard(policy)
            if len(kept) == 1:
                row_examples, ro, texts, rewards_N, parts, scores = kept[0]
            else:
                row_examples = [e for k in kept for e in k[0]]
                ro = rollout.concat([k[1] for k in kept], tok.pad_id, max_len)
                texts = [t for k in kept for t in k[2]]
                rewards_N = torch.cat([k[3] for k in kept])
                parts = {name: torch.cat([k[4][name] for k in kept]) for name in kept[0][4]}
                scores = [s for k in kept for s in k[5]]
            source.observe([c for part in distributed.gather_objects([s.correct for s in scores]) for c in part])  # all ranks' rates
            t_sample = time.perf_counter() - t0

            # Reference log-probs (only with a KL term), on the sampled tokens.
            t1 = time.perf_counter()
            ref_logp = None
            if r.kl_coef > 0:
                with torch.no_grad(), lora.disabled(policy):
                    ref_logp, _ = rollout.policy_logprobs(ref if ref is not None else policy, ro.tokens, ro.attention_mask,
                                                          r.sample.temperature, r.logprob_chunk, r.pack, ro.completion_mask, r.share_prompt)
                if r.kl_in_reward:
                    kl_N = (rl.kl_estimate(ro.logprobs, ref_logp, r.kl_estimator) * ro.completion_mask).sum(-1)  # (N,)
                    parts["kl"] = -r.kl_coef * kl_N.cpu()
                    rewards_N = rewards_N + parts["kl"]
            t_ref = time.perf_counter() - t1

            # 3. Advantages; the loss mask drops truncated completions under DAPO's overlong filter.
            # Process supervision: one advantage per token from the step rewards (DeepSeekMath 4.1.3).
            adv_N, all_rewards = rank_advantages(rewards_N, G, r)  # (N,), (world * N,)
            proxy = float(rewards_N.mean())  # what the advantages pay for, as the monitor sees it
            if r.reward != "outcome":
                step_r = step_rewards(texts, row_examples, scores, ro, tok, task, scorer, cfg.prm.marker)
                process_NT = rl.process_advantages(step_r.rewards, step_r.ends, G, ro.tokens.shape[1])  # (N, T)
                adv_N = process_NT if r.reward == "process" else rl.hybrid_advantages(process_NT, adv_N, r.process_weight)  # (N, T)
                process_mean = sum(sum(v) / len(v) for v in step_r.rewards) / len(step_r.rewards)
                n_steps = sum(len(v) - 1 for v in step_r.rewards)
                steps_mean = n_steps / len(step_r.rewards)
                if world > 1:  # over all ranks' completions (groups are whole per rank, so the advantages are already exact)
                    sums = distributed.all_reduce_(torch.tensor([process_mean * len(step_r.rewards), len(step_r.rewards), step_r.agree, step_r.judged,
                                                                 n_steps], dtype=torch.float64)).tolist()
                    process_mean, step_r.agree, step_r.judged, steps_mean = sums[0] / sums[1], int(sums[2]), int(sums[3]), sums[4] / sums[1]
                proxy = process_mean if r.reward == "process" else r.process_weight * process_mean + (1 - r.process_weight) * proxy
            adv_N = adv_N.to(dev)
            loss_mask = ro.completion_mask
            if r.overlong == "mask":
                loss_mask = loss_mask & ro.finished[:, None]
            if n_fill:
                loss_mask = loss_mask.clone()
                loss_mask[-n_fill:] = False
            N = len(rewards_N)

            # Old log-probs: the sampler's (the same model code and weights), or with truncated
            # importance sampling the trainer's, weighted by min(pi_trainer / pi_sampler, cap).
            old_logp, is_weight, mismatch = ro.logprobs, None, None
            t2 = time.perf_counter()
            if r.tis_cap > 0:
                with torch.no_grad():
                    old_logp = torch.cat([rollout.policy_logprobs(policy, ro.tokens[m], ro.attention_mask[m], r.sample.temperature, r.logprob_chunk, r.pack,
                                                                  ro.completion_mask[m], r.share_prompt)[0]
                                          for m in _chunks(torch.arange(N), r.micro_batch_size)])
                is_weight = torch.exp(old_logp - ro.logprobs).clamp(max=r.tis_cap)  # (N, T)
                mismatch = (old_logp - ro.logprobs)[ro.completion_mask].abs()

            # 4. mu passes over the batch; each pass splits whole groups into mini-batches (one
            # optimizer step each) and each mini-batch into micro-batches (gradient accumulation).
            n_groups = N // G
            n_mini = min(r.mini_batches, n_groups)
            stats = {"clip_low": 0.0, "clip_high": 0.0, "kl": 0.0, "ratio": 0.0, "entropy": 0.0, "tokens": 0.0}
            losses, grad_norm, bad, t_fb, t_opt, train_tokens = [], float("nan"), None, 0.0, 0.0, 0
            # Optimizer steps before this RL step (each takes updates_per_batch x mini-batches): the
            # clock of the aux-free bias's stop step, the same after a resume.
            opt_steps, load_LE = step * r.updates_per_batch * min(r.mini_batches, r.prompts_per_step), None
            for update in range(r.updates_per_batch):
                if n_mini > 1:  # shuffle groups, seeded by (seed, step, pass): resumes identically
                    perm = torch.randperm(n_groups, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + step * 1_009 + update))
                else:
                    perm = torch.arange(n_groups)
                for mb_groups in perm.tensor_split(n_mini):
                    mb = (mb_groups[:, None] * G + torch.arange(G)).reshape(-1).sort().values  # (rows,)
                    tf = time.perf_counter()
                    opt.zero_grad(set_to_none=True)
                    mb_loss, first = backward_minibatch(train_policy, ro, mb, loss_mask, old_logp, adv_N, ref_logp, is_weight, r, settings, stats)
                    if update == 0 and mismatch is None and not losses:  # same weights as the sampler: must agree
                        mismatch = first
                    train_tokens += int(ro.attention_mask[mb].sum())
                    t_fb += time.perf_counter() - tf
                    to = time.perf_counter()
                    bad = loop.guard(mb_loss)  # NaN/Inf: skip the rest of this batch's updates
                    if bad is not None:
                        grad_norm = float("nan")
                        moe.after_optimizer_step(policy, 0, stepped=False)  # drop this pass's expert load
                        break
                    grad_norm = loop.clip_and_step(r.grad_clip)
                    opt_steps += 1
                    load_LE = moe.after_optimizer_step(policy, opt_steps)  # aux-free bias: once per optimizer step
                    t_opt += time.perf_counter() - to
                    losses.append(float(mb_loss))
                if bad is not None:
                    break
            t_train = time.perf_counter() - t2

            lengths, finished, row_scores, row_parts = ro.completion_lengths.float(), ro.finished, scores, parts
            entropy_tok = ro.entropy[ro.completion_mask] if ro.entropy is not None else None
            groups = rewards_N.view(-1, G)
            if world > 1:  # every figure over all ranks' rows (in rank order), so that N ranks log what one process does
                every = distributed.gather_objects([lengths.cpu(), finished.cpu(), None if entropy_tok is None else entropy_tok.cpu(),
                                                    None if mismatch is None else mismatch.cpu(), {k: v.cpu() for k, v in parts.items()}, scores])
                lengths, finished, entropy_tok, mismatch = (None if every[0][i] is None else torch.cat([e[i] for e in every]) for i in range(4))
                row_parts, row_scores = {k: torch.cat([e[4][k] for e in every]) for k in parts}, [s for e in every for s in e[5]]
                groups = all_rewards.view(-1, G)
                stats = dict(zip(stats, distributed.all_reduce_(torch.tensor(list(stats.values()), dtype=torch.float64)).tolist()))
                losses = distributed.all_reduce_(torch.tensor(losses, dtype=torch.float64)).tolist()  # each rank holds its share of the loss
            n_tok = max(stats["tokens"], 1.0)
            metrics = {
                "rollout/reward_mean": float(all_rewards.mean()),
                "rollout/reward_std": float(all_rewards.std()),
                **{f"reward/{k}_mean": float(v.mean()) for k, v in row_parts.items()},
                **{f"reward/{k}_std": float(v.std()) for k, v in row_parts.items()},
                **{f"reward/{k}_mean": float(torch.tensor([getattr(s, k) for s in row_scores]).mean()) for k in ("format", "correct")},
                "rollout/format_rate": sum(s.format for s in row_scores) / len(row_scores),
                "rollout/correct_rate": sum(s.correct for s in row_scores) / len(row_scores),
                "rollout/zero_var_group_frac": float((groups.std(dim=1) == 0).float().mean()),
                "rollout/mean_len": float(lengths.mean()),
                "rollout/max_len": float(lengths.max()),
                "rollout/truncated_frac": float((~finished).float().mean()),
                "rollout/entropy": float(entropy_tok.mean()) if entropy_tok is not None else 0.0,
                "rollout/tokens_per_s": float(lengths.sum()) / max(ro.prefill_s + ro.decode_s, 1e-9),
                "rollout/logp_mismatch_max": float(mismatch.max()) if mismatch is not None and mismatch.numel() else 0.0,
                "rollout/logp_mismatch_mean": float(mismatch.mean()) if mismatch is not None and mismatch.numel() else 0.0,
                "train/loss": losses[-1] if losses else float("nan"),
                "train/kl": stats["kl"] / n_tok,
                "train/clip_frac": (stats["clip_low"] + stats["clip_high"]) / n_tok,
                "train/clip_low_frac": stats["clip_low"] / n_tok,
                "train/clip_high_frac": stats["clip_high"] / n_tok,
                "train/ratio_mean": stats["ratio"] / n_tok,
                "train/grad_norm": float(grad_norm),
                "train/lr": opt.param_groups[0]["lr"],
                "train/optimizer_steps": len(losses),
                "train/tokens_per_s": train_tokens / max(t_fb, 1e-9),
                "train/skipped_nonfinite": int(bad is not None),
                "time/sample_s": t_sample,
                "time/prefill_s": ro.prefill_s,
                "time/decode_s": ro.decode_s,
                "time/score_s": t_score,
                "time/ref_s": t_ref,
                "time/forward_backward_s": t_fb,
                "time/optimizer_s": t_opt,
                "time/train_s": t_train,
                **moe.balance_metrics(policy, load_LE),
            }
            if r.entropy_coef > 0:
                metrics["train/entropy"] = stats["entropy"] / n_tok
            if r.reward != "outcome":
                metrics["reward/process_mean"] = process_mean
                metrics["process/steps_mean"] = steps_mean
                if step_r.judged:
                    metrics["process/prm_step_acc"] = step_r.agree / step_r.judged
            if r.dynamic_sampling:
                drawn, n_kept = (int(x) for x in distributed.all_reduce_(torch.tensor([drawn, n_kept])).tolist())  # over all ranks
                metrics["rollout/groups_drawn_per_kept"] = drawn / max(n_kept, 1)
                metrics["rollout/sample_rounds"] = rounds
                metrics["rollout/groups_kept"] = n_kept
            metrics.update(source.metrics())
            if loop.due(r.eval_every, step + 1):
                with distributed.gathered(policy):
                    res = evaluate_model(policy, tok, task, eval_cfg, weights, desc="rl eval")
                metrics["eval/pass@1"] = res.metrics["pass@1"]
                metrics["eval/mean_len"] = res.metrics["mean_len"]
                policy.train()
            source_state = source.state()
            state = None if source_state is None else {"prompts": source_state}
            if watch is not None:
                stats = monitor.batch_stats(texts, ro.finished.tolist(), ro.completion_lengths.tolist(), [s.format for s in scores],
                                            [s.correct for s in scores], proxy, r.monitor.repeat_min)
                events = watch.observe_batch(step + 1, stats)
                metrics.update(watch.metrics(stats))
                if loop.due(r.monitor.probe_every, step + 1):
                    with distributed.gathered(policy):
                        probe = evaluate_model(policy, tok, task, probe_cfg, weights, desc="monitor probe")
                    metrics["monitor/probe_pass@1"] = probe.metrics["pass@1"]
                    events += watch.observe_probe(step + 1, probe.metrics["pass@1"])
                    policy.train()
                metrics["monitor/events"] = float(len(watch.events))
                report_events(run_dir, events if distributed.is_main() else [], metrics)
                state = {**(state or {}), "monitor": watch.state()}
            loop.end_step(step + 1, metrics, bad=bad, load_LE=load_LE, state=state,
                          postfix={"reward": f"{metrics['rollout/reward_mean']:.3f}", "len": f"{metrics['rollout/mean_len']:.1f}"})
    if watch is not None and distributed.is_main():
        summary = monitor.summary(watch.events)
        (Path(run_dir) / MONITOR_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        kinds = ", ".join(f"{k} x{n}" for k, n in summary["kinds"].items())
        print(f"monitor: {summary['events']} reward-hacking event(s): {kinds}; see {Path(run_dir) / EVENTS_FILE}" if summary["events"]
              else "monitor: no sign of reward hacking (proxy vs verified, exploit shapes)")
    if distributed.is_main():
        common.expert_load_heatmap(run_dir, "rl")
    return loop.last_path


def group_generator(seed: int, step: int, round_: int, index: int) -> torch.Generator:
    """The generator of the ``index``-th prompt of the global batch drawn in ``round_`` (from 1) of
    ``step`` (``rl.group_seeds``): the same whichever rank samples it; nothing to checkpoint."""
    return torch.Generator().manual_seed((((seed * 1_000_003 + step) * 1_009 + round_) * 100_003 + index) % 2**63)


def rank_advantages(rewards_N: torch.Tensor, G: int, r: RLConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages of this rank's rows (N,), every rank's rewards in rank order (world * N,)).

    Each rank holds whole groups of G rows; the advantages are computed over all ranks' rewards,
    so a group baseline sees its whole group and a batch-level one (REINFORCE++, batch std) the
    global batch. In one process: ``rl.advantages`` of ``rewards_N``."""
    world = distributed.world()
    if world == 1:
        return rl.advantages(rewards_N, G, r.advantage, r.scale_rewards), rewards_N
    all_rewards = torch.cat(distributed.gather_objects(rewards_N))  # (world * N,)
    return rl.advantages(all_rewards, G, r.advantage, r.scale_rewards).view(world, -1)[distributed.rank()], all_rewards


def _check_distributed(cfg: Config, model_cfg) -> None:
    """What RL under torchrun does not support yet, named in one line each."""
    r = cfg.rl
    for key, bad, why in (
        ("rl.logprob_chunk", r.logprob_chunk > 0 and cfg.dist.strategy == "ddp" and model_cfg.mtp_depth > 0 and not model_cfg.tie_embeddings,
         "chunked log-probs use an untied head outside DDP's forward, which DDP with an MTP module (find_unused_parameters) cannot reduce; use --dist.strategy fsdp2"),
    ):
        if bad:
            raise common.StageError(f"config key {key}: {why}")


def main(cfg: Config) -> Path:
    if not cfg.init:
        raise common.StageError("rl needs --init RUN_OR_CHECKPOINT_FOLDER (a pretrained model)")
    common.check_sampling(cfg.rl.prompts_per_step * cfg.rl.group_size, cfg.rl.sample.max_new_tokens, "rl.prompts_per_step x rl.group_size")
    from r1lab.recipes import janus_rl  # GRPO on images when --init is an `r1lab janus` run

    if janus_rl.is_janus_run(cfg.init) or cfg.task.startswith(janus_rl.PREFIX):
        return janus_rl.main(cfg)
    run_dir = distributed.broadcast_object(common.run_dir_for(cfg, "rl"))  # one folder for all ranks
    if distributed.is_main():
        common.prepare_run_dir(run_dir, cfg)
    distributed.barrier()
    path = run(cfg, run_dir, cfg.init)
    common.print_stage_summary(run_dir, "rl", ["rollout/reward_mean", "rollout/correct_rate", "rollout/mean_len", "rollout/zero_var_group_frac", "eval/pass@1"])
    print(f"rl: final checkpoint {path}")
    return run_dir
