"""Audio at the hardware edge: microphones and speakers (PyAudio or WAV files) as 16 kHz mono 20 ms frames."""

from __future__ import annotations

from mio_agent.runtime.audio.base import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioFrame,
    AudioSink,
    AudioSource,
    DeviceError,
)
from mio_agent.runtime.audio.convert import MicConverter
from mio_agent.runtime.audio.devices import DeviceInfo, find_device, format_devices, list_devices
from mio_agent.runtime.audio.files import FileMicSource, FileSpeakerSink, frames_of
from mio_agent.runtime.audio.jitter import PlaybackBuffer
from mio_agent.runtime.audio.loopback import EchoPath, EchoRoom, room_impulse_response
from mio_agent.runtime.audio.pyaudio_io import MicrophoneSource, SpeakerSink
from mio_agent.runtime.audio.reference import PlaybackReference

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioFrame",
    "AudioSink",
    "AudioSource",
    "DeviceError",
    "DeviceInfo",
    "EchoPath",
    "EchoRoom",
    "FileMicSource",
    "FileSpeakerSink",
    "MicConverter",
    "MicrophoneSource",
    "PlaybackBuffer",
    "PlaybackReference",
    "SpeakerSink",
    "find_device",
    "format_devices",
    "frames_of",
    "list_devices",
    "room_impulse_response",
]
