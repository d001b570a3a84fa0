"""Echo cancellation measured in a simulated room: ERLE, no self-interruption, barge-in during playback."""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass, field

import numpy as np
import pytest

from mio_agent.runtime.audio import DeviceError, EchoRoom
from mio_agent.runtime.audio import echo as echo_module
from mio_agent.runtime.audio.echo import EchoCanceller, SpeexEchoCanceller, speexdsp_available
from mio_agent.runtime.voice.vad import SpeechStarted, VadSegmenter

pytestmark = pytest.mark.skipif(
    not speexdsp_available(), reason="libspeexdsp is not installed (Debian: apt-get install libspeexdsp1)"
)

RATE = 16000


def test_all_names_exist() -> None:
    for name in echo_module.__all__:
        assert hasattr(echo_module, name), name


@dataclass
class Run:
    starts: list[float] = field(default_factory=list)
    """When (seconds after the room started) the segmenter confirmed speech."""
    mic_power: list[float] = field(default_factory=list)
    out_power: list[float] = field(default_factory=list)
    canceller: EchoCanceller | None = None

    def erle_db(self, first_s: float, last_s: float) -> float:
        a, b = int(first_s * 50), int(last_s * 50)
        return float(10 * np.log10(np.sum(self.mic_power[a:b]) / max(np.sum(self.out_power[a:b]), 1e-12)))


async def _converse(
    replies: list[np.ndarray],
    *,
    user: np.ndarray | None = None,
    user_at: float = 0.0,
    delay_ms: float = 60.0,
    gain_db: float = -6.0,
    cancel: bool = True,
    gap_s: float = 1.0,
) -> Run:
    """Play the replies one after another through a room (48 kHz speaker) while its mic feeds AEC and VAD."""
    total = sum(r.size for r in replies) / RATE + gap_s * len(replies) + 0.5
    voice = None
    if user is not None:
        voice = np.zeros(int(total * RATE), dtype=np.float32)
        at = int(user_at * RATE)
        voice[at : at + user.size] = user[: voice.size - at]
    room = EchoRoom(
        voice,
        fast=True,
        pad_s=0.0 if voice is not None else total,
        delay_ms=delay_ms,
        gain_db=gain_db,
        speaker_rate=48000,
    )
    await room.start()
    run = Run(canceller=EchoCanceller(room.speaker.reference) if cancel else None)
    segmenter = VadSegmenter()
    # each reply starts gap_s after the previous one ended
    schedule: list[tuple[int, np.ndarray]] = []
    start = 0.0
    for reply in replies:
        schedule.append((int(start * 50), reply))
        start += reply.size / RATE + gap_s
    turn = 0
    async for frame in room.mic:
        if schedule and frame.index >= schedule[0][0]:
            turn += 1
            await room.speaker.play(schedule.pop(0)[1], RATE, turn=turn)
            room.speaker.end_turn(turn)
        if run.canceller is not None:
            result = run.canceller.process(frame)
            out, voiced = result.frame, None if result.near_end else False
        else:
            out, voiced = frame, None
        run.mic_power.append(float(np.mean((frame.samples / 32768) ** 2)))
        run.out_power.append(float(np.mean((out.samples / 32768) ** 2)))
        for event in segmenter.push(out, voiced=voiced):
            if isinstance(event, SpeechStarted):
                run.starts.append(event.detected_at - frame.t + frame.index * 0.02)
    return run


async def test_without_cancellation_the_assistant_hears_itself(reply_speech: np.ndarray) -> None:
    run = await _converse([reply_speech], cancel=False)
    assert run.starts and run.starts[0] < 1.0


@pytest.mark.parametrize(("delay_ms", "gain_db"), [(20, -6), (120, -12)])
async def test_cancelled_echo_does_not_trigger_the_vad(
    reply_speech: np.ndarray, delay_ms: float, gain_db: float
) -> None:
    run = await _converse([reply_speech], delay_ms=delay_ms, gain_db=gain_db)
    assert run.starts == []
    assert run.canceller is not None
    # measured, not assumed: the echo is down by 20 dB and more once the filter has converged (~2 s)
    erle = run.erle_db(3.0, reply_speech.size / RATE)
    assert erle > 20.0, f"ERLE {erle:.1f} dB"
    assert run.canceller.stats.linear_erle_db > 15.0
    assert run.canceller.stats.echo_only_frames > 0.8 * run.canceller.stats.active_frames


async def test_the_user_interrupting_during_playback_is_heard(
    reply_speech: np.ndarray, user_speech: np.ndarray
) -> None:
    onset = np.nonzero(np.abs(user_speech) > 0.02)[0][0] / RATE
    run = await _converse([reply_speech], user=user_speech, user_at=4.0)
    assert len(run.starts) == 1
    assert 0.0 < run.starts[0] - (4.0 + onset) < 0.5


async def test_what_was_learnt_carries_over_to_the_next_reply(
    reply_speech: np.ndarray, user_speech: np.ndarray
) -> None:
    # the user barges in only one second into the second reply: no time to converge again
    second = reply_speech.size / RATE + 1.0
    onset = np.nonzero(np.abs(user_speech) > 0.02)[0][0] / RATE
    run = await _converse([reply_speech, reply_speech[: 4 * RATE]], user=user_speech, user_at=second + 1.0)
    # heard at once; nothing before the user spoke (the user's second sentence may count again)
    assert run.starts
    assert 0.0 < run.starts[0] - (second + 1.0 + onset) < 0.5


async def test_a_delay_beyond_the_filter_is_found_and_followed(reply_speech: np.ndarray) -> None:
    run = await _converse([reply_speech], delay_ms=250)
    assert run.canceller is not None
    assert run.canceller.stats.delay_ms == pytest.approx(250, abs=10)
    assert run.canceller.stats.delay_changes == 1
    assert run.starts == []
    assert run.erle_db(4.0, reply_speech.size / RATE) > 15.0


def test_speex_canceller_checks_frames_and_closes() -> None:
    canceller = SpeexEchoCanceller()
    with pytest.raises(ValueError, match="320 samples"):
        canceller.process(np.zeros(160, dtype=np.int16), np.zeros(160, dtype=np.int16))
    out, linear = canceller.process(np.zeros(320, dtype=np.int16), np.zeros(320, dtype=np.int16))
    assert out.shape == linear.shape == (320,)
    canceller.close()
    with pytest.raises(DeviceError, match="closed"):
        canceller.process(np.zeros(320, dtype=np.int16), np.zeros(320, dtype=np.int16))


def test_missing_speexdsp_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(name: str, *args: object, **kwargs: object) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(echo_module, "_lib", None)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(ctypes, "CDLL", no_library)
    assert not speexdsp_available()
    with pytest.raises(DeviceError, match="apt-get install libspeexdsp1"):
        SpeexEchoCanceller()
