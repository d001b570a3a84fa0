"""MioConstraint: whatever the logits, constrained replies parse into whole blocks within the budget."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mio_agent.constraints import MioConstraint, prefix_allowed_tokens_fn
from mio_agent.exceptions import ConfigError
from mio_agent.parser import (
    Finished,
    ImageBlock,
    Malformed,
    ParserEvent,
    SpeechBlock,
    StreamParser,
    TextDelta,
    Truncated,
)
from mio_agent.sampling import Sampler, SamplingParams
from mio_agent.vocab import MioVocab, TokenKind
from tests._vocab import ByteTokenizer, byte_ids

torch.set_num_threads(1)

# kinds of ids whose logits the property tests push up or down together
CATEGORIES = ("text", "stop", "spch_start", "image_start", "content", "timbre", "image", "ends", "forbidden")


def category_masks(vocab: MioVocab) -> dict[str, torch.Tensor]:
    def ids(*tids: int) -> torch.Tensor:
        m = torch.zeros(vocab.vocab_size, dtype=torch.bool)
        m[list(tids)] = True
        return m

    timbre = vocab.speech_layer_mask(1) | vocab.speech_layer_mask(2) | vocab.speech_layer_mask(3)
    return {
        "text": vocab.text_mask(),
        "stop": ids(vocab.im_end, vocab.eos),
        "spch_start": ids(vocab.spch_start),
        "image_start": ids(vocab.image_start),
        "content": vocab.speech_layer_mask(0),
        "timbre": timbre,
        "image": vocab.image_code_mask(),
        "ends": ids(vocab.spch_end, vocab.image_end),
        "forbidden": ids(vocab.bos, vocab.im_start, vocab.unk, vocab.spch_placeholder, vocab.img_placeholder),
    }


_MASKS: dict[int, dict[str, torch.Tensor]] = {}


def bias_vector(vocab: MioVocab, biases: dict[str, float]) -> torch.Tensor:
    masks = _MASKS.setdefault(id(vocab), category_masks(vocab))
    out = torch.zeros(vocab.vocab_size)
    for name, b in biases.items():
        out += masks[name].float() * b
    return out


_NOISE: dict[int, torch.Tensor] = {}


def generate(
    constraint: MioConstraint, bias: torch.Tensor, seed: int, sample: bool, scale: float = 1.0
) -> list[int]:
    """Run the constraint against random logits, the way the engine's streaming loop does."""
    # rows of one fixed noise table, picked at random: fresh randn per step would dominate the run time
    noise = _NOISE.setdefault(
        bias.shape[0], torch.randn(64, bias.shape[0], generator=torch.Generator().manual_seed(0))
    )
    rows = torch.randint(
        0, noise.shape[0], (constraint.max_new_tokens,), generator=torch.Generator().manual_seed(seed)
    )
    sampler = Sampler(SamplingParams(do_sample=sample, seed=seed), bias.shape[0])
    ids: list[int] = []
    while not constraint.done:
        logits = noise[int(rows[len(ids)])] * scale + bias
        tok = sampler.select(constraint.apply(logits))
        constraint.advance(tok)
        ids.append(tok)
    return ids


def parse(vocab: MioVocab, tok: ByteTokenizer, ids: list[int]) -> list[ParserEvent]:
    p = StreamParser(vocab, tok.decode)
    events = [e for t in ids for e in p.feed(t)]
    return events + p.finish("length")


def biases_strategy() -> st.SearchStrategy[dict[str, float]]:
    return st.fixed_dictionaries({name: st.floats(-4.0, 8.0) for name in CATEGORIES})


# -- properties ---------------------------------------------------------------------------------
@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    budget=st.integers(1, 260),
    biases=biases_strategy(),
    seed=st.integers(0, 2**31),
    sample=st.booleans(),
    allow=st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any),
)
def test_std_replies_always_parse_whole(
    vocab: MioVocab,
    byte_tokenizer: ByteTokenizer,
    budget: int,
    biases: dict[str, float],
    seed: int,
    sample: bool,
    allow: tuple[bool, bool, bool],
) -> None:
    allow_text, allow_speech, allow_image = allow
    make = functools.partial(
        MioConstraint,
        vocab,
        mode="std",
        max_new_tokens=budget,
        allow_text=allow_text,
        allow_speech=allow_speech,
        allow_image=allow_image,
    )
    # a speech block needs 7 tokens (one code in four parts, <spch>, </spch>, a stop), an image 35
    if not (allow_text or (allow_speech and budget >= 7) or (allow_image and budget >= 35)):
        with pytest.raises(ConfigError, match="no room for its speech block"):
            make()
        return
    c = make()
    ids = generate(c, bias_vector(vocab, biases), seed, sample)
    assert 1 <= len(ids) <= budget
    events = parse(vocab, byte_tokenizer, ids)
    assert not [e for e in events if isinstance(e, Malformed | Truncated)]
    assert isinstance(events[-1], Finished)
    speech = [e for e in events if isinstance(e, SpeechBlock)]
    images = [e for e in events if isinstance(e, ImageBlock)]
    assert all(b.timbre is not None and len(b.content) >= 1 for b in speech)
    assert allow_speech or not speech
    assert allow_image or not images
    kinds = {vocab.kind(t)[0] for t in ids}
    assert allow_text or TokenKind.TEXT not in kinds
    assert not kinds & {TokenKind.BOS, TokenKind.IM_START, TokenKind.UNK, TokenKind.PLACEHOLDER}
    if not allow_text:
        smallest = min(7 if allow_speech else budget + 1, 35 if allow_image else budget + 1)
        # without text a reply is its blocks: it holds one whenever one fits
        assert (len(speech) + len(images) >= 1) == (budget >= smallest)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    budget=st.integers(1, 300),
    biases=biases_strategy(),
    seed=st.integers(0, 2**31),
    sample=st.booleans(),
)
def test_voice_replies_are_one_speech_block(
    vocab: MioVocab,
    byte_tokenizer: ByteTokenizer,
    budget: int,
    biases: dict[str, float],
    seed: int,
    sample: bool,
) -> None:
    if budget < 7:
        # no room for even one frame of four layers plus markers and a stop: refused, not an empty reply
        with pytest.raises(ConfigError, match="need 7 tokens"):
            MioConstraint(vocab, mode="voice", max_new_tokens=budget)
        return
    c = MioConstraint(vocab, mode="voice", max_new_tokens=budget)
    ids = generate(c, bias_vector(vocab, biases), seed, sample)
    assert ids[0] == vocab.spch_start and ids[-2] == vocab.spch_end and ids[-1] in (vocab.im_end, vocab.eos)
    assert len(ids) <= budget
    events = parse(vocab, byte_tokenizer, ids)
    blocks = [e for e in events if isinstance(e, SpeechBlock)]
    assert len(blocks) == 1 and blocks[0].timbre is not None
    assert [e for e in events if not isinstance(e, SpeechBlock)][-1] == Finished("stop")
    assert not [e for e in events if isinstance(e, Malformed | Truncated | TextDelta | ImageBlock)]


@settings(max_examples=40, deadline=None)
@given(
    budget=st.integers(20, 200),
    lo=st.integers(1, 6),
    extra=st.integers(0, 10),
    seed=st.integers(0, 2**31),
)
def test_speech_length_limits(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer, budget: int, lo: int, extra: int, seed: int
) -> None:
    make = functools.partial(
        MioConstraint,
        vocab,
        mode="voice",
        max_new_tokens=budget,
        min_speech_codes=lo,
        max_speech_codes=lo + extra,
    )
    if budget < 4 * lo + 3:
        with pytest.raises(ConfigError, match=f"{lo} code\\(s\\) in all four parts need {4 * lo + 3} tokens"):
            make()
        return
    ids = generate(make(), bias_vector(vocab, {"content": 3.0}), seed, sample=True)
    blocks = [e for e in parse(vocab, byte_tokenizer, ids) if isinstance(e, SpeechBlock)]
    assert len(blocks) == 1 and lo <= len(blocks[0].content) <= lo + extra


def test_long_content_closes_exactly_at_the_budget(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    """With content strongly preferred, the block fills the budget to the last token."""
    for budget in (7, 8, 9, 10, 11, 50, 51, 52, 53):
        c = MioConstraint(vocab, mode="voice", max_new_tokens=budget)
        ids = generate(c, bias_vector(vocab, {"content": 50.0}), seed=budget, sample=False)
        n = (budget - 3) // 4
        assert len(ids) == 4 * n + 3
        (block,) = [e for e in parse(vocab, byte_tokenizer, ids) if isinstance(e, SpeechBlock)]
        assert len(block.content) == n


# -- exact budget rules -------------------------------------------------------------------------
def in_speech(vocab: MioVocab, budget: int, content: int) -> MioConstraint:
    c = MioConstraint(vocab, mode="std", max_new_tokens=budget)
    c.advance(vocab.spch_start)
    for _ in range(content):
        c.advance(vocab.speech_id(0, 1))
    return c


@pytest.mark.parametrize("budget", [7, 10, 13, 20, 40])
def test_content_code_needs_room_for_its_timbres_end_and_stop(vocab: MioVocab, budget: int) -> None:
    n = 0
    c = in_speech(vocab, budget, 0)
    while c.is_allowed(vocab.speech_id(0, 0)):
        left = budget - 1 - n
        assert left >= 1 + 3 * (n + 1) + 1 + 1
        c.advance(vocab.speech_id(0, 0))
        n += 1
    left = budget - 1 - n
    assert left < 1 + 3 * (n + 1) + 1 + 1
    allowed = c.allowed_mask()
    # only the switch to timbre0 is left
    assert allowed.sum().item() == 1024 and allowed[vocab.speech_id(1, 0)]


def test_spch_and_image_open_only_when_they_fit(vocab: MioVocab) -> None:
    assert MioConstraint(vocab, mode="std", max_new_tokens=7).is_allowed(vocab.spch_start)
    assert not MioConstraint(vocab, mode="std", max_new_tokens=6).is_allowed(vocab.spch_start)
    assert MioConstraint(vocab, mode="std", max_new_tokens=35).is_allowed(vocab.image_start)
    assert not MioConstraint(vocab, mode="std", max_new_tokens=34).is_allowed(vocab.image_start)
    c = MioConstraint(vocab, mode="std", max_new_tokens=8, min_speech_codes=2)
    assert not c.is_allowed(vocab.spch_start)
    assert MioConstraint(vocab, mode="std", max_new_tokens=11, min_speech_codes=2).is_allowed(
        vocab.spch_start
    )


def test_timbre_layers_follow_the_content_length(vocab: MioVocab) -> None:
    c = in_speech(vocab, 100, 2)
    assert not c.is_allowed(vocab.spch_end)  # a content-only block is not a reply
    assert not c.is_allowed(vocab.speech_id(2, 0))
    for layer in (1, 2, 3):
        for _ in range(2):
            assert c.is_allowed(vocab.speech_id(layer, 5))
            assert not c.is_allowed(vocab.spch_end)
            c.advance(vocab.speech_id(layer, 5))
            assert not c.is_allowed(vocab.speech_id(0, 5))
    assert c.allowed_ids() == [vocab.spch_end]
    c.advance(vocab.spch_end)
    assert c.is_allowed(byte_ids("a")[0]) and c.is_allowed(vocab.im_end)


def test_image_block_is_exactly_32_codes(vocab: MioVocab) -> None:
    c = MioConstraint(vocab, mode="std", max_new_tokens=100)
    c.advance(vocab.image_start)
    for i in range(32):
        assert not c.is_allowed(vocab.image_end)
        assert not c.is_allowed(vocab.speech_id(0, 1))
        c.advance(vocab.image_id(i))
    assert c.allowed_ids() == [vocab.image_end]


@pytest.mark.parametrize("name", ["bos", "im_start", "unk", "spch_placeholder", "img_placeholder"])
def test_never_allowed(vocab: MioVocab, name: str) -> None:
    tid = getattr(vocab, name)
    c = MioConstraint(vocab, mode="std", max_new_tokens=100)
    assert not c.allowed_mask()[tid]
    with pytest.raises(ValueError, match="not allowed"):
        c.advance(tid)


def test_stop_ids_are_configurable(vocab: MioVocab) -> None:
    c = MioConstraint(vocab, mode="std", max_new_tokens=10, stop_ids=[vocab.im_end])
    assert c.is_allowed(vocab.im_end) and not c.is_allowed(vocab.eos)
    c.advance(vocab.im_end)
    assert c.done
    with pytest.raises(ValueError, match="after the end"):
        c.advance(vocab.im_end)


# -- API ----------------------------------------------------------------------------------------
def test_apply_masks_without_touching_its_input(vocab: MioVocab) -> None:
    c = MioConstraint(vocab, mode="voice", max_new_tokens=50)
    logits = torch.randn(vocab.vocab_size)
    before = logits.clone()
    out = c.apply(logits)
    assert torch.equal(logits, before)
    assert torch.isfinite(out).sum().item() == 1 and out[vocab.spch_start] == logits[vocab.spch_start]
    batched = c.apply(logits[None])
    assert batched.shape == (1, vocab.vocab_size) and torch.equal(batched[0], out)
    with pytest.raises(ValueError, match="entries"):
        c.apply(torch.zeros(10))


def test_budget_exhaustion_makes_it_done(vocab: MioVocab) -> None:
    c = MioConstraint(vocab, mode="std", max_new_tokens=2)
    c.advance(byte_ids("a")[0])
    assert not c.done and c.tokens_left == 1
    c.advance(byte_ids("b")[0])
    assert c.done and not c.allowed_mask().any()
    assert torch.isinf(c.apply(torch.zeros(vocab.vocab_size))).all()


def test_clone_is_independent(vocab: MioVocab) -> None:
    c = in_speech(vocab, 100, 3)
    d = c.clone()
    d.advance(vocab.speech_id(1, 0))
    assert c.is_allowed(vocab.speech_id(0, 0)) and not d.is_allowed(vocab.speech_id(0, 0))
    assert c.generated == 4 and d.generated == 5


def test_masks_are_built_once_per_vocabulary(vocab: MioVocab) -> None:
    a = MioConstraint(vocab, mode="std", max_new_tokens=10)
    b = MioConstraint(vocab, mode="std", max_new_tokens=20)
    assert a.allowed_ids() is b.allowed_ids()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "voice", "allow_speech": False}, "voice"),
        ({"allow_text": False, "allow_speech": False, "allow_image": False}, "all disallowed"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"min_speech_codes": 0}, "min_speech_codes"),
        ({"min_speech_codes": 5, "max_speech_codes": 4}, "below"),
        ({"stop_ids": []}, "stop id"),
        ({"stop_ids": [267]}, "not usable"),
        ({"mode": "chat"}, "mode"),
    ],
)
def test_bad_options(vocab: MioVocab, kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"mode": "std", "max_new_tokens": 10, **kwargs}
    with pytest.raises(ConfigError, match=message):
        MioConstraint(vocab, **options)  # type: ignore[arg-type]


# -- Hugging Face adapter -----------------------------------------------------------------------
def test_prefix_fn_rebuilds_states_of_beams(vocab: MioVocab) -> None:
    prompt = [1, 6, 9]
    fn: Callable[[int, torch.Tensor], list[int]] = prefix_allowed_tokens_fn(
        vocab, prompt_length=len(prompt), mode="voice", max_new_tokens=30
    )
    assert fn(0, torch.tensor(prompt)) == [vocab.spch_start]
    seq = [*prompt, vocab.spch_start, vocab.speech_id(0, 3)]
    ref = MioConstraint(vocab, mode="voice", max_new_tokens=30)
    ref.advance(vocab.spch_start)
    ref.advance(vocab.speech_id(0, 3))
    assert fn(0, torch.tensor(seq)) == ref.allowed_ids()
    # a beam that was never seen step by step is rebuilt from scratch
    ref.advance(vocab.speech_id(1, 3))
    assert fn(1, torch.tensor([*seq, vocab.speech_id(1, 3)])) == ref.allowed_ids()
    # a sequence the constraint forbids (a padded, finished row) only gets the stop ids
    assert fn(0, torch.tensor([*prompt, vocab.bos])) == sorted([vocab.im_end, vocab.eos])


def test_hugging_face_beam_search_with_the_adapter(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab.vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).eval()
    prompt = torch.tensor([[1, 6, *byte_ids("hi"), 7, 6]])
    budget = 23
    modes: tuple[Literal["voice", "std"], ...] = ("voice", "std")
    for mode in modes:
        fn = prefix_allowed_tokens_fn(vocab, prompt_length=prompt.shape[1], mode=mode, max_new_tokens=budget)
        out = model.generate(
            prompt,
            num_beams=3,
            num_return_sequences=3,
            do_sample=False,
            max_new_tokens=budget,
            prefix_allowed_tokens_fn=fn,
            eos_token_id=[vocab.im_end, vocab.eos],
            pad_token_id=vocab.unk,
        )
        for row in out[:, prompt.shape[1] :].tolist():
            reply = [t for t in row if t != vocab.unk]
            assert len(reply) <= budget
            events = parse(vocab, byte_tokenizer, reply)
            assert not [e for e in events if isinstance(e, Malformed | Truncated)]
            if mode == "voice":
                assert len([e for e in events if isinstance(e, SpeechBlock)]) == 1


# -- exact messages and boundaries --------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"mode": "voice", "allow_speech": False},
            'a "voice" reply is one speech block: allow speech, or use mode "std"',
        ),
        (
            {"allow_text": False, "allow_speech": False, "allow_image": False},
            "text, speech and images are all disallowed: the reply could hold nothing",
        ),
        ({"stop_ids": []}, "at least one stop id is needed (e.g. <|im_end|>)"),
        (
            {"stop_ids": [-1]},
            "stop id -1 is not usable as a stop token (text); use <|im_end|> or <|endoftext|>",
        ),
    ],
)
def test_bad_option_messages_are_exact(vocab: MioVocab, kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"mode": "std", "max_new_tokens": 10, **kwargs}
    with pytest.raises(ConfigError) as info:
        MioConstraint(vocab, **options)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_ids_past_the_vocabulary_are_neither_stops_nor_tokens(vocab: MioVocab) -> None:
    n = vocab.vocab_size
    with pytest.raises(ConfigError, match=rf"^stop id {n} is not usable as a stop token \(text\)"):
        MioConstraint(vocab, mode="std", max_new_tokens=10, stop_ids=[n])
    c = MioConstraint(vocab, mode="std", max_new_tokens=10)
    assert c.is_allowed(n - 1) is False  # the last id is a speech code, outside a block
    assert not c.is_allowed(n) and not c.is_allowed(-1)
    with pytest.raises(ValueError, match=rf"^token id {n} is not allowed"):
        c.advance(n)


def test_refusals_describe_the_state_exactly(vocab: MioVocab) -> None:
    bos = vocab.bos
    c = MioConstraint(vocab, mode="std", max_new_tokens=50)
    c.advance(byte_ids("a")[0])
    with pytest.raises(ValueError) as info:
        c.advance(bos)
    assert str(info.value) == f"token id {bos} is not allowed in state outside blocks, 1 of 50 tokens used"
    c.advance(vocab.spch_start)
    c.advance(vocab.speech_id(0, 1))
    c.advance(vocab.speech_id(0, 2))
    c.advance(vocab.speech_id(1, 3))
    with pytest.raises(ValueError) as info:
        c.advance(bos)
    assert str(info.value) == (
        f"token id {bos} is not allowed in state speech block, layer 1, 2 content codes, 1 in this layer"
    )
    c = MioConstraint(vocab, mode="std", max_new_tokens=50)
    c.advance(vocab.image_start)
    c.advance(vocab.image_id(9))
    with pytest.raises(ValueError) as info:
        c.advance(bos)
    assert str(info.value) == f"token id {bos} is not allowed in state image block, 1 codes"
    c = MioConstraint(vocab, mode="std", max_new_tokens=1)
    c.advance(vocab.im_end)
    with pytest.raises(ValueError) as info:
        c.advance(vocab.im_end)
    assert str(info.value) == f"token id {vocab.im_end} is not allowed after the end of the reply"


def test_without_text_a_stop_needs_a_block_first(vocab: MioVocab) -> None:
    c = MioConstraint(vocab, mode="std", max_new_tokens=100, allow_text=False)
    assert not c.is_allowed(vocab.im_end)
    assert not c.is_allowed(byte_ids("a")[0])
    for tid in vocab.image_block_ids(range(32)):
        c.advance(tid)
    assert c.is_allowed(vocab.im_end) and c.is_allowed(vocab.eos)
    for tid in vocab.speech_block_ids([1], [[1], [1], [1]]):
        c.advance(tid)
    assert c.is_allowed(vocab.im_end)
    assert not c.is_allowed(byte_ids("a")[0])


# -- content-only speech (timbre=False) ---------------------------------------------------------
@pytest.mark.parametrize(("lo", "fits"), [(1, 4), (2, 5), (3, 6)])
def test_content_only_block_opens_when_its_content_end_and_stop_fit(
    vocab: MioVocab, lo: int, fits: int
) -> None:
    def first(budget: int) -> list[int]:
        c = MioConstraint(
            vocab,
            mode="voice",
            max_new_tokens=budget,
            timbre=False,
            min_speech_codes=lo,
            stop_ids=[vocab.im_end],
        )
        return c.allowed_ids()

    assert first(fits) == [vocab.spch_start]
    # one token less: no block fits, and a reply that could only stop is refused, naming the need
    with pytest.raises(ConfigError, match=f"{lo} code\\(s\\) in the content part need {fits} tokens"):
        first(fits - 1)


@pytest.mark.parametrize("budget", [4, 6, 9, 30])
def test_content_only_block_grows_while_its_end_and_stop_fit(vocab: MioVocab, budget: int) -> None:
    c = MioConstraint(vocab, mode="voice", max_new_tokens=budget, timbre=False)
    c.advance(vocab.spch_start)
    n = 0
    while c.is_allowed(vocab.speech_id(0, 0)):
        c.advance(vocab.speech_id(0, 0))
        n += 1
    assert n == budget - 3
    mask = c.allowed_mask()
    # the model ends the content by choosing a timbre code (or </spch> itself)
    assert mask.sum().item() == 1024 + 1
    assert mask[vocab.speech_id(1, 0)] and mask[vocab.speech_id(1, 1023)] and mask[vocab.spch_end]
    assert not mask[vocab.speech_id(2, 0)]
    c.advance(c.substitute(vocab.speech_id(1, 7)))
    assert c.allowed_ids() == sorted([vocab.im_end, vocab.eos])


def test_timbre_code_after_content_becomes_the_end_of_a_content_only_block(vocab: MioVocab) -> None:
    c = MioConstraint(vocab, mode="std", max_new_tokens=100, timbre=False)
    text, image_code = byte_ids("a")[0], vocab.image_id(5000)
    # outside a block nothing is substituted
    assert c.substitute(vocab.speech_id(1, 0)) == vocab.speech_id(1, 0)
    assert c.substitute(text) == text
    c.advance(vocab.spch_start)
    c.advance(vocab.speech_id(0, 4))
    assert c.is_allowed(vocab.speech_id(0, 5))
    for layer, code in ((1, 0), (1, 1023), (2, 0), (3, 1023)):
        assert c.substitute(vocab.speech_id(layer, code)) == vocab.spch_end
    for tid in (vocab.speech_id(0, 0), vocab.speech_id(0, 1023), text, image_code, vocab.spch_end):
        assert c.substitute(tid) == tid
    # a timbre code taken as is (not substituted) starts the timbre layers: no substitution there
    d = c.clone()
    d.advance(vocab.speech_id(1, 3))
    assert d.substitute(vocab.speech_id(1, 0)) == vocab.speech_id(1, 0)
    assert d.substitute(vocab.speech_id(2, 0)) == vocab.speech_id(2, 0)
    c.advance(c.substitute(vocab.speech_id(2, 9)))
    assert c.substitute(vocab.speech_id(1, 0)) == vocab.speech_id(1, 0)
    # with timbre (the default) nothing is ever substituted
    full = in_speech(vocab, 100, 1)
    assert full.substitute(vocab.speech_id(1, 0)) == vocab.speech_id(1, 0)


# -- the Hugging Face adapter takes every option ----------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"mode": "std"},
        {"mode": "std", "allow_text": False},
        {"mode": "std", "allow_image": False},
        {"mode": "std", "allow_speech": False},
        {"mode": "std", "stop_ids": [7]},
        {"mode": "voice", "min_speech_codes": 3},
        {"mode": "voice", "max_speech_codes": 2},
    ],
)
def test_prefix_fn_follows_every_option(vocab: MioVocab, options: dict[str, object]) -> None:
    prompt = [1, 6, 9]
    fn = prefix_allowed_tokens_fn(vocab, prompt_length=len(prompt), max_new_tokens=60, **options)  # type: ignore[arg-type]
    ref = MioConstraint(vocab, max_new_tokens=60, **options)  # type: ignore[arg-type]
    seq = list(prompt)
    steps = [vocab.spch_start, vocab.speech_id(0, 1), vocab.speech_id(0, 2), vocab.speech_id(0, 3)]
    for tid in [None, *steps]:
        if tid is not None:
            if not ref.is_allowed(tid):
                break
            ref.advance(tid)
            seq.append(tid)
        assert fn(0, torch.tensor(seq)) == ref.allowed_ids()


def test_prefix_fn_extends_a_refused_beam_with_stops_only(vocab: MioVocab) -> None:
    prompt = [1, 6, 9]
    fn = prefix_allowed_tokens_fn(vocab, prompt_length=len(prompt), mode="std", max_new_tokens=20)
    stops = sorted([vocab.im_end, vocab.eos])
    assert fn(0, torch.tensor([*prompt, vocab.bos])) == stops
    # the next step of that beam grows from the refused one: still only stops
    assert fn(0, torch.tensor([*prompt, vocab.bos, byte_ids("a")[0]])) == stops
    assert fn(0, torch.tensor([*prompt, vocab.bos, byte_ids("a")[0], byte_ids("b")[0]])) == stops


def test_a_vocabulary_of_another_size_gets_masks_of_its_own(byte_tokenizer: ByteTokenizer) -> None:
    """A model whose embedding rows outnumber the tokenizer's ids (padded) masks logits of its size."""
    from mio_agent.vocab import MioVocab

    size = len(byte_tokenizer) + 64
    padded = MioVocab.from_tokenizer(byte_tokenizer, vocab_size=size)
    a = MioConstraint(padded, mode="voice", max_new_tokens=10)
    b = MioConstraint(padded, mode="voice", max_new_tokens=20)
    assert a.allowed_ids() is b.allowed_ids()
    assert a.allowed_ids() == [padded.spch_start]
    assert a.allowed_mask().shape == (size,)
    out = a.apply(torch.zeros(size))
    assert torch.isfinite(out).nonzero().flatten().tolist() == [padded.spch_start]


def test_apply_masks_logits_on_their_own_device(vocab: MioVocab) -> None:
    """The mask moves to the logits' device (a GPU in the engine); torch's "meta" device stands in
    for one here: it refuses a mask left on the CPU just as CUDA does."""
    c = MioConstraint(vocab, mode="voice", max_new_tokens=50)
    out = c.apply(torch.zeros(vocab.vocab_size, device="meta"))
    assert out.device.type == "meta" and out.shape == (vocab.vocab_size,)
    # the CPU mask is still there for CPU logits
    assert torch.isfinite(c.apply(torch.zeros(vocab.vocab_size))).sum().item() == 1
