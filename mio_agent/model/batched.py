"""Batched decode over a pool of static caches: one step feeds one token to each of many conversations."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mio_agent.model.static_llama import StaticCache, StaticLlama

__all__ = ["BatchStep", "BatchedKV", "decode_batch"]


class _RowCache(StaticCache):
    """One row of a `BatchedKV` seen as a `StaticCache`: `kv` is a view into the pool, not a copy.

    It subclasses `StaticCache` only so `StaticLlama.forward` takes it as is; it skips the parent's
    constructor on purpose, since that would allocate a cache of its own.
    """

    def __init__(self, kv: torch.Tensor, positions: int) -> None:
        self.positions = positions
        self.kv = kv


class BatchedKV:
    """Keys and values of up to `rows` conversations in one tensor `kv`.

    Its shape is [layers, 2, rows, kv_heads, positions + 1, head_dim]. Each row is one
    conversation's cache, as in `StaticCache`; its length is the owner's business (a crop is a
    change of the position fed next). The extra last position of each row is a trash
    slot: a row that is idle in a batched step is fed at position `trash`, so it writes there and
    its real positions are never touched, while the step keeps the same static shapes.
    """

    def __init__(self, static: StaticLlama, rows: int, positions: int) -> None:
        if positions > static.max_positions:
            raise ValueError(
                f"a batched cache of {positions} positions is longer than the model's {static.max_positions}"
            )
        if rows < 1 or positions < 1:
            raise ValueError(
                f"a batched cache needs at least one row and one position, not {rows}x{positions}"
            )
        self.rows = rows
        self.positions = positions
        self.kv = torch.zeros(
            (static.num_layers, 2, rows, static.num_kv_heads, positions + 1, static.head_dim),
            dtype=static.dtype,
            device=static.device,
        )

    @property
    def trash(self) -> int:
        """The position an idle row is fed at (its writes land outside its real cache)."""
        return self.positions

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def row_cache(self, row: int) -> StaticCache:
        """Row `row` as a `StaticCache` over its real positions (trash excluded), for `StaticLlama.forward`.

        Writes through it (the prefill's `index_copy_`) land in the pool, because `kv` is a view.
        """
        if not 0 <= row < self.rows:
            raise IndexError(f"row {row} is outside a batched cache of {self.rows} rows")
        return _RowCache(self.kv[:, :, row, :, : self.positions], self.positions)


def decode_batch(
    static: StaticLlama, tokens: torch.Tensor, pos: torch.Tensor, pool: BatchedKV
) -> torch.Tensor:
    """One decode step for every row of `pool`: `tokens` [rows] fed at `pos` [rows] (long, on the device).

    Each row writes its key and value at its own position and attends over its own cache up to that
    position; an idle row passes `pos == pool.trash`. Returns float32 logits [rows, vocab] (an idle
    row's are meaningless). Static shapes and no host reads, so a CUDA graph can capture it.
    """
    rows = pool.rows
    span = pool.positions + 1
    h_q, h_kv, d, g = static.num_heads, static.num_kv_heads, static.head_dim, static.group
    # key j is visible to row r iff j <= pos[r]: an active row (pos < trash) never sees the trash
    # slot, an idle row sees its whole row, which keeps its softmax finite (its output is dropped)
    visible = torch.arange(span, device=pos.device)[None, :] <= pos[:, None]  # [rows, span]
    mask = visible[:, None, None, :]  # [rows, 1, 1, span]: broadcast over kv heads and the group
    # the rotary tables stop at max_positions, which the trash slot may equal; an idle row's rope
    # value does not matter, so clamping (not branching) keeps the step free of host reads
    at = pos.clamp(max=static.max_positions - 1)
    cos, sin = static.cos[at][:, None, :], static.sin[at][:, None, :]  # [rows, 1, d]
    # [layers, rows, span, 2, kv_heads, d]: a view in which (row, position) are the leading
    # indices, so one index_put_ per layer scatters each row's new key and value to its position
    by_slot = pool.kv.permute(0, 2, 4, 1, 3, 5)
    row_ids = torch.arange(rows, device=pos.device)
    x = static.embed[tokens]  # [rows, hidden]
    for index, layer in enumerate(static.layers):
        h = static._rms(x, layer.norm_in)
        qkv = F.linear(h, layer.qkv, layer.qkv_bias)
        q = qkv[:, : h_q * d].view(rows, h_q, d)
        k = qkv[:, h_q * d : (h_q + h_kv) * d].view(rows, h_kv, d)
        v = qkv[:, (h_q + h_kv) * d :].view(rows, h_kv, d)
        q, k = static._rope(q, cos, sin), static._rope(k, cos, sin)
        by_slot[index].index_put_((row_ids, pos), torch.stack((k, v), dim=1))  # [rows, 2, kv_heads, d]
        keys, values = pool.kv[index, 0], pool.kv[index, 1]  # [rows, kv_heads, span, d]
        # the `group` query heads sharing a kv head are that head's `group` query rows
        qg = q.view(rows, h_kv, g, d)
        out = F.scaled_dot_product_attention(qg, keys, values, attn_mask=mask, scale=static.scale)
        x = x + F.linear(out.reshape(rows, h_q * d), layer.o, layer.o_bias)
        h = static._rms(x, layer.norm_post)
        gate, up = F.linear(h, layer.gate_up).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, layer.down)
    return F.linear(static._rms(x, static.norm), static.lm_head).float()


# eager runs before a capture: kernels chosen, allocator warmed
_WARMUP_STEPS = 3


class BatchStep:
    """The batched decode step reading its ids and positions from device buffers, so that on CUDA it
    is captured once as a graph and each step costs one replay whatever the model's depth.

    The warm-up and capture run every row at the trash position: no conversation's keys are touched.
    """

    def __init__(self, static: StaticLlama, pool: BatchedKV, *, graph: bool) -> None:
        self.static = static
        self.pool = pool
        dev = static.device
        self.tokens = torch.zeros(pool.rows, dtype=torch.long, device=dev)
        self.pos = torch.full((pool.rows,), pool.trash, dtype=torch.long, device=dev)
        self._graph: Any = None
        self._out: torch.Tensor | None = None
        if graph:
            self._capture()

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def _capture(self) -> None:
        dev = self.static.device
        side = torch.cuda.Stream(device=dev)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_STEPS):
                decode_batch(self.static, self.tokens, self.pos, self.pool)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the conversations' threads may use the GPU (sampling) while this captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._out = decode_batch(self.static, self.tokens, self.pos, self.pool)
        self._graph = graph

    def __call__(self, rows: torch.Tensor, fed: torch.Tensor, positions: list[int]) -> torch.Tensor:
        """Feed `fed[i]` to row `rows[i]`; `positions` holds every row's position (the trash for idle
        rows). The logits [rows, vocab]: on CUDA a buffer the next step overwrites."""
        self.tokens.zero_()
        self.tokens.index_copy_(0, rows, fed)
        self.pos.copy_(torch.tensor(positions, dtype=torch.long))
        if self._graph is None:
            return decode_batch(self.static, self.tokens, self.pos, self.pool)
        self._graph.replay()
        assert self._out is not None
        return self._out
