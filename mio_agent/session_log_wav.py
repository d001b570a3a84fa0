"""WAV files of a session's audio: 16-bit PCM written as it streams in, read back, repaired after a crash."""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mio_agent.exceptions import StoreError

__all__ = ["WavInfo", "WavWriter", "read_wav_info", "repair_wav", "wav_info", "write_all"]

_HEADER = struct.Struct(
    "<4sI4s4sIHHIIHH4sI"
)  # RIFF, size, WAVE, fmt, 16, PCM, ch, rate, byte rate, align, bits, data, size
_PCM = 1


@dataclass(frozen=True, slots=True)
class WavInfo:
    """A WAV file's format and where its samples are; `complete` is False for a file whose header
    was never finished (a crash while recording): `data_bytes` then counts the whole frames on disk."""

    sample_rate: int
    channels: int
    bits: int
    data_offset: int
    data_bytes: int
    complete: bool

    @property
    def frames(self) -> int:
        return self.data_bytes // (self.channels * self.bits // 8)

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def read_wav_info(f: BinaryIO, name: object) -> WavInfo:
    """The WavInfo of an open WAV file; `name` names it in a StoreError when it is not one."""
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
        raise StoreError(f"{name}: not a WAV file (no RIFF/WAVE header)")
    riff_size = struct.unpack("<I", head[4:8])[0]
    pos, fmt = 12, None
    while pos + 8 <= size:
        f.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
        if chunk_id == b"fmt " and chunk_size >= 16:
            _, channels, rate, _, align, bits = struct.unpack("<HHIIHH", f.read(16))
            if channels == 0 or rate == 0 or align == 0:
                raise StoreError(f"{name}: WAV format chunk holds zeros (channels {channels}, rate {rate})")
            fmt = (rate, channels, bits, align)
        elif chunk_id == b"data":
            if fmt is None:
                raise StoreError(f"{name}: WAV data comes before its format chunk")
            offset, available = pos + 8, size - pos - 8
            # 0 is what a recording writes until it is closed; more than is there means a cut file
            complete = chunk_size <= available and (chunk_size > 0 or available == 0)
            complete = complete and riff_size >= offset - 8 + chunk_size
            data = chunk_size if complete else available - available % fmt[3]
            return WavInfo(fmt[0], fmt[1], fmt[2], offset, data, complete)
        pos += 8 + chunk_size + (chunk_size & 1)
    raise StoreError(f"{name}: WAV file has no data chunk")


def wav_info(path: str | Path) -> WavInfo:
    """Format and sample location of a WAV file; StoreError when it is not one."""
    with open(path, "rb") as f:
        return read_wav_info(f, path)


def repair_wav(path: str | Path) -> bool:
    """Finish the header of a WAV left open by a crash (sizes from the frames on disk, a cut last
    frame dropped); True when the file was changed, False when it was already complete."""
    with open(path, "r+b") as f:
        info = read_wav_info(f, path)
        if info.complete:
            return False
        _finish_header(f, info.data_offset, info.data_bytes)
    return True


def _finish_header(f: BinaryIO, data_offset: int, data_bytes: int) -> None:
    f.truncate(data_offset + data_bytes)
    f.seek(4)
    f.write(struct.pack("<I", data_offset - 8 + data_bytes))
    f.seek(data_offset - 4)
    f.write(struct.pack("<I", data_bytes))


def write_all(f: BinaryIO, data: bytes) -> None:
    """Write all of `data`, going on after short writes (an unbuffered file may take part of it)."""
    view = memoryview(data)
    while view:
        n = f.write(view)
        if not n:
            raise OSError(f"short write to {getattr(f, 'name', f)}")
        view = view[n:]


class WavWriter:
    """A 16-bit PCM WAV written as audio streams in, every chunk handed to the OS at once.

    The header's sizes stay 0 until `close()` fills them, so a file a crash left open is
    recognisable (`wav_info(p).complete` is False) and `repair_wav` finishes it. An existing file
    of the same format is appended to (it is reopened, so its sizes are 0 again until closed).
    """

    def __init__(self, path: str | Path, *, sample_rate: int, channels: int = 1) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self._align = 2 * channels
        if self.path.exists() and self.path.stat().st_size > 0:
            f = open(self.path, "r+b", buffering=0)  # noqa: SIM115 - kept open until close()
            try:
                info = read_wav_info(f, self.path)
                if (info.sample_rate, info.channels, info.bits) != (sample_rate, channels, 16):
                    raise StoreError(
                        f"{self.path} holds {info.bits}-bit audio at {info.sample_rate} Hz × {info.channels}, "
                        f"cannot append 16-bit audio at {sample_rate} Hz × {channels}"
                    )
                _finish_header(f, info.data_offset, info.data_bytes)
                f.seek(info.data_offset - 4)
                f.write(b"\0\0\0\0")
                f.seek(0, io.SEEK_END)
            except BaseException:
                f.close()
                raise
            self._offset, self._bytes = info.data_offset, info.data_bytes
        else:
            f = open(self.path, "w+b", buffering=0)  # noqa: SIM115 - kept open until close()
            rate, align = sample_rate, self._align
            header = (
                b"RIFF",
                36,
                b"WAVE",
                b"fmt ",
                16,
                _PCM,
                channels,
                rate,
                rate * align,
                align,
                16,
                b"data",
                0,
            )
            write_all(f, _HEADER.pack(*header))
            self._offset, self._bytes = _HEADER.size, 0
        self._file: BinaryIO | None = f

    @property
    def frames(self) -> int:
        return self._bytes // self._align

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    def write(self, pcm: bytes) -> None:
        """Append little-endian int16 samples (interleaved when channels > 1)."""
        if self._file is None:
            raise StoreError(f"{self.path} is closed")
        if len(pcm) % self._align:
            raise StoreError(
                f"{self.path}: {len(pcm)} bytes is not a whole number of {self.channels}-channel frames"
            )
        write_all(self._file, pcm)
        self._bytes += len(pcm)

    def sync(self) -> None:
        """Push what was written to the disk itself (fsync)."""
        if self._file is not None:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Write the final sizes into the header and close (idempotent)."""
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            _finish_header(f, self._offset, self._bytes)
        finally:
            f.close()
