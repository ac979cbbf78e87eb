"""Prefix-tree attention for a trainer pass over GRPO groups: each prompt once, its completions after it.

A GRPO group is G completions of one prompt. The trainer's pass can run the prompt's tokens once
(``rl.share_prompt``) if every completion token still sees exactly what it sees in the padded
batch: its prompt's tokens and its own earlier tokens. Packed into dense rows that is an
explicit (W, W) mask per row (``r1lab.rollout.pack_shared_prompts``), which the CPU's SDPA
kernel computes densely, masked keys and all, and whose rows carry padding wherever a group's
prompt and completions do not fill them. Here instead the tokens lie flat, (1, M), with no
padding at all for the projections and the FFN, and attention is split as Hydragen splits
decoding's (Juravsky et al., arXiv:2402.05099): the prompts attend causally among themselves as
a (B, P) batch, and each completion's queries attend to its prompt's keys (gathered per row,
P of them) and its own keys (causal, C of them) in one softmax, as an (N, C) batch. Attention
then costs B P^2 + N C (P + C) scores instead of R W^2, the FFN and projections M rows instead
of R W. Each query sees the keys (and positions) of the padded pass, so log-probs and gradients
equal it up to float rounding (tests/test_rl_pack.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class _ToSlots(torch.autograd.Function):
    """(H, M, d) tokens -> (H, S, d) attention slots, ``x.index_select(1, slot_token_S)`` (a
    padding slot reads token 0). Every token sits in exactly one slot and padding slots get
    exactly zero gradient (their queries' outputs are dropped, their keys masked or seen only by
    padding queries), so the backward is the inverse gather, not autograd's scatter-add."""

    @staticmethod
    def forward(ctx, x_HMd: torch.Tensor, read_S: torch.Tensor, token_slot_M: torch.Tensor) -> torch.Tensor:
        ctx.token_slot_M = token_slot_M
        return x_HMd.index_select(1, read_S)

    @staticmethod
    def backward(ctx, g_HSd: torch.Tensor):
        return g_HSd.index_select(1, ctx.token_slot_M), None, None


class _FromSlots(torch.autograd.Function):
    """(S, H, d) slot outputs -> (M, H, d) token outputs; backward: each slot its token's
    gradient, padding slots zero (they read an appended zero row)."""

    @staticmethod
    def forward(ctx, y_SHd: torch.Tensor, token_slot_M: torch.Tensor, slot_token_S: torch.Tensor) -> torch.Tensor:
        ctx.slot_token_S = slot_token_S
        return y_SHd.index_select(0, token_slot_M)

    @staticmethod
    def backward(ctx, g_MHd: torch.Tensor):
        return F.pad(g_MHd, (0, 0, 0, 0, 0, 1)).index_select(0, ctx.slot_token_S), None, None


@dataclass
class PrefixTree:
    """Where the M flat tokens of a trainer pass sit in the two attention batches, as S = B P + N C
    slots: B prompts of up to P tokens, then N completions of up to C tokens, each continuing one
    of the prompts. Padding slots hold no token."""

    B: int
    P: int
    N: int
    C: int
    slot_token_S: torch.Tensor  # (S,) the flat token in each slot, M on padding
    token_slot_M: torch.Tensor  # (M,) the slot of each flat token
    select_NB: torch.Tensor  # (N, B) float one-hot: the prompt completion n continues
    mask_N1CS: torch.Tensor  # (N, 1, C, P + C) bool: its prompt's real keys, then its own keys up to itself

    @staticmethod
    def build(prompt_len_B: torch.Tensor, prompt_start_B: torch.Tensor, comp_len_N: torch.Tensor, comp_start_N: torch.Tensor,
              group_N: torch.Tensor, M: int, device: torch.device | str = "cpu") -> PrefixTree:
        """The layout of B prompts (length, flat start) and N completions (length, flat start, prompt),
        built on the CPU, its tensors moved to ``device``."""
        B, N = len(prompt_len_B), len(comp_len_N)
        P, C = max(int(prompt_len_B.max()), 1), max(int(comp_len_N.max()) if N else 0, 1)
        p_ar, c_ar = torch.arange(P), torch.arange(C)
        p_valid_BP = p_ar[None] < prompt_len_B[:, None]  # (B, P)
        c_valid_NC = c_ar[None] < comp_len_N[:, None]  # (N, C)
        slot_token = torch.cat([torch.where(p_valid_BP, prompt_start_B[:, None] + p_ar[None], M).reshape(-1),
                                torch.where(c_valid_NC, comp_start_N[:, None] + c_ar[None], M).reshape(-1)])  # (S,)
        valid_S = slot_token < M
        token_slot = torch.empty(M, dtype=torch.long).index_put_((slot_token[valid_S],), valid_S.nonzero().squeeze(-1))
        causal_CC = torch.ones(C, C, dtype=torch.bool).tril()
        # Padding queries of a completion see their own slot: no row of the softmax is empty.
        mask = torch.cat([p_valid_BP[group_N][:, None, :].expand(N, C, P), causal_CC[None].expand(N, C, C)], dim=-1)[:, None]  # (N, 1, C, P + C)
        select = torch.zeros(N, B).index_put_((torch.arange(N), group_N), torch.ones(N))
        return PrefixTree(B, P, N, C, slot_token.to(device), token_slot.to(device), select.to(device), mask.to(device))

    def attend(self, q_1HMd: torch.Tensor, k_1HMd: torch.Tensor, v_1HMd: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """Softmax attention of the flat tokens (keys and values with as many heads as the queries),
        (1, H, M, dv): what ``F.scaled_dot_product_attention`` gives over the padded batch."""
        H, M = q_1HMd.shape[1], q_1HMd.shape[2]
        B, P, N, C = self.B, self.P, self.N, self.C
        if M != len(self.token_slot_M):
            raise ValueError(f"the prefix tree lays out {len(self.token_slot_M)} tokens, attention got {M}")
        read_S = self.slot_token_S.clamp(max=M - 1)

        def split(x_1HMd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, H, P, d), (N, H, C, d)
            x_HSd = _ToSlots.apply(x_1HMd.view(x_1HMd.shape[1:]), read_S, self.token_slot_M)
            return x_HSd[:, : B * P].view(H, B, P, -1).transpose(0, 1), x_HSd[:, B * P :].view(H, N, C, -1).transpose(0, 1)

        (qp, qc), (kp, kc), (vp, vc) = split(q_1HMd), split(k_1HMd), split(v_1HMd)
        y_prompt = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=scale)  # (B, H, P, dv)
        # Each completion's copy of its prompt's keys and values: a one-hot matmul (exact copies),
        # whose backward sums over the group as a matmul rather than a scatter-add.
        k_all = torch.cat([(self.select_NB.to(kp.dtype) @ kp.reshape(B, -1)).view(N, H, P, -1), kc], dim=2)  # (N, H, P + C, d)
        v_all = torch.cat([(self.select_NB.to(vp.dtype) @ vp.reshape(B, -1)).view(N, H, P, -1), vc], dim=2)
        y_comp = F.scaled_dot_product_attention(qc, k_all, v_all, attn_mask=self.mask_N1CS, scale=scale)  # (N, H, C, dv)
        y = torch.cat([y_prompt.transpose(1, 2).reshape(B * P, H, -1), y_comp.transpose(1, 2).reshape(N * C, H, -1)])  # (S, H, dv)
        return _FromSlots.apply(y, self.token_slot_M, self.slot_token_S).transpose(0, 1)[None]  # (1, H, M, dv)
