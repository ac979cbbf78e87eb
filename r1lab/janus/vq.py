"""The image tokenizer of the generation path: a small VQ-VAE (van den Oord et al. 2017,
arXiv:1711.00937), whose discrete codes the unified transformer predicts.

Janus uses the VQGAN-family tokenizer of LlamaGen (16x downsampling, 16,384 codes, trained with
perceptual and adversarial losses). Here: a 4x-downsampling conv encoder/decoder (32x32 image ->
8x8 = 64 codes), a codebook of ``vq_codebook`` entries, the straight-through estimator, an MSE
reconstruction loss and the commitment loss beta * ||z - sg(e)||^2. The codebook is learnt by
exponential moving averages of the assigned encoder outputs (the paper's appendix A.1) instead of
the codebook loss; it starts from encoder outputs of the first batch (data init) and codes that
fall out of use are restarted on random encoder outputs (as Jukebox does), which keeps a small
codebook fully used. No perceptual or GAN loss: the images are flat colours and grey levels.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1lab.config import JanusConfig

DOWNSAMPLE = 4
"pixels per code along each side"


def quantize(z_NC: torch.Tensor, codebook_KC: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook entry (squared L2) of each row: (N,)."""
    d_NK = (z_NC.pow(2).sum(1, keepdim=True) - 2 * z_NC @ codebook_KC.t() + codebook_KC.pow(2).sum(1)[None])  # (N, K)
    return d_NK.argmin(dim=1)


def ema_update(cluster_size_K: torch.Tensor, embed_sum_KC: torch.Tensor, z_NC: torch.Tensor, idx_N: torch.Tensor,
               decay: float, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EMA step of the codebook (van den Oord 2017, eq. 6-8 with Laplace smoothing):
    N_k <- d N_k + (1-d) n_k, m_k <- d m_k + (1-d) sum of the z assigned to k, e_k = m_k / N~_k.
    Returns (new cluster sizes (K,), new sums (K, C), new codebook (K, C))."""
    K = cluster_size_K.shape[0]
    onehot_NK = F.one_hot(idx_N, K).to(z_NC.dtype)  # (N, K)
    size_K = decay * cluster_size_K + (1 - decay) * onehot_NK.sum(0)
    sum_KC = decay * embed_sum_KC + (1 - decay) * onehot_NK.t() @ z_NC
    n = size_K.sum()
    smoothed_K = (size_K + eps) / (n + K * eps) * n  # Laplace smoothing: no division by zero
    return size_K, sum_KC, sum_KC / smoothed_K[:, None]


class VQVAE(nn.Module):
    """Encoder -> nearest code -> decoder. ``encode`` gives (B, 64) code ids, ``decode`` images."""

    def __init__(self, j: JanusConfig):
        super().__init__()
        # cfg and vocab_size: what a checkpoint records (recipes.common.model_state)
        self.cfg, self.vocab_size = j, j.vq_codebook
        codebook, dim, c = j.vq_codebook, j.vq_dim, j.vq_channels
        self.codebook_size, self.dim, self.beta, self.decay = codebook, dim, j.vq_beta, j.vq_decay
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, dim, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c, 3, 4, stride=2, padding=1),
        )
        self.register_buffer("codebook_KC", torch.randn(codebook, dim) * 0.1)
        self.register_buffer("cluster_size_K", torch.zeros(codebook))
        self.register_buffer("embed_sum_KC", torch.zeros(codebook, dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def _z(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x_B3HW * 2 - 1)  # (B, C, h, w)
        return z.permute(0, 2, 3, 1)  # (B, h, w, C)

    @torch.no_grad()
    def encode(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Code ids (B, h*w) in raster order."""
        z = self._z(x_B3HW)
        B, h, w, C = z.shape
        return quantize(z.reshape(-1, C), self.codebook_KC).view(B, h * w)

    def decode(self, idx_BN: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] from code ids (B, h*w), h = w."""
        B, N = idx_BN.shape
        side = int(round(N ** 0.5))
        zq = self.codebook_KC[idx_BN].view(B, side, side, self.dim).permute(0, 3, 1, 2)  # (B, C, h, w)
        return self.decoder(zq).sigmoid()

    def forward(self, x_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction (B, 3, H, W), code ids (B, h*w), commitment loss). In training the
        codebook moves by EMA (data init on the first batch; unused codes restarted)."""
        z = self._z(x_B3HW)  # (B, h, w, C)
        B, h, w, C = z.shape
        z_NC = z.reshape(-1, C)
        if self.training and not bool(self.initialised):
            pick = torch.randperm(z_NC.shape[0])[: self.codebook_size]
            pick = pick.repeat(-(-self.codebook_size // pick.numel()))[: self.codebook_size]
            self.codebook_KC.copy_(z_NC.detach()[pick])
            self.embed_sum_KC.copy_(self.codebook_KC)
            self.cluster_size_K.fill_(1.0)
            self.initialised.fill_(True)
        idx_N = quantize(z_NC.detach(), self.codebook_KC)  # (N,)
        if self.training:
            with torch.no_grad():
                size_K, sum_KC, book_KC = ema_update(self.cluster_size_K, self.embed_sum_KC, z_NC.detach(), idx_N, self.decay)
                dead_K = size_K < 1e-3  # restart codes that no batch has used for a while
                if dead_K.any():
                    new = z_NC.detach()[torch.randint(z_NC.shape[0], (int(dead_K.sum()),))]
                    book_KC[dead_K], sum_KC[dead_K], size_K[dead_K] = new, new, 1.0
                self.cluster_size_K.copy_(size_K)
                self.embed_sum_KC.copy_(sum_KC)
                self.codebook_KC.copy_(book_KC)
        zq_NC = self.codebook_KC[idx_N]
        commit = F.mse_loss(z_NC, zq_NC.detach())
        zq_st = (z_NC + (zq_NC - z_NC).detach()).view(B, h, w, C).permute(0, 3, 1, 2)  # straight-through
        return self.decoder(zq_st).sigmoid(), idx_N.view(B, h * w), self.beta * commit
