"""The voice session end to end on the embedded model: turns, staging, barge-in, false starts, camera, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mio_agent.bus import Subscription
from mio_agent.config import load_config
from mio_agent.conversation import SpeechPart
from mio_agent.engine import ReplyOptions
from mio_agent.events import (
    AudioIn,
    AudioOut,
    Event,
    EventError,
    ImageIn,
    Metrics,
    PlaybackProgress,
    TextIn,
    TurnEnded,
    TurnStarted,
    VideoFrame,
)
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.runtime.voice.session import Session
from mio_agent.session_log import read_events
from tests.runtime.conftest import USER_TEXT

ONE_SENTENCE = "hello there, could you tell me what the weather will be like in the city later today"
LONG_REPLY = ReplyOptions(min_speech_codes=150, max_speech_codes=200, allow_text=False, allow_image=False)


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources.load(
        load_config(
            None, overrides={"engine.max_new_tokens": 900, "engine.seed": 3, "router.transcribe": "never"}
        )
    )


def pcm_of(path: Path) -> tuple[bytes, int]:
    from mio_agent.codecs.speech import load_audio

    audio, rate = load_audio(path)
    mono = audio if audio.ndim == 1 else audio[0]
    return (np.clip(mono, -1, 1) * 32767).astype("<i2").tobytes(), rate


def feed(session: Session, pcm: bytes, rate: int, *, silence_s: float = 1.0, chunk: int = 640) -> None:
    """Submit audio as a client would: chunks of any size, then silence to end the turn."""
    data = pcm + bytes(int(rate * silence_s) * 2)
    for i in range(0, len(data), chunk):
        session.submit(AudioIn(session=session.id, turn=0, pcm=data[i : i + chunk], sample_rate=rate))


async def feed_paced(
    session: Session, pcm: bytes, rate: int, *, channels: int = 1, speed: float = 4.0, silence_s: float = 1.0
) -> None:
    """Audio at `speed` times real time, as a fast client streams it (the encoder keeps up)."""
    data = pcm + bytes(int(rate * silence_s) * 2 * channels)
    chunk = rate // 50 * 2 * channels
    for i in range(0, len(data), chunk):
        await session.send(
            AudioIn(session=session.id, turn=0, pcm=data[i : i + chunk], sample_rate=rate, channels=channels)
        )
        await asyncio.sleep(0.02 / speed)


async def collect(sub: Subscription) -> list[Event]:
    out = []
    while sub.pending:
        out.append(await sub.get())
    return out


@pytest.fixture
async def hub(shared: SharedResources, tmp_path: Path) -> AsyncIterator[SessionHub]:
    h = SessionHub(shared, log_root=tmp_path / "sessions")
    yield h
    await h.aclose()


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events if e.type not in ("audio.in", "input.level", "session.state", "metrics")]


async def test_text_turn_streams_audio_and_is_logged(hub: SessionHub, tmp_path: Path) -> None:
    session = await hub.open()
    sub = session.bus.subscribe("t", maxsize=100_000)
    session.submit(TextIn(session=session.id, turn=0, text="hello there"))
    await session.idle(60)
    events = await collect(sub)
    kinds = types(events)
    assert kinds[:4] == ["text.in", "user.turn", "route.decided", "turn.started"]
    assert kinds[-1] == "turn.ended"
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert [e.reason for e in ended] == ["completed"]
    audio = [e for e in events if isinstance(e, AudioOut)]
    assert audio and [a.seq for a in audio] == list(range(len(audio)))
    stages = {e.stage for e in events if isinstance(e, Metrics)}
    assert {"prefill", "first_token", "first_audio", "turn"} <= stages
    await hub.close_session(session.id)
    logged = list(read_events(tmp_path / "sessions" / session.id))
    assert [e.type for e in logged if e.type == "turn.ended"] == ["turn.ended"]
    assert (tmp_path / "sessions" / session.id / "assistant-1.wav").exists()


async def test_voice_turn_is_prefilled_while_speaking(
    shared: SharedResources, espeak: Callable[..., Path]
) -> None:
    async with Session(shared) as session:
        sub = session.bus.subscribe("t", maxsize=100_000)
        pcm, rate = pcm_of(espeak(ONE_SENTENCE))
        # 44.1 kHz stereo: converted at the edge
        from mio_agent.codecs.speech import resample

        mono = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
        up = (resample(mono, rate, 44100) * 32767).astype("<i2")
        stereo = np.repeat(up, 2).tobytes()
        await feed_paced(session, stereo, 44100, channels=2)
        await session.idle(120)
        events = await collect(sub)
    kinds = types(events)
    assert kinds.count("user.speech.started") == 1 and kinds.count("user.speech.ended") == 1
    user_turn = next(e for e in events if e.type == "user.turn")
    assert user_turn.speech_s > 3.0  # type: ignore[attr-defined]
    speech = session.engine.turns[0].parts[-1]
    assert isinstance(speech, SpeechPart) and len(speech.content) > 150
    prefill = next(e for e in events if isinstance(e, Metrics) and e.stage == "prefill")
    # the turn's codes were prefilled while the user spoke: only the tail is left at the end
    assert prefill.extra["tokens"] < 80 < len(speech.content)
    stages = {e.stage: e for e in events if isinstance(e, Metrics)}
    assert {"vad", "encode", "first_audio"} <= set(stages)
    assert 0.55 <= stages["vad"].seconds <= 0.7  # end_silence_ms = 600
    assert stages["first_audio"].extra["overhead_s"] >= 0


async def test_barge_in_clears_playback_and_keeps_only_what_was_heard(
    shared: SharedResources, espeak: Callable[..., Path]
) -> None:
    async with Session(shared, reply_options=LONG_REPLY) as session:
        sub = session.bus.subscribe("t", maxsize=100_000)
        session.submit(TextIn(session=session.id, turn=0, text="tell me a long story"))
        produced = 0.0
        while produced < 1000:
            ev = await asyncio.wait_for(sub.get(), 60)
            if isinstance(ev, AudioOut):
                produced += ev.duration_s * 1000
        # the client says it played 400 ms of turn 1, then the user speaks over the reply
        session.submit(PlaybackProgress(session=session.id, turn=1, played_ms=400.0))
        pcm, rate = pcm_of(espeak(USER_TEXT))
        feed(session, pcm, rate)
        await session.idle(120)
        events = await collect(sub)
    kinds = types(events)
    assert "playback.clear" in kinds
    ended = {e.turn: e.reason for e in events if isinstance(e, TurnEnded)}
    assert ended[1] == "interrupted"
    # no audio of turn 1 after the clear
    clear_at = kinds.index("playback.clear")
    assert not any(e.type == "audio.out" and e.turn == 1 for e in _after(events, clear_at))
    turns = session.engine.turns
    reply = turns[1]
    assert reply.role == "assistant"
    heard = [p for p in reply.parts if isinstance(p, SpeechPart)]
    # 400 ms heard = 20 content codes, timbre dropped
    assert sum(len(p.content) for p in heard) == 20 and all(p.timbre is None for p in heard)
    assert turns[2].role == "user" and isinstance(turns[2].parts[-1], SpeechPart)
    assert ended[2] in ("completed", "length")


def _after(events: list[Event], index: int) -> list[Event]:
    visible = [e for e in events if e.type not in ("audio.in", "input.level", "session.state", "metrics")]
    return visible[index + 1 :]


async def test_a_short_noise_during_a_reply_does_not_interrupt(shared: SharedResources) -> None:
    async with Session(shared, reply_options=LONG_REPLY) as session:
        sub = session.bus.subscribe("t", maxsize=100_000)
        session.submit(TextIn(session=session.id, turn=0, text="go on"))
        while True:
            ev = await asyncio.wait_for(sub.get(), 60)
            if isinstance(ev, AudioOut):
                break
        rng = np.random.default_rng(0)
        click = (rng.standard_normal(16000 * 12 // 100) * 8000).astype("<i2").tobytes()  # 120 ms
        feed(session, click, 16000, silence_s=0.5)
        await session.idle(120)
        events = await collect(sub)
    assert "playback.clear" not in types(events)
    assert [e.reason for e in events if isinstance(e, TurnEnded)] == ["completed"]


async def test_camera_keyframes_join_the_voice_turn(
    shared: SharedResources, espeak: Callable[..., Path], tmp_path: Path
) -> None:
    async with Session(shared) as session:
        sub = session.bus.subscribe("t", maxsize=100_000)
        for i, color in enumerate([(200, 30, 30), (30, 200, 30)]):
            frame = np.zeros((48, 64, 3), np.uint8)
            frame[:] = color
            session.submit(
                VideoFrame(session=session.id, turn=0, t=float(i), width=64, height=48, rgb=frame.tobytes())
            )
        await session.drained()
        await session.images.settle()
        assert session.images.keyframes_encoded >= 1
        pcm, rate = pcm_of(espeak("what do you see"))
        feed(session, pcm, rate)
        await session.idle(120)
        events = await collect(sub)
    user_turn = next(e for e in events if e.type == "user.turn")
    assert user_turn.images == 1 and len(user_turn.keyframes) == 1  # type: ignore[attr-defined]
    assert any(isinstance(e, TurnStarted) for e in events)


async def test_bad_input_is_an_error_event_and_the_session_goes_on(shared: SharedResources) -> None:
    async with Session(shared) as session:
        sub = session.bus.subscribe("t", maxsize=100_000)
        with pytest.raises(EventError, match=r"does not take 'turn\.started'"):
            session.submit(TurnStarted(session=session.id, turn=0, mode="voice"))
        session.submit(ImageIn(session=session.id, turn=0, data=b"not an image", name="x.png"))
        session.submit(TextIn(session=session.id, turn=0, text="still there?"))
        await session.idle(60)
        events = await collect(sub)
    errors = [e for e in events if e.type == "error"]
    assert any("x.png" in e.message for e in errors)  # type: ignore[attr-defined]
    assert [e.reason for e in events if isinstance(e, TurnEnded)] == ["completed"]


async def test_a_resumed_session_remembers_its_conversation(shared: SharedResources, tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    hub = SessionHub(shared, log_root=root)
    session = await hub.open()
    for text in ("my name is Ada", "what is my name"):
        session.submit(TextIn(session=session.id, turn=0, text=text))
        await session.idle(60)
    before = session.engine.turns
    assert [t.role for t in before] == ["user", "assistant", "user", "assistant"]
    sid = session.id
    while session.playback.playing():  # closing while the reply still plays would cut it to what was heard
        await asyncio.sleep(0.05)
    await hub.aclose()

    hub2 = SessionHub(shared, log_root=root)
    again = await hub2.open(sid)
    assert again.engine.turns == before  # the model's memory is back, parts for parts
    assert again.turn == 3  # numbering goes on after the last turn of the log
    sub = again.bus.subscribe("t", maxsize=10_000)
    again.submit(TextIn(session=sid, turn=0, text="and now?"))
    await again.idle(60)
    events = await collect(sub)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert [(e.turn, e.reason) for e in ended] == [(3, "completed")]
    assert len(again.engine.turns) == 6
    await hub2.aclose()


async def test_exchanges_are_stored_off_the_event_loop(
    shared: SharedResources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store commits (SQLite, synchronous=FULL) run on the log's own thread, never the loop's."""
    import threading

    from mio_agent.session_log import SessionLog

    threads: list[str] = []
    original = SessionLog.record_turn

    def record(self: SessionLog, *args: Any, **kwargs: Any) -> None:
        threads.append(threading.current_thread().name)
        original(self, *args, **kwargs)

    monkeypatch.setattr(SessionLog, "record_turn", record)
    hub = SessionHub(shared, log_root=tmp_path / "sessions")
    session = await hub.open()
    session.submit(TextIn(session=session.id, turn=0, text="hello"))
    await session.idle(60)
    await hub.aclose()  # closing waits for the log's thread, so every record has run
    assert threads and all(name.startswith("log-") for name in threads), threads


async def test_a_session_whose_log_cannot_close_does_not_keep_the_others_open(
    shared: SharedResources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session whose log cannot close (a full disk) is still closed, and so are the others."""
    from mio_agent.session_log import SessionLog

    hub = SessionHub(shared, log_root=tmp_path / "sessions")
    first, second = await hub.open(), await hub.open()
    original = SessionLog.close

    def close(self: SessionLog, status: str = "closed") -> None:
        if self.session_id == first.id:
            raise OSError("no space left on device")
        original(self, status)

    monkeypatch.setattr(SessionLog, "close", close)
    await hub.aclose()
    assert first.state == "closed" and second.state == "closed" and hub.sessions == ()
