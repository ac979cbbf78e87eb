"""Token log-probabilities and NLL over large vocabularies, a slice of tokens at a time.

With a real vocabulary (Qwen2: V = 151,936) the (tokens, V) logits dominate memory: 64 x 512
tokens make 20 GB in fp32, and ``log_softmax`` plus its backward hold two or three such tensors.
``token_logprobs`` never builds them: it takes the final hidden states and the output matrix,
and computes ``log softmax(h W^T / temperature)[target]`` for ``chunk`` tokens at a time. Its
backward recomputes each slice's logits instead of storing them (the trick of Liger-Kernel's
fused linear cross-entropy and of torchtune's chunked output), so memory is O(chunk x V) in both
passes; only one float per token (the log-sum-exp) is kept between them.

Departure: plain PyTorch matmuls, no fused kernel; the result equals the full computation up to
float rounding (tested against it, values and gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def full_token_logprobs(hidden_MD: torch.Tensor, weight_VD: torch.Tensor, targets_M: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The reference: (M, V) logits in one go, fp32 log-softmax, gather. Memory O(M x V)."""
    logp_MV = F.log_softmax(F.linear(hidden_MD, weight_VD).float() / temperature, dim=-1)
    return logp_MV.gather(-1, targets_M[:, None]).squeeze(-1)  # (M,)


class _ChunkedTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_MD: torch.Tensor, weight_VD: torch.Tensor, targets_M: torch.Tensor, temperature: float, chunk: int) -> torch.Tensor:
        M = hidden_MD.shape[0]
        logp_M = torch.empty(M, dtype=torch.float32, device=hidden_MD.device)
        lse_M = torch.empty(M, dtype=torch.float32, device=hidden_MD.device)
        for s in range(0, M, chunk):
            e = min(s + chunk, M)
            logits_CV = F.linear(hidden_MD[s:e], weight_VD).float().div_(temperature)  # (C, V)
            lse_M[s:e] = torch.logsumexp(logits_CV, dim=-1)
            logp_M[s:e] = logits_CV.gather(-1, targets_M[s:e, None]).squeeze(-1) - lse_M[s:e]
        ctx.save_for_backward(hidden_MD, weight_VD, targets_M, lse_M)
        ctx.temperature, ctx.chunk = temperature, chunk
        return logp_M

    @staticmethod
    def backward(ctx, grad_M: torch.Tensor):
        hidden_MD, weight_VD, targets_M, lse_M = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden_MD, dtype=torch.float32) if need_h else None
        grad_w = torch.zeros_like(weight_VD, dtype=torch.float32) if need_w else None
        w32 = weight_VD.float()
        M = hidden_MD.shape[0]
        for s in range(0, M, ctx.chunk):
            e = min(s + ctx.chunk, M)
            g_C = grad_M[s:e].float()
            # d logp / d logits = onehot(target) - softmax, scaled by 1/temperature; built in place
            # in the one (C, V) buffer: logits -> softmax -> -g * softmax -> + g at the target.
            d_CV = F.linear(hidden_MD[s:e], weight_VD).float().div_(ctx.temperature)
            d_CV.sub_(lse_M[s:e, None]).exp_().mul_(-g_C[:, None])
            d_CV.scatter_add_(1, targets_M[s:e, None], g_C[:, None]).div_(ctx.temperature)
            if need_h:
                grad_h[s:e] = d_CV @ w32
            if need_w:
                grad_w.addmm_(d_CV.t(), hidden_MD[s:e].float())
        return (grad_h.to(hidden_MD.dtype) if need_h else None, grad_w.to(weight_VD.dtype) if need_w else None, None, None, None)


def token_logprobs(hidden_NTD: torch.Tensor, weight_VD: torch.Tensor, targets_NT: torch.Tensor, temperature: float = 1.0, chunk: int = 1024) -> torch.Tensor:
    """log softmax(hidden @ weight^T / temperature) at ``targets``, shape of ``targets`` (fp32).

    ``chunk`` tokens at a time (O(chunk x V) memory in forward and backward); ``chunk <= 0``
    computes the full (tokens, V) logits instead (``full_token_logprobs``)."""
    D = hidden_NTD.shape[-1]
    h_MD, t_M = hidden_NTD.reshape(-1, D), targets_NT.reshape(-1)
    if chunk <= 0:
        out_M = full_token_logprobs(h_MD, weight_VD, t_M, temperature)
    else:
        out_M = _ChunkedTokenLogprobs.apply(h_MD, weight_VD, t_M, temperature, chunk)
    return out_M.view(targets_NT.shape)


def chunked_nll(hidden_BTD: torch.Tensor, weight_VD: torch.Tensor, targets_BT: torch.Tensor, mask_BT: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``r1lab.sft.masked_nll`` from hidden states: mean negative log-likelihood of ``targets``
    over ``mask`` positions, with O(chunk x V) memory."""
    nll_BT = -token_logprobs(hidden_BTD, weight_VD, targets_BT, 1.0, chunk)
    mask = mask_BT.float()
    return (nll_BT * mask).sum() / mask.sum().clamp(min=1.0)
