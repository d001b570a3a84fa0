"""ConversationEngine on the embedded tiny model: cache reuse, streaming, cancel, overflow."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from mio_agent.conversation import SpeechPart, TextPart, Turn
from mio_agent.engine import ConversationEngine, ReplyOptions
from mio_agent.exceptions import ContextOverflowError, EngineBusyError
from mio_agent.model.embedded import embedded_model_path
from mio_agent.model.loading import LoadedModel, load_model
from mio_agent.parser import SpeechBlock, SpeechContent, TextDelta
from mio_agent.sampling import SamplingParams
from mio_agent.template import GENERATION_PROMPT, encode_text

GREEDY = ReplyOptions(sampling=SamplingParams(do_sample=False), max_new_tokens=12)


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


async def test_turn_k_logits_with_kept_cache_equal_fresh_forward(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="std", seed=1)
    gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
    try:
        for k in range(4):
            turn = user(f"turn {k}: tell me something")
            turn_len = len(
                encode_text(lm.tokenizer, f"<|im_start|>user\nturn {k}: tell me something<|im_end|>\n")
            )
            engine.add_turn(turn)
            logits = await engine.peek_logits()
            expected = scratch_logits(lm, list(engine.ids) + gen)
            torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
            engine.add_turn(turn)
            cached = engine.cached_tokens
            result = await engine.reply(None, GREEDY).wait()
            # a new turn prefills only its own tokens (plus the generation prompt), never the history
            assert result.prefill_tokens == turn_len + len(gen)
            assert cached == result.prompt_tokens - len(gen) - turn_len
            assert result.reason in ("stop", "length")
            assert engine.cached_tokens <= len(engine.ids)
    finally:
        engine.close()


async def test_text_deltas_join_to_the_kept_reply(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="std", seed=3)
    try:
        stream = engine.reply(
            user("hello"), ReplyOptions(max_new_tokens=20, allow_speech=False, allow_image=False)
        )
        text = "".join([ev.text async for ev in stream if isinstance(ev, TextDelta)])
        result = stream.result
        assert result is not None
        kept_text = "".join(p.text for p in result.parts if isinstance(p, TextPart))
        assert text == kept_text
        assert engine.turns[-1].role == "assistant"
    finally:
        engine.close()


async def test_voice_reply_is_one_decodable_speech_block(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="voice", seed=5)
    try:
        stream = engine.reply(user("say hi"), ReplyOptions(max_new_tokens=60))
        events = [ev async for ev in stream]
        blocks = [ev for ev in events if isinstance(ev, SpeechBlock)]
        assert len(blocks) == 1
        block = blocks[0]
        assert block.timbre is not None
        assert all(len(layer) == len(block.content) for layer in block.timbre)
        assert stream.result is not None and stream.result.reason == "stop"
        assert isinstance(engine.turns[-1].parts[0], SpeechPart)
    finally:
        engine.close()


async def test_cancel_keeps_delivered_content_codes_then_continues(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="voice", seed=7)
    gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
    try:
        stream = engine.reply(
            user("a long story please"), ReplyOptions(max_new_tokens=400, min_speech_codes=40)
        )
        seen: list[int] = []
        async for ev in stream:
            if isinstance(ev, SpeechContent):
                seen.extend(ev.codes)
                if len(seen) >= 5:
                    break
        result = await stream.cancel()
        assert result.reason == "cancelled"
        # the history holds exactly the delivered content codes, closed into a block
        last = engine.turns[-1]
        assert last.parts == (SpeechPart(tuple(seen)),)
        v = lm.vocab
        tail = [v.spch_start, *[v.speech_id(0, c) for c in seen], v.spch_end, v.im_end]
        assert list(engine.ids[-len(tail) - 1 : -1]) == tail
        # the cache was cut to match: the next turn sees exactly what a fresh forward sees
        engine.add_turn(user("and then?"))
        torch.testing.assert_close(
            await engine.peek_logits(), scratch_logits(lm, list(engine.ids) + gen), atol=1e-4, rtol=1e-4
        )
        result2 = await engine.reply(None, ReplyOptions(max_new_tokens=30)).wait()
        assert result2.reason in ("stop", "length")
    finally:
        engine.close()


async def test_busy_engine_refuses_a_second_reply(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="std")
    try:
        stream = engine.reply(user("x"), GREEDY)
        with pytest.raises(EngineBusyError):
            engine.reply(user("y"), GREEDY)
        await stream.wait()
        await engine.reply(user("y"), GREEDY).wait()
    finally:
        engine.close()


async def test_overflow_drops_whole_oldest_turns_never_the_prompt(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="std", max_context=700, max_new_tokens=24, seed=2)
    gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
    try:
        dropped = 0
        for k in range(8):
            result = await engine.reply(user(f"{k} " + "x" * 60), GREEDY).wait()
            dropped += result.dropped_turns
            assert result.prompt_tokens + 24 <= 700
        assert dropped > 0
        first_user = next(t for t in engine.turns if t.role == "user")
        assert first_user.parts[0] != TextPart("0 " + "x" * 60)
        assert engine.turns[0].role == "user"
        assert engine.ids[: len(encode_text(lm.tokenizer, "<|startoftext|>"))] == (lm.vocab.bos,)[:1]
        torch.testing.assert_close(
            await engine.peek_logits(), scratch_logits(lm, list(engine.ids) + gen), atol=1e-4, rtol=1e-4
        )
        with pytest.raises(ContextOverflowError, match="positions"):
            engine.reply(user("y" * 800), GREEDY)
    finally:
        engine.close()


def test_embedded_model_path_is_reused(tmp_path: Path) -> None:
    a = embedded_model_path(seed=0, cache_dir=tmp_path)
    b = embedded_model_path(seed=0, cache_dir=tmp_path)
    assert a == b and (a / "config.json").exists()


async def test_beam_search_reply_joins_history_and_cache(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="std", seed=4)
    gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
    try:
        result = await engine.reply_complete(
            user("describe it"), ReplyOptions(preset="text", max_new_tokens=10)
        )
        assert result.reason in ("stop", "length")
        assert 0 < len(result.token_ids) <= 10
        # the reply is in the history, closed as a turn, and the next turn reads it through the cache
        assert engine.turns[-1].role == "assistant"
        assert engine.ids[-2] == lm.vocab.im_end
        engine.add_turn(user("more"))
        torch.testing.assert_close(
            await engine.peek_logits(), scratch_logits(lm, list(engine.ids) + gen), atol=1e-4, rtol=1e-4
        )
    finally:
        engine.close()


async def test_staged_speech_is_prefilled_while_growing_and_the_reply_matches_a_fresh_engine(
    lm: LoadedModel,
) -> None:
    """Staging a growing speech turn prefills it early; the final turn costs only its tail, and the
    next-token logits equal those of an engine that got the whole turn at once."""
    from mio_agent.conversation import SpeechPart, TextPart, Turn
    from mio_agent.engine import ConversationEngine

    codes = [(7 * i) % 1024 for i in range(60)]
    staged = ConversationEngine(lm, mode="voice", seed=1)
    whole = ConversationEngine(lm, mode="voice", seed=1)
    try:
        for n in (10, 25, 40):
            staged.stage_turn(Turn("user", (SpeechPart(tuple(codes[:n])),)))
            await staged.prefill()
            assert staged.cached_tokens == len(staged.ids)
        # the staged turn is not a committed turn yet
        assert staged.turns == ()
        final = Turn("user", (SpeechPart(tuple(codes)),))
        staged.add_turn(final)
        before = staged.cached_tokens
        assert before > len(staged.ids) - 40  # only the tail (20 codes + closing ids) is left
        whole.add_turn(final)
        assert staged.ids == whole.ids
        a = await staged.peek_logits()
        b = await whole.peek_logits()
        assert (a - b).abs().max().item() < 1e-4
        # withdrawing a staged turn (a false start) restores the history exactly
        ids = staged.ids
        staged.stage_turn(Turn("user", (TextPart("cough"),)))
        assert staged.ids != ids
        staged.stage_turn(None)
        assert staged.ids == ids and staged.staged is None
    finally:
        staged.close()
        whole.close()


async def test_cancel_racing_the_end_of_a_reply_commits_it_once(lm: LoadedModel) -> None:
    """A barge-in that lands just as the reply ends must not write the reply into the history twice."""
    from mio_agent.conversation import TextPart, Turn
    from mio_agent.engine import ConversationEngine, ReplyOptions

    engine = ConversationEngine(lm, mode="voice", seed=2)
    try:
        stream = engine.reply(Turn("user", (TextPart("hi"),)), ReplyOptions(max_new_tokens=8))
        # the end of the stream and a cancel both finalize while the worker is still finishing
        await asyncio.gather(stream._finalize(0), stream.cancel())
        assert [t.role for t in engine.turns] == ["user", "assistant"]
    finally:
        engine.close()
