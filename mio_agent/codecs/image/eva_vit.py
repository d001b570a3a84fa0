"""EVA-ViT-g/14, the vision tower of BLIP-2 and SEED-2, with the key names of `eva_vit_g.pth`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EVA_NUM_HEADS", "EvaViTConfig", "EvaVisionTransformer", "Fp32LayerNorm"]

# The official code builds EVA-ViT-g with 1408 // 88 = 16 heads; head counts cannot be read from
# weight shapes, so every size of this architecture (tiny ones included) keeps 16 heads.
EVA_NUM_HEADS = 16


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (what BLIP-2's fp16 path does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


@dataclass(frozen=True)
class EvaViTConfig:
    """Sizes of the ViT; the official tower is width 1408, 39 used blocks, patch 14 on a 16×16 grid."""

    width: int = 1408
    depth: int = 39
    mlp_hidden: int = 6144
    patch_size: int = 14
    grid: int = 16
    num_heads: int = EVA_NUM_HEADS
    norm_eps: float = 1e-6

    @property
    def image_size(self) -> int:
        return self.patch_size * self.grid

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid + 1


class PatchEmbed(nn.Module):
    def __init__(self, cfg: EvaViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(x).flatten(2).transpose(1, 2)
        return out


class EvaAttention(nn.Module):
    """Self-attention whose qkv projection has a query and a value bias but no key bias."""

    def __init__(self, cfg: EvaViTConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(cfg.width))
        self.v_bias = nn.Parameter(torch.zeros(cfg.width))
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        heads = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out: torch.Tensor = self.proj(heads.transpose(1, 2).reshape(b, n, c))
        return out


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(F.gelu(self.fc1(x)))
        return out


class EvaBlock(nn.Module):
    def __init__(self, cfg: EvaViTConfig) -> None:
        super().__init__()
        self.norm1 = Fp32LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = EvaAttention(cfg)
        self.norm2 = Fp32LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        out: torch.Tensor = x + self.mlp(self.norm2(x))
        return out


class EvaVisionTransformer(nn.Module):
    """Patch embedding, class token, absolute positions and `depth` pre-norm blocks; no final norm.

    The output keeps all tokens (class token first): the Q-Former attends to every one of them.
    """

    def __init__(self, cfg: EvaViTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.width))
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(EvaBlock(cfg) for _ in range(cfg.depth))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = self.patch_embed(pixels)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x
