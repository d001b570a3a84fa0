"""A Llama forward over a static KV cache: fused projections, device-side positions, capturable decode step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

__all__ = ["StaticCache", "StaticLlama"]


@dataclass(slots=True)
class _Layer:
    """One decoder layer's weights; the fused ones are views into single tensors the HF model shares."""

    norm_in: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    norm_post: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


class StaticCache:
    """Keys and values of one conversation in one preallocated tensor [layers, 2, kv_heads, positions, head_dim].

    Allocated once for the conversation's whole context; a crop is a change of `length` (what the
    owner says is valid), never a copy. Positions past `length` hold stale values that attention
    never reads, because a query at position p only sees keys at positions <= p.
    """

    def __init__(self, model: StaticLlama, positions: int) -> None:
        if positions > model.max_positions:
            raise ValueError(
                f"a cache of {positions} positions is longer than the model's {model.max_positions}"
            )
        self.positions = positions
        self.kv = torch.zeros(
            (model.num_layers, 2, model.num_kv_heads, positions, model.head_dim),
            dtype=model.dtype,
            device=model.device,
        )

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()


class StaticLlama:
    """The forward pass of a loaded `LlamaForCausalLM`, written for a static cache and one sequence.

    q/k/v and gate/up projections are fused into one matrix each; the HF modules' weights are then
    re-pointed at views of the fused tensors, so the model keeps working (beam search goes through
    it) and no weight is held twice. Rotary tables come from the model's own rotary module, so any
    rope variant it implements is reproduced exactly. Nothing in `step` reads a host value: the
    position is a device tensor, which is what lets a CUDA graph (or torch.compile) capture it.
    """

    def __init__(self, model: LlamaForCausalLM) -> None:
        cfg = model.config
        inner: Any = model.model
        self.device = inner.embed_tokens.weight.device
        self.dtype = inner.embed_tokens.weight.dtype
        self.num_layers = int(cfg.num_hidden_layers)
        self.num_heads = int(cfg.num_attention_heads)
        self.num_kv_heads = int(getattr(cfg, "num_key_value_heads", None) or self.num_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // self.num_heads)
        self.group = self.num_heads // self.num_kv_heads
        self.eps = float(cfg.rms_norm_eps)
        self.max_positions = int(cfg.max_position_embeddings)
        self.scale = self.head_dim**-0.5
        if getattr(cfg, "mlp_bias", False):
            raise ValueError("MLP biases are not supported by the static path; use engine.backend: dynamic")
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.lm_head = model.lm_head.weight
        self.layers = [self._fuse(layer) for layer in inner.layers]
        positions = torch.arange(self.max_positions, device=self.device)[None]
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            cos, sin = inner.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()  # [positions, head_dim]

    @staticmethod
    def _share(module: Any, fused: torch.Tensor, start: int, end: int) -> None:
        # the HF module now reads a view of the fused matrix: one copy of the weight in memory
        module.weight = torch.nn.Parameter(fused[start:end], requires_grad=False)

    def _fuse(self, layer: Any) -> _Layer:  # a LlamaDecoderLayer
        attn, mlp = layer.self_attn, layer.mlp
        q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
        with torch.no_grad():
            qkv = torch.cat([q.weight, k.weight, v.weight]).contiguous()
            bias = None
            if q.bias is not None:
                bias = torch.cat([q.bias, k.bias, v.bias]).contiguous()
            nq, nk = q.weight.shape[0], k.weight.shape[0]
            self._share(q, qkv, 0, nq)
            self._share(k, qkv, nq, nq + nk)
            self._share(v, qkv, nq + nk, qkv.shape[0])
            if bias is not None:
                q.bias = torch.nn.Parameter(bias[:nq], requires_grad=False)
                k.bias = torch.nn.Parameter(bias[nq : nq + nk], requires_grad=False)
                v.bias = torch.nn.Parameter(bias[nq + nk :], requires_grad=False)
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous()
            ni = mlp.gate_proj.weight.shape[0]
            self._share(mlp.gate_proj, gate_up, 0, ni)
            self._share(mlp.up_proj, gate_up, ni, 2 * ni)
        return _Layer(
            norm_in=layer.input_layernorm.weight,
            qkv=qkv,
            qkv_bias=bias,
            o=attn.o_proj.weight,
            o_bias=attn.o_proj.bias,
            norm_post=layer.post_attention_layernorm.weight,
            gate_up=gate_up,
            down=mlp.down_proj.weight,
        )

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # as LlamaRMSNorm: statistics in float32, the weight applied in the model's dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def forward(
        self, ids: torch.Tensor, pos: torch.Tensor, cache: StaticCache, kv_len: int | None = None
    ) -> torch.Tensor:
        """Feed `ids` [n] at positions `pos` [n] (device tensors, consecutive); write their keys and
        values into `cache` and return the last position's logits as float32 [vocab].

        Attention reads the first `kv_len` positions of the cache (all of them when None, as the
        captured step does: the mask hides what lies past each query's own position).
        """
        n = ids.shape[0]
        kv = cache.kv if kv_len is None else cache.kv[:, :, :, :kv_len]
        span = kv.shape[3]
        # query i at position pos[i] sees keys at positions <= pos[i]
        visible = torch.arange(span, device=ids.device)[None, :] <= pos[:, None]  # [n, span]
        # the `group` query heads of one kv head attend as `group * n` rows against that head
        mask = visible.repeat(self.group, 1)  # [group * n, span]
        cos, sin = self.cos[pos][:, None, :], self.sin[pos][:, None, :]
        x = self.embed[ids]
        h_q, h_kv, d, g = self.num_heads, self.num_kv_heads, self.head_dim, self.group
        for index, layer in enumerate(self.layers):
            h = self._rms(x, layer.norm_in)
            qkv = F.linear(h, layer.qkv, layer.qkv_bias)
            q = qkv[:, : h_q * d].view(n, h_q, d)
            k = qkv[:, h_q * d : (h_q + h_kv) * d].view(n, h_kv, d)
            v = qkv[:, (h_q + h_kv) * d :].view(n, h_kv, d)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            # [2, kv_heads, n, d] into positions `pos` of this layer's keys and values
            cache.kv[index].index_copy_(2, pos, torch.stack((k, v)).transpose(1, 2))
            keys, values = kv[index, 0], kv[index, 1]  # [kv_heads, span, d]
            qg = q.view(n, h_kv, g, d).permute(1, 2, 0, 3).reshape(1, h_kv, g * n, d)
            out = F.scaled_dot_product_attention(
                qg, keys[None], values[None], attn_mask=mask, scale=self.scale
            )  # [1, kv_heads, g * n, d]
            out = out.view(h_kv, g, n, d).permute(2, 0, 1, 3).reshape(n, h_q * d)
            x = x + F.linear(out, layer.o, layer.o_bias)
            h = self._rms(x, layer.norm_post)
            gate, up = F.linear(h, layer.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        last = self._rms(x[-1:], self.norm)
        return F.linear(last, self.lm_head)[0].float()

    def step(self, token: torch.Tensor, pos: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        """One decode step: `token` [1] at `pos` [1], attention over the whole cache (static shapes)."""
        return self.forward(token, pos, cache)
