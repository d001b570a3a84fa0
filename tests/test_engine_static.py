"""The static-cache engine path on the CPU, against the eager (Hugging Face cache) path of the same model.

The logic the GPU path runs (positions, crops, cancels, staged turns, overflow, the decode loop
that queues a step before reading its id) is the same code on every device; only the capture
of the step as a CUDA graph is CUDA's own (tests/test_engine_cuda.py).
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from mio_agent.conversation import SpeechPart, TextPart, Turn
from mio_agent.engine import ConversationEngine, ReplyOptions
from mio_agent.exceptions import ContextOverflowError
from mio_agent.model.embedded import embedded_model_path
from mio_agent.model.fast_path import fast_path_for
from mio_agent.model.loading import LoadedModel, load_model
from mio_agent.model.static_llama import StaticCache, StaticLlama
from mio_agent.parser import SpeechBlock
from mio_agent.sampling import SamplingParams
from mio_agent.template import GENERATION_PROMPT, encode_text
from mio_agent.vocab import CODEBOOK_SIZE

GREEDY = SamplingParams(do_sample=False)
TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = embedded_model_path(seed=0, cache_dir=tmp_path_factory.mktemp("cache"))
    return load_model(path, device="cpu", dtype="float32", progress=False)


def scratch_logits(lm: LoadedModel, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([ids]))
    return out.logits[0, -1].float()


def user(text: str) -> Turn:
    return Turn("user", (TextPart(text),))


def pair(lm: LoadedModel, **kw: object) -> tuple[ConversationEngine, ConversationEngine]:
    static = ConversationEngine(lm, backend="static", **kw)  # type: ignore[arg-type]
    eager = ConversationEngine(lm, backend="dynamic", **kw)  # type: ignore[arg-type]
    assert static.backend == "static" and eager.backend == "dynamic"
    return static, eager


def test_static_forward_equals_the_model_position_by_position(lm: LoadedModel) -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, lm.vocab.vocab_size, (50,))
    with torch.inference_mode():
        full = lm.model(input_ids=ids[None]).logits[0].float()
        static = StaticLlama(lm.model)
        cache = StaticCache(static, 64)
        # a prefill in two chunks, then single steps over the whole cache
        static.forward(ids[:20], torch.arange(20), cache, kv_len=20)
        got = static.forward(ids[20:40], torch.arange(20, 40), cache, kv_len=40)
        torch.testing.assert_close(got, full[39], **TOL)
        for i in range(40, 50):
            step = static.step(ids[i : i + 1], torch.tensor([i]), cache)
            torch.testing.assert_close(step, full[i], **TOL)
        # the HF modules read views of the fused weights: the model itself is unchanged
        torch.testing.assert_close(lm.model(input_ids=ids[None]).logits[0].float(), full)


async def test_greedy_replies_and_logits_match_across_turns_crops_and_cancels(lm: LoadedModel) -> None:
    static, eager = pair(lm, mode="std", seed=1)
    opts = ReplyOptions(sampling=GREEDY, max_new_tokens=10, allow_speech=False, allow_image=False)
    try:
        for k in range(3):
            turn = user(f"turn {k}: what do you know?")
            a = await static.reply(turn, opts).wait()
            b = await eager.reply(turn, opts).wait()
            assert a.token_ids == b.token_ids and a.reason == b.reason
            # the static loop has also fed the reply's last id, so its cache may hold one more
            assert static.ids == eager.ids and eager.cached_tokens <= static.cached_tokens <= len(static.ids)
            torch.testing.assert_close(await static.peek_logits(), await eager.peek_logits(), **TOL)
        # a crop: the last reply rewritten (as after a barge-in)
        for engine in (static, eager):
            engine.replace_last_reply((TextPart("ok"),))
        assert static.cached_tokens <= len(static.ids)
        torch.testing.assert_close(await static.peek_logits(), await eager.peek_logits(), **TOL)
        # a cancel after the first delivered events: both keep what was delivered
        for engine in (static, eager):
            stream = engine.reply(user("and more"), ReplyOptions(sampling=GREEDY, max_new_tokens=30))
            async for _ in stream:
                break
            await stream.cancel()
        assert static.ids == eager.ids
        gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
        fresh = scratch_logits(lm, list(static.ids) + gen)
        torch.testing.assert_close(await static.peek_logits(), fresh, **TOL)
    finally:
        static.close()
        eager.close()


async def test_staged_speech_prefill_and_its_changes(lm: LoadedModel) -> None:
    static, eager = pair(lm, mode="voice", seed=2)
    try:
        codes: tuple[int, ...] = ()
        for grow in (7, 9, 4):
            codes += tuple(range(len(codes), len(codes) + grow))
            for engine in (static, eager):
                engine.stage_turn(Turn("user", (SpeechPart(codes),)))
                await engine.prefill()
            assert static.cached_tokens == eager.cached_tokens == len(static.ids)
        # the staged turn changes under the prefill (the encoder revised a code): the common prefix stays
        changed = (*codes[:-3], 999, *codes[-2:])
        for engine in (static, eager):
            engine.stage_turn(Turn("user", (SpeechPart(changed),)))
        assert static.cached_tokens == eager.cached_tokens < len(static.ids)
        torch.testing.assert_close(await static.peek_logits(), await eager.peek_logits(), **TOL)
        opts = ReplyOptions(sampling=GREEDY, max_new_tokens=40)
        a = await static.reply(None, opts).wait()
        b = await eager.reply(None, opts).wait()
        assert a.token_ids == b.token_ids and static.ids == eager.ids
    finally:
        static.close()
        eager.close()


async def test_overflow_drops_whole_turns_and_rebuilds_the_same_cache(lm: LoadedModel) -> None:
    static, eager = pair(lm, mode="std", seed=3, max_context=400, max_new_tokens=12)
    opts = ReplyOptions(sampling=GREEDY, max_new_tokens=12, allow_speech=False, allow_image=False)
    dropped = 0
    try:
        for k in range(8):
            turn = user(f"message number {k} with some words in it")
            a = await static.reply(turn, opts).wait()
            b = await eager.reply(turn, opts).wait()
            assert a.token_ids == b.token_ids and a.dropped_turns == b.dropped_turns
            dropped += a.dropped_turns
            assert static.ids == eager.ids and len(static.ids) <= 400
        assert dropped > 0
        gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
        torch.testing.assert_close(
            await static.peek_logits(), scratch_logits(lm, list(static.ids) + gen), **TOL
        )
        with pytest.raises(ContextOverflowError):
            static.reply(user("x" * 400), opts)
    finally:
        static.close()
        eager.close()


async def test_sampled_replies_follow_the_seed(lm: LoadedModel) -> None:
    opts = ReplyOptions(max_new_tokens=24)
    runs = []
    for _ in range(2):
        engine = ConversationEngine(lm, mode="voice", seed=11, backend="static")
        try:
            runs.append((await engine.reply(user("say something"), opts).wait()).token_ids)
        finally:
            engine.close()
    assert runs[0] == runs[1] and runs[0]


async def test_voice_timbre_skip_ends_speech_after_its_content(lm: LoadedModel) -> None:
    for backend in ("static", "dynamic"):
        engine = ConversationEngine(lm, mode="voice", seed=5, backend=backend, voice_timbre="skip")
        try:
            stream = engine.reply(user("speak"), ReplyOptions(max_new_tokens=300))
            blocks = [ev async for ev in stream if isinstance(ev, SpeechBlock)]
            result = stream.result
            assert result is not None and result.reason == "stop"
            (block,) = blocks
            assert block.timbre is None and len(block.content) >= 1
            (part,) = engine.turns[-1].parts
            assert isinstance(part, SpeechPart) and part.timbre is None
            # no timbre code was generated: the block closed where the model chose to end its content
            codes = [
                lm.vocab.kind(t)[1] for t in result.token_ids if lm.vocab.kind(t)[0].name == "SPEECH_CODE"
            ]
            assert codes and all(c < CODEBOOK_SIZE for c in codes)
            assert result.token_ids[-2] == lm.vocab.spch_end
        finally:
            engine.close()


async def test_full_timbre_is_the_default_and_is_four_parts(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="voice", seed=5, backend="static")
    try:
        stream = engine.reply(user("speak"), ReplyOptions(max_new_tokens=300))
        blocks = [ev async for ev in stream if isinstance(ev, SpeechBlock)]
        assert len(blocks) == 1 and blocks[0].timbre is not None
        assert all(len(t) == len(blocks[0].content) for t in blocks[0].timbre)
    finally:
        engine.close()


async def test_slots_are_pooled_between_conversations(lm: LoadedModel) -> None:
    fast = fast_path_for(lm)
    first = ConversationEngine(lm, mode="std", backend="static", max_context=300)
    await first.reply(user("hi"), ReplyOptions(sampling=GREEDY, max_new_tokens=3)).wait()
    slot = first._backend.slot  # type: ignore[attr-defined]
    first.close()
    second = ConversationEngine(lm, mode="std", backend="static", max_context=300)
    try:
        await second.reply(user("hi"), ReplyOptions(sampling=GREEDY, max_new_tokens=3)).wait()
        assert second._backend.slot is slot  # type: ignore[attr-defined]
        assert fast.info.device == "cpu" and not fast.info.cuda_graphs
    finally:
        second.close()


async def test_concurrent_conversations_do_not_share_a_slot(lm: LoadedModel) -> None:
    engines = [ConversationEngine(lm, mode="std", seed=i, backend="static") for i in range(3)]
    opts = ReplyOptions(sampling=GREEDY, max_new_tokens=8, allow_speech=False, allow_image=False)
    try:
        results = await asyncio.gather(
            *(e.reply(user(f"hello {i}"), opts).wait() for i, e in enumerate(engines))
        )
        slots = {id(e._backend.slot) for e in engines}  # type: ignore[attr-defined]
        assert len(slots) == 3
        eager = ConversationEngine(lm, mode="std", backend="dynamic")
        try:
            ref = await eager.reply(user("hello 1"), opts).wait()
        finally:
            eager.close()
        assert results[1].token_ids == ref.token_ids
    finally:
        for e in engines:
            e.close()


def test_unknown_backend_is_refused(lm: LoadedModel) -> None:
    with pytest.raises(ValueError, match=r"engine\.backend"):
        ConversationEngine(lm, backend="turbo")


async def test_bench_engine_fast_reports_its_figures(lm: LoadedModel) -> None:
    from mio_agent.benchmarks.engine_fast import bench_engine_fast

    figures = await bench_engine_fast(lm, backend="static", text_tokens=8, voice_frames=4, repeats=1)
    assert figures["backend"] == "static" and not figures["cuda_graphs"]
    for key in ("engine_tok_s", "voice_tok_s", "voice_tok_s_skip", "hf_static_tok_s", "read_bandwidth_gb_s"):
        assert figures[key] > 0, key
    # the skip run speaks the same frames with a quarter of the tokens
    assert figures["voice_rtf"] > 0 and figures["voice_rtf_skip"] > 0
    assert figures["roofline_fraction"] > 0 and figures["weight_gb"] > 0
