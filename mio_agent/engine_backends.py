"""Where a conversation's keys and values live and how its decode loop runs: dynamic (HF) or static."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from mio_agent.reply_job import ReplyJob

if TYPE_CHECKING:
    from mio_agent.model.fast_path import FastPath, Slot
    from mio_agent.model.loading import LoadedModel
    from mio_agent.parser import ParserEvent

__all__ = ["DynamicBackend", "KVBackend", "Post", "StaticBackend", "make_backend"]

Post = Callable[[int, "list[ParserEvent]"], None]
# a prefill longer than this runs in chunks: bounded attention memory, and the same code path
# whatever the turn's length
PREFILL_CHUNK = 512


class KVBackend(Protocol):
    """A conversation's cache. The engine owns the bookkeeping (`start` = ids the cache holds)."""

    name: str

    def feed(self, ids: Sequence[int], start: int) -> torch.Tensor:
        """Write `ids` at positions start.. and return the last one's logits (float32 [vocab])."""
        ...

    def crop(self, keep: int, cached: int) -> None:
        """The cache now holds only its first `keep` of `cached` ids."""
        ...

    def reset(self) -> None:
        """Forget everything (after an error that may have left a half-written cache)."""
        ...

    def generate(self, job: ReplyJob, start: int, post: Post) -> None:
        """Prefill `job.pending` at `start`, then decode until a stop, the budget or a cancel."""
        ...

    def close(self) -> None: ...


def _take(job: ReplyJob, token: int, t0: float, post: Post) -> bool:
    """Account for one chosen id; whether the reply goes on after it."""
    job.constraint.advance(token)
    job.generated.append(token)
    if job.first_token_s is None:
        job.first_token_s = time.perf_counter() - t0
    post(len(job.generated), job.parser.feed(token))
    if token in job.stop_ids:
        job.reason = "stop"
        return False
    return not job.constraint.done


class DynamicBackend:
    """Hugging Face's DynamicCache and a host-side loop: the reference path, fastest on a CPU."""

    name = "dynamic"

    def __init__(self, lm: LoadedModel) -> None:
        self._lm = lm
        self._cache: Any = None

    def feed(self, ids: Sequence[int], start: int) -> torch.Tensor:
        if self._cache is None:
            from transformers import DynamicCache

            self._cache = DynamicCache(config=self._lm.model.config)
        x = torch.tensor([list(ids)], dtype=torch.long, device=self._lm.device)
        out = self._lm.model(input_ids=x, cache=self._cache, use_cache=True, logits_to_keep=1)
        logits: torch.Tensor = out.logits[0, -1].float()
        return logits

    def crop(self, keep: int, cached: int) -> None:
        if self._cache is None:
            return
        if keep == 0:
            self._cache = None
        else:
            self._cache.crop(keep - self._cache.get_seq_length())

    def reset(self) -> None:
        self._cache = None

    def generate(self, job: ReplyJob, start: int, post: Post) -> None:
        t0 = time.perf_counter()
        logits = self.feed(job.pending, start)
        job.prefill_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            for _ in range(job.max_new_tokens):
                if job.cancel.is_set():
                    job.reason = "cancelled"
                    break
                tok = job.sampler.select(job.constraint.apply(logits))
                tok = job.constraint.substitute(tok)
                job.sampler.observe(tok)
                if not _take(job, tok, t0, post):
                    break
                logits = self.feed([tok], start + len(job.pending) + job.fed)
                job.fed += 1
        finally:
            job.decode_s = time.perf_counter() - t1

    def close(self) -> None:
        self._cache = None


class StaticBackend:
    """A static cache slot of the model's fast path, and a decode loop that keeps the device busy.

    Each step queues the forward of the id just sampled before the host reads that id (a copy of
    one integer); while the device runs it, the host feeds the parser and computes the next mask.
    A forward queued for an id that ends the reply is simply not counted: positions past the
    cache's length are never read.
    """

    name = "static"

    def __init__(self, fast: FastPath, positions: int) -> None:
        self._fast = fast
        self._positions = positions
        self._slot: Slot | None = None
        if fast.scheduler is not None:
            # a row of the batched decode is taken now: a conversation beyond `engine.batch_sessions`
            # is refused when it opens (BatchFull), not at its first turn
            self._slot = fast.acquire(positions)

    @property
    def slot(self) -> Slot:
        # taken lazily on the worker thread, so a capture (when the pool is empty) never blocks the loop
        if self._slot is None:
            self._slot = self._fast.acquire(self._positions)
        return self._slot

    def feed(self, ids: Sequence[int], start: int) -> torch.Tensor:
        slot = self.slot
        logits = None
        for i in range(0, len(ids), PREFILL_CHUNK):
            chunk = ids[i : i + PREFILL_CHUNK]
            logits = slot.prefill(chunk, start + i)
        if logits is None:
            raise ValueError("nothing to feed")
        return logits

    def crop(self, keep: int, cached: int) -> None:
        pass  # the engine's count is the cache's length; stale positions are never read

    def reset(self) -> None:
        pass

    def generate(self, job: ReplyJob, start: int, post: Post) -> None:
        slot = self.slot
        t0 = time.perf_counter()
        logits = self.feed(job.pending, start)
        pos = start + len(job.pending)
        job.prefill_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        # in a batched decode, the step waits for every row inside this loop: say when we are
        slot.decoding(True)
        try:
            token = job.sampler.select_tensor(job.constraint.apply(logits))
            for _ in range(job.max_new_tokens):
                job.sampler.observe_tensor(token)
                slot.to_host(token)
                if job.cancel.is_set():
                    job.reason = "cancelled"
                    break
                # queue the next forward now; it only reads device memory
                launched = pos < slot.positions
                if launched:
                    logits = slot.decode(token, pos)
                tok = slot.read_host()
                chosen = job.constraint.substitute(tok)
                if chosen != tok:
                    # the queued forward was for the replaced id: run the one that counts instead
                    token = torch.full_like(token, chosen)
                    job.sampler.observe_tensor(token)
                    if launched:
                        logits = slot.decode(token, pos)
                if not _take(job, chosen, t0, post):
                    if launched:
                        job.fed += 1
                    break
                if not launched:
                    break
                job.fed += 1
                pos += 1
                token = job.sampler.select_tensor(job.constraint.apply(logits))
        finally:
            slot.decoding(False)
            job.decode_s = time.perf_counter() - t1

    def close(self) -> None:
        if self._slot is not None:
            self._fast.release(self._slot)
            self._slot = None


def make_backend(lm: LoadedModel, kind: str, positions: int) -> KVBackend:
    """The backend `engine.backend` asks for: "auto" is static with graphs on CUDA, dynamic elsewhere."""
    from mio_agent.model.fast_path import fast_path_for

    batched = lm.fast is not None and lm.fast.scheduler is not None
    if kind == "dynamic" or (kind == "auto" and lm.device.type != "cuda" and not batched):
        return DynamicBackend(lm)
    if kind not in ("auto", "static"):
        raise ValueError(f'engine.backend must be "auto", "static" or "dynamic", got {kind!r}')
    return StaticBackend(fast_path_for(lm), positions)
