"""Session folder layout: the names of its events file, session file, and audio and image files."""

from __future__ import annotations

from pathlib import Path

from mio_agent.exceptions import StoreError
from mio_agent.session_log_wav import wav_info

__all__ = ["EVENTS_FILE", "SESSION_FILE", "image_path", "wav_path"]

EVENTS_FILE = "events.jsonl"
"""One event a line, in the order they were written."""
SESSION_FILE = "session.json"
"""The session's id, mode, config and creation time, so a folder explains itself without the store."""


def wav_path(folder: Path, role: str, turn: int, rate: int, channels: int, *, new: bool) -> Path | None:
    """The file a role's audio of a turn in this format goes to: `<role>-<turn>.wav`, or
    `<role>-<turn>.<k>.wav` when earlier ones hold another format. With `new` False (reading),
    None where a writer would have created a file."""
    for k in range(1000):
        path = folder / (f"{role}-{turn}.wav" if k == 0 else f"{role}-{turn}.{k}.wav")
        if not path.exists() or path.stat().st_size == 0:
            return path if new else None
        try:
            info = wav_info(path)
        except StoreError:
            continue
        if (info.sample_rate, info.channels, info.bits) == (rate, channels, 16):
            return path
    raise StoreError(f"{folder}: too many audio formats in turn {turn}")  # pragma: no cover


def image_path(folder: Path, turn: int, k: int) -> Path:
    """The file of the `k`-th image (from 0) of a turn."""
    return folder / f"image-{turn}-{k}.png"
