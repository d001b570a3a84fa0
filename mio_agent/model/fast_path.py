"""The GPU decode path of a loaded model: static cache slots, each with its decode step captured as a CUDA graph."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from mio_agent.model.batch_scheduler import BatchedSlot, BatchScheduler
from mio_agent.model.host_copy import HostCopy
from mio_agent.model.static_llama import StaticCache, StaticLlama

if TYPE_CHECKING:
    from mio_agent.config import EngineConfig
    from mio_agent.model.loading import LoadedModel

__all__ = [
    "DecodeSlot",
    "FastPath",
    "FastPathInfo",
    "Slot",
    "fast_path_for",
    "prepare_fast_path",
    "prepare_for_config",
    "uses_static",
]

log = logging.getLogger(__name__)

StepFn = Callable[[torch.Tensor, torch.Tensor, StaticCache], torch.Tensor]
# free slots kept for the next conversations (each holds a whole context's keys and values)
POOL_SIZE = 4
# eager runs before a capture: kernels chosen, compiled code built, allocator warmed
WARMUP_STEPS = 3


@dataclass(slots=True)
class FastPathInfo:
    """What the fast path could set up on this machine, for `doctor` and the benchmarks."""

    device: str
    cuda_graphs: bool = False
    compiled: bool = False
    # seconds `warm` took: compile (when on) and capture of the slots made at load
    capture_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"static cache on {self.device}"]
        parts.append("decode step as a CUDA graph" if self.cuda_graphs else "eager decode step")
        if self.compiled:
            parts.append("torch.compile")
        parts.append(f"ready in {self.capture_s:.2f} s")
        return ", ".join(parts) + "".join(f"; {n}" for n in self.notes)


class Slot(Protocol):
    """What a conversation's decode loop drives: its own cache and step, or a row of the batched decode."""

    @property
    def positions(self) -> int: ...

    def prefill(self, ids: Sequence[int], start: int) -> torch.Tensor: ...

    def decode(self, token: torch.Tensor, pos: int) -> torch.Tensor: ...

    def to_host(self, token: torch.Tensor) -> None: ...

    def read_host(self) -> int: ...

    def decoding(self, active: bool) -> None: ...


class DecodeSlot(HostCopy):
    """One conversation's static cache and its decode step: a replayed CUDA graph, or the eager step.

    The graph reads its input id and position from two device buffers and writes the logits into
    a third (`logits`), so a replay costs one launch whatever the model's depth.
    """

    def __init__(self, static: StaticLlama, positions: int, step: StepFn | None, graph: bool) -> None:
        self.static = static
        self.positions = positions
        self.cache = StaticCache(static, positions)
        dev = static.device
        self._token = torch.zeros(1, dtype=torch.long, device=dev)
        self._pos = torch.zeros(1, dtype=torch.long, device=dev)
        self._step: StepFn = step or static.step
        self._graph: Any = None
        self._logits: torch.Tensor | None = None
        HostCopy.__init__(self, dev)
        if graph:
            self._capture()

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def _capture(self) -> None:
        side = torch.cuda.Stream(device=self.static.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(self.static.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._step(self._token, self._pos, self.cache)
        torch.cuda.current_stream(self.static.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other engines' worker threads may use the GPU while this one captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._logits = self._step(self._token, self._pos, self.cache)
        self._graph = graph

    def prefill(self, ids: Sequence[int], start: int) -> torch.Tensor:
        """Feed `ids` at positions start.. eagerly (any length); the last one's float32 logits."""
        dev = self.static.device
        x = torch.tensor(list(ids), dtype=torch.long, device=dev)
        pos = torch.arange(start, start + len(ids), device=dev)
        return self.static.forward(x, pos, self.cache, kv_len=start + len(ids))

    def decode(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """Queue the forward of `token` ([1] on the device) at position `pos`; its logits [vocab]."""
        if self._graph is None:
            self._pos.fill_(pos)
            return self._step(token, self._pos, self.cache)
        self._token.copy_(token)
        self._pos.fill_(pos)
        self._graph.replay()
        assert self._logits is not None
        return self._logits

    def decoding(self, active: bool) -> None:
        """A slot of its own has no one to keep in step with."""


class FastPath:
    """The static-cache decode path of one loaded model, shared by all its conversations.

    Slots (a cache plus its captured step) are pooled: a conversation takes one and gives it back
    when it closes, so captures happen when the model loads (`warm`) and when more conversations
    are open at once than ever before, never per turn.
    """

    def __init__(
        self,
        lm: LoadedModel,
        *,
        cuda_graphs: bool = True,
        compile: bool = False,
        batch_rows: int = 0,
        batch_positions: int = 0,
    ) -> None:
        self._lm = lm
        with torch.inference_mode():
            self.static = StaticLlama(lm.model)
        on_cuda = self.static.device.type == "cuda"
        self.info = FastPathInfo(device=str(self.static.device))
        self._graphs = cuda_graphs and on_cuda
        if cuda_graphs and not on_cuda:
            self.info.notes.append("CUDA graphs need a CUDA device")
        self._step: StepFn | None = None
        if compile:
            self._step = self._compiled()
        self._free: list[DecodeSlot] = []
        self._lock = threading.Lock()
        self.scheduler: BatchScheduler | None = None
        """With `engine.batch_sessions`: every conversation is a row of one batched decode step."""
        if batch_rows > 0:
            self.scheduler = BatchScheduler(self.static, batch_rows, batch_positions, graph=self._graphs)
            how = "as a CUDA graph" if self.scheduler.captured else "eagerly"
            self.info.notes.append(f"batched decode of up to {batch_rows} conversations, {how}")
            if self.scheduler.captured:
                self.info.cuda_graphs = True
            if self.scheduler.capture_error is not None:
                self.info.notes.append(
                    f"CUDA graph capture of the batched step failed ({self.scheduler.capture_error})"
                )

    def _compiled(self) -> StepFn | None:
        try:
            fn: StepFn = torch.compile(self.static.step, fullgraph=True, dynamic=False)
        except Exception as exc:  # an unsupported platform must leave the eager step working
            self.info.notes.append(f"torch.compile unavailable ({type(exc).__name__}: {exc})")
            return None
        self.info.compiled = True
        return fn

    def _new_slot(self, positions: int) -> DecodeSlot:
        with torch.inference_mode():
            if self._graphs:
                try:
                    slot = DecodeSlot(self.static, positions, self._step, graph=True)
                    self.info.cuda_graphs = True
                    return slot
                except Exception as exc:
                    # a failed capture (driver, compile) falls back to the eager step, and says so
                    log.warning("CUDA graph capture failed, decoding eagerly: %s", exc)
                    self.info.notes.append(f"CUDA graph capture failed ({type(exc).__name__}: {exc})")
                    self._graphs = False
                    self.info.cuda_graphs = False
            return DecodeSlot(self.static, positions, self._step, graph=False)

    def acquire(self, positions: int) -> Slot:
        """A slot with a cache of `positions`: a row of the batched decode (BatchFull when all are
        taken), or one from the pool or newly made (captured)."""
        if self.scheduler is not None and positions == self.scheduler.positions:
            return self.scheduler.acquire()
        return self._acquire_own(positions)

    def _acquire_own(self, positions: int) -> DecodeSlot:
        with self._lock:
            for i, slot in enumerate(self._free):
                if slot.positions == positions:
                    return self._free.pop(i)
        return self._new_slot(positions)

    def release(self, slot: Slot) -> None:
        """Give a slot back; beyond the pool's size it is dropped and its memory freed."""
        if isinstance(slot, BatchedSlot):
            slot.scheduler.release(slot)
            return
        assert isinstance(slot, DecodeSlot)
        with self._lock:
            if len(self._free) < POOL_SIZE:
                self._free.append(slot)

    def warm(self, positions: int, slots: int = 1) -> FastPathInfo:
        """Compile and capture now (at load), so no user turn pays for it; `info.capture_s` says how long."""
        t0 = time.perf_counter()
        if self.scheduler is not None and positions == self.scheduler.positions:
            # one batched step now: kernels chosen and memory taken before the first user's turn
            row = self.scheduler.acquire()
            try:
                row.decode(torch.zeros(1, dtype=torch.long, device=self.static.device), 0)
            finally:
                self.scheduler.release(row)
            self.info.capture_s = time.perf_counter() - t0
            return self.info
        made = [self._acquire_own(positions) for _ in range(slots)]
        if not any(slot.captured for slot in made) and self._step is not None:
            # no graph was captured, so nothing ran the compiled step yet: compile it now
            with torch.inference_mode():
                made[0].decode(torch.zeros(1, dtype=torch.long, device=self.static.device), 0)
        for slot in made:
            self.release(slot)
        self.info.capture_s = time.perf_counter() - t0
        return self.info


_LOCK = threading.Lock()


def fast_path_for(lm: LoadedModel) -> FastPath:
    """The model's fast path, made on first use with default settings when `prepare_fast_path` was not called."""
    with _LOCK:
        if lm.fast is None:
            lm.fast = FastPath(lm, cuda_graphs=True, compile=False)
        fast: FastPath = lm.fast
        return fast


def prepare_fast_path(
    lm: LoadedModel,
    *,
    positions: int,
    cuda_graphs: bool = True,
    compile: bool = False,
    slots: int = 1,
    batch_sessions: int = 0,
) -> FastPathInfo:
    """Set the model's fast path up and capture `slots` slots of `positions` now (called at load);
    with `batch_sessions`, conversations of `positions` are rows of one batched decode instead."""
    with _LOCK:
        if lm.fast is None:
            lm.fast = FastPath(
                lm,
                cuda_graphs=cuda_graphs,
                compile=compile,
                batch_rows=batch_sessions,
                batch_positions=positions,
            )
        fast: FastPath = lm.fast
    return fast.warm(positions, slots)


def uses_static(lm: LoadedModel, engine: EngineConfig) -> bool:
    """Whether `engine.backend` decodes through the fast path on this device (batching needs it)."""
    if engine.backend == "dynamic":
        return False
    return engine.backend == "static" or lm.device.type == "cuda" or engine.batch_sessions > 0


def prepare_for_config(lm: LoadedModel, engine: EngineConfig) -> FastPathInfo | None:
    """At load: set the fast path up when `engine.backend` will use it on this device (None otherwise)."""
    if not uses_static(lm, engine):
        return None
    return prepare_fast_path(
        lm,
        positions=engine.max_context,
        cuda_graphs=engine.cuda_graphs,
        compile=engine.compile,
        batch_sessions=engine.batch_sessions,
    )
