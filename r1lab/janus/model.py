"""The unified model of Janus (arXiv:2410.13848) in miniature: ONE r1lab Transformer (dense or
MoE) reads text, image features and image tokens, and writes text and image tokens.

Decoupled visual encoding (Janus's central design choice, sec. 3.1):

* understanding: image -> ``UnderstandingEncoder`` (a small patch transformer in SigLIP's role;
  8x8-pixel patches, 16 per image) -> ``und_adaptor`` (two-layer MLP) -> vectors in the LM's
  embedding space, placed where the image sits in the sequence;
* generation: image -> VQ codes (``r1lab.janus.vq``, frozen) -> ``gen_embed`` + ``gen_aligner``
  (the generation adaptor) -> the same transformer -> ``gen_head`` (an MLP over codes) predicts
  the next code. Text keeps the LM's own tied embedding and head.

Both paths run through ``self.lm``, the one Transformer (tested: a change of its weights changes
both). Classifier-free guidance (Janus sec. 3.2): in training the prompt of a text-to-image
sequence is replaced by pad tokens with probability ``cfg_dropout`` (same length, so positions
match); at sampling the next-code logits are ``uncond + s * (cond - uncond)`` (``cfg_logits``),
so s = 1 is the conditional model (tested).

Departures: the understanding encoder is trained from scratch with everything else (Janus
freezes a pretrained SigLIP); image tokens also get a learned position embedding ``gen_pos``
(64 raster positions) on top of the LM's 1D RoPE, which a from-scratch model needs to know where
in the 8x8 grid it draws.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1lab.config import JanusConfig, ModelConfig
from r1lab.model.transformer import Transformer

PATCH = 8
"pixels per side of an understanding patch: a 32x32 image is 16 patches"
IMAGE_SIDE = 32
N_PATCHES = (IMAGE_SIDE // PATCH) ** 2
N_CODES = 64
"VQ codes per image (8x8)"


def cfg_logits(cond_BV: torch.Tensor, uncond_BV: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond) (Ho & Salimans 2022; Janus eq. 3)."""
    return uncond_BV + scale * (cond_BV - uncond_BV)


class UnderstandingEncoder(nn.Module):
    """Patchify (``patch`` x ``patch`` x 3 -> enc_dim), learned positions, bidirectional transformer
    encoder blocks (torch's own pre-norm ``TransformerEncoderLayer``), final LayerNorm:
    (B, (32 / patch)^2, enc_dim)."""

    def __init__(self, dim: int, layers: int, patch: int = PATCH, pixel_mean: float = 0.5, pixel_std: float = 0.5):
        super().__init__()
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self.patch_side = patch
        self.n_patches = (IMAGE_SIDE // patch) ** 2
        self.patch = nn.Linear(3 * patch * patch, dim)
        self.pos = nn.Parameter(torch.zeros(self.n_patches, dim))
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        B = x_B3HW.shape[0]
        P = self.patch_side
        g = IMAGE_SIDE // P
        p = x_B3HW.view(B, 3, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, -1)  # (B, N, 3*P*P)
        return self.norm(self.blocks(self.patch((p - self.pixel_mean) / self.pixel_std) + self.pos))  # (B, P, enc_dim)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


def lm_config(model_cfg: ModelConfig, seq_len: int) -> ModelConfig:
    """The LM's config: ``model`` with room for ``seq_len`` tokens (a prompt plus 64 codes)."""
    return dataclasses.replace(model_cfg, max_seq_len=max(model_cfg.max_seq_len, seq_len))


class JanusModel(nn.Module):
    """The LM plus the understanding encoder/adaptor and the generation embedding/adaptor/head.
    ``cfg`` and ``vocab_size`` are the LM's (what a checkpoint records to rebuild it)."""

    def __init__(self, model_cfg: ModelConfig, vocab_size: int, j: JanusConfig):
        super().__init__()
        self.lm = Transformer(model_cfg, vocab_size)
        self.cfg, self.vocab_size, self.codebook = self.lm.cfg, vocab_size, j.vq_codebook
        D = model_cfg.d_model
        self.und_encoder = UnderstandingEncoder(j.enc_dim, j.enc_layers, j.enc_patch, j.enc_pixel_mean, j.enc_pixel_std)
        self.n_patches = self.und_encoder.n_patches
        self.und_adaptor = _mlp(j.enc_dim, D, D)
        # Where each image feature sits in the patch grid, in the LM's own space (as gen_pos for codes).
        self.und_pos = nn.Parameter(torch.zeros(self.n_patches, D)) if j.und_pos else None
        self.gen_embed = nn.Embedding(j.vq_codebook, D)
        self.gen_aligner = _mlp(D, D, D)
        self.gen_pos = nn.Parameter(torch.zeros(N_CODES, D))
        self.gen_head = _mlp(D, D, j.vq_codebook)
        for name, p in self.named_parameters():
            if not name.startswith("lm.") and p.dim() >= 2 and not name.startswith("und_encoder.blocks"):
                nn.init.normal_(p, std=model_cfg.init_std)

    # --- the three kinds of input vectors -------------------------------------------------
    def text_embeds(self, ids_BT: torch.Tensor) -> torch.Tensor:
        return self.lm.embed(ids_BT)  # (B, T, D)

    def image_features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Understanding path: (B, n_patches, D) vectors in the LM's embedding space."""
        f_BND = self.und_adaptor(self.und_encoder(x_B3HW))
        return f_BND if self.und_pos is None else f_BND + self.und_pos

    def code_embeds(self, codes_BN: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Generation path: (B, N, D) inputs of image codes at raster positions start..start+N-1."""
        N = codes_BN.shape[1]
        return self.gen_aligner(self.gen_embed(codes_BN)) + self.gen_pos[start : start + N]

    # --- outputs ---------------------------------------------------------------------------
    def hidden(self, embeds_BTD: torch.Tensor, token_mask_BT: torch.Tensor | None = None, **kw):
        """The LM over input vectors: its output with the final normed hidden states."""
        return self.lm(None, embeds_BTD=embeds_BTD, token_mask_BT=token_mask_BT, logits=False, **kw)

    def text_logits(self, h_ND: torch.Tensor) -> torch.Tensor:
        return F.linear(h_ND, self.lm.head_weight())  # (N, V)

    def code_logits(self, h_ND: torch.Tensor) -> torch.Tensor:
        return self.gen_head(h_ND)  # (N, K)

    def lm_parameters(self) -> list[nn.Parameter]:
        return list(self.lm.parameters())
