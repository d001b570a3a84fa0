"""Real PyAudio streams on virtual ALSA devices: listing and choosing devices, microphone, speaker, clear().

The virtual devices run in real time on helper threads, so nothing here is measured in seconds of
wall-clock time (a loaded machine stretches those): the tests count samples and frames, wait for
the state they need with a deadline that only turns a hang into a failure, and compare positions
in the audio streams.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyaudio
import pytest

from mio_agent.runtime.audio import (
    DeviceError,
    MicrophoneSource,
    SpeakerSink,
    find_device,
    format_devices,
    list_devices,
    pyaudio_io,
)
from mio_agent.runtime.audio.base import AudioFrame
from tests.runtime.virtual_alsa import MIC, SPEAKER, VirtualAlsa

# what an output stream can hold ahead of the device's play position: a 10 ms block, ALSA's
# buffer and the virtual device's 4 kB FIFO (~45 ms) are well inside it
_DEVICE_BUFFER_MS = 250


# a bound that only turns a hang into a failure; nothing waits this long unless something is broken
HANG_S = 60.0


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


async def _until(cond: Callable[[], bool], what: str) -> None:
    """Let the streams run until `cond()` holds; fail (not hang) if it never does."""
    deadline = time.monotonic() + HANG_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {HANG_S:g} s waiting until {what}")
        await asyncio.sleep(0.01)


def _consumed(alsa: VirtualAlsa) -> int:
    """Samples the virtual speaker has taken from its FIFO so far (its play position)."""
    return sum(chunk.size for _, chunk in list(alsa.recorded))


def test_our_portaudio_constants_are_pyaudios() -> None:
    assert pyaudio.paInt16 == pyaudio_io._PA_INT16
    assert (pyaudio.paContinue, pyaudio.paComplete) == (pyaudio_io._PA_CONTINUE, pyaudio_io._PA_COMPLETE)
    assert pyaudio.paInputOverflow == pyaudio_io._PA_INPUT_OVERFLOW
    assert pyaudio.paOutputUnderflow == pyaudio_io._PA_OUTPUT_UNDERFLOW


def test_devices_are_listed_and_chosen_by_name_or_index(virtual_alsa: VirtualAlsa) -> None:
    devices = list_devices()
    names = [d.name for d in devices]
    assert MIC in names and SPEAKER in names
    listing = format_devices(devices)
    assert "Input devices" in listing and MIC in listing and "--input-device" in listing
    assert find_device("TEST_MIC", "input").name == MIC  # a case-insensitive part of the name
    speaker = find_device(SPEAKER, "output")
    assert find_device(speaker.index, "output") == speaker
    assert find_device(str(speaker.index), "output") == speaker


def test_device_errors_list_what_exists_and_how_to_choose(virtual_alsa: VirtualAlsa) -> None:
    with pytest.raises(DeviceError) as missing:
        find_device("usb headset", "input")
    message = str(missing.value)
    assert (
        "usb headset" in message
        and MIC in message
        and "--input-device" in message
        and "--mic-file" in message
    )
    with pytest.raises(DeviceError, match="ambiguous"):
        find_device("mio_test", "output")
    with pytest.raises(DeviceError, match="no sound device with index 99"):
        find_device(99, "output")


def test_no_sound_card_is_a_clear_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ALSA with its own configuration only: no card, no plugin devices
    monkeypatch.setenv("ALSA_CONFIG_PATH", "/usr/share/alsa/alsa.conf")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not [d for d in list_devices() if d.max_input_channels]
    with pytest.raises(DeviceError) as error:
        find_device(None, "input")
    assert "no microphone (input) device found" in str(error.value)
    assert "--mic-file" in str(error.value)


async def test_microphone_delivers_16k_mono_frames_from_a_48k_stereo_device(
    virtual_alsa: VirtualAlsa,
) -> None:
    tone = (_tone(440, 48000, 1.0) * 32767).astype(np.int16)
    virtual_alsa.mic_signal = np.repeat(tone, 2)  # interleaved stereo
    frames = []
    async with MicrophoneSource(MIC, rate=48000, channels=2) as mic:
        assert (mic.device_rate, mic.device_channels) == (48000, 2)

        async def read_40() -> None:
            async for frame in mic:
                frames.append(frame)
                if len(frames) == 40:
                    break

        await asyncio.wait_for(read_40(), HANG_S)
        dropped = mic.dropped
    # 40 frames of 20 ms at 16 kHz mono, from a device that delivers 48 kHz stereo
    assert len(frames) == 40
    assert all(f.samples.dtype == np.int16 and f.samples.shape == (320,) for f in frames)
    indices = np.array([f.index for f in frames])
    assert indices[0] == 0 and np.all(np.diff(indices) >= 1)
    # a frame goes missing only as a counted drop (a loaded machine may make the device's blocks so
    # late that they count as lost; an idle one drops none); capture times never go backwards (their
    # spacing follows the callbacks' wall-clock timing, which a loaded machine jitters: not compared)
    assert indices[-1] + 1 - len(frames) <= dropped
    assert np.all(np.diff([f.t for f in frames]) >= 0)
    audio = np.concatenate([f.samples for f in frames[5:]]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    assert np.argmax(spectrum) * 16000 / audio.size == pytest.approx(440, abs=5)


async def test_microphone_drops_and_counts_when_the_loop_stalls(virtual_alsa: VirtualAlsa) -> None:
    async with MicrophoneSource(MIC, rate=48000, channels=2, max_pending=3, queue_frames=5) as mic:
        first = await asyncio.wait_for(mic.read(), HANG_S)
        # a blocked event loop: PortAudio's thread must neither block nor queue without bound. Block
        # it until the callback has refused 10 blocks (200 ms of audio: a gap the frame clock sees)
        deadline = time.monotonic() + HANG_S
        while mic.dropped_blocks < 10:
            assert time.monotonic() < deadline, f"only {mic.dropped_blocks} blocks refused in {HANG_S:g} s"
            time.sleep(0.01)

        async def read_10() -> list[AudioFrame | None]:
            return [await mic.read() for _ in range(10)]

        frames = await asyncio.wait_for(read_10(), HANG_S)
        dropped, refused = mic.dropped, mic.dropped_blocks
    assert first is not None and all(f is not None for f in frames)
    assert refused > 0
    assert dropped > 0
    indices = [f.index for f in frames if f is not None]
    assert indices[-1] - first.index > len(indices)  # the gap shows in the indices


async def test_a_microphone_that_goes_quiet_is_a_device_error(virtual_alsa: VirtualAlsa) -> None:
    async with MicrophoneSource(MIC, rate=48000, channels=2, stall_timeout_s=0.4) as mic:
        assert await mic.read() is not None
        virtual_alsa.mic_running.clear()  # as if unplugged: no more data at all

        async def read_until_error() -> None:
            while True:
                await mic.read()

        with pytest.raises(DeviceError, match=r"delivered no audio for 0.4 s.*mio-agent devices"):
            await asyncio.wait_for(read_until_error(), HANG_S)
        # PortAudio's thread is blocked in the device read; let it return so the stream can stop
        virtual_alsa.mic_running.set()


async def test_speaker_plays_and_clear_silences_it_at_once(virtual_alsa: VirtualAlsa) -> None:
    async with SpeakerSink(SPEAKER, rate=48000) as speaker:
        assert speaker.rate == 48000
        await speaker.play(_tone(300, 16000, 3.0), 16000, turn=1)
        await _until(lambda: speaker.played_ms(1) >= 400, "400 ms of the reply were handed over")
        # the cut: where the device's play position was, what had been handed over, what was dropped
        position = _consumed(virtual_alsa)
        dropped_ms = speaker.clear()
        played = speaker.played_ms(1)
        end = speaker.reference.end_time
        assert end is not None
        reference = speaker.reference.read(end - 2.0, 32000)
        # later audio of the same reply (a decoder still finishing) stays silent
        await speaker.play(_tone(300, 16000, 0.5), 16000, turn=1)
        # let the device play on for 600 ms of audio: far past what it held at the cut
        await _until(
            lambda: _consumed(virtual_alsa) >= position + 48 * 600, "the device played 600 ms past the cut"
        )
        assert speaker.played_ms(1) == played
    heard, _ = virtual_alsa.heard()
    # a 2 ms moving average of the magnitude: the tone's zero crossings do not count as silence
    loud = np.convolve(np.abs(heard.astype(np.float64)), np.ones(96) / 96, mode="same") > 2000
    assert loud.any()
    # handed over at the device's pace: at the cut, no more than the device had played plus what
    # its buffers hold (a 10 ms block, ALSA's buffer and a 4 kB FIFO), not the 3 s that were queued
    in_flight_ms = played - loud[:position].sum() / 48
    assert -5 < in_flight_ms < _DEVICE_BUFFER_MS, f"{in_flight_ms:.0f} ms were ahead of the device"
    assert dropped_ms == pytest.approx(3000 - played, abs=30)
    # nothing after the cut reached the speaker: heard about as much as was handed over before it
    heard_ms = loud.sum() / 48
    assert heard_ms == pytest.approx(played, abs=80), f"heard {heard_ms:.0f} ms, handed over {played:.0f} ms"
    # and it stopped at once: after the play position at the cut, only what the device already held
    after_cut_ms = (np.flatnonzero(loud).max() - position) / 48
    assert after_cut_ms < _DEVICE_BUFFER_MS, f"speaker kept playing {after_cut_ms:.0f} ms after clear()"
    # the reference has the tone at 16 kHz for the echo canceller: in the 2 s before the cut, the
    # 10 ms pieces it knows were played (silence before the reply and spans it marks unknown after
    # the callbacks' timing jumped are zeros; the virtual device's callbacks come in bursts)
    pieces = reference.reshape(-1, 160)
    known = pieces[np.all(pieces != 0, axis=1)]
    assert len(known) >= 20, f"the reference holds {len(known) * 10} ms of the reply"
    assert float(np.sqrt(np.mean(known**2))) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


async def test_speaker_open_failure_names_the_device(virtual_alsa: VirtualAlsa) -> None:
    speaker = SpeakerSink(SPEAKER, rate=48000, channels=300)
    with pytest.raises(DeviceError, match=SPEAKER):
        await speaker.start()
    assert os.environ["ALSA_CONFIG_PATH"].endswith("asound.conf")
