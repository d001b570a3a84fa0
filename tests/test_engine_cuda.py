"""The CUDA decode path: the captured graph gives the eager path's logits and replies (needs a GPU)."""

from __future__ import annotations

import pytest
import torch

from mio_agent.conversation import SpeechPart, TextPart, Turn
from mio_agent.engine import ConversationEngine, ReplyOptions
from mio_agent.model.fast_path import prepare_fast_path
from mio_agent.model.loading import LoadedModel
from mio_agent.model.shaped import shaped_model
from mio_agent.parser import SpeechBlock
from mio_agent.sampling import SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")

GREEDY = SamplingParams(do_sample=False)


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    model = shaped_model("bench", device="cuda", dtype="float32")
    info = prepare_fast_path(model, positions=model.max_positions, cuda_graphs=True)
    assert info.cuda_graphs, info.describe()
    return model


def user(text: str) -> Turn:
    return Turn("user", (TextPart(text),))


async def test_graph_replies_equal_eager_replies_across_turns_and_crops(lm: LoadedModel) -> None:
    static = ConversationEngine(lm, mode="std", backend="static")
    eager = ConversationEngine(lm, mode="std", backend="dynamic")
    opts = ReplyOptions(sampling=GREEDY, max_new_tokens=24, allow_speech=False, allow_image=False)
    try:
        for k in range(3):
            a = await static.reply(user(f"turn {k}"), opts).wait()
            b = await eager.reply(user(f"turn {k}"), opts).wait()
            assert a.token_ids == b.token_ids
            torch.testing.assert_close(
                await static.peek_logits(), await eager.peek_logits(), atol=2e-3, rtol=2e-3
            )
        for engine in (static, eager):
            engine.replace_last_reply((TextPart("fine"),))
        torch.testing.assert_close(
            await static.peek_logits(), await eager.peek_logits(), atol=2e-3, rtol=2e-3
        )
    finally:
        static.close()
        eager.close()


async def test_graph_voice_reply_is_decodable_and_cancel_keeps_what_was_delivered(lm: LoadedModel) -> None:
    engine = ConversationEngine(lm, mode="voice", seed=1, backend="static")
    try:
        stream = engine.reply(Turn("user", (SpeechPart(tuple(range(40))),)), ReplyOptions(max_new_tokens=200))
        blocks = [ev async for ev in stream if isinstance(ev, SpeechBlock)]
        assert len(blocks) == 1 and blocks[0].timbre is not None
        stream = engine.reply(user("again"), ReplyOptions(max_new_tokens=200))
        async for _ in stream:
            break
        result = await stream.cancel()
        assert result.reason == "cancelled" and engine.cached_tokens <= len(engine.ids)
    finally:
        engine.close()


async def test_bf16_graph_decode_runs_at_mio_7b_layout(lm: LoadedModel) -> None:
    half = shaped_model("bench", device="cuda", dtype="bfloat16")
    info = prepare_fast_path(half, positions=1024, cuda_graphs=True)
    assert info.cuda_graphs
    engine = ConversationEngine(half, mode="voice", backend="static", max_context=1024, seed=0)
    try:
        result = await engine.reply(user("hi"), ReplyOptions(max_new_tokens=100)).wait()
        assert result.reason in ("stop", "length") and result.decode_tokens > 0
    finally:
        engine.close()


async def test_batched_graph_replies_equal_each_conversation_alone(lm: LoadedModel) -> None:
    import asyncio

    batched = shaped_model("bench", device="cuda", dtype="float32")
    info = prepare_fast_path(batched, positions=512, cuda_graphs=True, batch_sessions=3)
    scheduler = batched.fast.scheduler
    assert scheduler is not None and scheduler.captured, info.describe()
    opts = ReplyOptions(sampling=GREEDY, max_new_tokens=24, allow_speech=False, allow_image=False)
    prompts = ["hello", "a longer question about the sea", "hi"]
    rows = [ConversationEngine(batched, mode="std", max_context=512) for _ in prompts]
    alone = [ConversationEngine(lm, mode="std", backend="static") for _ in prompts]
    try:
        for k in range(2):
            got = await asyncio.gather(
                *(e.reply(user(f"{p} {k}"), opts).wait() for e, p in zip(rows, prompts, strict=True))
            )
            want = [await e.reply(user(f"{p} {k}"), opts).wait() for e, p in zip(alone, prompts, strict=True)]
            assert [r.token_ids for r in got] == [r.token_ids for r in want]
    finally:
        for e in rows + alone:
            e.close()
        scheduler.close()
