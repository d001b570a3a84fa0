"""The batch scheduler: conversations on their own threads, their decode steps run as one batched forward."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from mio_agent.exceptions import EngineBusyError
from mio_agent.model.batch_scheduler import (
    BatchClosed,
    BatchedSlot,
    BatchFull,
    BatchScheduler,
    Iteration,
)
from mio_agent.model.embedded import embedded_model_path
from mio_agent.model.loading import load_model
from mio_agent.model.static_llama import StaticCache, StaticLlama

TOL = {"atol": 1e-4, "rtol": 1e-4}
POSITIONS = 40
# every wait in these tests ends: a hang fails the test instead of stalling the run
TIMEOUT = 20.0

Make = Callable[..., BatchScheduler]


@pytest.fixture(scope="module")
def static(tmp_path_factory: pytest.TempPathFactory) -> StaticLlama:
    path = embedded_model_path(seed=0, cache_dir=tmp_path_factory.mktemp("cache"))
    lm = load_model(path, device="cpu", dtype="float32", progress=False)
    with torch.inference_mode():
        return StaticLlama(lm.model)


@pytest.fixture(autouse=True)
def _inference() -> Iterator[None]:
    # the references are computed in inference mode, as the engine does
    with torch.inference_mode():
        yield


@pytest.fixture
def make(static: StaticLlama) -> Iterator[Make]:
    made: list[BatchScheduler] = []

    def build(rows: int = 3, prefill_chunk: int = 256, gather_s: float = 0.05) -> BatchScheduler:
        sched = BatchScheduler(static, rows, POSITIONS, prefill_chunk=prefill_chunk, gather_s=gather_s)
        made.append(sched)
        return sched

    yield build
    for sched in made:  # unblocks any requester a failed test left waiting
        sched.close()


class Runner(threading.Thread):
    """A conversation's thread: runs `fn`, keeps its result or its error for `outcome`."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> Any:
        self.join(TIMEOUT)
        assert not self.is_alive(), "a conversation thread is still blocked"
        if self.error is not None:
            raise self.error
        return self.result


def prompt(static: StaticLlama, n: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, static.lm_head.shape[0], (n,), generator=gen).tolist()


def forward(static: StaticLlama, cache: StaticCache, ids: list[int], start: int = 0) -> torch.Tensor:
    pos = torch.arange(start, start + len(ids))
    return static.forward(torch.tensor(ids), pos, cache, kv_len=start + len(ids))


class Ref:
    """One conversation alone in its own `StaticCache`, one token at a time."""

    def __init__(self, static: StaticLlama, ids: list[int]) -> None:
        self.static = static
        self.cache = StaticCache(static, POSITIONS)
        self.logits = forward(static, self.cache, ids)
        self.length = len(ids)

    def feed(self, token: int) -> torch.Tensor:
        self.logits = self.static.step(torch.tensor([token]), torch.tensor([self.length]), self.cache)
        self.length += 1
        return self.logits


def scratch(static: StaticLlama, ids: list[int]) -> torch.Tensor:
    """The last logits of `ids` from an empty cache: independent of any crop."""
    return forward(static, StaticCache(static, POSITIONS), ids)


def tok(token: int) -> torch.Tensor:
    return torch.tensor([token])


def greedy(slot: BatchedSlot, ids: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """A conversation: prefill, then `steps` greedy decode steps; the ids fed and every logits seen."""
    logits = slot.prefill(ids, 0)
    seen, fed = [logits], []
    for i in range(steps):
        token = int(logits.argmax())
        logits = slot.decode(tok(token), len(ids) + i)
        fed.append(token)
        seen.append(logits)
    return fed, seen


def test_three_threads_match_their_own_caches(static: StaticLlama, make: Make) -> None:
    sched = make(rows=3)
    prompts = [prompt(static, n, seed=50 + n) for n in (5, 13, 2)]
    slots = [sched.acquire() for _ in prompts]
    runners = [Runner(lambda s=s, p=p: greedy(s, p, 6)) for s, p in zip(slots, prompts, strict=True)]
    for runner, ids in zip(runners, prompts, strict=True):
        fed, seen = runner.outcome()
        ref = Ref(static, ids)
        torch.testing.assert_close(seen[0], ref.logits, **TOL)
        for token, logits in zip(fed, seen[1:], strict=True):
            assert logits.shape == (static.lm_head.shape[0],) and logits.dtype == torch.float32
            torch.testing.assert_close(logits, ref.feed(token), **TOL)
    assert sched.rows_decoded == 18 and sched.prefill_chunks == 3
    assert sched.steps <= 18  # steps that overlapped in time ran together


def test_pending_decodes_run_as_one_step(static: StaticLlama, make: Make) -> None:
    sched = make(rows=3)
    prompts = [prompt(static, n, seed=60 + n) for n in (4, 9, 6)]
    slots = [sched.acquire() for _ in prompts]
    refs = [Ref(static, ids) for ids in prompts]
    for slot, ids in zip(slots, prompts, strict=True):
        slot.prefill(ids, 0)
    tokens = [int(ref.logits.argmax()) for ref in refs]
    sched.pause()
    sched.trace.clear()
    steps, rows = sched.steps, sched.rows_decoded
    lengths = [len(ids) for ids in prompts]
    runners = [
        Runner(lambda s=s, t=t, n=n: s.decode(tok(t), n))
        for s, t, n in zip(slots, tokens, lengths, strict=True)
    ]
    assert sched.wait_pending(3, timeout=TIMEOUT)
    sched.resume()
    for runner, ref, token in zip(runners, refs, tokens, strict=True):
        torch.testing.assert_close(runner.outcome(), ref.feed(token), **TOL)
    assert sched.steps == steps + 1 and sched.rows_decoded == rows + 3
    assert list(sched.trace) == [Iteration(decoded=(0, 1, 2))]


def test_a_chunked_prefill_leaves_room_for_decode(static: StaticLlama, make: Make) -> None:
    sched = make(rows=2, prefill_chunk=4)
    talker, newcomer = sched.acquire(), sched.acquire()
    first = prompt(static, 3, seed=70)
    ref = Ref(static, first)
    talker.prefill(first, 0)
    long = prompt(static, 12, seed=71)
    sched.pause()
    sched.trace.clear()
    joining = Runner(lambda: newcomer.prefill(long, 0))
    assert sched.wait_pending(1, timeout=TIMEOUT)
    token = int(ref.logits.argmax())
    talking = Runner(lambda: talker.decode(tok(token), len(first)))
    assert sched.wait_pending(2, timeout=TIMEOUT)
    chunks = sched.prefill_chunks
    sched.resume()
    torch.testing.assert_close(talking.outcome(), ref.feed(token), **TOL)
    torch.testing.assert_close(joining.outcome(), Ref(static, long).logits, **TOL)
    # the first pass ran the decode and only the first chunk; the other two chunks came after it
    assert list(sched.trace) == [
        Iteration(decoded=(talker.row,), prefill=(newcomer.row, 4)),
        Iteration(decoded=(), prefill=(newcomer.row, 4)),
        Iteration(decoded=(), prefill=(newcomer.row, 4)),
    ]
    assert sched.prefill_chunks == chunks + 3


def test_acquire_beyond_the_rows_raises_batch_full(static: StaticLlama, make: Make) -> None:
    sched = make(rows=2)
    a, b = sched.acquire(), sched.acquire()
    assert {a.row, b.row} == {0, 1} and sched.free_rows == 0
    with pytest.raises(BatchFull, match=r"all 2 rows.*engine\.batch_sessions"):
        sched.acquire()
    sched.release(a)
    sched.release(a)  # a second release is harmless
    assert sched.free_rows == 1
    c = sched.acquire()
    assert c.row == a.row and not c.captured and c.positions == POSITIONS
    with pytest.raises(RuntimeError, match="released"):
        a.decode(tok(1), 0)


def test_positions_outside_the_row_are_refused(static: StaticLlama, make: Make) -> None:
    slot = make(rows=1).acquire()
    for pos in (-1, POSITIONS):
        with pytest.raises(ValueError, match=rf"position {pos}\b"):
            slot.decode(tok(1), pos)
    with pytest.raises(ValueError, match="do not fit"):
        slot.prefill([1, 2, 3], POSITIONS - 2)
    with pytest.raises(ValueError, match="at least one id"):
        slot.prefill([], 0)


def test_a_cropped_conversation_recomputes_from_the_earlier_position(static: StaticLlama, make: Make) -> None:
    sched = make(rows=2)
    slot, other = sched.acquire(), sched.acquire()
    ids = prompt(static, 8, seed=80)
    other.prefill(prompt(static, 5, seed=81), 0)
    slot.prefill(ids, 0)
    seq = list(ids)
    for token in (5, 6, 7, 8):
        slot.decode(tok(token), len(seq))
        seq.append(token)
    # crop back to the prompt plus one id, then continue differently: positions are overwritten
    del seq[len(ids) + 1 :]
    for token in (100, 101, 102):
        logits = slot.decode(tok(token), len(seq))
        seq.append(token)
        torch.testing.assert_close(logits, scratch(static, seq), **TOL)


def test_close_fails_pending_and_later_requests(static: StaticLlama, make: Make) -> None:
    sched = make(rows=2)
    slot = sched.acquire()
    slot.prefill(prompt(static, 4, seed=90), 0)
    sched.pause()
    waiting = Runner(lambda: slot.decode(tok(3), 4))
    assert sched.wait_pending(1, timeout=TIMEOUT)
    sched.close()
    with pytest.raises(BatchClosed):
        waiting.outcome()
    assert sched.closed
    with pytest.raises(BatchClosed):
        slot.decode(tok(3), 4)
    with pytest.raises(BatchClosed):
        sched.acquire()
    sched.close()  # closing twice is harmless


def test_an_error_in_a_forward_reaches_its_requester_and_the_loop_goes_on(
    static: StaticLlama, make: Make
) -> None:
    sched = make(rows=2)
    slot = sched.acquire()
    ids = prompt(static, 6, seed=95)
    ref = Ref(static, ids)
    slot.prefill(ids, 0)
    vocab = static.lm_head.shape[0]
    with pytest.raises(IndexError):
        slot.decode(tok(vocab + 5), len(ids))
    with pytest.raises(IndexError):
        slot.prefill([1, vocab], len(ids))
    token = int(ref.logits.argmax())
    torch.testing.assert_close(slot.decode(tok(token), len(ids)), ref.feed(token), **TOL)
    assert sched.rows_decoded == 1


def test_one_slot_driven_from_two_threads_is_refused(static: StaticLlama, make: Make) -> None:
    sched = make(rows=1)
    slot = sched.acquire()
    slot.prefill(prompt(static, 3, seed=99), 0)
    sched.pause()
    first = Runner(lambda: slot.decode(tok(1), 3))
    assert sched.wait_pending(1, timeout=TIMEOUT)
    with pytest.raises(EngineBusyError, match="row 0"):
        slot.decode(tok(2), 3)
    sched.resume()
    assert first.outcome().shape == (static.lm_head.shape[0],)


def test_rows_inside_their_decode_loops_share_each_step(static: StaticLlama, make: Make) -> None:
    # a long gather window: the step can only run once both rows asked (nothing here races a timer)
    sched = make(rows=3, gather_s=TIMEOUT)
    a, b, c = sched.acquire(), sched.acquire(), sched.acquire()
    ids_a, ids_b, ids_c = prompt(static, 4, seed=80), prompt(static, 6, seed=81), prompt(static, 9, seed=82)
    ref_a, ref_b = Ref(static, ids_a), Ref(static, ids_b)
    a.prefill(ids_a, 0)
    b.prefill(ids_b, 0)
    a.decoding(True)
    b.decoding(True)
    sched.trace.clear()
    t_a, t_b = int(ref_a.logits.argmax()), int(ref_b.logits.argmax())
    first = Runner(lambda: a.decode(tok(t_a), len(ids_a)))
    assert sched.wait_pending(1, timeout=TIMEOUT)
    # while a waits for b, a newcomer's prefill is not held back
    assert torch.equal(c.prefill(ids_c, 0), c.prefill(ids_c, 0))
    second = Runner(lambda: b.decode(tok(t_b), len(ids_b)))
    torch.testing.assert_close(first.outcome(), ref_a.feed(t_a), **TOL)
    torch.testing.assert_close(second.outcome(), ref_b.feed(t_b), **TOL)
    assert list(sched.trace) == [
        Iteration(decoded=(), prefill=(c.row, 9)),
        Iteration(decoded=(), prefill=(c.row, 9)),
        Iteration(decoded=(a.row, b.row)),
    ]
    # b's reply ends: a is no longer held for it
    b.decoding(False)
    t_a = int(ref_a.logits.argmax())
    torch.testing.assert_close(a.decode(tok(t_a), len(ids_a) + 1), ref_a.feed(t_a), **TOL)
    assert sched.trace[-1] == Iteration(decoded=(a.row,))
    a.decoding(False)


def test_a_row_that_does_not_ask_in_time_is_not_waited_for(static: StaticLlama, make: Make) -> None:
    sched = make(rows=2, gather_s=0.0)
    a, b = sched.acquire(), sched.acquire()
    ids = prompt(static, 5, seed=83)
    ref = Ref(static, ids)
    a.prefill(ids, 0)
    a.decoding(True)
    b.decoding(True)  # b is inside its loop but never asks: with no gather window, a goes alone
    token = int(ref.logits.argmax())
    torch.testing.assert_close(a.decode(tok(token), len(ids)), ref.feed(token), **TOL)
    assert sched.trace[-1] == Iteration(decoded=(a.row,))
