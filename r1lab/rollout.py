"""Batched sampling with a KV cache, and the log-probs of the same tokens under a training pass.

Prompts are left-padded so that every row's next token is sampled at the same step; positions
and the key-validity mask travel with the batch, so ``policy_logprobs`` (one full forward, with
gradients) recomputes exactly what the sampler saw. Log-probs are of the temperature-scaled
distribution without top-p truncation, as TRL and verl compute them for the policy ratio.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from r1lab import distributed
from r1lab.config import SampleConfig
from r1lab.logprobs import token_logprobs
from r1lab.model.transformer import SharedPrefixCache, StaticKVCache, Transformer, decode_step
from r1lab.model.tree import PrefixTree


@dataclass
class Rollout:
    """N sampled sequences: left-padded prompt, then completion, then right padding."""

    tokens: torch.Tensor  # (N, P + C) token ids
    attention_mask: torch.Tensor  # (N, P + C) bool, real tokens (prompt and completion up to eos)
    completion_mask: torch.Tensor  # (N, P + C) bool, sampled tokens that count in the loss
    logprobs: torch.Tensor  # (N, P + C) sampler log-prob of each completion token, 0 elsewhere
    prompt_len: int  # P, the padded prompt width; no completion token sits left of it (rows wider than
    # max_seq_len are shifted left by their own padding, so then completions start at different columns)
    finished: torch.Tensor  # (N,) bool, ended with eos within the token budget
    entropy: torch.Tensor | None = None  # (N, P + C) sampler entropy at each completion token, 0 elsewhere
    prefill_s: float = 0.0  # seconds spent prefilling prompts
    decode_s: float = 0.0  # seconds spent decoding

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)  # (N,)

    def completion_ids(self, i: int) -> list[int]:
        return self.tokens[i][self.completion_mask[i]].tolist()


def positions_from_mask(mask_BT: torch.Tensor) -> torch.Tensor:
    """Position of each token counting real tokens only (left padding does not shift positions)."""
    return (mask_BT.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, P - len(p):] = True
    return ids, mask  # (N, P), (N, P)


def _sample_token(logits_NV: torch.Tensor, cfg: SampleConfig, gen: torch.Generator | list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(token, its log-prob, the entropy of the distribution sampled from), each (N,)."""
    if cfg.temperature == 0:  # greedy (as transformers' generate without sampling); log-prob at temperature 1
        logp_NV = F.log_softmax(logits_NV.float(), dim=-1)
        token_N = logp_NV.argmax(dim=-1)
        return token_N, logp_NV.gather(-1, token_N[:, None]).squeeze(-1), -(logp_NV.exp() * logp_NV).sum(-1)
    logp_NV = F.log_softmax(logits_NV.float() / cfg.temperature, dim=-1)
    probs = logp_NV.exp()
    entropy_N = -(probs * logp_NV).sum(-1)  # of the temperature-scaled distribution
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > cfg.top_p  # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    token_N = draw_tokens(probs, gen)
    return token_N, logp_NV.gather(-1, token_N[:, None]).squeeze(-1), entropy_N


def draw_tokens(probs_NV: torch.Tensor, gen: torch.Generator | list[torch.Generator]) -> torch.Tensor:
    """One token (N,) per row of ``probs_NV`` (rows need not sum to 1).

    A list of generators, one per prompt (its N / len(gen) consecutive rows, a GRPO group), draws
    that prompt's rows from its own generator through ``inverse_cdf``: a row's tokens then do not
    depend on which other prompts share the batch (``rl.group_seeds``: N ranks sample what one does).

    A generator on the probabilities' device draws with ``torch.multinomial`` (the CPU path, whose
    numbers are unchanged). A CPU generator with probabilities on a GPU draws one uniform per row
    on the CPU and inverts the row's CDF on the device (``inverse_cdf``): the run's generators, their
    seeds and their checkpointed states stay CPU ones, so a GPU run is reproducible and resumes
    bit-identically like a CPU run, and only N numbers cross to the device per step (not N x V).
    The stream differs from the CPU's multinomial: the same seed gives other samples on a GPU."""
    if isinstance(gen, list):
        per = probs_NV.shape[0] // len(gen)
        u_N = torch.cat([torch.rand(per, generator=g, dtype=torch.float64) for g in gen])  # (N,)
        return inverse_cdf(probs_NV, u_N.to(probs_NV.device))
    if gen.device == probs_NV.device:
        return torch.multinomial(probs_NV, 1, generator=gen).squeeze(-1)
    u_N = torch.rand(probs_NV.shape[0], generator=gen, dtype=torch.float64)  # (N,) on the generator's device
    return inverse_cdf(probs_NV, u_N.to(probs_NV.device))


def inverse_cdf(probs_NV: torch.Tensor, u_N: torch.Tensor) -> torch.Tensor:
    """The token (N,) whose CDF interval holds ``u_N`` (in [0, 1)) times the row's total: token i
    with probability p_i / sum(p); a zero-probability token (cut by top-p) is never drawn."""
    cdf_NV = probs_NV.double().cumsum(-1)  # (N, V) float64: no rounding gap over a large vocabulary
    total_N = cdf_NV[:, -1]
    target_N = torch.minimum(u_N.double() * total_N, torch.nextafter(total_N, torch.zeros_like(total_N)))  # < total: in range
    return torch.searchsorted(cdf_NV, target_N[:, None], right=True).squeeze(-1)  # first i with cdf_i > target


def sample(model: Transformer, prompts: list[list[int]], cfg: SampleConfig, eos_id: int, pad_id: int, gen: torch.Generator | list[torch.Generator],
           repeats: int = 1) -> Rollout:
    """Sample ``repeats`` completions per prompt (a GRPO group: ``repeats=G``); row ``i * repeats + j``
    is the j-th completion of prompt i.

    Each prompt is prefilled once and its cache shared by its group (``SharedPrefixCache``: the
    prompt's keys are stored and read once per group; MLA models copy it to the rows). Every row has its own token
    budget, ``min(max_new_tokens, max_seq_len - len(prompt))``, whatever the other prompts'
    lengths. Rows that end leave the decode batch (their cache rows are dropped), so a batch no
    longer decodes until its longest row ends. Tokens are still drawn for all rows at every step
    (finished rows' draws are discarded), so the random stream, and hence every sample, is the
    one that decoding the full batch would give. ``gen``: one generator for the batch, or one per
    prompt (``draw_tokens``).

    Decoding runs under ``torch.inference_mode`` (no autograd bookkeeping on any op: 6% less CPU
    time than ``no_grad`` at the benchmark's size); the returned tensors are ordinary copies, so
    the trainer may use them in its autograd pass.

    ``cfg.compile`` (GQA, dense FFN, one process, prompt and budget within ``max_seq_len``; other
    models decode eagerly): the decode loop runs ``decode_step`` compiled by ``torch.compile``
    over a fixed-width cache (``StaticKVCache``), every row in the batch until all have ended
    and each row holding its own copy of its prompt's cache. The same draws from the generator;
    logits rounded as the compiled graph rounds them, so tokens may differ from eager ones."""
    fused = model.fused_decoding() if distributed.world() == 1 else contextlib.nullcontext()  # FSDP2: weights stay as they are
    with torch.inference_mode(), fused:
        ro = _sample(model, prompts, cfg, eos_id, pad_id, gen, repeats)
    return Rollout(ro.tokens.clone(), ro.attention_mask.clone(), ro.completion_mask.clone(), ro.logprobs.clone(), ro.prompt_len,
                   ro.finished.clone(), ro.entropy.clone(), ro.prefill_s, ro.decode_s)


def _sample(model: Transformer, prompts: list[list[int]], cfg: SampleConfig, eos_id: int, pad_id: int, gen: torch.Generator | list[torch.Generator],
            repeats: int) -> Rollout:
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    dev = model.embed.weight.device  # sample where the model is; the Rollout stays there
    ids_BP, mask_BP = (x.to(dev) for x in left_pad(prompts, pad_id))
    B, P = ids_BP.shape
    N = B * repeats
    max_len = model.cfg.max_seq_len
    lens_N = mask_BP.sum(-1).repeat_interleave(repeats)  # (N,)
    budget_N = (max_len - lens_N).clamp(max=cfg.max_new_tokens)  # (N,)
    if bool((budget_N < 1).any()):
        raise ValueError(f"prompt of {int(lens_N.max())} tokens leaves no room under model.max_seq_len={max_len}")
    C = int(budget_N.max())
    static = cfg.compile and _compilable(model) and P + C <= max_len
    shared = repeats > 1 and model.cfg.attention != "mla" and not static  # GQA: the group's rows share their prompt's cache
    cache = model.new_cache(B, P if shared or static else min(P + C, max_len))
    logits_BV = model(ids_BP, positions_from_mask(mask_BP), mask_BP, cache).logits_BTV[:, -1]  # (B, V)
    if shared:
        cache = SharedPrefixCache(cache, repeats, C)
    elif repeats > 1:
        cache.keep_rows(torch.arange(B, device=dev).repeat_interleave(repeats))
    logits_NV = logits_BV.repeat_interleave(repeats, dim=0)  # (N, V)
    prefill_s = time.perf_counter() - t0

    ids_NP = ids_BP.repeat_interleave(repeats, dim=0)  # (N, P)
    key_mask = mask_BP.repeat_interleave(repeats, dim=0)  # (rows in the cache, S)
    next_pos = lens_N.clone()  # (rows in the cache,) position of the next token
    rows = None  # which of the N rows the cache holds, in order (None: all of them, no gathers)
    out_tok = torch.full((N, C), pad_id, dtype=torch.long, device=dev)  # (N, C)
    out_logp = torch.zeros(N, C, device=dev)
    out_ent = torch.zeros(N, C, device=dev)
    valid = torch.zeros(N, C, dtype=torch.bool, device=dev)
    alive = torch.ones(N, dtype=torch.bool, device=dev)  # (N,) neither ended nor out of budget
    ended = torch.zeros(N, dtype=torch.bool, device=dev)  # (N,) sampled eos
    t = 0
    if static:  # sample.compile
        t = _decode_static(model, cache, logits_NV, key_mask, next_pos, budget_N, cfg, gen, eos_id, pad_id, out_tok, out_logp, out_ent, valid,
                           alive, ended)
    else:
        for t in range(C):
            _take_token(t, logits_NV, cfg, gen, eos_id, pad_id, out_tok, out_logp, out_ent, valid, alive, ended)
            key_mask = torch.cat([key_mask, (alive if rows is None else alive[rows])[:, None]], dim=1)
            alive = alive & ~ended & (t + 1 < budget_N)
            if not alive.any():
                break
            keep = alive if rows is None else alive[rows]
            if not shared and cache.length + 1 > max_len:
                # The cache is full although some rows have budget left (their prompts are shorter
                # than the longest): drop the left-padding columns they all share and prefill again.
                kept = keep.nonzero().squeeze(-1)
                rows, key_mask, next_pos = kept if rows is None else rows[kept], key_mask[kept], next_pos[kept]
                seq = torch.cat([ids_NP[rows], out_tok[rows, : t + 1]], dim=1)  # (R, S)
                shift = int((~key_mask).long().cumprod(-1).sum(-1).min())  # shared leading padding
                seq, key_mask = seq[:, shift:], key_mask[:, shift:]
                cache = model.new_cache(len(rows), max_len)
                logits_R = model(seq, positions_from_mask(key_mask), key_mask, cache).logits_BTV[:, -1]
            else:
                if int(keep.sum()) <= 3 * len(keep) // 4:  # compact when a quarter has ended
                    kept = keep.nonzero().squeeze(-1)
                    rows, key_mask, next_pos = kept if rows is None else rows[kept], key_mask[kept], next_pos[kept]
                    cache.keep_rows(kept)
                ids_R1 = out_tok[:, t : t + 1] if rows is None else out_tok[rows, t : t + 1]
                logits_R = model(ids_R1, next_pos[:, None], key_mask, cache).logits_BTV[:, -1]
            next_pos = next_pos + 1
            logits_R = logits_R.to(logits_NV.dtype)
            logits_NV = logits_R if rows is None else logits_NV.index_copy(0, rows, logits_R)
    model.train(was_training)
    C_used = t + 1
    tokens = torch.cat([ids_NP, out_tok[:, :C_used]], dim=1)
    attention_mask = torch.cat([mask_BP.repeat_interleave(repeats, dim=0), valid[:, :C_used]], dim=1)
    completion_mask = torch.cat([torch.zeros_like(ids_NP, dtype=torch.bool), valid[:, :C_used]], dim=1)
    logprobs = torch.cat([torch.zeros(N, P, device=dev), out_logp[:, :C_used]], dim=1)
    entropy = torch.cat([torch.zeros(N, P, device=dev), out_ent[:, :C_used]], dim=1)
    ro = Rollout(tokens, attention_mask, completion_mask, logprobs, P, finished=ended, entropy=entropy,
                 prefill_s=prefill_s, decode_s=time.perf_counter() - t0 - prefill_s)
    return _fit(ro, max_len)


@torch.inference_mode()
def _plain_sample(model: Transformer, prompts: list[list[int]], cfg: SampleConfig, eos_id: int, pad_id: int, gen: torch.Generator) -> torch.Tensor:
    ids, mask = left_pad(prompts, pad_id)
    N, P = ids.shape
    budget = min(cfg.max_new_tokens, model.cfg.max_seq_len - P)
    cache = model.new_cache(N, P + budget)
    logits = model(ids, positions_from_mask(mask), mask, cache).logits_BTV[:, -1]  # (N, V)
    next_pos, alive, toks = mask.sum(-1), torch.ones(N, dtype=torch.bool), []
    for _ in range(budget):
        token = torch.multinomial(F.softmax(logits.float() / cfg.temperature, dim=-1), 1, generator=gen).squeeze(-1)  # (N,)
        toks.append(torch.where(alive, token, torch.full_like(token, pad_id)))
        mask = torch.cat([mask, alive[:, None]], dim=1)
        alive = alive & (token != eos_id)
        if not alive.any() or len(toks) == budget:
            break
        logits = model(toks[-1][:, None], next_pos[:, None], mask, cache).logits_BTV[:, -1]
        next_pos = next_pos + 1
    return torch.cat([ids, torch.stack(toks, 1)], dim=1)  # (N, P + C)


_STATIC_WIDTH = 16  # the static cache's width is P + C rounded up to this: fewer shapes to compile over RL's varying prompt widths
_compiled_step = None  # torch.compile(decode_step), made on first use; decode_step itself once compiling has failed


def _compilable(model: Transformer) -> bool:
    """Whether ``decode_step`` serves this model (``sample.compile``): GQA attention, dense FFN,
    one process. Others decode eagerly (MoE routing has data-dependent shapes)."""
    return model.cfg.attention != "mla" and model.cfg.ffn != "moe" and distributed.world() == 1


def _step_fn():
    global _compiled_step
    if _compiled_step is None:
        _compiled_step = torch.compile(decode_step, dynamic=False)
    return _compiled_step


def _run_step(*args) -> torch.Tensor:
    """The compiled decode step; if compiling fails (no C++ compiler, an unsupported op), one
    warning and ``decode_step`` eagerly from then on (the same function, eager rounding)."""
    global _compiled_step
    try:
        return _step_fn()(*args)
    except Exception as e:  # noqa: BLE001 - any compiler failure: decode eagerly instead
        if _compiled_step is decode_step:
            raise
        first = (str(e).strip().splitlines() or [""])[0][:160]
        print(f"r1lab: warning: sample.compile: torch.compile failed ({type(e).__name__}: {first}); decoding eagerly", flush=True)
        _compiled_step = decode_step
        return decode_step(*args)


def _take_token(t: int, logits_NV: torch.Tensor, cfg: SampleConfig, gen, eos_id: int, pad_id: int, out_tok: torch.Tensor,
                out_logp: torch.Tensor, out_ent: torch.Tensor, valid: torch.Tensor, alive: torch.Tensor, ended: torch.Tensor) -> None:
    """Step ``t`` of both decode loops: draw every row's token, record it for the rows still alive
    (the eos token itself counts; what follows it does not) and mark the rows that drew eos."""
    token_N, logp_N, ent_N = _sample_token(logits_NV, cfg, gen)
    out_tok[:, t] = torch.where(alive, token_N, pad_id)
    out_logp[:, t] = torch.where(alive, logp_N, 0.0)
    out_ent[:, t] = torch.where(alive, ent_N, 0.0)
    valid[:, t] = alive
    ended |= alive & (token_N == eos_id)


def _decode_static(model: Transformer, cache, logits_NV: torch.Tensor, key_mask_NP: torch.Tensor, next_pos_N: torch.Tensor,
                   budget_N: torch.Tensor, cfg: SampleConfig, gen, eos_id: int, pad_id: int, out_tok: torch.Tensor, out_logp: torch.Tensor,
                   out_ent: torch.Tensor, valid: torch.Tensor, alive: torch.Tensor, ended: torch.Tensor) -> int:
    """``_sample``'s decode loop with every row in the batch until all have ended, through the
    compiled ``decode_step`` over a ``StaticKVCache`` (``sample.compile``): the same draws from
    the generator as the eager loop (tokens for all rows at every step), the logits from a
    compiled graph (other float rounding). Fills the outputs in place; returns the last step."""
    N, P = key_mask_NP.shape
    C = out_tok.shape[1]
    width = min(model.cfg.max_seq_len, -(-(P + C) // _STATIC_WIDTH) * _STATIC_WIDTH)
    static = StaticKVCache(cache, width)
    key_mask_NS = torch.zeros(N, width, dtype=torch.bool, device=key_mask_NP.device)  # (N, S) keys the next token sees
    key_mask_NS[:, :P] = key_mask_NP
    pos_N = next_pos_N.clone()
    t = 0
    for t in range(C):
        _take_token(t, logits_NV, cfg, gen, eos_id, pad_id, out_tok, out_logp, out_ent, valid, alive, ended)
        alive &= ~ended & (t + 1 < budget_N)
        if not alive.any():
            break
        # Every row sees its own new key (finished rows too: their logits are discarded, and
        # a live row's keys are exactly the eager loop's).
        key_mask_NS[:, P + t] = True
        static.slot_1.fill_(P + t)
        logits_NV = _run_step(model, out_tok[:, t].contiguous(), pos_N, key_mask_NS[:, None, None], static).to(logits_NV.dtype)
        pos_N += 1
    return t


def plain_sample(model: Transformer, prompts: list[list[int]], cfg: SampleConfig, eos_id: int, pad_id: int, gen: torch.Generator) -> torch.Tensor:
    """The reference ``sample`` is tested and benchmarked against (r1lab's first sampler): every
    row (a prompt copy) prefilled on its own, one token budget for the batch (the longest
    prompt's), every row decoding until the last one ends; temperature only. Returns the token
    ids (N, P + C), left-padded prompts then completions, ``pad_id`` after eos. ``sample`` with
    ``repeats`` draws the same tokens from the same generator (tests/test_rollout.py)."""
    was_training = model.training
    model.eval()
    out = _plain_sample(model, prompts, cfg, eos_id, pad_id, gen).clone()
    model.train(was_training)
    return out


def _fit(ro: Rollout, max_len: int) -> Rollout:
    """``ro`` narrowed to ``max_len`` columns when wider: each row shifts left by up to the excess,
    within its own left padding (every row's real tokens fit, by its budget)."""
    excess = ro.tokens.shape[1] - max_len
    if excess <= 0:
        return ro
    lead_N = ro.attention_mask.long().argmax(-1)  # (N,) leading padding of each row
    shift_N = lead_N.clamp(max=excess)  # (N,)
    cols = torch.arange(max_len, device=shift_N.device)[None] + shift_N[:, None]  # (N, max_len)
    take = lambda x: x.gather(1, cols)  # noqa: E731
    return Rollout(take(ro.tokens), take(ro.attention_mask), take(ro.completion_mask), take(ro.logprobs),
                   ro.prompt_len - int(shift_N.max()), ro.finished, take(ro.entropy) if ro.entropy is not None else None,
                   ro.prefill_s, ro.decode_s)


def select(ro: Rollout, rows: torch.Tensor) -> Rollout:
    """The rollout of rows ``rows`` only (e.g. the groups that dynamic sampling keeps)."""
    return Rollout(ro.tokens[rows], ro.attention_mask[rows], ro.completion_mask[rows], ro.logprobs[rows], ro.prompt_len,
                   ro.finished[rows], ro.entropy[rows] if ro.entropy is not None else None, ro.prefill_s, ro.decode_s)


def concat(ros: list[Rollout], pad_id: int, max_len: int) -> Rollout:
    """Rows of several rollouts in one, prompts aligned at the widest prompt column (times add up)."""
    P = max(r.prompt_len for r in ros)
    C = max(r.tokens.shape[1] - r.prompt_len for r in ros)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("tokens", "attention_mask", "completion_mask", "logprobs", "entropy")}
    for r in ros:
        pad = (P - r.prompt_len, C - (r.tokens.shape[1] - r.prompt_len))
        parts["tokens"].append(F.pad(r.tokens, pad, value=pad_id))
        ent = r.entropy if r.entropy is not None else torch.zeros_like(r.logprobs)
        for k, x in (("attention_mask", r.attention_mask), ("completion_mask", r.completion_mask), ("logprobs", r.logprobs), ("entropy", ent)):
            parts[k].append(F.pad(x, pad))
    cat = {k: torch.cat(v) for k, v in parts.items()}
    ro = Rollout(cat["tokens"], cat["attention_mask"], cat["completion_mask"], cat["logprobs"], P,
                 torch.cat([r.finished for r in ros]), cat["entropy"], sum(r.prefill_s for r in ros), sum(r.decode_s for r in ros))
    return _fit(ro, max_len)


@dataclass
class Packing:
    """Where each real token of a padded (N, T) batch sits in a packed (R, W) batch: every row's
    real tokens, in order, laid end to end with others in few dense rows; with shared prompts,
    one copy of a prompt followed by the completions of the rows that share it."""

    ids_RW: torch.Tensor  # (R, W) token ids, pad_id in the unused tail of a row
    positions_RW: torch.Tensor  # (R, W) position of each token within its sequence (as the padded pass), 0 on the tail
    weight_RW: torch.Tensor  # (R, W) float, how many tokens of the padded batch a slot stands for (a shared prompt's: its rows), 0 on the tail
    doc_ids_RW: torch.Tensor | None  # (R, W) the source row of each token, -1 on the tail (no shared prompts)
    mask_RWW: torch.Tensor | None  # (R, W, W) which keys each query sees (shared prompts; else doc_ids_RW says it)
    src_M: tuple[torch.Tensor, torch.Tensor]  # (row, column) in the padded batch of each real token (M,)
    slot_M: torch.Tensor  # (M,) flat index into the packed (R * W) batch of the slot holding it
    pred_M: torch.Tensor  # (M,) flat index of the slot whose logits predict it; -1 for a row's first token
    tree: PrefixTree | None = None  # flat prompts and completions, one row (pack_prefix_tree); then no mask_RWW


def _first_fit(lengths: list[int], width: int) -> tuple[list[int], int]:
    """(flat start of each item in rows of ``width``, number of rows): first fit decreasing,
    ties in order, an item never split."""
    free: list[int] = []  # tokens left in each packed row
    base = [0] * len(lengths)
    for n in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((j for j, f in enumerate(free) if f >= lengths[n]), len(free))
        if r == len(free):
            free.append(width)
        base[n] = r * width + width - free[r]
        free[r] -= lengths[n]
    return base, len(free)


def pack_rows(tokens_NT: torch.Tensor, attention_mask_NT: torch.Tensor, width: int, pad_id: int) -> Packing:
    """Pack the real tokens of each row into rows of ``width`` tokens, first-fit decreasing (a
    row is never split). Positions restart per document, so each document sees exactly the keys
    and positions it sees in the padded batch (``positions_from_mask``)."""
    lengths = attention_mask_NT.sum(-1).tolist()
    if max(lengths) > width:
        raise ValueError(f"a row of {max(lengths)} real tokens does not fit a packed row of {width}")
    base, R = _first_fit(lengths, width)
    rows, cols = attention_mask_NT.nonzero(as_tuple=True)  # (M,) real tokens, row-major
    rank_M = positions_from_mask(attention_mask_NT)[rows, cols]  # (M,) index within its row
    slot_M = torch.tensor(base, dtype=torch.long)[rows] + rank_M  # (M,)
    ids = torch.full((R * width,), pad_id, dtype=tokens_NT.dtype).index_put_((slot_M,), tokens_NT[rows, cols])
    docs = torch.full((R * width,), -1, dtype=torch.long).index_put_((slot_M,), rows)
    weight = torch.zeros(R * width).index_put_((slot_M,), torch.ones(len(slot_M)))
    pos = torch.zeros(R * width, dtype=torch.long).index_put_((slot_M,), rank_M)
    return Packing(ids.view(R, width), pos.view(R, width), weight.view(R, width), docs.view(R, width), None, (rows, cols), slot_M,
                   torch.where(rank_M == 0, -1, slot_M - 1))


def pack_shared_prompts(tokens_NT: torch.Tensor, attention_mask_NT: torch.Tensor, completion_mask_NT: torch.Tensor, width: int,
                        pad_id: int) -> Packing:
    """Pack rows whose prompts (real tokens before the completion) are equal as one copy of the
    prompt followed by their completions, each completion attending to the prompt and to its own
    earlier tokens only (a prefix tree, at the padded pass's positions). A group whose prompt
    and completions exceed ``width`` is cut into several such units, each with its own prompt
    copy; units are packed first-fit decreasing. A GRPO group's prompt is then run once instead
    of G times, with the same log-probs and gradients."""
    real, comp = attention_mask_NT.tolist(), (completion_mask_NT & attention_mask_NT).tolist()
    toks = tokens_NT.tolist()
    groups: dict[tuple[int, ...], list[int]] = {}
    prompt_cols, comp_cols = [], []
    for n in range(len(toks)):
        pc = [t for t, (r, c) in enumerate(zip(real[n], comp[n])) if r and not c]
        cc = [t for t, c in enumerate(comp[n]) if c]
        if pc and cc and pc[-1] > cc[0]:
            raise ValueError(f"row {n}: a prompt token follows a completion token")
        prompt_cols.append(pc)
        comp_cols.append(cc)
        groups.setdefault(tuple(toks[n][t] for t in pc), []).append(n)
    units: list[tuple[int, list[int]]] = []  # (prompt length, rows)
    for key, rows_g in groups.items():
        p, cur, length = len(key), [], len(key)
        for n in rows_g:
            if cur and length + len(comp_cols[n]) > width:
                units.append((p, cur))
                cur, length = [], p
            cur.append(n)
            length += len(comp_cols[n])
        units.append((p, cur))
    lengths = [p + sum(len(comp_cols[n]) for n in rows_u) for p, rows_u in units]
    if max(lengths) > width:
        raise ValueError(f"a row of {max(lengths)} real tokens does not fit a packed row of {width}")
    base, R = _first_fit(lengths, width)
    src_r, src_c, slot, pred = [], [], [], []
    ids = [pad_id] * (R * width)
    pos, unit, seg = [0] * (R * width), [-1] * (R * width), [-2] * (R * width)
    for u, (p, rows_u) in enumerate(units):
        b = base[u]
        first = rows_u[0]
        for k, t in enumerate(prompt_cols[first]):  # one copy of the prompt
            ids[b + k], pos[b + k], unit[b + k], seg[b + k] = toks[first][t], k, u, -1
        off = b + p
        for n in rows_u:
            for k, t in enumerate(prompt_cols[n]):  # every row's prompt tokens read the shared copy
                src_r.append(n), src_c.append(t), slot.append(b + k), pred.append(b + k - 1 if k else -1)
            for k, t in enumerate(comp_cols[n]):
                ids[off + k], pos[off + k], unit[off + k], seg[off + k] = toks[n][t], p + k, u, n
                src_r.append(n), src_c.append(t), slot.append(off + k), pred.append(off + k - 1 if k else b + p - 1)
            off += len(comp_cols[n])
    unit_RW, seg_RW = torch.tensor(unit).view(R, width), torch.tensor(seg).view(R, width)
    causal_WW = torch.ones(width, width, dtype=torch.bool).tril()
    same_unit = unit_RW[:, :, None] == unit_RW[:, None, :]  # (R, W, W)
    visible = (seg_RW[:, None, :] == -1) | (seg_RW[:, :, None] == seg_RW[:, None, :])  # the prompt, or the query's own row
    ids_RW = torch.tensor(ids, dtype=tokens_NT.dtype).view(R, width)
    slot_M = torch.tensor(slot, dtype=torch.long)
    # MoE balance losses and expert loads weigh each slot by the tokens it stands for, so they
    # count a shared prompt once per row, exactly as the padded pass does.
    weight_RW = torch.zeros(R * width).index_add_(0, slot_M, torch.ones(len(slot))).view(R, width)
    return Packing(ids_RW, torch.tensor(pos).view(R, width), weight_RW, None, causal_WW[None] & same_unit & visible,
                   (torch.tensor(src_r, dtype=torch.long), torch.tensor(src_c, dtype=torch.long)), slot_M, torch.tensor(pred, dtype=torch.long))


def pack_prefix_tree(tokens_NT: torch.Tensor, attention_mask_NT: torch.Tensor, completion_mask_NT: torch.Tensor) -> Packing:
    """Lay the batch's real tokens flat in one row: one copy of each distinct prompt (the real
    tokens before the completion), then every row's completion; ``PrefixTree`` tells attention
    which prompt each completion continues. Each completion token sees its prompt and its own
    earlier tokens, at the padded pass's positions, as in ``pack_shared_prompts`` but with no
    padding and no (W, W) mask: a GRPO group's prompt is run once instead of G times."""
    device = tokens_NT.device  # the layout is worked out on the CPU
    tokens_NT, attention_mask_NT, completion_mask_NT = tokens_NT.cpu(), attention_mask_NT.cpu(), completion_mask_NT.cpu()
    N, T = tokens_NT.shape
    real_NT = attention_mask_NT.bool()
    comp_NT = completion_mask_NT.bool() & real_NT
    prompt_NT = real_NT & ~comp_NT
    p_len_N, c_len_N = prompt_NT.sum(-1), comp_NT.sum(-1)  # (N,)
    col_T = torch.arange(T)
    late_prompt_N = torch.where(prompt_NT, col_T, -1).amax(-1) > torch.where(comp_NT, col_T, T).amin(-1)
    if late_prompt_N.any():
        raise ValueError(f"row {int(late_prompt_N.nonzero()[0])}: a prompt token follows a completion token")
    rank_NT = positions_from_mask(real_NT)  # prompt tokens rank 0.., then the completion's
    P = max(int(p_len_N.max()), 1)
    prompts_NP = torch.full((N, P), -1, dtype=tokens_NT.dtype).index_put_((prompt_NT.nonzero(as_tuple=True)[0], rank_NT[prompt_NT]), tokens_NT[prompt_NT])
    # Rows with equal prompts share one copy; copies in order of first appearance.
    uniq, inverse_N = torch.unique(prompts_NP, dim=0, return_inverse=True)
    first_U = torch.full((len(uniq),), N, dtype=torch.long).scatter_reduce_(0, inverse_N, torch.arange(N), "amin")
    order_U = first_U.argsort()
    group_N = torch.empty_like(order_U).scatter_(0, order_U, torch.arange(len(uniq)))[inverse_N]  # (N,) prompt b of each row
    first_B = first_U[order_U]  # (B,) the row whose prompt is copied
    p_len_B = p_len_N[first_B]
    p_start_B = p_len_B.cumsum(0) - p_len_B  # (B,) flat start of each prompt copy
    c_start_N = int(p_len_B.sum()) + c_len_N.cumsum(0) - c_len_N  # (N,) completions after all the prompts
    M = int(p_len_B.sum() + c_len_N.sum())
    rows, cols = real_NT.nonzero(as_tuple=True)  # (M',) every real token of the padded batch, row-major
    rank, in_prompt = rank_NT[rows, cols], prompt_NT[rows, cols]
    p_start, p_len = p_start_B[group_N[rows]], p_len_N[rows]
    slot_M = torch.where(in_prompt, p_start + rank, c_start_N[rows] + rank - p_len)
    pred_M = torch.where(rank == 0, -1, torch.where(in_prompt | (rank > p_len), slot_M - 1, p_start + p_len - 1))  # the first completion token reads the prompt's last slot
    ids = torch.zeros(M, dtype=tokens_NT.dtype).index_put_((slot_M,), tokens_NT[rows, cols])
    pos = torch.zeros(M, dtype=torch.long).index_put_((slot_M,), rank)
    # MoE balance losses and expert loads weigh each slot by the tokens it stands for: a prompt
    # copy once per row that shares it, as the padded pass counts it.
    weight = torch.zeros(M).index_add_(0, slot_M, torch.ones(len(slot_M)))
    tree = PrefixTree.build(p_len_B, p_start_B, c_len_N, c_start_N, group_N, M, device)
    return Packing(ids[None].to(device), pos[None].to(device), weight[None].to(device), None, None, (rows.to(device), cols.to(device)),
                   slot_M.to(device), pred_M.to(device), tree)


def _packed_forward(model: Transformer, tokens: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor | None,
                    logits: bool = True):
    # Packed rows 2x the padded width: the fastest of 1x-4x on the zero defaults' batch and on
    # the benchmark's (docs/rl.md); the attention over W keys stays cheap. Shared prompts: flat,
    # no padding at all (pack_prefix_tree).
    if completion_mask is None:
        pk = pack_rows(tokens, attention_mask, 2 * tokens.shape[1], pad_id=0)
        return pk, model(pk.ids_RW, pk.positions_RW, token_mask_BT=pk.weight_RW, logits=logits, doc_ids_BT=pk.doc_ids_RW)
    pk = pack_prefix_tree(tokens, attention_mask, completion_mask)
    return pk, model(pk.ids_RW, pk.positions_RW, token_mask_BT=pk.weight_RW, logits=logits, tree=pk.tree)


def _packed_logprobs(out, pk: Packing, head_weight: torch.Tensor | None, temperature: float, chunk: int, shape, entropy: bool = False):
    """(log-probs (N, T), entropies (N, T) or None) of every real token of the padded batch from a
    packed pass: each token's distribution is read at its predecessor's slot; 0 at a row's first
    token and at padding."""
    targets_M = pk.ids_RW.reshape(-1)[pk.slot_M]  # (M,)
    pred_M = pk.pred_M.clamp(min=0)
    first_M = pk.pred_M < 0
    ent = None
    if chunk > 0:
        h_MD = out.normed_BTD.reshape(-1, out.normed_BTD.shape[-1])[pred_M]
        logp_M = token_logprobs(h_MD, head_weight, targets_M, temperature, chunk)
    else:
        logp_MV = F.log_softmax(out.logits_BTV.reshape(-1, out.logits_BTV.shape[-1])[pred_M].float() / temperature, dim=-1)  # (M, V)
        logp_M = logp_MV.gather(-1, targets_M[:, None]).squeeze(-1)
        if entropy:
            ent_M = -(logp_MV.exp() * logp_MV).sum(-1)
            ent = ent_M.new_zeros(shape).index_put(pk.src_M, ent_M.masked_fill(first_M, 0.0))
    return logp_M.new_zeros(shape).index_put(pk.src_M, logp_M.masked_fill(first_M, 0.0)), ent


def policy_logprobs(model: Transformer, tokens: torch.Tensor, attention_mask: torch.Tensor, temperature: float, chunk: int = 0,
                    pack: bool = False, completion_mask: torch.Tensor | None = None, share_prompt: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of every token given its prefix (N, T) with 0 at t=0, MoE aux loss) in one
    forward pass that takes gradients: the training side of the sampler. ``chunk > 0`` computes
    them ``chunk`` tokens at a time (``r1lab.logprobs``): O(chunk x V) memory, not O(N x T x V).
    ``pack`` runs the pass on the rows' real tokens packed into dense rows (``pack_rows``): no
    FLOPs on padding, the same log-probs at real tokens up to float rounding, 0 at padding; with
    ``share_prompt`` (and ``completion_mask``) rows with equal prompts share one copy of it
    (``pack_shared_prompts``)."""
    if pack:
        pk, out = _packed_forward(model, tokens, attention_mask, completion_mask if share_prompt else None, logits=chunk == 0)
        return _packed_logprobs(out, pk, model.head_weight() if chunk > 0 else None, temperature, chunk, tokens.shape)[0], out.aux_loss
    if chunk > 0:
        out = model(tokens, positions_from_mask(attention_mask), attention_mask, logits=False)
        logp = token_logprobs(out.normed_BTD[:, :-1], distributed.unwrap(model).head_weight(), tokens[:, 1:], temperature, chunk)  # (N, T-1)
        return F.pad(logp, (1, 0)), out.aux_loss
    out = model(tokens, positions_from_mask(attention_mask), attention_mask)
    logp_all = F.log_softmax(out.logits_BTV[:, :-1].float() / temperature, dim=-1)  # (N, T-1, V)
    logp = logp_all.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (N, T-1)
    return F.pad(logp, (1, 0)), out.aux_loss


def policy_logprobs_entropy(model: Transformer, tokens: torch.Tensor, attention_mask: torch.Tensor, temperature: float,
                            pack: bool = False, completion_mask: torch.Tensor | None = None, share_prompt: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``policy_logprobs`` plus the entropy (N, T) of each position's temperature-scaled
    distribution (0 at t=0), with gradients: for an entropy bonus."""
    if pack:
        pk, out = _packed_forward(model, tokens, attention_mask, completion_mask if share_prompt else None)
        logp, ent = _packed_logprobs(out, pk, None, temperature, 0, tokens.shape, entropy=True)
        return logp, ent, out.aux_loss
    out = model(tokens, positions_from_mask(attention_mask), attention_mask)
    logp_all = F.log_softmax(out.logits_BTV[:, :-1].float() / temperature, dim=-1)  # (N, T-1, V)
    logp = logp_all.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (N, T-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (N, T-1)
    return F.pad(logp, (1, 0)), F.pad(entropy, (1, 0)), out.aux_loss
