"""Sound devices with no sound card: ALSA `file` PCMs backed by FIFOs that helper threads run in real time."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["MIC", "SPEAKER", "VirtualAlsa"]

MIC = "mio_test_mic"
SPEAKER = "mio_test_speaker"
_F_SETPIPE_SZ = 1031
# a pacing clock this far behind restarts rather than bursting to catch up
_MAX_LAG_S = 0.05

_CONFIG = """
pcm.{mic} {{
    type file
    slave.pcm {{ type null }}
    file "/dev/null"
    infile "{mic_fifo}"
    format "raw"
}}
pcm.{speaker} {{
    type file
    slave.pcm {{ type null }}
    file "{speaker_fifo}"
    format "raw"
}}
"""


class VirtualAlsa:
    """A microphone and a speaker that PortAudio opens as real ALSA devices.

    ALSA's `file` plugin reads the microphone's samples from one FIFO and writes the speaker's to
    another; its `null` slave has no clock, so the threads here are the clock: one writes
    `mic_signal` (int16, interleaved at the rate and channel count the test opens the device with)
    into the mic FIFO one period at a time in real time, the other drains the speaker FIFO in real
    time and records what it read with the time it read it. The FIFOs are shrunk to one page, so
    the "device" holds only a few milliseconds of audio.
    """

    def __init__(self, directory: Path, *, mic_rate: int, mic_channels: int, speaker_rate: int) -> None:
        self.directory = directory
        self.config = directory / "asound.conf"
        mic_fifo, speaker_fifo = directory / "mic.fifo", directory / "speaker.fifo"
        os.mkfifo(mic_fifo)
        os.mkfifo(speaker_fifo)
        self.config.write_text(
            _CONFIG.format(mic=MIC, speaker=SPEAKER, mic_fifo=mic_fifo, speaker_fifo=speaker_fifo)
        )
        # read-write ends never block on open, so ALSA can open the other ends while probing
        self._mic_fd = os.open(mic_fifo, os.O_RDWR)
        self._speaker_fd = os.open(speaker_fifo, os.O_RDWR)
        fcntl.fcntl(self._mic_fd, _F_SETPIPE_SZ, 8192)
        fcntl.fcntl(self._speaker_fd, _F_SETPIPE_SZ, 4096)
        self.mic_rate, self.mic_channels, self.speaker_rate = mic_rate, mic_channels, speaker_rate
        self.mic_signal = np.zeros(0, dtype=np.int16)
        self.recorded: list[tuple[float, np.ndarray]] = []
        self._stop = threading.Event()
        self.mic_running = threading.Event()
        """Clear it to make the microphone go quiet (no data at all, as an unplugged device)."""
        self.mic_running.set()
        self._threads = [
            threading.Thread(target=self._feed_mic, name="virtual-mic", daemon=True),
            threading.Thread(target=self._drain_speaker, name="virtual-speaker", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def alsa_config_path(self) -> str:
        """ALSA's own configuration first (it defines the plugin types), then our two devices."""
        return f"/usr/share/alsa/alsa.conf:{self.config}"

    def _feed_mic(self, period_ms: int = 20) -> None:
        frames = self.mic_rate * period_ms // 1000
        clock, sent = time.monotonic(), 0
        while not self._stop.is_set():
            if not self.mic_running.wait(0.05):
                clock = time.monotonic()
                continue
            per = frames * self.mic_channels
            signal = self.mic_signal
            if signal.size:
                chunk = np.take(signal, np.arange(sent * per, (sent + 1) * per), mode="wrap")
            else:
                chunk = np.zeros(per, dtype=np.int16)
            os.write(self._mic_fd, chunk.astype("<i2").tobytes())
            sent += 1
            clock += period_ms / 1000
            delay = clock - time.monotonic()
            if delay < -_MAX_LAG_S:
                clock = time.monotonic()
            time.sleep(max(0.0, delay))

    def _drain_speaker(self, period_ms: int = 10) -> None:
        size = self.speaker_rate * period_ms // 1000 * 2
        clock = time.monotonic()
        while not self._stop.is_set():
            data = os.read(self._speaker_fd, size)
            self.recorded.append((time.monotonic(), np.frombuffer(data, dtype="<i2").copy()))
            clock += len(data) / 2 / self.speaker_rate
            delay = clock - time.monotonic()
            if delay < -_MAX_LAG_S:
                clock = time.monotonic()
            time.sleep(max(0.0, delay))

    def heard(self) -> tuple[np.ndarray, np.ndarray]:
        """The speaker's output so far (int16, mono) and the read time of each sample's chunk."""
        if not self.recorded:
            return np.zeros(0, dtype=np.int16), np.zeros(0)
        samples = np.concatenate([chunk for _, chunk in self.recorded])
        times = np.concatenate([np.full(chunk.size, t) for t, chunk in self.recorded])
        return samples, times

    def close(self) -> None:
        self._stop.set()
        # unblock the threads, which may wait on a read from an empty FIFO or a write into a full one
        for fd, unblock in (
            (self._speaker_fd, lambda fd: os.write(fd, bytes(2))),
            (self._mic_fd, lambda fd: os.read(fd, 65536)),
        ):
            os.set_blocking(fd, False)
            with contextlib.suppress(BlockingIOError):
                unblock(fd)
        for thread in self._threads:
            thread.join(timeout=1.0)
        os.close(self._mic_fd)
        os.close(self._speaker_fd)
