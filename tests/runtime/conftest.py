"""Fixtures for the runtime's hardware-edge tests: espeak-ng speech and virtual ALSA sound devices."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from mio_agent.codecs.speech import load_audio, resample
from tests.runtime.virtual_alsa import VirtualAlsa

REPLY_TEXT = (
    "Hello, I am your assistant. Today the weather is sunny with a light breeze from the west. "
    "Would you like me to read you the news, or shall we play a little game of words?"
)
USER_TEXT = "Stop, please stop talking. I want to ask something else."


@pytest.fixture(scope="session")
def espeak(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Synthesize text to a WAV with espeak-ng (22050 Hz mono); the same text and voice is made once."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        # a required test tool (scripts/setup.sh installs it): missing, the suite fails rather than skips
        pytest.fail(
            "espeak-ng is not installed; the speech fixtures need it: apt-get install espeak-ng "
            "(scripts/setup.sh installs it)"
        )
    folder = tmp_path_factory.mktemp("espeak")
    made: dict[tuple[str, str], Path] = {}

    def say(text: str, voice: str = "en") -> Path:
        key = (text, voice)
        if key not in made:
            out = folder / f"speech{len(made)}.wav"
            subprocess.run(
                [exe, "-v", voice, "-w", str(out), text], check=True, capture_output=True, timeout=60
            )
            made[key] = out
        return made[key]

    return say


def speech_16k(path: Path) -> np.ndarray:
    """A WAV file as 16 kHz mono float32."""
    audio, rate = load_audio(path)
    return resample(audio.mean(axis=0), rate, 16000)


@pytest.fixture(scope="session")
def reply_speech(espeak: Callable[..., Path]) -> np.ndarray:
    """About 9 s of the assistant talking (16 kHz float32)."""
    return speech_16k(espeak(REPLY_TEXT))


@pytest.fixture(scope="session")
def user_speech(espeak: Callable[..., Path]) -> np.ndarray:
    """About 4 s of a user (another voice) talking (16 kHz float32)."""
    return speech_16k(espeak(USER_TEXT, "en-us+f3"))


@pytest.fixture
def virtual_alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[VirtualAlsa]:
    """ALSA devices `mio_test_mic` (48 kHz stereo) and `mio_test_speaker` (48 kHz), in this test only.

    ALSA reads ALSA_CONFIG_PATH again whenever it changes, so the user's own configuration is
    neither used nor touched.
    """
    # PyAudio is a dependency and ALSA comes with the portaudio19-dev that scripts/setup.sh
    # installs: either missing is a broken install, which fails here rather than skipping
    import pyaudio  # noqa: F401

    if not Path("/usr/share/alsa/alsa.conf").is_file():
        pytest.fail(
            "ALSA's /usr/share/alsa/alsa.conf is missing: apt-get install libasound2-data "
            "(portaudio19-dev, which scripts/setup.sh installs, brings it)"
        )
    alsa = VirtualAlsa(tmp_path, mic_rate=48000, mic_channels=2, speaker_rate=48000)
    monkeypatch.setenv("ALSA_CONFIG_PATH", alsa.alsa_config_path)
    try:
        yield alsa
    finally:
        alsa.close()
