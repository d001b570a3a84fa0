"""The causal Q-Former of SEED-2 (query path only), with the key names of `seed_quantizer.pt`."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mio_agent.codecs.image.eva_vit import Fp32LayerNorm

__all__ = ["BERT_BASE_UNCASED_CONFIG", "CROSS_ATTENTION_EVERY", "QFormer", "QFormerConfig"]

# bert-base-uncased's config.json, which the reference fetches from a hub at start-up; the
# Q-Former takes its head count, activation and norm epsilon from it.
BERT_BASE_UNCASED_CONFIG: MappingProxyType[str, Any] = MappingProxyType(
    {
        "architectures": ["BertForMaskedLM"],
        "attention_probs_dropout_prob": 0.1,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 768,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "transformers_version": "4.6.0.dev0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": 30522,
    }
)

# BLIP-2 inserts cross-attention to the image tokens in layers 0, 2, 4, ...
CROSS_ATTENTION_EVERY = 2


@dataclass(frozen=True)
class QFormerConfig:
    """Sizes of the Q-Former; the defaults are the official ones (BERT-base, 1408-d image tokens)."""

    hidden: int = BERT_BASE_UNCASED_CONFIG["hidden_size"]
    layers: int = BERT_BASE_UNCASED_CONFIG["num_hidden_layers"]
    intermediate: int = BERT_BASE_UNCASED_CONFIG["intermediate_size"]
    encoder_width: int = 1408
    num_queries: int = 32
    num_heads: int = BERT_BASE_UNCASED_CONFIG["num_attention_heads"]
    norm_eps: float = BERT_BASE_UNCASED_CONFIG["layer_norm_eps"]

    def has_cross_attention(self, layer: int) -> bool:
        return layer % CROSS_ATTENTION_EVERY == 0


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: QFormerConfig, kv_width: int) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(kv_width, cfg.hidden)
        self.value = nn.Linear(kv_width, cfg.hidden)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, *, causal: bool) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(context)), self._heads(self.value(context))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return out.transpose(1, 2).flatten(2)


class BertResidualOutput(nn.Module):
    """dense → add the block input → LayerNorm (post-norm, as in BERT)."""

    def __init__(self, cfg: QFormerConfig, in_width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, cfg.hidden)
        self.LayerNorm = Fp32LayerNorm(cfg.hidden, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.LayerNorm(self.dense(x) + residual)
        return out


class BertAttention(nn.Module):
    def __init__(self, cfg: QFormerConfig, kv_width: int) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg, kv_width)
        self.output = BertResidualOutput(cfg, cfg.hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor, *, causal: bool) -> torch.Tensor:
        out: torch.Tensor = self.output(self.self(x, context, causal=causal), x)
        return out


class BertIntermediate(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class QFormerLayer(nn.Module):
    """Causal self-attention among the queries, cross-attention to the image (some layers), query FFN.

    Only the query feed-forward (`intermediate_query` / `output_query`) exists here: the text
    branch's `intermediate` / `output` weights in the official file are never used for images.
    """

    def __init__(self, cfg: QFormerConfig, index: int) -> None:
        super().__init__()
        self.attention = BertAttention(cfg, cfg.hidden)
        self.crossattention = (
            BertAttention(cfg, cfg.encoder_width) if cfg.has_cross_attention(index) else None
        )
        self.intermediate_query = BertIntermediate(cfg)
        self.output_query = BertResidualOutput(cfg, cfg.intermediate)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x, causal=True)
        if self.crossattention is not None:
            x = self.crossattention(x, image, causal=False)
        out: torch.Tensor = self.output_query(self.intermediate_query(x), x)
        return out


class QueryEmbeddings(nn.Module):
    """With query embeddings only (no text), BERT's embedding layer is just its LayerNorm."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.LayerNorm = Fp32LayerNorm(cfg.hidden, eps=cfg.norm_eps)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.LayerNorm(queries)
        return out


class QFormerEncoder(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(QFormerLayer(cfg, i) for i in range(cfg.layers))

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, image)
        return x


class QFormerBert(nn.Module):
    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.embeddings = QueryEmbeddings(cfg)
        self.encoder = QFormerEncoder(cfg)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(self.embeddings(queries), image)
        return out


class QFormer(nn.Module):
    """Holds `bert` so that parameter names read `Qformer.bert.…` like the official module."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.bert = QFormerBert(cfg)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Query states [B, num_queries, hidden] from query tokens and image tokens [B, T, encoder_width]."""
        out: torch.Tensor = self.bert(queries, image)
        return out
