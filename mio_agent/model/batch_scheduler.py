"""Continuous batching: one worker thread runs every conversation's decode step as one batched forward."""

from __future__ import annotations

import threading
import time
from bisect import insort
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mio_agent.exceptions import EngineBusyError, MioAgentError
from mio_agent.model.batched import BatchedKV, BatchStep
from mio_agent.model.host_copy import HostCopy
from mio_agent.model.static_llama import StaticLlama

__all__ = ["BatchClosed", "BatchFull", "BatchScheduler", "BatchTooSlow", "BatchedSlot", "Iteration"]

# iterations kept in `BatchScheduler.trace`: enough to read what just happened, bounded for a server
TRACE_LENGTH = 64
STEP_GAP_S = 1.0
"""A gap between two decode steps longer than this is idleness, not the rate of decoding."""
GATHER_S = 0.05
"""Longest a decode step waits for a row inside a reply that has not asked for its step yet (its thread
may be held up): past it, the rows that asked go ahead. Normally every such row asks within a step."""


class BatchFull(MioAgentError):
    """Every row of the batched cache is held by a conversation."""


class BatchTooSlow(BatchFull):
    """The batched decode already runs below the rate a new conversation needs: it is refused, not let
    in to slow every conversation down."""


class BatchClosed(MioAgentError):
    """The scheduler was closed: its pending requests and any later one fail with this."""


@dataclass(frozen=True, slots=True)
class Iteration:
    """What one pass of the worker ran: the rows of its batched decode, and its prefill chunk (row, ids)."""

    decoded: tuple[int, ...]
    prefill: tuple[int, int] | None = None


@dataclass(slots=True)
class _Request:
    row: int
    pos: int
    token: torch.Tensor | None = None  # a decode: [1] long
    ids: torch.Tensor | None = None  # a prefill chunk: [n] long
    done: threading.Event = field(default_factory=threading.Event)
    result: torch.Tensor | None = None
    error: BaseException | None = None

    def finish(self, result: torch.Tensor | None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()

    def wait(self) -> torch.Tensor:
        # no timeout: the worker finishes every request it takes, and fails all others when it stops
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class BatchScheduler:
    """A `BatchedKV` of `rows` conversations and the one thread that runs every forward on it.

    Conversations run on their own threads and call their `BatchedSlot`, which queues a request and
    blocks until the worker has run it. Each pass of the worker takes every pending decode (at most
    one per row) into one `decode_batch`, then at most one prefill chunk: a long prompt goes in
    `prefill_chunk` ids at a time, with the other conversations' decode steps between its chunks,
    so one newcomer's prompt never stalls the others' audio for more than one chunk.
    """

    def __init__(
        self,
        static: StaticLlama,
        rows: int,
        positions: int,
        *,
        prefill_chunk: int = 256,
        graph: bool = False,
        gather_s: float = GATHER_S,
    ) -> None:
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be at least 1, not {prefill_chunk}")
        self.static = static
        self.rows = rows
        self.positions = positions
        self.prefill_chunk = prefill_chunk
        self.gather_s = gather_s
        with torch.inference_mode():  # the pool is only ever written by the worker, in inference mode
            self.pool = BatchedKV(static, rows, positions)
            self.capture_error: str | None = None
            """Why the step could not be captured as a CUDA graph (it then runs eagerly)."""
            try:
                self._step = BatchStep(static, self.pool, graph=graph)
            except Exception as exc:  # a failed capture leaves the eager step working, and says why
                self.capture_error = f"{type(exc).__name__}: {exc}"
                self._step = BatchStep(static, self.pool, graph=False)
        # for tests and benchmarks: batched decode forwards run, decode requests served, chunks run
        self.steps = self.rows_decoded = self.prefill_chunks = 0
        self.trace: deque[Iteration] = deque(maxlen=TRACE_LENGTH)
        self._cond = threading.Condition()
        self._free = list(range(rows))
        self._decodes: dict[int, _Request] = {}
        self._prefills: deque[_Request] = deque()
        self._closed = False
        self._paused = False
        self._busy = False  # the worker is inside a pass (between taking work and finishing it)
        self._active: set[int] = set()
        """Rows inside a reply's decode loop: each will ask for its next step as soon as it has sampled."""
        self._gather_until = 0.0
        self._last_step_at: float | None = None
        self.step_period_s: float | None = None
        """Seconds between two decode steps while rows decode (a moving average): each row decoding
        then gets one token per period. None until measured."""
        self._thread = threading.Thread(target=self._run, name="mio-batch-scheduler", daemon=True)
        self._thread.start()

    @property
    def captured(self) -> bool:
        """Whether the batched step replays a CUDA graph."""
        return self._step.captured

    @property
    def free_rows(self) -> int:
        with self._cond:
            return len(self._free)

    def check_room(self, min_tok_s: float = 0.0) -> None:
        """Raise `BatchFull` now if every row is taken (before work that a new conversation would waste),
        and `BatchTooSlow` if, with `min_tok_s`, each decoding row already gets fewer tokens per second."""
        with self._cond:
            self._check_room()
            period = self.step_period_s
            if min_tok_s > 0 and period is not None and 1.0 / period < min_tok_s:
                raise BatchTooSlow(
                    f"the batched decode gives each conversation {1.0 / period:.0f} tokens/s, below "
                    f"engine.min_decode_tok_s ({min_tok_s:g}): a new session would not be served in real "
                    "time; try later, or lower engine.min_decode_tok_s"
                )

    def _check_room(self) -> None:
        if self._closed:
            raise BatchClosed("the batch scheduler is closed; open a new one to decode")
        if not self._free:
            raise BatchFull(
                f"all {self.rows} rows of the batched decode are in use (engine.batch_sessions = "
                f"{self.rows}); close a session or raise engine.batch_sessions"
            )

    def acquire(self) -> BatchedSlot:
        """A free row as a slot; raises `BatchFull` when every row is taken."""
        with self._cond:
            self._check_room()
            row = self._free.pop(0)
        return BatchedSlot(self, row)

    def release(self, slot: BatchedSlot) -> None:
        """Give a slot's row back (a second release of the same slot does nothing)."""
        if slot.scheduler is not self:
            raise ValueError(f"slot of row {slot.row} belongs to another scheduler")
        with self._cond:
            if slot.released:
                return
            slot.released = True
            # the row is not cleared: its next owner prefills from 0, and no query reads past itself
            insort(self._free, slot.row)

    def pause(self) -> None:
        """Hold the worker between passes; returns once no pass is running."""
        with self._cond:
            self._paused = True
            self._cond.wait_for(lambda: not self._busy or self._closed)

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def wait_pending(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least `n` requests are queued (not yet taken); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending() >= n, timeout)

    def close(self) -> None:
        """Stop the worker after its current pass; queued and later requests raise `BatchClosed`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def closed(self) -> bool:
        return self._closed

    def _pending(self) -> int:
        return len(self._decodes) + len(self._prefills)

    def decoding(self, row: int, active: bool) -> None:
        """Row `row` enters (True) or leaves (False) a reply's decode loop. The decode step waits for
        every row inside one (up to `gather_s`), so replies running together share each step instead
        of taking turns; a row that leaves is no longer waited for."""
        with self._cond:
            if active:
                self._active.add(row)
            else:
                self._active.discard(row)
            self._cond.notify_all()

    def _decodes_ready(self) -> bool:
        if not self._decodes:
            return False
        return self._active <= self._decodes.keys() or time.monotonic() >= self._gather_until

    def _next_pass(self) -> tuple[list[_Request], _Request | None]:
        """Wait (holding the condition) for the next pass's work: the decode step once every active
        row has asked for it (or `gather_s` passed), and/or one prefill chunk, which never waits."""
        while not self._closed:
            if not self._paused:
                ready = self._decodes_ready()
                if ready or self._prefills:
                    decodes = [self._decodes[row] for row in sorted(self._decodes)] if ready else []
                    if ready:
                        self._decodes.clear()
                    return decodes, (self._prefills.popleft() if self._prefills else None)
            wait = None
            if self._decodes and not self._paused:
                wait = max(self._gather_until - time.monotonic(), 0.0)
            self._cond.wait(wait)
        return [], None

    def _submit(self, request: _Request) -> torch.Tensor:
        with self._cond:
            if self._closed:
                raise BatchClosed("the batch scheduler is closed; open a new one to decode")
            row = request.row
            # one conversation drives one row from one thread; a second request would race the first
            if row in self._decodes or any(r.row == row for r in self._prefills):
                raise EngineBusyError(f"row {row} already has a request running; one thread per slot")
            if request.token is not None:
                if not self._decodes:
                    self._gather_until = time.monotonic() + self.gather_s
                self._decodes[row] = request
            else:
                self._prefills.append(request)
            self._cond.notify_all()
        return request.wait()

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._cond:
                        decodes, chunk = self._next_pass()
                        if self._closed:
                            return
                        self._busy = True
                    try:
                        self._pass(decodes, chunk)
                    finally:
                        with self._cond:
                            self._busy = False
                            self._cond.notify_all()
        finally:
            # whatever stopped the loop, nobody may stay blocked on a request it will never run
            with self._cond:
                self._closed = True
                stranded = [*self._decodes.values(), *self._prefills]
                self._decodes, self._prefills = {}, deque()
                self._cond.notify_all()
            for request in stranded:
                request.finish(None, BatchClosed("the batch scheduler closed before running this request"))

    def _pass(self, decodes: list[_Request], chunk: _Request | None) -> None:
        shape = None if chunk is None or chunk.ids is None else (chunk.row, int(chunk.ids.shape[0]))
        with self._cond:
            self.trace.append(Iteration(tuple(r.row for r in decodes), shape))
        if decodes:
            self._decode(decodes)
        if chunk is not None:
            self._prefill(chunk)

    def _decode(self, decodes: list[_Request]) -> None:
        dev = self.static.device
        try:
            # rows without a request are fed token 0 at the trash position: same shapes every step
            asked = {r.row: r.pos for r in decodes}
            positions = [asked.get(row, self.pool.trash) for row in range(self.rows)]
            rows = torch.tensor([r.row for r in decodes], device=dev)
            fed = torch.cat([r.token.reshape(1).to(dev) for r in decodes if r.token is not None])
            out = self._step(rows, fed, positions)
        except Exception as exc:  # the requesters of this step get the error; the loop goes on
            for r in decodes:
                r.finish(None, exc)
            return
        now = time.monotonic()
        with self._cond:
            self.steps += 1
            self.rows_decoded += len(decodes)
            last, self._last_step_at = self._last_step_at, now
            # the time from one step to the next includes the rows' sampling (their next request waits
            # on it) and, on a GPU, the step itself: what a row really gets; a long gap is idleness
            if last is not None and now - last < STEP_GAP_S:
                gap = now - last
                period = self.step_period_s
                self.step_period_s = gap if period is None else period + 0.1 * (gap - period)
        for r in decodes:
            # a clone: a view would keep the whole [rows, vocab] alive, and a captured step reuses it
            r.finish(out[r.row].clone())

    def _prefill(self, chunk: _Request) -> None:
        assert chunk.ids is not None
        n = int(chunk.ids.shape[0])
        try:
            pos = torch.arange(chunk.pos, chunk.pos + n, device=self.static.device)
            logits = self.static.forward(chunk.ids, pos, self.pool.row_cache(chunk.row), kv_len=chunk.pos + n)
        except Exception as exc:
            chunk.finish(None, exc)
            return
        with self._cond:
            self.prefill_chunks += 1
        chunk.finish(logits)


class BatchedSlot(HostCopy):
    """One row of a `BatchScheduler` with the `DecodeSlot` interface; its calls block until run."""

    captured = False

    def __init__(self, scheduler: BatchScheduler, row: int) -> None:
        self.scheduler = scheduler
        self.row = row
        self.positions = scheduler.positions
        self.released = False
        dev = scheduler.static.device
        HostCopy.__init__(self, dev)

    def _check(self) -> None:
        if self.released:
            raise RuntimeError(f"slot of row {self.row} was released; acquire a new one")

    def prefill(self, ids: Sequence[int], start: int) -> torch.Tensor:
        """Feed `ids` at positions start.., in chunks; the last id's float32 logits [vocab]."""
        self._check()
        n = len(ids)
        if n == 0:
            raise ValueError("prefill needs at least one id")
        if start < 0 or start + n > self.positions:
            raise ValueError(f"{n} ids from position {start} do not fit in {self.positions} positions")
        dev = self.scheduler.static.device
        step = self.scheduler.prefill_chunk
        logits = None
        # one request per chunk, each submitted once the last one ran: other rows decode in between
        for i in range(0, n, step):
            part = torch.tensor(list(ids[i : i + step]), dtype=torch.long, device=dev)
            logits = self.scheduler._submit(_Request(self.row, start + i, ids=part))
        assert logits is not None
        return logits

    def decode(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """Feed `token` ([1] long) at `pos` in the next batched step; its float32 logits [vocab]."""
        self._check()
        if not 0 <= pos < self.positions:
            raise ValueError(f"decode position {pos} is outside [0, {self.positions})")
        return self.scheduler._submit(_Request(self.row, pos, token=token))

    def decoding(self, active: bool) -> None:
        """This row's reply enters or leaves its decode loop (see `BatchScheduler.decoding`)."""
        self.scheduler.decoding(self.row, active)
