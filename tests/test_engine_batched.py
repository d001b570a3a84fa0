"""Conversations decoded as rows of one batched step (`engine.batch_sessions`), against each decoding alone."""

from __future__ import annotations

import asyncio

import pytest

from mio_agent.config import load_config
from mio_agent.conversation import TextPart, Turn
from mio_agent.engine import ConversationEngine, ReplyOptions
from mio_agent.exceptions import ConfigError
from mio_agent.model.batch_scheduler import BatchFull
from mio_agent.model.embedded import embedded_model_path
from mio_agent.model.fast_path import FastPath, prepare_for_config
from mio_agent.model.loading import LoadedModel, load_model
from mio_agent.sampling import SamplingParams

GREEDY = SamplingParams(do_sample=False)
ROWS = 3


def _load(tmp: pytest.TempPathFactory) -> LoadedModel:
    path = embedded_model_path(seed=0, cache_dir=tmp.mktemp("cache"))
    return load_model(path, device="cpu", dtype="float32", progress=False)


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    lm = _load(tmp_path_factory)
    cfg = load_config(
        None,
        overrides={"engine.batch_sessions": ROWS, "engine.max_context": 512, "engine.max_new_tokens": 64},
    )
    info = prepare_for_config(lm, cfg.engine)
    assert info is not None and "batched decode of up to 3 conversations" in info.describe()
    return lm


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return _load(tmp_path_factory)


def user(text: str) -> Turn:
    return Turn("user", (TextPart(text),))


async def test_concurrent_conversations_reply_as_each_would_alone(
    batched: LoadedModel, alone: LoadedModel
) -> None:
    fast: FastPath = batched.fast
    assert fast.scheduler is not None
    prompts = ["hello there", "a much longer question about the weather tomorrow", "hi"]
    opts = ReplyOptions(sampling=GREEDY, max_new_tokens=12, allow_speech=False, allow_image=False)
    rows = [ConversationEngine(batched, mode="std", max_context=512) for _ in prompts]
    refs = [ConversationEngine(alone, mode="std", max_context=512, backend="static") for _ in prompts]
    assert all(e.backend == "static" for e in rows) and fast.scheduler.free_rows == 0
    decoded_before, generated = fast.scheduler.rows_decoded, 0
    try:
        for k in range(2):  # two turns: the rows keep their caches across turns
            got = await asyncio.gather(
                *(e.reply(user(f"{p} {k}"), opts).wait() for e, p in zip(rows, prompts, strict=True))
            )
            want = [await e.reply(user(f"{p} {k}"), opts).wait() for e, p in zip(refs, prompts, strict=True)]
            assert [r.token_ids for r in got] == [r.token_ids for r in want]
            generated += sum(len(r.token_ids) for r in got)
            assert [e.ids for e in rows] == [e.ids for e in refs]
        # every decoded id went through the scheduler (that steps are shared is pinned down
        # deterministically in tests/model/test_batch_scheduler.py)
        assert fast.scheduler.rows_decoded - decoded_before >= generated - 2 * len(prompts)
    finally:
        for e in rows + refs:
            e.close()
    assert fast.scheduler.free_rows == ROWS


def test_a_conversation_beyond_the_rows_is_refused_when_it_opens(batched: LoadedModel) -> None:
    rows = [ConversationEngine(batched, mode="std", max_context=512) for _ in range(ROWS)]
    try:
        with pytest.raises(BatchFull) as info:
            ConversationEngine(batched, mode="std", max_context=512)
        assert "engine.batch_sessions" in str(info.value) and "3" in str(info.value)
        rows.pop().close()
        rows.append(ConversationEngine(batched, mode="std", max_context=512))  # its row is free again
    finally:
        for e in rows:
            e.close()


def test_batching_needs_the_static_backend() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides={"engine.batch_sessions": 2, "engine.backend": "dynamic"})
    assert "engine.batch_sessions" in str(info.value) and "engine.backend" in str(info.value)


async def test_crops_and_cancels_keep_each_row_equal_to_its_conversation_alone(
    batched: LoadedModel, alone: LoadedModel
) -> None:
    import torch

    row = ConversationEngine(batched, mode="std", max_context=512)
    other = ConversationEngine(batched, mode="std", max_context=512)  # decoding beside it
    ref = ConversationEngine(alone, mode="std", max_context=512, backend="static")
    opts = ReplyOptions(sampling=GREEDY, max_new_tokens=12, allow_speech=False, allow_image=False)
    try:
        for engine in (row, ref):
            await engine.reply(user("first"), opts).wait()
        # a cancel after the first delivered events: both keep exactly what was delivered
        busy = other.reply(user("talk while the row is cut"), opts)
        for engine in (row, ref):
            stream = engine.reply(user("and then"), ReplyOptions(sampling=GREEDY, max_new_tokens=30))
            async for _ in stream:
                break
            await stream.cancel()
        await busy.wait()
        assert row.ids == ref.ids
        # a crop: the last reply cut to what was heard
        for engine in (row, ref):
            engine.replace_last_reply((TextPart("ok"),))
        assert row.ids == ref.ids
        torch.testing.assert_close(await row.peek_logits(), await ref.peek_logits(), atol=1e-4, rtol=1e-4)
        got = await row.reply(user("after the cut"), opts).wait()
        want = await ref.reply(user("after the cut"), opts).wait()
        assert got.token_ids == want.token_ids
    finally:
        for engine in (row, other, ref):
            engine.close()
