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


@dataclass
class PrefixTree:
    """Where the M flat tokens of a trainer pass sit in the two attention batches: B prompts of
    up to P tokens and N completions of up to C tokens, each continuing one of the prompts.
    Index 0 stands in for padding slots (their scores are masked out or their outputs unused)."""

    prompt_idx_BP: torch.Tensor  # (B, P) flat index of prompt b's k-th token, 0 past its end
    comp_idx_NC: torch.Tensor  # (N, C) flat index of completion n's j-th token, 0 past its end
    group_N: torch.Tensor  # (N,) the prompt completion n continues
    mask_N1CS: torch.Tensor  # (N, 1, C, P + C) bool: its prompt's real keys, then its own keys up to itself
    out_idx_M: torch.Tensor  # (M,) row of token m's output in [prompt outputs (B P); completion outputs (N C)]

    @staticmethod
    def build(prompt_len_B: torch.Tensor, prompt_start_B: torch.Tensor, comp_len_N: torch.Tensor, comp_start_N: torch.Tensor,
              group_N: torch.Tensor, M: int) -> PrefixTree:
        """The layout of B prompts (length, flat start) and N completions (length, flat start, prompt)."""
        B, N = len(prompt_len_B), len(comp_len_N)
        P, C = max(int(prompt_len_B.max()), 1), max(int(comp_len_N.max()) if N else 0, 1)
        p_ar, c_ar = torch.arange(P), torch.arange(C)
        p_valid_BP = p_ar[None] < prompt_len_B[:, None]  # (B, P)
        c_valid_NC = c_ar[None] < comp_len_N[:, None]  # (N, C)
        prompt_idx = torch.where(p_valid_BP, prompt_start_B[:, None] + p_ar[None], 0)  # (B, P)
        comp_idx = torch.where(c_valid_NC, comp_start_N[:, None] + c_ar[None], 0)  # (N, C)
        causal_CC = torch.ones(C, C, dtype=torch.bool).tril()
        # Padding queries of a completion see their own slot: no row of the softmax is empty.
        mask = torch.cat([p_valid_BP[group_N][:, None, :].expand(N, C, P), causal_CC[None].expand(N, C, C)], dim=-1)[:, None]  # (N, 1, C, P + C)
        out = torch.zeros(M, dtype=torch.long)
        out[prompt_idx[p_valid_BP]] = (torch.arange(B)[:, None] * P + p_ar[None])[p_valid_BP]
        out[comp_idx[c_valid_NC]] = B * P + (torch.arange(N)[:, None] * C + c_ar[None])[c_valid_NC]
        return PrefixTree(prompt_idx, comp_idx, group_N, mask, out)

    def attend(self, q_1HMd: torch.Tensor, k_1HMd: torch.Tensor, v_1HMd: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """Softmax attention of the flat tokens (keys and values with as many heads as the queries),
        (1, H, M, dv): what ``F.scaled_dot_product_attention`` gives over the padded batch."""
        H = q_1HMd.shape[1]
        B, P = self.prompt_idx_BP.shape
        N, C = self.comp_idx_NC.shape

        def take(x_1HMd: torch.Tensor, idx_nL: torch.Tensor) -> torch.Tensor:  # (n, H, L, d)
            n, L = idx_nL.shape
            return x_1HMd[0].index_select(1, idx_nL.reshape(-1)).view(H, n, L, -1).transpose(0, 1)

        qp, kp, vp = (take(x, self.prompt_idx_BP) for x in (q_1HMd, k_1HMd, v_1HMd))  # (B, H, P, d)
        y_prompt = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=scale)  # (B, H, P, dv)
        qc, kc, vc = (take(x, self.comp_idx_NC) for x in (q_1HMd, k_1HMd, v_1HMd))  # (N, H, C, d)
        k_all = torch.cat([kp.index_select(0, self.group_N), kc], dim=2)  # (N, H, P + C, d)
        v_all = torch.cat([vp.index_select(0, self.group_N), vc], dim=2)
        y_comp = F.scaled_dot_product_attention(qc, k_all, v_all, attn_mask=self.mask_N1CS, scale=scale)  # (N, H, C, dv)
        y = torch.cat([y_prompt.transpose(1, 2).reshape(B * P, H, -1), y_comp.transpose(1, 2).reshape(N * C, H, -1)])  # (B P + N C, H, dv)
        return y.index_select(0, self.out_idx_M).transpose(0, 1)[None]  # (1, H, M, dv)
