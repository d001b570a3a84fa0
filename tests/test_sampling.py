"""Sampler: the same processed scores as transformers' logits processors, greedy, seeded draws."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from mio_agent.exceptions import ConfigError
from mio_agent.sampling import Sampler, SamplingParams

torch.set_num_threads(1)

VOCAB = 300


def hf_scores(params: SamplingParams, ids: list[int], logits: torch.Tensor) -> torch.Tensor:
    """What `generate` hands to its sampling step, built from transformers' own processors, in its order."""
    procs = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.do_sample:
        if params.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            procs.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            procs.append(TopPLogitsWarper(params.top_p))
    input_ids = torch.tensor([ids if ids else [0]], dtype=torch.long)
    if not ids:
        # an empty context: nothing to penalise (a dummy id would be); drop the penalty
        procs = LogitsProcessorList(p for p in procs if not isinstance(p, RepetitionPenaltyLogitsProcessor))
    out: torch.Tensor = procs(input_ids, logits[None].clone())
    return out[0]


params_strategy = st.builds(
    SamplingParams,
    do_sample=st.booleans(),
    temperature=st.sampled_from([1.0, 0.3, 0.7, 1.5]),
    top_p=st.sampled_from([1.0, 0.05, 0.5, 0.7, 0.95]),
    top_k=st.sampled_from([0, 1, 5, 50]),
    repetition_penalty=st.sampled_from([1.0, 1.15, 2.0, 0.8]),
)


@settings(max_examples=150, deadline=None)
@given(
    params=params_strategy,
    context=st.lists(st.integers(0, VOCAB - 1), max_size=40),
    generated=st.lists(st.integers(0, VOCAB - 1), max_size=20),
    seed=st.integers(0, 2**31),
    masked=st.integers(0, VOCAB - 1),
)
def test_processed_scores_equal_transformers(
    params: SamplingParams, context: list[int], generated: list[int], seed: int, masked: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(VOCAB, generator=g) * 3
    # ids already masked by the constraint reach the sampler as -inf
    logits[torch.randperm(VOCAB, generator=g)[:masked]] = float("-inf")
    sampler = Sampler(params, VOCAB, context)
    for t in generated:
        sampler.observe(t)
    before = logits.clone()
    ours = sampler.process(logits)
    assert torch.equal(logits, before)
    theirs = hf_scores(params, context + generated, logits)
    assert torch.equal(ours, theirs)


def test_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    s = Sampler(SamplingParams(do_sample=False, repetition_penalty=2.0), 4, context_ids=[0, 1, 1])
    out = s.process(torch.tensor([4.0, -4.0, 4.0, -4.0]))
    assert out.tolist() == [2.0, -8.0, 4.0, -4.0]
    s.observe(2)
    assert s.process(torch.tensor([4.0, -4.0, 4.0, -4.0])).tolist() == [2.0, -8.0, 2.0, -4.0]


def test_greedy_ignores_warpers_and_takes_the_penalised_argmax() -> None:
    s = Sampler(SamplingParams(do_sample=False, temperature=0.1, top_k=1, repetition_penalty=3.0), 3, [0])
    # 3.0 / 3 = 1.0 loses to 2.0
    assert s.select(torch.tensor([3.0, 2.0, -1.0])) == 1
    assert s.select(torch.tensor([[3.0, 2.0, -1.0]])) == 1


def test_seeded_sampling_is_reproducible_and_follows_the_distribution() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0]))
    draws = []
    for _ in range(2):
        s = Sampler(SamplingParams(do_sample=True, seed=123), 4)
        draws.append([s.select(logits) for _ in range(3000)])
    assert draws[0] == draws[1]
    counts = torch.bincount(torch.tensor(draws[0]), minlength=4).float() / 3000
    assert counts[3] == 0
    assert torch.allclose(counts[:3], torch.tensor([0.5, 0.3, 0.2]), atol=0.04)
    other = Sampler(SamplingParams(do_sample=True, seed=124), 4)
    assert [other.select(logits) for _ in range(50)] != draws[0][:50]


def test_filtered_ids_are_never_drawn() -> None:
    logits = torch.tensor([5.0, 4.9, 0.0, -1.0, float("-inf"), 4.8])
    s = Sampler(SamplingParams(do_sample=True, top_k=2, seed=0), 6)
    assert {s.select(logits) for _ in range(300)} == {0, 1}
    s = Sampler(SamplingParams(do_sample=True, top_p=0.01, seed=0), 6)
    assert {s.select(logits) for _ in range(100)} == {0}


def test_presence_mask_is_a_constant_cost_update() -> None:
    s = Sampler(SamplingParams(do_sample=False, repetition_penalty=2.0), 10, range(5))
    for t in (7, 7, 9):
        s.observe(t)
    out = s.process(torch.ones(10))
    assert out.tolist() == [0.5] * 5 + [1.0, 1.0, 0.5, 1.0, 0.5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_params(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SamplingParams(do_sample=True, **kwargs)  # type: ignore[arg-type]


def test_bad_ids_and_shapes() -> None:
    with pytest.raises(ValueError, match="outside"):
        Sampler(SamplingParams(do_sample=False), 5, [5])
    s = Sampler(SamplingParams(do_sample=False), 5)
    with pytest.raises(ValueError, match="outside"):
        s.observe(-1)
    with pytest.raises(ValueError, match="shape"):
        s.select(torch.zeros(6))
