"""The listener as a unit: real VAD and streaming speech encoder on constructed 20 ms frames (digital
silence and a steady tone the WebRTC detector calls speech), so every frame count is exact."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeAlias

import numpy as np
import pytest

from mio_agent.config import AudioConfig, load_config
from mio_agent.conversation import ImagePart, SpeechPart, Turn
from mio_agent.runtime.audio import frames_of
from mio_agent.runtime.audio.base import AudioFrame
from mio_agent.runtime.voice import listen as listen_module
from mio_agent.runtime.voice.listen import STAGE_CODES, Listener, Utterance
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.runtime.voice.vad import SileroDetector, WebRtcDetector

RATE = 16000
FRAME = 320  # samples in 20 ms, one speech code

# not the defaults (300, 200, 600, 2), so each setting is seen to reach the segmenter: 10 frames of
# pre-roll, 8 voiced frames to confirm, 20 silent frames to end; the segmenter's own hang-over
# (150 ms) keeps 7 of those
CFG = AudioConfig(
    vad_aggressiveness=1, pre_roll_ms=200, min_speech_ms=160, end_silence_ms=400, max_speech_s=30.0
)

Happening: TypeAlias = Literal["started"] | Utterance


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources.load(load_config(None, overrides={"router.transcribe": "never"}))


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    # one thread, as the session's encode pool: the encoder's pushes run in order
    with ThreadPoolExecutor(1, thread_name_prefix="test-encode") as p:
        yield p


class _Clock:
    """The `time` module as listen.py sees it: a fixed monotonic clock, a perf counter that steps 0.25 s."""

    def __init__(self) -> None:
        self.perf = 10.0

    def monotonic(self) -> float:
        return 500.0

    def perf_counter(self) -> float:
        self.perf += 0.25
        return self.perf


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(listen_module, "time", c)
    return c


def tone(frames: int, freq: float = 250.0) -> np.ndarray:
    """A 0.3 amplitude tone: WebRTC VAD at aggressiveness 0 or 1 calls every frame of it speech."""
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(frames * FRAME) / RATE)).astype(np.float32)


def silence(frames: int) -> np.ndarray:
    return np.zeros(frames * FRAME, np.float32)


def signal(*parts: np.ndarray, first_index: int = 0) -> list[AudioFrame]:
    return frames_of(np.concatenate(parts), t0=0.0, first_index=first_index)


async def settle(pool: ThreadPoolExecutor) -> None:
    """Wait until every encode submitted so far ran and its codes reached the listener (the pool has one
    thread, and a job's result reaches the loop after those of the jobs before it)."""
    await asyncio.get_running_loop().run_in_executor(pool, lambda: None)


async def feed(
    listener: Listener, frames: list[AudioFrame], pool: ThreadPoolExecutor, *, settled: bool = True
) -> list[tuple[int, Happening]]:
    """Push frames in order; `settled`: let each frame's codes arrive before the next frame."""
    out: list[tuple[int, Happening]] = []
    for frame in frames:
        out += [(frame.index, h) for h in await listener.push(frame)]
        if settled:
            await settle(pool)
    return out


def kinds(happened: list[tuple[int, Happening]]) -> list[tuple[int, str]]:
    return [(i, "started" if h == "started" else "utterance") for i, h in happened]


def oracle_codes(shared: SharedResources, frames: list[AudioFrame]) -> tuple[int, ...]:
    """The content codes of `frames` from a streaming encoder of their own, pushed and finished at once."""
    enc = shared.speech.stream_encoder()
    codes: list[int] = []
    for f in frames:
        codes += enc.push(f.samples, RATE)
    return tuple(codes + enc.finish())


def speech_of(turn: Turn) -> tuple[int, ...]:
    part = turn.parts[-1]
    assert isinstance(part, SpeechPart) and part.timbre is None
    return part.content


def image(code: int) -> ImagePart:
    return ImagePart(tuple(range(code, code + 32)))


# 20 frames of silence, 40 of tone (frames 20-59), 30 of silence: the segmenter confirms the speech at
# frame 27 (8th voiced) with frames 10-27 (pre-roll first) and ends it at frame 79 (20th silent)
UTTERANCE = (silence(20), tone(40), silence(30))


async def test_one_utterance_exactly(shared: SharedResources, pool: ThreadPoolExecutor) -> None:
    listener = Listener(shared, CFG, pool)
    frames = signal(*UTTERANCE)
    assert not listener.in_speech
    happened = await feed(listener, frames, pool)
    assert kinds(happened) == [(27, "started"), (79, "utterance")]
    assert not listener.in_speech
    u = happened[1][1]
    assert isinstance(u, Utterance)
    # encoded: frames 10 to 79, one code each
    codes = speech_of(u.turn)
    assert len(codes) == 70
    assert codes == oracle_codes(shared, frames[10:80])
    assert u.turn == Turn("user", (SpeechPart(codes),))
    # kept audio: pre-roll (10) + tone (40) + hang-over (7) frames
    assert u.duration_s == pytest.approx(57 * 0.02, abs=1e-9)
    # end of the last tone frame (1.2 s) to end of the frame that ended it (1.6 s)
    assert u.vad_s == pytest.approx(0.4, abs=1e-9)
    assert u.ended_at == 500.0
    assert u.encode_s == 0.25
    assert u.keyframes == ()
    assert u.interrupted_agent is False


async def test_the_codes_are_the_same_when_the_encoder_lags(
    shared: SharedResources, pool: ThreadPoolExecutor
) -> None:
    """Frames pushed with no wait: every encode is still pending at the end, which waits for them."""
    listener = Listener(shared, CFG, pool)
    frames = signal(*UTTERANCE)
    happened = await feed(listener, frames, pool, settled=False)
    assert [i for i, _ in happened] == [27, 79]
    u = happened[1][1]
    assert isinstance(u, Utterance)
    assert speech_of(u.turn) == oracle_codes(shared, frames[10:80])
    assert u.encode_s == 0.25


async def test_the_speech_is_staged_every_chunk_of_codes(
    shared: SharedResources, pool: ThreadPoolExecutor
) -> None:
    """The encoder gives codes 25 at a time (STAGE_CODES or more): each chunk is a turn to prefill."""
    assert STAGE_CODES == 10
    listener = Listener(shared, CFG, pool)
    frames = signal(silence(20), tone(100), silence(30))
    staged: list[tuple[int, Turn]] = []
    utterances: list[Utterance] = []
    for frame in frames:
        for h in await listener.push(frame):
            if isinstance(h, Utterance):
                utterances.append(h)
        await settle(pool)
        turn = listener.turn_so_far()
        if turn is not None:
            staged.append((frame.index, turn))
    (u,) = utterances
    codes = speech_of(u.turn)
    assert len(codes) == 130  # frames 10-139
    # codes 0-24 are final once 25 + 10 (look-ahead) + 4 (the feature margin) frames are encoded:
    # frame 48 is the 39th from frame 10
    assert [(i, len(speech_of(t))) for i, t in staged] == [(48, 25), (73, 50), (98, 75), (123, 100)]
    # each staged turn is the start of the finished one
    assert all(speech_of(t) == codes[: len(speech_of(t))] for _, t in staged)
    assert all(t.role == "user" and len(t.parts) == 1 for _, t in staged)
    # nothing new since the last one: nothing to stage
    assert listener.turn_so_far() is None


async def test_each_chunk_is_staged_once_and_the_next_utterance_starts_fresh(
    shared: SharedResources, pool: ThreadPoolExecutor
) -> None:
    listener = Listener(shared, CFG, pool)
    frames = signal(silence(20), tone(100), silence(30))
    await feed(listener, frames[:49], pool)
    first = listener.turn_so_far()
    assert first is not None and len(speech_of(first)) == 25
    assert listener.turn_so_far() is None  # given once
    await feed(listener, frames[49:74], pool)  # codes 25-49 arrive at frame 73
    second = listener.turn_so_far()
    assert second is not None and len(speech_of(second)) == 50
    happened = await feed(listener, frames[74:], pool)
    assert [i for i, _ in happened] == [139]
    # the next utterance stages from its own first codes
    happened = await feed(listener, signal(silence(20), tone(40), silence(30), first_index=150), pool)
    assert [i for i, _ in happened] == [177, 229]
    assert listener.turn_so_far() is None


async def test_turn_so_far_before_enough_codes(shared: SharedResources, pool: ThreadPoolExecutor) -> None:
    listener = Listener(shared, CFG, pool)
    assert listener.turn_so_far() is None
    frames = signal(silence(20), tone(100))
    await feed(listener, frames[:48], pool)
    assert listener.in_speech
    assert listener.turn_so_far() is None  # 0 codes so far
    await feed(listener, frames[48:49], pool)
    turn = listener.turn_so_far()
    assert turn is not None and len(speech_of(turn)) == 25


async def test_images_join_the_turn_before_the_speech(
    shared: SharedResources, pool: ThreadPoolExecutor
) -> None:
    listener = Listener(shared, CFG, pool)
    images = ((-1, image(100)), (4, image(200)), (0, image(300)))
    frames = signal(silence(20), tone(40), silence(30))
    happened = await feed(listener, frames[:28], pool)
    assert [h for _, h in happened] == ["started"]
    listener.set_images(images)  # as the session does on "started"
    await feed(listener, frames[28:49], pool)
    staged = listener.turn_so_far()
    assert staged is not None
    assert staged.parts[:3] == (image(100), image(200), image(300))
    assert len(staged.parts) == 4 and len(speech_of(staged)) == 25
    happened = await feed(listener, frames[49:], pool)
    u = happened[0][1]
    assert isinstance(u, Utterance)
    assert u.turn.parts[:3] == (image(100), image(200), image(300))
    assert speech_of(u.turn) == oracle_codes(shared, frames[10:80])
    # keyframe numbers of the camera's images, in order; -1 (an image given by the user) is none
    assert u.keyframes == (4, 0)


async def test_an_utterance_that_interrupted_the_agent_says_so(
    shared: SharedResources, pool: ThreadPoolExecutor
) -> None:
    listener = Listener(shared, CFG, pool)
    frames = signal(*UTTERANCE, *UTTERANCE)
    await feed(listener, frames[:30], pool)
    listener.mark_interrupting()
    happened = await feed(listener, frames[30:90], pool)
    (u,) = [h for _, h in happened]
    assert isinstance(u, Utterance) and u.interrupted_agent is True
    # the next utterance did not
    happened = await feed(listener, frames[90:], pool)
    assert [i for i, _ in happened] == [117, 169]
    u2 = happened[1][1]
    assert isinstance(u2, Utterance) and u2.interrupted_agent is False


async def test_the_next_utterance_starts_afresh(shared: SharedResources, pool: ThreadPoolExecutor) -> None:
    listener = Listener(shared, CFG, pool)
    frames = signal(silence(20), tone(100), silence(30), silence(20), tone(40), silence(30))
    happened = await feed(listener, frames, pool)
    assert kinds(happened) == [
        (27, "started"),
        (139, "utterance"),
        (177, "started"),
        (229, "utterance"),
    ]
    first, second = happened[1][1], happened[3][1]
    assert isinstance(first, Utterance) and isinstance(second, Utterance)
    assert speech_of(first.turn) == oracle_codes(shared, frames[10:140])
    # the second begins with its pre-roll: the last 10 silent frames before the tone at 170
    assert speech_of(second.turn) == oracle_codes(shared, frames[160:230])
    assert second.duration_s == pytest.approx(57 * 0.02, abs=1e-9)
    # nothing of the first is left to stage after it ended
    assert listener.turn_so_far() is None


async def test_heard_ms_counts_from_the_confirmed_start(
    shared: SharedResources, pool: ThreadPoolExecutor
) -> None:
    listener = Listener(shared, CFG, pool)
    frames = signal(*UTTERANCE)
    await feed(listener, frames[:28], pool)  # confirmed at frame 27 (t = 0.54)
    # the confirming frame ends the first min_speech_ms; each later frame adds its 20 ms
    assert listener.heard_ms(frames[27]) == pytest.approx(160, abs=1e-6)
    assert listener.heard_ms(frames[32]) == pytest.approx(160 + 100, abs=1e-6)
    assert listener.heard_ms(frames[59]) == pytest.approx(160 + 640, abs=1e-6)


async def test_a_short_sound_is_no_utterance(shared: SharedResources, pool: ThreadPoolExecutor) -> None:
    listener = Listener(shared, CFG, pool)
    # 7 voiced frames: under min_speech_ms (8)
    happened = await feed(listener, signal(silence(20), tone(7), silence(40)), pool)
    assert happened == []
    assert not listener.in_speech and listener.turn_so_far() is None


async def test_the_settings_reach_the_segmenter(shared: SharedResources, pool: ThreadPoolExecutor) -> None:
    listener = Listener(shared, CFG, pool)
    vad = listener.vad
    assert isinstance(vad.detector, WebRtcDetector)
    assert (vad.pre_roll_ms, vad.min_speech_ms, vad.end_silence_ms, vad.max_speech_s) == (200, 160, 400, 30.0)
    # the default aggressiveness (2) does not call this tone speech; the configured 1 does
    strict = Listener(shared, AudioConfig(), pool)
    assert await feed(strict, signal(silence(20), tone(40), silence(40)), pool) == []
    assert isinstance(Listener(shared, AudioConfig(vad="silero"), pool).vad.detector, SileroDetector)


async def test_an_utterance_at_the_length_cap(shared: SharedResources, pool: ThreadPoolExecutor) -> None:
    listener = Listener(shared, AudioConfig(vad_aggressiveness=1, pre_roll_ms=200, max_speech_s=1.0), pool)
    frames = signal(silence(20), tone(80))
    happened = await feed(listener, frames, pool)
    # 10 pre-roll frames + 40 of tone make the 1 s cap, at frame 59; then a new utterance starts
    assert kinds(happened) == [
        (29, "started"),
        (59, "utterance"),
        (69, "started"),
    ]
    u = happened[1][1]
    assert isinstance(u, Utterance)
    assert u.duration_s == 1.0
    assert u.vad_s == 0.0  # the last frame is voiced: no silence to wait for
    assert speech_of(u.turn) == oracle_codes(shared, frames[10:60])


async def test_encoding_runs_on_the_given_pool_only(
    shared: SharedResources, pool: ThreadPoolExecutor
) -> None:
    """The session's one encode thread keeps the encoder's calls in order; the loop's default executor
    (here one that refuses work) is never used."""
    refusing = ThreadPoolExecutor(1)
    refusing.shutdown()
    asyncio.get_running_loop().set_default_executor(refusing)
    listener = Listener(shared, CFG, pool)
    frames = signal(*UTTERANCE)
    for settled in (True, False):
        happened = await feed(listener, frames, pool, settled=settled)
        u = happened[1][1]
        assert isinstance(u, Utterance) and speech_of(u.turn) == oracle_codes(shared, frames[10:80])
        frames = signal(*UTTERANCE, first_index=90)


async def test_an_utterance_whose_end_is_cancelled_leaves_nothing_behind(
    shared: SharedResources, pool: ThreadPoolExecutor
) -> None:
    """The session closing while the end of an utterance is encoded: the wait is cancelled, no
    callback fails, nothing of it is staged later, and the next utterance is whole."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    listener = Listener(shared, CFG, pool)
    frames = signal(*UTTERANCE)
    gate = threading.Event()
    blocked = loop.run_in_executor(pool, gate.wait)  # every encode waits behind it
    try:
        assert kinds(await feed(listener, frames[:79], pool, settled=False)) == [(27, "started")]
        ending = asyncio.create_task(listener.push(frames[79]))
        await asyncio.sleep(0)  # one step: it now waits for the pending encodes
        ending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ending
    finally:
        gate.set()
    await blocked
    await settle(pool)
    assert errors == []
    assert not listener.in_speech
    assert listener.turn_so_far() is None
    nxt = signal(*UTTERANCE, first_index=80)
    happened = await feed(listener, nxt, pool)
    assert kinds(happened) == [(107, "started"), (159, "utterance")]
    u = happened[1][1]
    assert isinstance(u, Utterance) and speech_of(u.turn) == oracle_codes(shared, nxt[10:80])
    assert errors == []
