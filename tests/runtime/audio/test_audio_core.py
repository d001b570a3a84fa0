"""The device-free core of the audio edge: mic conversion, the jitter buffer, the playback reference."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import mio_agent.runtime.audio as audio_pkg
from mio_agent.exceptions import CodecError
from mio_agent.runtime.audio import (
    FRAME_SAMPLES,
    AudioSink,
    AudioSource,
    FileMicSource,
    FileSpeakerSink,
    MicConverter,
    MicrophoneSource,
    PlaybackBuffer,
    PlaybackReference,
    SpeakerSink,
)
from mio_agent.runtime.audio.jitter import BufferedSink


def test_all_names_exist() -> None:
    for name in audio_pkg.__all__:
        assert hasattr(audio_pkg, name), name


def test_sources_and_sinks_meet_their_protocols(tmp_path: object) -> None:
    assert isinstance(MicrophoneSource(), AudioSource)
    assert isinstance(FileMicSource("x.wav"), AudioSource)
    assert isinstance(SpeakerSink(), AudioSink)
    assert isinstance(FileSpeakerSink("out.wav"), AudioSink)


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (44100, 1), (16000, 1), (22050, 6)])
def test_mic_converter_makes_16k_mono_frames_of_any_format(rate: int, channels: int) -> None:
    tone = _tone(1000, rate, 1.0)
    interleaved = np.repeat((tone * 32767).astype(np.int16), channels)
    converter = MicConverter(rate, channels)
    block = rate // 100  # 10 ms device blocks, unaligned with 20 ms frames at 44.1 and 22.05 kHz
    frames = []
    for i in range(0, tone.size, block):
        frames += converter.push(interleaved[i * channels : (i + block) * channels].tobytes(), 5.0 + i / rate)
    assert len(frames) in (49, 50)  # the resampler holds back a fraction of a millisecond
    assert all(f.samples.dtype == np.int16 and f.samples.size == FRAME_SAMPLES for f in frames)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert np.allclose(np.diff([f.t for f in frames]), 0.02)
    assert frames[0].t == pytest.approx(5.0)
    audio = np.concatenate([f.samples for f in frames[2:]]).astype(np.float32) / 32768
    assert _peak_hz(audio, 16000) == pytest.approx(1000, abs=5)
    # down-mixed and band-limited: level kept (a 0.5 sine has an RMS of 0.354)
    assert float(np.sqrt(np.mean(audio**2))) == pytest.approx(0.354, abs=0.01)


def test_mic_converter_skips_indices_over_lost_blocks() -> None:
    converter = MicConverter(16000, 1)
    block = np.zeros(320, dtype=np.int16).tobytes()
    first = converter.push(block, 1.0) + converter.push(block, 1.02)
    # eight blocks (160 ms) never arrive
    later = converter.push(block, 1.20) + converter.push(block, 1.22)
    assert [f.index for f in first] == [0, 1]
    assert later[0].index == 10 and later[0].t == pytest.approx(1.20, abs=0.001)
    assert converter.skipped == 8


def test_mic_converter_rejects_a_ragged_block() -> None:
    with pytest.raises(CodecError, match="2 interleaved channels"):
        MicConverter(48000, 2).push(np.zeros(3, dtype=np.int16).tobytes(), 0.0)


def test_playback_buffer_waits_for_its_cushion_and_counts_underruns() -> None:
    buf = PlaybackBuffer(1000, prebuffer=100)
    buf.append(np.ones(60, dtype=np.float32), turn=1)
    assert not buf.pull(10, 0.0).any()  # 60 < 100 queued: still silent
    buf.append(np.ones(60, dtype=np.float32), turn=1)
    assert buf.pull(100, 0.0).all()
    out = buf.pull(50, 0.1)  # 20 left, then it runs dry in the middle of the reply
    assert out[:20].all() and not out[20:].any()
    assert buf.underruns == 1
    assert buf.played(1) == 120


def test_playback_buffer_plays_an_ended_short_reply_and_counts_per_turn() -> None:
    buf = PlaybackBuffer(1000, prebuffer=500)
    buf.append(np.full(30, 0.5, dtype=np.float32), turn=7)
    buf.end_turn(7)
    assert np.count_nonzero(buf.pull(100, 0.0)) == 30
    buf.append(np.full(40, 0.5, dtype=np.float32), turn=8)
    buf.end_turn(8)
    buf.pull(100, 0.1)
    assert (buf.played(7), buf.played(8), buf.played(9)) == (30, 40, 0)
    assert buf.underruns == 0


def test_playback_buffer_clear_drops_everything_at_once() -> None:
    buf = PlaybackBuffer(1000, prebuffer=0)
    buf.append(np.ones(1000, dtype=np.float32), turn=1)
    buf.pull(250, 0.0)
    assert buf.clear() == 750
    assert not buf.pull(100, 0.25).any()
    assert buf.played(1) == 250 and buf.buffered == 0


def test_playback_reference_reads_what_played_when() -> None:
    ref = PlaybackReference(48000)
    tone = _tone(500, 48000, 0.5)
    for i in range(0, tone.size, 480):  # 10 ms device blocks from t=100
        ref.push(tone[i : i + 480], 100.0 + i / 48000)
    assert ref.end_time == pytest.approx(100.5, abs=0.002)
    mid = ref.read(100.2, 1600)
    assert _peak_hz(mid, 16000) == pytest.approx(500, abs=10)
    assert float(np.sqrt(np.mean(mid**2))) == pytest.approx(0.354, abs=0.01)
    before = ref.read(99.0, 320)
    straddle = ref.read(100.49, 320)
    assert not before.any()
    assert straddle[:100].any() and not straddle[-100:].any()


def test_playback_reference_starts_a_new_segment_after_a_gap() -> None:
    ref = PlaybackReference(16000)
    ref.push(np.ones(1600, dtype=np.float32), 10.0)
    ref.push(np.full(1600, 0.5, dtype=np.float32), 11.0)  # the device stopped for 0.9 s
    assert not ref.read(10.3, 320).any()
    assert np.allclose(ref.read(11.02, 320), 0.5)


class _ManualSink(BufferedSink):
    """A sink whose device is the test: it pulls by hand."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_sink_converts_rate_and_format_and_flushes_the_tail() -> None:
    sink = _ManualSink(48000, prebuffer_ms=0)
    pcm = (_tone(300, 24000, 0.5) * 32767).astype("<i2").tobytes()
    await sink.play(pcm, 24000, turn=1)
    sink.end_turn(1)
    assert sink.buffered_ms == pytest.approx(500, abs=1)
    out = sink._buffer.pull(48000, 0.0)
    assert _peak_hz(out[:24000], 48000) == pytest.approx(300, abs=3)
    assert sink.played_ms(1) == pytest.approx(500, abs=1)


async def test_sink_refuses_late_audio_of_a_cleared_reply() -> None:
    sink = _ManualSink(16000, prebuffer_ms=0)
    await sink.play(np.ones(1600, dtype=np.float32) * 0.1, 16000, turn=3)
    sink._buffer.pull(800, 0.0)
    assert sink.clear() == pytest.approx(50)
    # the decoder is still finishing reply 3: its audio must not restart playback
    await sink.play(np.ones(1600, dtype=np.float32) * 0.1, 16000, turn=3)
    assert sink.buffered_ms == 0 and sink.played_ms(3) == pytest.approx(50)
    await sink.play(np.ones(1600, dtype=np.float32) * 0.1, 16000, turn=4)
    assert sink.buffered_ms == pytest.approx(100, abs=1)


async def test_sink_play_waits_while_the_buffer_is_full() -> None:
    sink = _ManualSink(16000, prebuffer_ms=0, max_buffer_s=0.1)
    await sink.play(np.zeros(3200, dtype=np.float32), 16000, turn=1)
    blocked = asyncio.create_task(sink.play(np.zeros(320, dtype=np.float32), 16000, turn=1))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    sink._buffer.pull(3200, 0.0)
    await asyncio.wait_for(blocked, 60)
    assert await sink.drain(timeout=0.05) is False
    sink._buffer.pull(1000, 0.0)
    assert await sink.drain(timeout=1.0) is True


async def test_sink_rejects_bad_audio_with_a_clear_message() -> None:
    sink = _ManualSink(16000)
    with pytest.raises(CodecError, match="sample rate"):
        await sink.play(np.zeros(10, dtype=np.float32), 0, turn=1)
    with pytest.raises(CodecError, match="NaN"):
        await sink.play(np.array([0.0, np.nan], dtype=np.float32), 16000, turn=1)
