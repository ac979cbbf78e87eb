"""Decoder-only Transformer: RMSNorm, RoPE, GQA or MLA attention, SwiGLU or DeepSeekMoE FFN, MTP.

The LLaMA/DeepSeek block (pre-norm, RMSNorm, rotary positions, SwiGLU) at toy scale, with a
pre-allocated KV cache. One model code serves sampling and training: ``forward`` takes explicit
positions and a key-validity mask, so a left-padded prompt batch decoded step by step through the
cache sees exactly the keys and positions that the training pass over the whole sequence sees,
and rollout log-probs equal trainer log-probs up to float error (tested).

Departures: tied input/output embeddings and a 0.02-std init (PyTorch's std-1 embedding init
with tied weights starts tiny models near loss 84 and stalls them; see DESIGN.md). Rotary
positions rotate the two halves of a head (GPT-NeoX style), not interleaved pairs as in
DeepSeek's code. Multi-head latent attention lives in ``mla.py``; DeepSeek-V3's multi-token
prediction module (arXiv:2412.19437, sec. 2.2) is ``Transformer.mtp`` (``model.mtp_depth 1``):
its own block over [RMSNorm(h_i); RMSNorm(embed(t_{i+1}))], sharing the embedding and the output
head, predicting t_{i+2}; ``r1lab.model.mtp`` uses it to draft tokens for speculative decoding.
Imported checkpoints may untie the head (``tie_embeddings``) and add Qwen2's q/k/v biases
(``qkv_bias``); the defaults leave the model as above.
Decoding (a few new queries over a filled cache) computes attention as batched matmuls on the
cache's views instead of SDPA, and a GRPO group's rows may share their prompt's cache
(``SharedPrefixCache``, Hydragen's shared-prefix decomposition, arXiv:2402.05099). For
``sample.compile``, ``decode_step`` runs the blocks over a ``StaticKVCache`` (one fixed-width
buffer per layer, the write slot held in a tensor), so ``torch.compile`` compiles it once.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1lab.config import ModelConfig
from r1lab.model.layers import RMSNorm, apply_rope, cached_attention, rope_tables, take_rows
from r1lab.model.mla import LatentCache, MLAttention
from r1lab.model.moe import MoE, SwiGLU
from r1lab.model.tree import PrefixTree


class KVCache:
    """Pre-allocated keys and values of every layer; ``length`` positions are filled."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device: torch.device | str = "cpu"):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    def update(self, layer: int, k_BHTd: torch.Tensor, v_BHTd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k_BHTd.shape[2]
        self.k[layer, :, :, start:end] = k_BHTd
        self.v[layer, :, :, start:end] = v_BHTd
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only batch rows ``rows`` (in that order, repeats allowed): finished rows leave the
        decode batch, a prefilled prompt is copied to its group. Only the ``length`` filled slots
        are copied (slots past it are written before they are read), in place when the batch
        does not grow."""
        self.k, self.v = (take_rows(x, rows, self.length, slot_dim=3) for x in (self.k, self.v))

    def bytes_per_token(self) -> int:
        """Cache bytes per token over all layers (keys and values)."""
        L, _, H, _, d = self.k.shape
        return 2 * L * H * d * self.k.element_size()

    def attend(self, layer: int, q_BHTd: torch.Tensor, k_BKTd: torch.Tensor, v_BKTd: torch.Tensor, mask_B1TS: torch.Tensor) -> torch.Tensor:
        """Store the new keys and values, then the new queries' attention over the cache (B, H, T, d)."""
        k, v = self.update(layer, k_BKTd, v_BKTd)
        return cached_attention(q_BHTd, k, v, mask_B1TS)


class StaticKVCache:
    """Keys and values of every layer in buffers of a fixed width S, one tensor per layer, for a
    decode step compiled once (``decode_step``, ``sample.compile``): the new token's keys go to a
    slot given as a tensor, and attention runs over all S slots under the key mask (slots not yet
    written are masked out), so no shape and no Python number changes from one step to the next.
    Built from a prefilled ``KVCache`` whose ``length`` slots it copies."""

    length = 1  # constant and > 0: Attention takes its decoding path (the slot is ``slot_1``)

    def __init__(self, prefilled: KVCache, width: int):
        L, N, K, _, d = prefilled.k.shape
        P = prefilled.length
        self.k = [prefilled.k.new_zeros(N, K, width, d) for _ in range(L)]  # per layer: one graph input each
        self.v = [prefilled.v.new_zeros(N, K, width, d) for _ in range(L)]
        for i in range(L):
            self.k[i][:, :, :P] = prefilled.k[i, :, :, :P]
            self.v[i][:, :, :P] = prefilled.v[i, :, :, :P]
        self.slot_1 = torch.zeros(1, dtype=torch.long, device=prefilled.k.device)  # (1,) the slot the next token writes

    def attend(self, layer: int, q_NHTd: torch.Tensor, k_NKTd: torch.Tensor, v_NKTd: torch.Tensor, mask_N1TS: torch.Tensor) -> torch.Tensor:
        """As ``KVCache.attend`` for one new token (T = 1), over all S slots."""
        self.k[layer].index_copy_(2, self.slot_1, k_NKTd)
        self.v[layer].index_copy_(2, self.slot_1, v_NKTd)
        return cached_attention(q_NHTd, self.k[layer], self.v[layer], mask_N1TS)


def decode_step(model: Transformer, ids_N: torch.Tensor, positions_N: torch.Tensor, mask_N11S: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
    """Logits (N, V) of one new token per row over a ``StaticKVCache`` (its key written at slot
    ``cache.slot_1``; ``mask_N11S`` True where the token sees a key, itself included): the
    blocks' own modules, so eager it computes what ``Transformer.forward`` does, with no Python
    number that changes between steps, so ``torch.compile`` compiles it once per batch shape."""
    cos, sin = model.rope_cos[positions_N][:, None], model.rope_sin[positions_N][:, None]  # (N, 1, d/2)
    x = model.embed(ids_N)[:, None]  # (N, 1, D)
    for i, layer in enumerate(model.layers):
        x, _ = layer(x, cos, sin, mask_N11S, cache, i, None)
    return F.linear(model.norm(x[:, 0]), model.head_weight())  # (N, V)


class SharedPrefixCache:
    """The cache of G continuations of each of B prompts (a GRPO group, rows ``b G .. b G + G - 1``):
    each prompt's keys and values are kept once (the prefilled ``KVCache`` of B rows) and each
    row's new tokens in its own slots. Attention takes both at once, as Hydragen's shared-prefix
    decomposition (Juravsky et al., arXiv:2402.05099): the queries of a group's rows meet their
    prompt's keys as one (G H / K T, P) matmul, so decoding reads the prompt part of the cache
    once per group instead of once per row (the cache reads that dominate attention at
    the RL benchmark's size, docs/rl.md). ``keep_rows`` drops finished rows from the own slots;
    the prompts stay. Key columns, as in ``KVCache``: the P prompt slots, then the own ones."""

    def __init__(self, prefix: KVCache, group: int, max_new: int):
        L, B, K, _, d = prefix.k.shape
        self.P, self.B, self.group = prefix.length, B, group
        self.prefix_k, self.prefix_v = prefix.k[:, :, :, : self.P], prefix.v[:, :, :, : self.P]  # (L, B, K, P, d)
        self.own = KVCache(L, B * group, K, max_new, d, prefix.k.dtype, prefix.k.device)
        self.rows = None  # which of the B G rows the own slots hold, in order (None: all)
        self.length = self.P

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only rows ``rows`` (indices into the rows now held, in order) in the own slots."""
        self.own.length = self.length - self.P
        self.own.keep_rows(rows)
        self.rows = rows if self.rows is None else self.rows[rows]

    def attend(self, layer: int, q_nHTd: torch.Tensor, k_nKTd: torch.Tensor, v_nKTd: torch.Tensor, mask_n1TS: torch.Tensor) -> torch.Tensor:
        """As ``KVCache.attend``, over the shared prompt slots and the rows' own slots."""
        self.own.length = self.length - self.P
        ko, vo = self.own.update(layer, k_nKTd, v_nKTd)  # (n, K, t, d)
        n, H, T, d = q_nHTd.shape
        B, G, P, K = self.B, self.group, self.P, ko.shape[1]
        M, t = H // K * T, ko.shape[2]  # queries per key head of a row; own slots
        rows = self.rows

        def to_groups(x_nHTX: torch.Tensor) -> torch.Tensor:  # (n, H, T, X) -> (B K, G H/K T, X), finished rows zero
            full = x_nHTX if rows is None else x_nHTX.new_zeros((B * G, *x_nHTX.shape[1:])).index_copy_(0, rows, x_nHTX)
            return full.reshape(B, G, K, M, -1).transpose(1, 2).reshape(B * K, G * M, -1)

        def from_groups(x_BKGMX: torch.Tensor) -> torch.Tensor:  # (B K, G M, X) -> (n, H, T, X)
            full = x_BKGMX.view(B, K, G, M, -1).transpose(1, 2).reshape(B * G, H, T, -1)
            return full if rows is None else full[rows]

        kp, vp = self.prefix_k[layer].flatten(0, 1), self.prefix_v[layer].flatten(0, 1)  # (B K, P, d)
        s_prompt = from_groups(torch.bmm(to_groups(q_nHTd), kp.transpose(1, 2)))  # (n, H, T, P)
        s_own = torch.bmm(q_nHTd.reshape(n * K, M, d), ko.flatten(0, 1).transpose(1, 2)).view(n, H, T, t)
        s = torch.cat([s_prompt, s_own], dim=-1).float().mul_(d ** -0.5).masked_fill_(~mask_n1TS, float("-inf"))
        p = s.softmax(-1).to(vo.dtype)  # (n, H, T, P + t)
        y_prompt = from_groups(torch.bmm(to_groups(p[..., :P]), vp))  # (n, H, T, d)
        return y_prompt + torch.bmm(p[..., P:].reshape(n * K, M, t), vo.flatten(0, 1)).view(n, H, T, -1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * self.head_dim, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * self.head_dim, cfg.d_model, bias=False)
        self.fused_qkv: tuple[torch.Tensor, torch.Tensor | None] | None = None  # [wq; wk; wv] while sampling (Transformer.fused_decoding)

    def forward(self, x_BTD, cos, sin, mask_B1TS, cache: KVCache | SharedPrefixCache | None, layer: int) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        H, K = self.n_heads, self.n_kv
        if self.fused_qkv is not None and not torch.is_grad_enabled():  # one matmul, one rotation of q and k together
            qkv = F.linear(x_BTD, *self.fused_qkv).view(B, T, H + 2 * K, self.head_dim).transpose(1, 2)  # (B, H + 2 Hkv, T, d)
            qk = apply_rope(qkv[:, : H + K], cos, sin)
            q, k, v = qk[:, :H], qk[:, H:], qkv[:, H + K :]
        else:
            q = self.wq(x_BTD).view(B, T, H, self.head_dim).transpose(1, 2)  # (B, H, T, d)
            k = self.wk(x_BTD).view(B, T, K, self.head_dim).transpose(1, 2)  # (B, Hkv, T, d)
            v = self.wv(x_BTD).view(B, T, K, self.head_dim).transpose(1, 2)  # (B, Hkv, T, d)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            if cache.length > 0 and mask_B1TS is not None:  # decoding: a few queries over the cache
                return self.wo(cache.attend(layer, q, k, v, mask_B1TS).transpose(1, 2).reshape(B, T, -1))
            k, v = cache.update(layer, k, v)  # (B, Hkv, S, d)
        if self.n_kv != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        if mask_B1TS is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif isinstance(mask_B1TS, PrefixTree):  # flat prompts and completions (a trainer pass)
            y = mask_B1TS.attend(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_B1TS)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


def make_ffn(cfg: ModelConfig, layer: int) -> nn.Module:
    """DeepSeekMoE FFN, or a dense SwiGLU for dense models and the first ``first_k_dense_replace`` blocks."""
    if cfg.ffn != "moe" or layer < cfg.first_k_dense_replace:
        return SwiGLU(cfg.d_model, cfg.d_ff)
    return MoE(cfg.d_model, cfg.n_routed_experts, cfg.n_shared_experts, cfg.top_k, cfg.d_expert, cfg.aux_loss_coef,
               router=cfg.router, n_group=cfg.n_group, topk_group=cfg.topk_group, norm_topk_prob=cfg.norm_topk_prob,
               routed_scaling_factor=cfg.routed_scaling_factor, seq_aux_loss_coef=cfg.seq_aux_loss_coef,
               bias_update_speed=cfg.bias_update_speed, bias_update_stop=cfg.bias_update_stop)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.attn_norm, self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps), RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = MLAttention(cfg) if cfg.attention == "mla" else Attention(cfg)
        self.ffn = make_ffn(cfg, layer)

    def forward(self, x, cos, sin, mask, cache, layer, token_mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer)
        h = self.ffn_norm(x)
        if isinstance(self.ffn, MoE):
            out, stats = self.ffn(h, token_mask)
            return x + out, stats
        return x + self.ffn(h), None


class MTPModule(nn.Module):
    """DeepSeek-V3's MTP module (depth 1): M [RMSNorm(h_i); RMSNorm(Emb(t_{i+1}))] -> its own block
    -> its own final norm -> the shared output head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hnorm, self.enorm, self.norm = (RMSNorm(cfg.d_model, cfg.norm_eps) for _ in range(3))
        self.proj = nn.Linear(2 * cfg.d_model, cfg.d_model, bias=False)
        self.block = Block(cfg, cfg.n_layers)


@dataclass
class ModelOutput:
    logits_BTV: torch.Tensor | None  # None when forward(..., logits=False)
    aux_loss: torch.Tensor  # sum of the MoE balance losses (0 for a dense model)
    load_LE: torch.Tensor | None  # (layers, experts) token-slots per expert, None for dense
    hidden_BTD: torch.Tensor | None = None  # last block's output before the final norm (the MTP module's input)
    normed_BTD: torch.Tensor | None = None  # final normed hidden states, only with logits=False


def rope_table_args(cfg: ModelConfig) -> tuple:
    """``rope_tables`` arguments: rotary width (MLA's decoupled rotary part, else the head), length,
    base, and the frequency scaling."""
    rope_dim = cfg.qk_rope_head_dim if cfg.attention == "mla" else cfg.d_model // cfg.n_heads
    return (rope_dim, cfg.max_seq_len, cfg.rope_theta, cfg.rope_scaling, cfg.rope_factor, cfg.rope_low_freq_factor,
            cfg.rope_high_freq_factor, cfg.rope_original_max_len)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mtp = MTPModule(cfg) if cfg.mtp_depth > 0 else None
        # Imported checkpoints (most LLaMA sizes) have their own output matrix; tiny ones share it.
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, vocab_size, bias=False)
        cos, sin = rope_tables(*rope_table_args(cfg))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2:
                if name.endswith(".bias"):
                    nn.init.zeros_(p)  # q/k/v biases (Qwen2) start at zero
                continue  # norms stay at one
            # GPT-2: residual output projections get std / sqrt(2 L) so the stream starts near unit scale.
            scale = 1 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("wo.weight", "w2.weight", "w2_EHD")) else 1.0
            nn.init.normal_(p, std=std * scale)

    def new_cache(self, batch: int, max_len: int | None = None, mtp: bool = False) -> KVCache | LatentCache:
        """An empty cache for the main blocks, or (``mtp``) for the MTP module's block. GQA caches
        keys and values; MLA caches the compressed latent and the shared rotary key."""
        cfg = self.cfg
        p = self.embed.weight
        n_layers = cfg.mtp_depth if mtp else cfg.n_layers
        max_len = max_len or cfg.max_seq_len
        if cfg.attention == "mla":
            return LatentCache(n_layers, batch, max_len, cfg.kv_lora_rank, cfg.qk_rope_head_dim, p.dtype, p.device)
        return KVCache(n_layers, batch, cfg.n_kv_heads, max_len, cfg.d_model // cfg.n_heads, p.dtype, p.device)

    @contextlib.contextmanager
    def fused_decoding(self):
        """Within the block, forward passes without gradients (a sampler's) compute q, k and v as one
        matmul on weights concatenated on entry (once per rollout: training changes them between
        rollouts), and rotate q and k in one go: the same floats as the separate matmuls (each
        output column is the same dot product) and rotations (tested), 9 operations fewer per
        layer and decoded token. Plain ``nn.Linear`` projections only (a LoRA adapter's are left
        as they are). A dense FFN's gate and up projections are not fused: SiLU over half of a
        fused output can round differently (its vectorised and scalar paths differ) and the
        fusion measured no faster at the benchmark's size (docs/rl.md)."""
        attns = [b.attn for b in list(self.layers) + ([self.mtp.block] if self.mtp is not None else []) if isinstance(b.attn, Attention)]
        with torch.no_grad():
            for a in attns:
                if all(type(m) is nn.Linear for m in (a.wq, a.wk, a.wv)):
                    bias = torch.cat([a.wq.bias, a.wk.bias, a.wv.bias]) if a.wq.bias is not None else None
                    a.fused_qkv = (torch.cat([a.wq.weight, a.wk.weight, a.wv.weight]), bias)
        try:
            yield self
        finally:
            for a in attns:
                a.fused_qkv = None

    def head_weight(self) -> torch.Tensor:
        """The (V, D) output matrix: the embedding unless cfg.tie_embeddings is False."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def _attention_inputs(self, B: int, T: int, device, positions_BT, key_mask_BS, cache, doc_ids_BT=None, mask_BTT=None, tree=None):
        """RoPE tables at the positions, the (B, 1, T, S) boolean mask (None: plain causal; a
        ``PrefixTree`` stands in for it), and the (B, T) real-token mask of the MoE statistics
        implied by ``key_mask_BS``. With ``doc_ids_BT`` (packed rows), the mask is
        block-diagonal causal and positions restart at every document."""
        past = cache.length if cache is not None else 0
        if tree is not None:
            if cache is not None or key_mask_BS is not None or positions_BT is None or B != 1:
                raise ValueError("tree (a prefix-tree layout) is for training passes over one flat row: positions, no cache, no key_mask_BS")
            return self.rope_cos[positions_BT], self.rope_sin[positions_BT], tree, None
        if mask_BTT is not None:
            if cache is not None or key_mask_BS is not None or positions_BT is None:
                raise ValueError("mask_BTT (an explicit attention mask) is for training passes: positions, no cache, no key_mask_BS")
            return self.rope_cos[positions_BT], self.rope_sin[positions_BT], mask_BTT[:, None], None  # mask (B, 1, T, T)
        if doc_ids_BT is not None:
            if cache is not None or key_mask_BS is not None:
                raise ValueError("doc_ids_BT (packed documents) is for training passes: no cache, no key_mask_BS")
            if positions_BT is None:
                positions_BT = document_positions(doc_ids_BT)
            cos, sin = self.rope_cos[positions_BT], self.rope_sin[positions_BT]  # (B, T, d/2)
            return cos, sin, document_mask(doc_ids_BT)[:, None], None  # mask (B, 1, T, T)
        if positions_BT is None:
            positions_BT = torch.arange(past, past + T, device=device).expand(B, T)
        # Positions, not cache slots, are bounded: speculative decoding leaves rejected drafts'
        # slots behind (masked out), so a row may occupy more slots than its length.
        if T and int(positions_BT.max()) >= self.cfg.max_seq_len:
            raise ValueError(f"sequence of {int(positions_BT.max()) + 1} tokens exceeds model.max_seq_len={self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[positions_BT], self.rope_sin[positions_BT]  # (B, T, d/2)
        mask = token_mask = None
        if key_mask_BS is not None:
            S = key_mask_BS.shape[1]
            q_pos = torch.arange(past, past + T, device=device)
            k_pos = torch.arange(S, device=device)
            causal_TS = k_pos[None, :] <= q_pos[:, None]
            mask = (causal_TS[None] & key_mask_BS[:, None, :]) | (k_pos[None, None, :] == q_pos[None, :, None])
            mask = mask[:, None]  # (B, 1, T, S)
            token_mask = key_mask_BS[:, past:]
        elif cache is not None and past > 0:
            raise ValueError("decoding with a filled cache needs key_mask_BS")
        return cos, sin, mask, token_mask

    def forward(self, ids_BT: torch.Tensor | None, positions_BT: torch.Tensor | None = None, key_mask_BS: torch.Tensor | None = None,
                cache: KVCache | LatentCache | None = None, token_mask_BT: torch.Tensor | None = None, logits: bool = True,
                doc_ids_BT: torch.Tensor | None = None, embeds_BTD: torch.Tensor | None = None, mask_BTT: torch.Tensor | None = None,
                tree: PrefixTree | None = None) -> ModelOutput:
        """Logits for ``ids_BT``.

        Without ``key_mask_BS`` the batch is plain causal (right padding only, as in pretraining).
        With it (B, S): S = cached length + T, True where a key is a real token; positions must
        then be given too. Every query may always attend to itself, so a padding query (which
        would otherwise see no key at all) yields finite values instead of NaN.
        ``token_mask_BT`` marks the real tokens for the MoE balance losses and load statistics
        when it cannot be read off ``key_mask_BS`` (pretraining's right padding); as floats, it
        weighs each token (a shared prompt's copy stands for several rows' prompts). ``logits=False``
        returns the normed hidden states (``normed_BTD``) instead of logits, for losses that apply
        the output matrix a slice at a time (``r1lab.logprobs``) so that (B, T, V) never exists.
        ``doc_ids_BT`` (B, T) packs several documents in a row (SFT): a token attends only to
        earlier tokens with its own document id, and positions restart at each document (unless
        given), so a packed row computes what each document alone would (``document_mask``).
        ``embeds_BTD`` (with ``ids_BT`` None) feeds input vectors instead of token ids: image
        features and image-token embeddings of a multimodal model (``r1lab.janus``). ``mask_BTT``
        (B, T, T) boolean, with ``positions_BT``: which keys each query sees, given outright (RL
        rows packed with one copy of a prompt shared by its completions, ``r1lab.rollout``).
        ``tree`` (with ``positions_BT``, B = 1): the tokens are prompts and completions laid flat,
        attending as ``PrefixTree`` says (``r1lab.rollout.pack_prefix_tree``)."""
        B, T = ids_BT.shape if embeds_BTD is None else embeds_BTD.shape[:2]
        device = ids_BT.device if embeds_BTD is None else embeds_BTD.device
        cos, sin, mask, token_mask = self._attention_inputs(B, T, device, positions_BT, key_mask_BS, cache, doc_ids_BT, mask_BTT, tree)
        if token_mask_BT is not None:
            token_mask = token_mask_BT
        x = self.embed(ids_BT) if embeds_BTD is None else embeds_BTD
        aux = x.new_zeros((), dtype=torch.float32)
        loads = []
        for i, layer in enumerate(self.layers):
            x, stats = layer(x, cos, sin, mask, cache, i, token_mask)
            if stats is not None:
                aux = aux + stats.aux_loss
                loads.append(stats.load_E)
        if cache is not None:
            cache.length += T
        load_LE = torch.stack(loads) if loads else None
        if not logits:
            return ModelOutput(None, aux, load_LE, hidden_BTD=x, normed_BTD=self.norm(x))
        return ModelOutput(F.linear(self.norm(x), self.head_weight()), aux, load_LE, hidden_BTD=x)  # logits (B, T, V)

    def mtp_forward(self, hidden_BTD: torch.Tensor, next_ids_BT: torch.Tensor, positions_BT: torch.Tensor | None = None,
                    key_mask_BS: torch.Tensor | None = None, cache: KVCache | LatentCache | None = None,
                    token_mask_BT: torch.Tensor | None = None, doc_ids_BT: torch.Tensor | None = None) -> ModelOutput:
        """The MTP module: from the main model's hidden state at position i and the token at i+1,
        logits for the token at i+2 (B, T, V). Masks, positions and document ids are those of
        position i; its cache comes from ``new_cache(..., mtp=True)``."""
        if self.mtp is None:
            raise ValueError("model.mtp_depth is 0: this model has no MTP module")
        B, T = next_ids_BT.shape
        cos, sin, mask, token_mask = self._attention_inputs(B, T, next_ids_BT.device, positions_BT, key_mask_BS, cache, doc_ids_BT)
        if token_mask_BT is not None:
            token_mask = token_mask_BT
        m = self.mtp
        x = m.proj(torch.cat([m.hnorm(hidden_BTD), m.enorm(self.embed(next_ids_BT))], dim=-1))  # (B, T, D)
        x, stats = m.block(x, cos, sin, mask, cache, 0, token_mask)
        if cache is not None:
            cache.length += T
        logits = F.linear(m.norm(x), self.head_weight())  # the shared output head
        aux = stats.aux_loss if stats is not None else x.new_zeros((), dtype=torch.float32)
        return ModelOutput(logits, aux, stats.load_E[None] if stats is not None else None, hidden_BTD=x)


def document_mask(doc_ids_BT: torch.Tensor) -> torch.Tensor:
    """(B, T, T) boolean: query t sees key s when s <= t and both carry the same document id
    (block-diagonal causal attention over packed documents; every query sees itself)."""
    T = doc_ids_BT.shape[1]
    causal_TT = torch.ones(T, T, dtype=torch.bool, device=doc_ids_BT.device).tril()
    return causal_TT[None] & (doc_ids_BT[:, :, None] == doc_ids_BT[:, None, :])


def document_positions(doc_ids_BT: torch.Tensor) -> torch.Tensor:
    """(B, T) position of each token within its document: 0 wherever the id changes, counting
    up until the next change (documents are contiguous runs of one id)."""
    B, T = doc_ids_BT.shape
    idx_BT = torch.arange(T, device=doc_ids_BT.device).expand(B, T)
    starts_BT = torch.ones_like(doc_ids_BT, dtype=torch.bool)
    starts_BT[:, 1:] = doc_ids_BT[:, 1:] != doc_ids_BT[:, :-1]
    first_BT = torch.where(starts_BT, idx_BT, torch.zeros_like(idx_BT)).cummax(dim=1).values  # (B, T) start of own document
    return idx_BT - first_BT


def count_parameters(model: Transformer) -> tuple[int, int]:
    """(total, active per token): for MoE, only top_k of the routed experts count as active."""
    total = sum(p.numel() for p in model.parameters())
    cfg = model.cfg
    if cfg.ffn != "moe":
        return total, total
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    return total, total - routed + routed * cfg.top_k // cfg.n_routed_experts
