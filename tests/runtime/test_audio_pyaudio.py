"""Real PyAudio streams on virtual ALSA devices: listing and choosing devices, microphone, speaker, clear()."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
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
from tests.runtime.virtual_alsa import MIC, SPEAKER, VirtualAlsa


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def test_our_portaudio_constants_are_pyaudios() -> None:
    pyaudio = pytest.importorskip("pyaudio")
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
    pytest.importorskip("pyaudio")
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
    started = time.monotonic()
    async with MicrophoneSource(MIC, rate=48000, channels=2) as mic:
        assert (mic.device_rate, mic.device_channels) == (48000, 2)
        async for frame in mic:
            frames.append(frame)
            if len(frames) == 40:
                break
        dropped = mic.dropped
    elapsed = time.monotonic() - started
    # paced by the device: 40 frames are 0.8 s of audio
    assert 0.5 < elapsed < 3.0
    assert dropped == 0
    assert [f.index for f in frames] == list(range(40))
    assert np.allclose(np.diff([f.t for f in frames]), 0.02)
    assert abs(frames[0].t - started) < 1.0
    audio = np.concatenate([f.samples for f in frames[5:]]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    assert np.argmax(spectrum) * 16000 / audio.size == pytest.approx(440, abs=5)


async def test_microphone_drops_and_counts_when_the_loop_stalls(virtual_alsa: VirtualAlsa) -> None:
    async with MicrophoneSource(MIC, rate=48000, channels=2, max_pending=3, queue_frames=5) as mic:
        first = await mic.read()
        # a blocked event loop: PortAudio's thread must neither block nor queue without bound
        time.sleep(0.6)
        frames = [await mic.read() for _ in range(10)]
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
        with pytest.raises(DeviceError, match=r"delivered no audio for 0.4 s.*mio-agent devices"):
            while True:
                await mic.read()
        # PortAudio's thread is blocked in the device read; let it return so the stream can stop
        virtual_alsa.mic_running.set()


async def test_speaker_plays_and_clear_silences_it_at_once(virtual_alsa: VirtualAlsa) -> None:
    async with SpeakerSink(SPEAKER, rate=48000) as speaker:
        assert speaker.rate == 48000
        queued_at = time.monotonic()
        await speaker.play(_tone(300, 16000, 3.0), 16000, turn=1)
        await asyncio.sleep(0.6)
        cleared_at = time.monotonic()
        dropped_ms = speaker.clear()
        played = speaker.played_ms(1)
        await asyncio.sleep(0.4)
        # later audio of the same reply (a decoder still finishing) stays silent
        await speaker.play(_tone(300, 16000, 0.5), 16000, turn=1)
        await asyncio.sleep(0.2)
        assert speaker.played_ms(1) == played
        reference = speaker.reference.read(cleared_at - 0.3, 1600)
    heard, times = virtual_alsa.heard()
    # a 2 ms moving average of the magnitude: the tone's zero crossings do not count as silence
    loud = np.convolve(np.abs(heard.astype(np.float64)), np.ones(96) / 96, mode="same") > 2000
    assert loud.any()
    # handed over in real time: no more than the time it had, plus what the device buffers ahead
    assert 200 < played <= (cleared_at - queued_at) * 1000 + 100
    assert dropped_ms == pytest.approx(3000 - played, abs=30)
    # nothing after the cut reached the speaker: heard about as much as was handed over before it
    heard_ms = loud.sum() / 48
    assert heard_ms == pytest.approx(played, abs=80), f"heard {heard_ms:.0f} ms, handed over {played:.0f} ms"
    # and it stopped at once: what was handed over plays out (a 10 ms block and the device's
    # buffer, here a 4 kB FIFO: ~45 ms); the bound is loose for loaded test machines
    silence_after = float(times[loud].max() - cleared_at)
    assert silence_after < 0.25, f"speaker kept playing {silence_after * 1000:.0f} ms after clear()"
    # the reference has the tone at 16 kHz for the echo canceller
    assert float(np.sqrt(np.mean(reference**2))) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


async def test_speaker_open_failure_names_the_device(virtual_alsa: VirtualAlsa) -> None:
    speaker = SpeakerSink(SPEAKER, rate=48000, channels=300)
    with pytest.raises(DeviceError, match=SPEAKER):
        await speaker.start()
    assert os.environ["ALSA_CONFIG_PATH"].endswith("asound.conf")
