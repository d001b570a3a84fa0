"""TurnPrefill: the prefill of a spoken turn started, awaited and withdrawn by one owner, on the real engine."""

from __future__ import annotations

import pytest

from mio_agent.config import load_config
from mio_agent.conversation import SpeechPart, Turn
from mio_agent.engine import ReplyOptions
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.runtime.voice.staging import TurnPrefill


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources.load(
        load_config(None, overrides={"router.transcribe": "never", "engine.max_new_tokens": 24})
    )


def spoken(n: int) -> Turn:
    return Turn("user", (SpeechPart(tuple(range(n))),))


async def test_a_growing_turn_is_prefilled_one_prefill_at_a_time(shared: SharedResources) -> None:
    engine = shared.engine("voice")
    prefill = TurnPrefill(engine)
    try:
        assert not prefill.running and prefill.can_stage() and await prefill.settle() == 0.0
        prefill.stage(spoken(25))
        assert prefill.running and not prefill.can_stage()  # one at a time
        assert await prefill.settle() >= 0.0
        assert not prefill.running and prefill.can_stage()
        # the staged turn's ids are in the cache: nothing left to prefill for it
        assert engine.staged == spoken(25) and engine.cached_tokens == len(engine.ids)
        prefill.stage(spoken(50))
        prefill.new_utterance()  # a running prefill is still waited for
        await prefill.settle()
        assert engine.staged == spoken(50) and engine.cached_tokens == len(engine.ids)
    finally:
        engine.close()


async def test_an_utterance_that_is_no_turn_is_withdrawn(shared: SharedResources) -> None:
    engine = shared.engine("voice")
    prefill = TurnPrefill(engine)
    try:
        before = engine.ids  # the system prompt
        prefill.stage(spoken(25))
        assert len(engine.ids) > len(before)
        await prefill.quiesce()
        prefill.withdraw()
        assert engine.staged is None and engine.ids == before
        prefill.withdraw()  # nothing staged: nothing happens
        # while a reply runs the engine is busy: nothing may be staged or withdrawn under it
        stream = engine.reply(spoken(10), ReplyOptions(max_new_tokens=24))
        assert not prefill.can_stage()
        await stream.wait()
        assert prefill.can_stage()
    finally:
        engine.close()
