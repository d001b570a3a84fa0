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


def assistant(text: str) -> Turn:
    return Turn("assistant", (TextPart(text),))


def _overflowing_engine(
    lm: LoadedModel, turns: list[Turn], answered: Turn | None, over: int
) -> ConversationEngine:
    """An engine holding `turns` whose next reply (to `answered`, GREEDY) needs `over` positions more
    than its context has."""
    from mio_agent.template import TURN_SEPARATOR, system_segment, turn_segment

    tok = lm.tokenizer
    every = [*turns, answered] if answered is not None else turns
    need = (
        len(encode_text(tok, system_segment("std")))
        + sum(len(encode_text(tok, turn_segment(t))) for t in every)
        + len(encode_text(tok, GENERATION_PROMPT))
        + GREEDY.max_new_tokens  # type: ignore[operator]
        + 1
        + len(encode_text(tok, TURN_SEPARATOR))
    )
    engine = ConversationEngine(lm, mode="std", max_context=need - over, seed=2)
    for t in turns:
        engine.add_turn(t)
    return engine


def _ids_of(lm: LoadedModel, turns: list[Turn]) -> list[int]:
    from mio_agent.template import system_segment, turn_segment

    ids = encode_text(lm.tokenizer, system_segment("std"))
    for t in turns:
        ids += encode_text(lm.tokenizer, turn_segment(t))
    return ids


async def test_overflow_never_leaves_an_orphan_assistant_turn_first(lm: LoadedModel) -> None:
    """Dropping the oldest user turn would leave its reply first: that reply goes too, and nothing more."""
    gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
    u1, a1, u2, a2, u3 = (
        user("one"),
        assistant("first answer"),
        user("two"),
        assistant("second"),
        user("three"),
    )
    engine = _overflowing_engine(lm, [u1, a1, u2, a2], u3, over=1)
    try:
        # one position short: dropping u1 alone would fit, but a1 must not open the conversation
        result = await engine.reply(u3, GREEDY).wait()
        assert result.dropped_turns == 2
        assert engine.turns[:3] == (u2, a2, u3)
        assert [t.role for t in engine.turns] == ["user", "assistant", "user", "assistant"]
        expected = _ids_of(lm, [u2, a2, u3])
        assert list(engine.ids[: len(expected)]) == expected
        assert result.prompt_tokens == len(expected) + len(gen)
        engine.add_turn(user("four"))
        torch.testing.assert_close(
            await engine.peek_logits(), scratch_logits(lm, list(engine.ids) + gen), atol=1e-4, rtol=1e-4
        )
    finally:
        engine.close()


async def test_overflow_drops_just_enough_when_a_user_turn_follows(lm: LoadedModel) -> None:
    u1, u2, a2, u3 = user("one"), user("two"), assistant("second"), user("three")
    engine = _overflowing_engine(lm, [u1, u2, a2], u3, over=1)
    try:
        result = await engine.reply(u3, GREEDY).wait()
        assert result.dropped_turns == 1
        assert engine.turns[:3] == (u2, a2, u3)
        expected = _ids_of(lm, [u2, a2, u3])
        assert list(engine.ids[: len(expected)]) == expected
    finally:
        engine.close()


async def test_a_conversation_that_fits_exactly_drops_nothing(lm: LoadedModel) -> None:
    u1, a1, u2 = user("one"), assistant("first answer"), user("two")
    engine = _overflowing_engine(lm, [u1, a1], u2, over=0)
    try:
        result = await engine.reply(u2, GREEDY).wait()
        assert result.dropped_turns == 0
        assert engine.turns[:3] == (u1, a1, u2)
    finally:
        engine.close()


async def test_overflow_drops_pairs_until_it_fits_and_keeps_the_answered_assistant_turn(
    lm: LoadedModel,
) -> None:
    """Several pairs go when one is not enough; the newest turn is never dropped, even an assistant's."""
    turns = [user("one"), assistant("first answer"), user("two"), assistant("second answer")]
    tok = lm.tokenizer
    from mio_agent.template import turn_segment

    pair = sum(len(encode_text(tok, turn_segment(t))) for t in turns[:2])
    u3 = user("three")
    # exactly what the oldest pair frees: that pair goes, the next one stays
    engine = _overflowing_engine(lm, turns, u3, over=pair)
    try:
        result = await engine.reply(u3, GREEDY).wait()
        assert result.dropped_turns == 2
        assert engine.turns[:3] == (turns[2], turns[3], u3)
    finally:
        engine.close()
    engine = _overflowing_engine(lm, turns, u3, over=pair + 1)
    try:
        result = await engine.reply(u3, GREEDY).wait()
        assert result.dropped_turns == 4
        assert engine.turns[0] == u3
    finally:
        engine.close()
    # three pairs, one position more than the oldest frees: two pairs go (what both free counts)
    three = [*turns[:3], assistant("2nd"), user("2b"), assistant("third")]
    u4 = user("four")
    engine = _overflowing_engine(lm, three, u4, over=pair + 1)
    try:
        result = await engine.reply(u4, GREEDY).wait()
        assert result.dropped_turns == 4
        assert engine.turns[:3] == (three[4], three[5], u4)
    finally:
        engine.close()
    # answering (continuing) an injected assistant turn: only the user turn before it can go
    u1, a1 = user("one"), assistant("first answer")
    engine = _overflowing_engine(lm, [u1, a1], None, over=1)
    try:
        result = await engine.reply(None, GREEDY).wait()
        assert result.dropped_turns == 1
        assert engine.turns[0] == a1
        assert len(engine.turns) == 2
    finally:
        engine.close()


async def test_repeated_overflow_keeps_exactly_the_ids_of_the_turns_left(lm: LoadedModel) -> None:
    """Each overflow rebuilds the id list from the segments kept; across several, the history stays
    exactly the system prompt and the ids of the turns left, in order."""
    from mio_agent.template import TURN_SEPARATOR, system_segment, turn_segment

    tok, v = lm.tokenizer, lm.vocab
    gen, sep = encode_text(tok, GENERATION_PROMPT), encode_text(tok, TURN_SEPARATOR)
    engine = ConversationEngine(lm, mode="std", max_context=260, seed=6)
    kept: list[tuple[Turn, list[int]]] = []
    overflows = 0
    try:
        for k in range(7):
            turn = user(f"{k} " + "z" * 30)
            result = await engine.reply(turn, GREEDY).wait()
            kept.append((turn, encode_text(tok, turn_segment(turn))))
            del kept[: result.dropped_turns]
            overflows += result.dropped_turns > 0
            reply_ids = gen + list(result.kept_ids) + [v.im_end] + sep
            kept.append((Turn("assistant", result.parts), reply_ids))
            expected = encode_text(tok, system_segment("std")) + [i for _, ids in kept for i in ids]
            assert list(engine.ids) == expected
            assert engine.turns == tuple(t for t, _ in kept)
        assert overflows >= 2
    finally:
        engine.close()


async def test_overflow_error_names_the_sizes_exactly(lm: LoadedModel) -> None:
    """The reply needs 16 positions (or its whole budget, if smaller) after prompt, generation
    prompt, `<|im_end|>` and separator; one fewer is refused with the exact sizes."""
    from mio_agent.template import TURN_SEPARATOR, system_segment, turn_segment

    tok = lm.tokenizer
    turn = user("y" * 50)
    prompt = (
        len(encode_text(tok, system_segment("std")))
        + len(encode_text(tok, turn_segment(turn)))
        + len(encode_text(tok, GENERATION_PROMPT))
    )
    closing = 1 + len(encode_text(tok, TURN_SEPARATOR))
    options = ReplyOptions(sampling=SamplingParams(do_sample=False), max_new_tokens=40)
    engine = ConversationEngine(lm, mode="std", max_context=prompt + closing + 15)
    try:
        with pytest.raises(ContextOverflowError) as info:
            engine.reply(turn, options)
        assert str(info.value) == (
            f"the prompt needs {prompt} of {prompt + closing + 15} positions, leaving 15 for the reply; "
            "shorten the turn (e.g. less speech or fewer images)"
        )
    finally:
        engine.close()
    # a turn longer than the whole context: nothing at all is left
    engine = ConversationEngine(lm, mode="std", max_context=prompt - 5)
    try:
        with pytest.raises(ContextOverflowError) as info:
            engine.reply(turn, options)
        assert str(info.value).startswith(
            f"the prompt needs {prompt} of {prompt - 5} positions, leaving 0 for the reply;"
        )
    finally:
        engine.close()
    engine = ConversationEngine(lm, mode="std", max_context=prompt + closing + 16)
    try:
        result = await engine.reply(turn, options).wait()
        assert result.prompt_tokens == prompt
        assert result.decode_tokens <= 16
    finally:
        engine.close()
    # a budget below 16 needs only itself
    engine = ConversationEngine(lm, mode="std", max_context=prompt + closing + 12)
    try:
        result = await engine.reply(turn, GREEDY).wait()
        assert result.decode_tokens <= 12
    finally:
        engine.close()


def _prefix(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _segs(engine: ConversationEngine) -> list[tuple[str, int, int]]:
    return [(s.role, s.start, s.end) for s in engine._segments]


def _seg_layout(lm: LoadedModel, turns: list[Turn]) -> list[tuple[str, int, int]]:
    """The (role, start, end) of the system prompt and each turn, laid out one after the other."""
    from mio_agent.template import system_segment, turn_segment

    out = [("system", 0, len(encode_text(lm.tokenizer, system_segment("std"))))]
    for t in turns:
        n = len(encode_text(lm.tokenizer, turn_segment(t)))
        out.append((t.role, out[-1][2], out[-1][2] + n))
    return out


async def _fresh(engine: ConversationEngine, lm: LoadedModel) -> None:
    """The kept cache reads exactly what a fresh forward of the whole history reads."""
    gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
    torch.testing.assert_close(
        await engine.peek_logits(), scratch_logits(lm, list(engine.ids) + gen), atol=1e-4, rtol=1e-4
    )


async def test_replace_last_reply_rewrites_ids_turns_and_cache_exactly(lm: LoadedModel) -> None:
    u1, long, short = user("one"), assistant("a rather long first answer"), [TextPart("a short")]
    engine = ConversationEngine(lm, mode="std", seed=1)
    try:
        engine.add_turn(u1)
        engine.add_turn(long)
        await engine.prefill()
        before = list(engine.ids)
        assert engine.cached_tokens == len(before)
        engine.replace_last_reply(short)  # a list: the turn holds it as a tuple
        a = Turn("assistant", (TextPart("a short"),))
        expected = _ids_of(lm, [u1, a])
        assert list(engine.ids) == expected
        assert engine.turns == (u1, a)
        assert _segs(engine) == _seg_layout(lm, [u1, a])
        # the cache keeps exactly what the old and the new reply share
        assert engine.cached_tokens == _prefix(before, expected)
        assert engine.cached_tokens < len(expected)
        await _fresh(engine, lm)
        # the rewritten turn is still the assistant's: it can be rewritten again, longer
        engine.replace_last_reply((TextPart("a short one, then longer"),))
        b = Turn("assistant", (TextPart("a short one, then longer"),))
        assert list(engine.ids) == _ids_of(lm, [u1, b])
        assert engine.turns == (u1, b)
        assert _segs(engine) == _seg_layout(lm, [u1, b])
        assert engine.cached_tokens == _prefix(expected, _ids_of(lm, [u1, b]))
        # the segment's bounds are what an overflow drop and the next turn rely on
        engine.add_turn(user("two"))
        assert list(engine.ids) == _ids_of(lm, [u1, b, user("two")])
        await _fresh(engine, lm)
        with pytest.raises(ValueError) as info:
            engine.replace_last_reply(short)
        assert str(info.value) == "the last turn is not an assistant reply"
        assert list(engine.ids) == _ids_of(lm, [u1, b, user("two")])
        assert engine.turns == (u1, b, user("two"))
    finally:
        engine.close()


async def test_replace_last_reply_under_a_staged_turn_keeps_the_staged_turn(lm: LoadedModel) -> None:
    u1, a1, a2 = user("one"), assistant("the first answer, long"), Turn("assistant", (TextPart("cut"),))
    speech = Turn("user", (SpeechPart(tuple(range(5, 25))),))
    engine = ConversationEngine(lm, mode="std", seed=1)
    try:
        engine.add_turn(u1)
        engine.add_turn(a1)
        engine.stage_turn(speech)
        await engine.prefill()
        before = list(engine.ids)
        assert before == _ids_of(lm, [u1, a1, speech])
        engine.replace_last_reply([TextPart("cut")])
        assert engine.staged == speech
        assert engine.turns == (u1, a2)
        assert list(engine.ids) == _ids_of(lm, [u1, a2, speech])
        assert _segs(engine) == _seg_layout(lm, [u1, a2])
        assert engine.cached_tokens == _prefix(before, _ids_of(lm, [u1, a2]))
        # the staged turn sits after the new reply: committing it replaces it there
        final = Turn("user", (SpeechPart(tuple(range(5, 30))),))
        engine.add_turn(final)
        assert engine.staged is None
        assert list(engine.ids) == _ids_of(lm, [u1, a2, final])
        assert engine.turns == (u1, a2, final)
        assert _segs(engine) == _seg_layout(lm, [u1, a2, final])
        await _fresh(engine, lm)
    finally:
        engine.close()


async def test_stage_turn_replaces_and_withdraws_with_exact_ids_and_cache(lm: LoadedModel) -> None:
    u1 = user("one")
    s1 = Turn("user", (SpeechPart(tuple(range(100, 120))),))
    s2 = Turn("user", (SpeechPart(tuple(range(100, 130))),))
    other = user("cough")
    engine = ConversationEngine(lm, mode="std", seed=1)
    try:
        engine.add_turn(u1)
        await engine.prefill()
        base = _ids_of(lm, [u1])
        assert engine.cached_tokens == len(base)
        engine.stage_turn(s1)
        assert engine.staged == s1
        # the staged segment is, like every segment, exactly its turn's ids in `ids`
        staged = engine._staged
        assert staged is not None
        assert (staged.role, staged.start, staged.end) == ("user", len(base), len(_ids_of(lm, [u1, s1])))
        assert engine.turns == (u1,)
        assert list(engine.ids) == _ids_of(lm, [u1, s1])
        assert _segs(engine) == _seg_layout(lm, [u1])
        assert engine.cached_tokens == len(base)
        await engine.prefill()
        assert engine.cached_tokens == len(_ids_of(lm, [u1, s1]))
        # a grown turn replaces the staged one: the cache keeps what the two share
        engine.stage_turn(s2)
        assert engine.staged == s2
        staged = engine._staged
        assert staged is not None
        assert (staged.role, staged.start, staged.end) == ("user", len(base), len(_ids_of(lm, [u1, s2])))
        assert list(engine.ids) == _ids_of(lm, [u1, s2])
        assert engine.cached_tokens == _prefix(_ids_of(lm, [u1, s1]), _ids_of(lm, [u1, s2]))
        await engine.prefill()
        engine.stage_turn(other)
        assert list(engine.ids) == _ids_of(lm, [u1, other])
        assert engine.cached_tokens == _prefix(_ids_of(lm, [u1, s2]), _ids_of(lm, [u1, other]))
        # withdrawn: the history is what it was before, the cache cut to it
        await engine.prefill()
        engine.stage_turn(None)
        assert engine.staged is None
        assert list(engine.ids) == base
        assert engine.cached_tokens == len(base)
        assert _segs(engine) == _seg_layout(lm, [u1])
        engine.stage_turn(None)
        assert list(engine.ids) == base and engine.staged is None
        await _fresh(engine, lm)
        # staged again and committed by the reply: it becomes the answered user turn
        engine.stage_turn(s1)
        result = await engine.reply(None, GREEDY).wait()
        assert engine.staged is None
        assert engine.turns[:2] == (u1, s1)
        assert _segs(engine)[:3] == _seg_layout(lm, [u1, s1])
        gen = encode_text(lm.tokenizer, GENERATION_PROMPT)
        assert result.prompt_tokens == len(_ids_of(lm, [u1, s1])) + len(gen)
        assert result.prefill_tokens == len(_ids_of(lm, [u1, s1])) - len(base) + len(gen)
    finally:
        engine.close()


async def test_add_turn_appends_after_the_history_and_replaces_a_staged_turn(lm: LoadedModel) -> None:
    u1, a1, u2 = user("one"), assistant("answer"), user("two")
    staged = user("twofold")
    engine = ConversationEngine(lm, mode="std", seed=1)
    try:
        engine.add_turn(u1)
        assert list(engine.ids) == _ids_of(lm, [u1])
        assert engine.turns == (u1,)
        assert _segs(engine) == _seg_layout(lm, [u1])
        assert engine.cached_tokens == 0
        engine.add_turn(a1)
        await engine.prefill()
        engine.stage_turn(staged)
        await engine.prefill()
        with_staged = _ids_of(lm, [u1, a1, staged])
        assert engine.cached_tokens == len(with_staged)
        engine.add_turn(u2)
        assert engine.staged is None
        assert list(engine.ids) == _ids_of(lm, [u1, a1, u2])
        assert engine.turns == (u1, a1, u2)
        assert _segs(engine) == _seg_layout(lm, [u1, a1, u2])
        assert engine.cached_tokens == _prefix(with_staged, _ids_of(lm, [u1, a1, u2]))
        assert engine.cached_tokens > len(_ids_of(lm, [u1, a1]))
        await _fresh(engine, lm)
        # without a staged turn nothing already there is cut
        engine.add_turn(user("three"))
        assert list(engine.ids) == _ids_of(lm, [u1, a1, u2, user("three")])
        assert engine.cached_tokens == len(_ids_of(lm, [u1, a1, u2]))
    finally:
        engine.close()


async def test_history_edits_refuse_a_busy_engine_and_change_nothing(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="std", seed=1)
    try:
        engine.add_turn(user("one"))
        engine.add_turn(assistant("answer"))
        stream = engine.reply(user("two"), GREEDY)
        ids, turns = engine.ids, engine.turns
        for edit in (
            lambda: engine.add_turn(user("x")),
            lambda: engine.stage_turn(user("x")),
            lambda: engine.stage_turn(None),
            lambda: engine.replace_last_reply([TextPart("x")]),
        ):
            with pytest.raises(EngineBusyError):
                edit()
            assert engine.ids == ids and engine.turns == turns and engine.staged is None
        await stream.wait()
    finally:
        engine.close()


async def test_commit_writes_exactly_the_delivered_tokens_and_cuts_the_cache_to_them(
    lm: LoadedModel,
) -> None:
    """A reply cut after 5 of its 12 tokens: the history, the turn, the cache and the result hold
    exactly those 5 (the worker had fed 11 of them into the cache)."""
    from mio_agent.history import close_reply, parts_from_ids
    from mio_agent.template import TURN_SEPARATOR

    tok, v = lm.tokenizer, lm.vocab
    gen, sep = encode_text(tok, GENERATION_PROMPT), encode_text(tok, TURN_SEPARATOR)
    u1 = user("hello")
    prompt = _ids_of(lm, [u1])
    engine = ConversationEngine(lm, mode="std", seed=1)
    try:
        stream = engine.reply(u1, GREEDY)
        await asyncio.shield(stream._future)  # the worker is done; nothing is committed yet
        job = stream._job
        generated, fed = list(job.generated), job.fed
        assert (len(generated), fed, job.reason) == (12, 11, "length")
        assert engine.busy
        result = await stream._finalize(5)
        assert engine.busy is False
        kept = close_reply(v, generated[:5], sorted(job.stop_ids))
        assert kept == generated[:5]  # plain text: nothing to strip or close
        parts = parts_from_ids(v, kept, engine._decode_text)
        assert parts and all(isinstance(p, TextPart) for p in parts)
        reply_ids = gen + kept + [v.im_end] + sep
        assert list(engine.ids) == prompt + reply_ids
        assert engine.turns == (u1, Turn("assistant", parts))
        assert _segs(engine) == [
            *_seg_layout(lm, [u1]),
            ("assistant", len(prompt), len(prompt) + len(reply_ids)),
        ]
        # the cache held the prompt, the generation prompt and 11 fed tokens: 5 of them stay
        assert engine.cached_tokens == len(prompt) + len(gen) + 5
        assert result.reason == "cancelled"
        assert result.token_ids == tuple(generated[:5])
        assert result.kept_ids == tuple(kept)
        assert result.parts == parts
        assert result.prompt_tokens == len(prompt) + len(gen)
        assert result.prefill_tokens == len(prompt) + len(gen)
        assert result.decode_tokens == 12
        assert result.dropped_turns == 0
        assert result.error is None
        assert (result.prefill_s, result.first_token_s, result.decode_s) == (
            job.prefill_s,
            job.first_token_s,
            job.decode_s,
        )
        assert result.first_token_s is not None
        await _fresh(engine, lm)
        # a second reply: only the new turn is prefilled, and the whole reply is kept
        u2 = user("again")
        prompt2 = list(engine.ids) + encode_text(tok, turn_segment_of(u2))
        stream = engine.reply(u2, GREEDY)
        await asyncio.shield(stream._future)
        generated = list(stream._job.generated)
        result = await stream.wait()
        assert result.reason == "length"
        assert result.token_ids == result.kept_ids == tuple(generated)
        assert result.prompt_tokens == len(prompt2) + len(gen)
        assert result.prefill_tokens == len(encode_text(tok, turn_segment_of(u2))) + len(gen)
        assert list(engine.ids) == prompt2 + gen + generated + [v.im_end] + sep
        assert engine.cached_tokens == len(prompt2) + len(gen) + 11
        assert engine.turns[-1] == Turn("assistant", result.parts)
        await _fresh(engine, lm)
    finally:
        engine.close()


def turn_segment_of(turn: Turn) -> str:
    from mio_agent.template import turn_segment

    return turn_segment(turn)


async def test_commit_strips_the_stop_id_and_keeps_an_error_reason(lm: LoadedModel) -> None:
    """A reply that stops: the stop id is in `token_ids`, not in the history; an error result keeps
    its reason and message even when fewer tokens were delivered than generated."""
    from mio_agent.template import TURN_SEPARATOR

    tok, v = lm.tokenizer, lm.vocab
    gen, sep = encode_text(tok, GENERATION_PROMPT), encode_text(tok, TURN_SEPARATOR)
    greedy = ReplyOptions(sampling=SamplingParams(do_sample=False), max_new_tokens=60)
    engine = ConversationEngine(lm, mode="voice", seed=5)
    try:
        stream = engine.reply(user("say hi"), greedy)
        await asyncio.shield(stream._future)
        generated, fed = list(stream._job.generated), stream._job.fed
        assert (len(generated), fed, generated[-1]) == (7, 6, 2)
        prompt = list(engine.ids)
        result = await stream.wait()
        assert result.reason == "stop"
        assert result.token_ids == tuple(generated)
        assert result.kept_ids == tuple(generated[:-1])
        assert result.decode_tokens == 7
        assert list(engine.ids) == prompt + gen + generated[:-1] + [v.im_end] + sep
        assert engine.cached_tokens == len(prompt) + len(gen) + 6
        await _fresh(engine, lm)
        # an error that ended the reply early: "error" wins over "cancelled"
        stream = engine.reply(user("again"), GREEDY)
        await asyncio.shield(stream._future)
        stream._job.reason, stream._job.error = "error", "RuntimeError: boom"
        result = await stream._finalize(1)
        assert (result.reason, result.error) == ("error", "RuntimeError: boom")
        assert result.token_ids == tuple(stream._job.generated[:1])
    finally:
        engine.close()
