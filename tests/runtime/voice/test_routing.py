"""Spoken invocation in a voice session: a transcript picks a capability, routing is logged, and the
capability's results (an edited image, a spoken confirmation) reach the user."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mio_agent import hookimpl
from mio_agent.capability import Capability, CapabilityContext
from mio_agent.config import load_config
from mio_agent.events import AudioIn, AudioOut, Event, ImageIn, ImageOut, OutputEvent, TextDelta, TurnEnded
from mio_agent.plugin import PluginManager
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.runtime.voice.session import Session

SAID = "please make this photo look like winter"


class _HeardAsr(Capability):
    """An ASR plugin (a stand-in for Whisper or similar): what it hears is fixed by the test."""

    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        assert ctx.speech, "the transcriber gets the turn's speech"
        yield TextDelta(session=ctx.session, turn=ctx.turn, text=SAID)


class AsrPlugin:
    @hookimpl
    def mio_agent_capabilities(self) -> list[Capability]:
        return [
            _HeardAsr(
                name="test_asr",
                description="Transcribe speech (test plugin).",
                inputs=("speech",),
                outputs=("text",),
                mode="std",
                preset="text",
                prompt="{speech}",
            )
        ]


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    cfg = load_config(
        None,
        overrides={
            "router.transcriber": "test_asr",
            "router.transcribe": "auto",
            "engine.max_new_tokens": 300,
        },
    )
    plugins = PluginManager(autoload=False)
    plugins.register(AsrPlugin(), "test_asr")
    plugins.load(cfg)
    return SharedResources.load(cfg, plugins=plugins)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 180, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


async def test_a_spoken_request_with_a_recent_image_runs_image_editing(
    shared: SharedResources, espeak: Callable[..., Path]
) -> None:
    from tests.runtime.voice.test_session import collect, feed_paced, pcm_of

    async with Session(shared) as session:
        sub = session.bus.subscribe("t", maxsize=100_000)
        session.submit(ImageIn(session=session.id, turn=0, data=_png(), name="photo.png"))
        pcm, rate = pcm_of(espeak(SAID))
        await feed_paced(session, pcm, rate)
        await session.idle(180)
        events: list[Event] = await collect(sub)
    transcript = next(e for e in events if e.type == "user.transcript")
    assert transcript.text == SAID  # type: ignore[attr-defined]
    route = next(e for e in events if e.type == "route.decided")
    assert route.capability == "image_editing" and "matched" in route.reason  # type: ignore[attr-defined]
    started = next(e for e in events if e.type == "turn.started")
    assert started.kind == "image_editing"  # type: ignore[attr-defined]
    images = [e for e in events if isinstance(e, ImageOut)]
    print([e for e in events if e.type not in ("audio.in", "input.level", "audio.out")])
    assert len(images) == 1 and images[0].png is not None and images[0].png.startswith(b"\x89PNG")
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "Here is the edited image" in text
    # the confirmation is also spoken, because the user talks by voice
    assert any(isinstance(e, AudioOut) for e in events)
    assert [e.reason for e in events if isinstance(e, TurnEnded)] == ["completed"]


async def test_without_a_matching_trigger_the_model_replies_and_says_why(shared: SharedResources) -> None:
    from tests.runtime.voice.test_session import collect

    async with Session(shared) as session:
        sub = session.bus.subscribe("t", maxsize=100_000)
        session.submit(AudioIn(session=session.id, turn=0, pcm=bytes(3200), sample_rate=16000))
        from mio_agent.events import TextIn

        session.submit(TextIn(session=session.id, turn=0, text="how are you"))
        await session.idle(120)
        events = await collect(sub)
    route = next(e for e in events if e.type == "route.decided")
    assert route.capability == "" and "model replies" in route.reason  # type: ignore[attr-defined]
    assert next(e for e in events if e.type == "turn.started").kind == "reply"  # type: ignore[attr-defined]


async def test_a_reply_made_while_transcribing_goes_out_once_no_capability_claims_the_turn(
    shared: SharedResources, espeak: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply starts while the speech is transcribed; its events wait for the route and then
    go out in order, route first."""
    import tests.runtime.voice.test_routing as me
    from tests.runtime.voice.test_session import collect, feed_paced, pcm_of

    monkeypatch.setattr(me, "SAID", "good morning to you")
    async with Session(shared) as session:
        sub = session.bus.subscribe("t", maxsize=100_000)
        pcm, rate = pcm_of(espeak("good morning to you"))
        await feed_paced(session, pcm, rate)
        await session.idle(120)
        events: list[Event] = await collect(sub)
    kinds = [e.type for e in events if e.type not in ("audio.in", "input.level", "session.state")]
    assert kinds.index("user.transcript") < kinds.index("route.decided") < kinds.index("turn.started")
    assert kinds.count("turn.started") == 1 and kinds.count("turn.ended") == 1
    route = next(e for e in events if e.type == "route.decided")
    assert route.capability == ""  # type: ignore[attr-defined]
    first = next(e for e in events if e.type == "metrics" and e.stage == "first_audio")  # type: ignore[attr-defined]
    assert first.extra["speculative"] is True  # type: ignore[attr-defined]
    assert [e.reason for e in events if isinstance(e, TurnEnded)] == ["completed"]
