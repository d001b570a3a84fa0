"""Batched decode over a pool of caches, against one `StaticCache` per conversation through `StaticLlama`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from mio_agent.model.batched import BatchedKV, decode_batch
from mio_agent.model.embedded import embedded_model_path
from mio_agent.model.loading import load_model
from mio_agent.model.static_llama import StaticCache, StaticLlama

TOL = {"atol": 1e-4, "rtol": 1e-4}
POSITIONS = 40


@pytest.fixture(scope="module")
def static(tmp_path_factory: pytest.TempPathFactory) -> StaticLlama:
    path = embedded_model_path(seed=0, cache_dir=tmp_path_factory.mktemp("cache"))
    lm = load_model(path, device="cpu", dtype="float32", progress=False)
    with torch.inference_mode():
        return StaticLlama(lm.model)


@pytest.fixture(autouse=True)
def _inference() -> Iterator[None]:
    # the caches are made and written in inference mode, as the engine does
    with torch.inference_mode():
        yield


def prompt(static: StaticLlama, n: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, static.lm_head.shape[0], (n,), generator=gen).tolist()


def prefill(static: StaticLlama, cache: StaticCache, ids: list[int], start: int = 0) -> torch.Tensor:
    pos = torch.arange(start, start + len(ids))
    return static.forward(torch.tensor(ids), pos, cache, kv_len=start + len(ids))


class Ref:
    """One conversation through its own `StaticCache`, one token at a time."""

    def __init__(self, static: StaticLlama, ids: list[int]) -> None:
        self.static = static
        self.cache = StaticCache(static, POSITIONS)
        self.logits = prefill(static, self.cache, ids)
        self.length = len(ids)

    def feed(self, token: int) -> torch.Tensor:
        self.logits = self.static.step(torch.tensor([token]), torch.tensor([self.length]), self.cache)
        self.length += 1
        return self.logits


def scratch(static: StaticLlama, ids: list[int]) -> torch.Tensor:
    """The last logits of `ids` from an empty cache: independent of any crop."""
    return prefill(static, StaticCache(static, POSITIONS), ids)


def step(static: StaticLlama, pool: BatchedKV, tokens: list[int], pos: list[int]) -> torch.Tensor:
    return decode_batch(static, torch.tensor(tokens), torch.tensor(pos), pool)


def test_row_cache_is_a_view_that_prefill_writes_through(static: StaticLlama) -> None:
    pool = BatchedKV(static, rows=3, positions=POSITIONS)
    assert pool.kv.shape == (static.num_layers, 2, 3, static.num_kv_heads, POSITIONS + 1, static.head_dim)
    assert pool.nbytes == pool.kv.numel() * 4 and pool.trash == POSITIONS
    view = pool.row_cache(1)
    assert view.positions == POSITIONS
    assert view.kv.shape == (static.num_layers, 2, static.num_kv_heads, POSITIONS, static.head_dim)
    ids = prompt(static, 7, seed=1)
    got = prefill(static, view, ids)
    ref = Ref(static, ids)
    torch.testing.assert_close(got, ref.logits, rtol=0, atol=0)
    # the keys and values landed in row 1 of the pool, exactly as in a cache of its own
    assert torch.equal(pool.kv[:, :, 1, :, :7], ref.cache.kv[:, :, :, :7])
    assert not pool.kv[:, :, 1, :, 7:].any()
    assert not pool.kv[:, :, 0].any() and not pool.kv[:, :, 2].any()
    with pytest.raises(IndexError):
        pool.row_cache(3)


def test_staggered_rows_match_their_own_caches_step_by_step(static: StaticLlama) -> None:
    prompts = [prompt(static, n, seed=10 + n) for n in (5, 11, 2)]
    pool = BatchedKV(static, rows=3, positions=POSITIONS)
    refs = [Ref(static, ids) for ids in prompts]
    last = [prefill(static, pool.row_cache(r), ids) for r, ids in enumerate(prompts)]
    for r in range(3):
        torch.testing.assert_close(last[r], refs[r].logits, rtol=0, atol=0)
    lengths = [len(ids) for ids in prompts]
    for _ in range(5):
        tokens = [int(logits.argmax()) for logits in last]
        out = step(static, pool, tokens, lengths)
        assert out.shape == (3, static.lm_head.shape[0]) and out.dtype == torch.float32
        for r in range(3):
            torch.testing.assert_close(out[r], refs[r].feed(tokens[r]), **TOL)
        last = list(out)
        lengths = [n + 1 for n in lengths]
    # the pool's rows hold what each conversation's own cache holds
    for r in range(3):
        torch.testing.assert_close(
            pool.kv[:, :, r, :, : lengths[r]], refs[r].cache.kv[:, :, :, : lengths[r]], **TOL
        )


def test_an_idle_row_writes_only_its_trash_slot(static: StaticLlama) -> None:
    prompts = [prompt(static, n, seed=20 + n) for n in (6, 9, 4)]
    pool = BatchedKV(static, rows=3, positions=POSITIONS)
    refs = [Ref(static, ids) for ids in prompts]
    for r, ids in enumerate(prompts):
        prefill(static, pool.row_cache(r), ids)
    tokens = [int(ref.logits.argmax()) for ref in refs]
    lengths = [len(ids) for ids in prompts]
    # the same step with row 1 active, on a copy of the pool, for comparison
    twin = BatchedKV(static, rows=3, positions=POSITIONS)
    twin.kv.copy_(pool.kv)
    active = step(static, twin, tokens, lengths)
    before = pool.kv[:, :, 1, :, :POSITIONS].clone()
    out = step(static, pool, tokens, [lengths[0], pool.trash, lengths[2]])
    assert torch.equal(pool.kv[:, :, 1, :, :POSITIONS], before)
    assert pool.kv[:, :, 1, :, pool.trash].any()  # its key and value went to the trash slot
    assert torch.isfinite(out).all()
    for r in (0, 2):
        torch.testing.assert_close(out[r], active[r], rtol=0, atol=1e-6)
        torch.testing.assert_close(out[r], refs[r].feed(tokens[r]), **TOL)
    # the idle row then resumes where it was, unharmed by the trash write
    resumed = step(static, pool, [0, tokens[1], 0], [pool.trash, lengths[1], pool.trash])
    torch.testing.assert_close(resumed[1], refs[1].feed(tokens[1]), **TOL)


def test_a_cropped_row_recomputes_from_the_earlier_position(static: StaticLlama) -> None:
    prompts = [prompt(static, n, seed=30 + n) for n in (8, 3)]
    pool = BatchedKV(static, rows=2, positions=POSITIONS)
    for r, ids in enumerate(prompts):
        prefill(static, pool.row_cache(r), ids)
    seqs = [list(ids) for ids in prompts]
    fed = [[5, 6, 7, 8], [9, 10, 11, 12]]
    for i in range(4):
        step(static, pool, [fed[0][i], fed[1][i]], [len(seqs[0]), len(seqs[1])])
        for r in range(2):
            seqs[r].append(fed[r][i])
    # row 0 crops back to its prompt plus one id and continues differently; row 1 goes on
    del seqs[0][len(prompts[0]) + 1 :]
    for new0, new1 in [(100, 13), (101, 14), (102, 15)]:
        out = step(static, pool, [new0, new1], [len(seqs[0]), len(seqs[1])])
        seqs[0].append(new0)
        seqs[1].append(new1)
        torch.testing.assert_close(out[0], scratch(static, seqs[0]), **TOL)
        torch.testing.assert_close(out[1], scratch(static, seqs[1]), **TOL)


def test_a_row_joining_between_steps_matches_its_reference(static: StaticLlama) -> None:
    prompts = [prompt(static, n, seed=40 + n) for n in (7, 5, 10)]
    pool = BatchedKV(static, rows=3, positions=POSITIONS)
    refs = [Ref(static, ids) for ids in prompts]
    lengths = [len(ids) for ids in prompts]
    for r in (0, 2):
        prefill(static, pool.row_cache(r), prompts[r])
    tokens = [int(ref.logits.argmax()) for ref in refs]
    for _ in range(3):  # row 1 is not there yet: idle
        out = step(static, pool, tokens, [lengths[0], pool.trash, lengths[2]])
        for r in (0, 2):
            torch.testing.assert_close(out[r], refs[r].feed(tokens[r]), **TOL)
            tokens[r] = int(out[r].argmax())
            lengths[r] += 1
    joined = prefill(static, pool.row_cache(1), prompts[1])
    torch.testing.assert_close(joined, refs[1].logits, rtol=0, atol=0)
    for _ in range(3):
        out = step(static, pool, tokens, lengths)
        for r in range(3):
            torch.testing.assert_close(out[r], refs[r].feed(tokens[r]), **TOL)
        tokens = [int(logits.argmax()) for logits in out]
        lengths = [n + 1 for n in lengths]


def test_more_positions_than_the_model_has_are_refused(static: StaticLlama) -> None:
    too_many = static.max_positions + 1
    with pytest.raises(ValueError, match=rf"{too_many}.*{static.max_positions}"):
        BatchedKV(static, rows=2, positions=too_many)
    # exactly the model's length is allowed: the trash slot lies past it, its rope clamped
    pool = BatchedKV(static, rows=1, positions=static.max_positions)
    out = step(static, pool, [3], [pool.trash])
    assert torch.isfinite(out).all()
