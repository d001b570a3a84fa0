"""Residual vector quantizer: nearest codebook entry per layer, each layer coding what the previous left."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Codebook", "ResidualVectorQuantizer"]


class Codebook(nn.Module):
    """One codebook with the buffers the official checkpoint holds (EMA training state included)."""

    inited: Tensor
    cluster_size: Tensor
    embed: Tensor
    embed_avg: Tensor

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        # inited, cluster_size and embed_avg are training state; kept only so the file loads strictly
        self.register_buffer("inited", torch.zeros(1))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed", torch.zeros(size, dim))
        self.register_buffer("embed_avg", torch.zeros(size, dim))
        self.size = size

    def nearest(self, x: Tensor) -> Tensor:
        """Index of the nearest entry (squared distance) for each row of x [n, dim]."""
        table = self.embed.t()
        # the reference's expression and layout, so that near-ties break the same way
        score = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ table + table.pow(2).sum(0, keepdim=True))
        return score.max(dim=-1).indices

    def lookup(self, codes: Tensor) -> Tensor:
        """Entries for codes of any shape; the entry dimension is added last."""
        return F.embedding(codes, self.embed)


class _Layer(nn.Module):
    """One RVQ layer; exists so the codebook sits at `layers.N._codebook` as in the official keys."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self._codebook = Codebook(dim, size)


class _Layers(nn.Module):
    """The `vq` level of the official key names."""

    def __init__(self, dim: int, size: int, n_q: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Layer(dim, size) for _ in range(n_q)])


class ResidualVectorQuantizer(nn.Module):
    """n_q codebooks of `size` entries of `dim` values; layer 1 is MIO's content, layers 2-4 its timbre."""

    def __init__(self, dim: int, size: int, n_q: int) -> None:
        super().__init__()
        self.vq = _Layers(dim, size, n_q)
        self.n_q = n_q
        self.size = size

    def codebook(self, layer: int) -> Codebook:
        """The codebook of RVQ layer `layer` (0-based)."""
        module = self.vq.layers[layer]
        assert isinstance(module, _Layer)
        return module._codebook

    def encode(self, embeddings: Tensor, n_q: int) -> Tensor:
        """Embeddings [batch, dim, frames] to codes [n_q, batch, frames] of the first n_q layers."""
        batch, dim, frames = embeddings.shape
        residual = embeddings
        out = []
        for layer in range(n_q):
            book = self.codebook(layer)
            codes = book.nearest(residual.transpose(1, 2).reshape(-1, dim)).view(batch, frames)
            residual = residual - book.lookup(codes).transpose(1, 2)
            out.append(codes)
        return torch.stack(out)

    def decode(self, codes: Tensor) -> Tensor:
        """Codes [k, batch, frames] of the first k layers to the sum of their entries [batch, dim, frames]."""
        total: Tensor | None = None
        for layer in range(codes.shape[0]):
            part = self.codebook(layer).lookup(codes[layer]).transpose(1, 2)
            total = part if total is None else total + part
        assert total is not None, "decode needs at least one layer of codes"
        return total
