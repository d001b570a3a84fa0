"""SEED-2's codebook and its decoder layers (codes → the 1024-d unCLIP image embedding)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mio_agent.codecs.image.eva_vit import Fp32LayerNorm

__all__ = ["DECODER_NUM_HEADS", "DecoderBlock", "DecoderConfig", "VectorQuantizer"]

# The official decoder blocks are built with num_heads=12 whatever their width.
DECODER_NUM_HEADS = 12


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by squared distance, without normalising either side."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(size, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Indices [B, N] of the entries nearest to z [B, N, dim]."""
        flat = z.reshape(-1, z.shape[-1])
        table = self.embedding.weight
        # the expanded form |z|² + |e|² − 2 z·e, as the reference computes it, keeps ties identical
        dist = flat.pow(2).sum(1, keepdim=True) + table.pow(2).sum(1) - 2 * flat @ table.t()
        return dist.argmin(dim=1).view(z.shape[:-1])


@dataclass(frozen=True)
class DecoderConfig:
    """Sizes of the layers from codes to the unCLIP embedding; defaults are the official ones."""

    code_dim: int = 32
    hidden: int = 768
    depth: int = 4
    mlp_hidden: int = 3072
    down: tuple[int, int, int] = (256, 128, 32)
    embed_dim: int = 1024
    num_queries: int = 32
    num_heads: int = DECODER_NUM_HEADS
    norm_eps: float = 1e-6


class DecoderAttention(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        heads = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out: torch.Tensor = self.proj(heads.transpose(1, 2).reshape(b, n, c))
        return out


class DecoderMlp(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(F.gelu(self.fc1(x)))
        return out


class DecoderBlock(nn.Module):
    """A pre-norm ViT block (qkv with bias) as in the official `blocks_image`."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.norm1 = Fp32LayerNorm(cfg.hidden, eps=cfg.norm_eps)
        self.attn = DecoderAttention(cfg)
        self.norm2 = Fp32LayerNorm(cfg.hidden, eps=cfg.norm_eps)
        self.mlp = DecoderMlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        out: torch.Tensor = x + self.mlp(self.norm2(x))
        return out
