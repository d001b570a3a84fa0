"""The SEED-2 image tokenizer as one module: pixels → 32 codes, and codes → unCLIP image embedding."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mio_agent.codecs.image.eva_vit import EvaVisionTransformer, EvaViTConfig, Fp32LayerNorm
from mio_agent.codecs.image.qformer import QFormer, QFormerConfig
from mio_agent.codecs.image.quantizer import DecoderBlock, DecoderConfig, VectorQuantizer

__all__ = ["LN_VISION_EPS", "VIT_PREFIX", "SeedConfig", "SeedImageTokenizer"]

# `ln_vision` is a default nn.LayerNorm in BLIP-2, unlike the ViT's own norms (1e-6).
LN_VISION_EPS = 1e-5
# the ViT's weights come from their own file, without prefix; inside this module they sit here
VIT_PREFIX = "visual_encoder."


@dataclass(frozen=True)
class SeedConfig:
    """All sizes of the tokenizer; the defaults are the official SEED-2 ones."""

    vit: EvaViTConfig = field(default_factory=EvaViTConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    codebook_size: int = 8192
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    @property
    def num_codes(self) -> int:
        return self.qformer.num_queries

    @property
    def code_dim(self) -> int:
        return self.decoder.code_dim

    @property
    def image_size(self) -> int:
        return self.vit.image_size

    @property
    def embed_dim(self) -> int:
        return self.decoder.embed_dim


class SeedImageTokenizer(nn.Module):
    """Attribute names mirror the official Blip2QformerQuantizer so that state-dict keys match.

    Build it under `torch.device("meta")` and load with `load_state_dict(..., assign=True)` to
    skip a random initialisation of a billion parameters that the checkpoint overwrites anyway.
    """

    def __init__(self, cfg: SeedConfig) -> None:
        super().__init__()
        self.config = cfg
        q, d = cfg.qformer, cfg.decoder
        self.visual_encoder = EvaVisionTransformer(cfg.vit)
        self.ln_vision = Fp32LayerNorm(cfg.vit.width, eps=LN_VISION_EPS)
        self.Qformer = QFormer(q)
        self.query_tokens = nn.Parameter(torch.zeros(1, q.num_queries, q.hidden))
        self.encode_task_layer = nn.Sequential(
            nn.Linear(q.hidden, q.hidden), nn.Tanh(), nn.Linear(q.hidden, d.code_dim)
        )
        self.quantize = VectorQuantizer(cfg.codebook_size, d.code_dim)
        self.decode_task_layer = nn.Sequential(
            nn.Linear(d.code_dim, d.code_dim), nn.Tanh(), nn.Linear(d.code_dim, d.hidden)
        )
        self.pos_embed_image = nn.Parameter(torch.zeros(1, d.num_queries, d.hidden))
        self.blocks_image = nn.ModuleList(DecoderBlock(d) for _ in range(d.depth))
        self.image_down = nn.Sequential(
            nn.Linear(d.hidden, d.down[0], bias=False),
            nn.ReLU(),
            nn.Linear(d.down[0], d.down[1], bias=False),
            nn.ReLU(),
            nn.Linear(d.down[1], d.down[2], bias=False),
        )
        self.distill_image_proj = nn.Linear(d.num_queries * d.down[2], d.embed_dim)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Codes [B, 32] (int64) of normalised pixels [B, 3, S, S]."""
        image = self.ln_vision(self.visual_encoder(pixels))
        queries = self.query_tokens.expand(pixels.shape[0], -1, -1)
        states = self.Qformer(queries, image)
        codes: torch.Tensor = self.quantize(self.encode_task_layer(states))
        return codes

    @torch.inference_mode()
    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """unCLIP image embeddings [B, embed_dim] of codes [B, 32]."""
        x = self.decode_task_layer(self.quantize.embedding(codes)) + self.pos_embed_image
        for block in self.blocks_image:
            x = block(x)
        out: torch.Tensor = self.distill_image_proj(self.image_down(x).flatten(1))
        return out
