"""Reading a session back: the events of its events.jsonl, with their audio and images from its folder."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from mio_agent.events import Event, EventError, event_from_dict
from mio_agent.exceptions import StoreError
from mio_agent.session_log_layout import EVENTS_FILE, image_path, wav_path
from mio_agent.session_log_wav import WavInfo, read_wav_info

__all__ = ["attach_payloads", "read_events"]


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                data = json.loads(raw)
            except ValueError:
                if not raw.endswith(b"\n"):
                    return  # the line a crash cut short
                raise StoreError(f"{path}, line {number}: not a JSON object; the file is damaged") from None
            if not isinstance(data, dict):
                raise StoreError(f"{path}, line {number}: not a JSON object; the file is damaged")
            yield data


class _Payloads:
    """Finds each binary event's bytes again in the session folder's WAV and PNG files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: dict[tuple[str, int, int, int], Path | None] = {}
        self.read: dict[Path, int] = {}  # bytes of each WAV handed out so far
        self.images: dict[int, int] = {}  # next image number of each turn
        self.handle: tuple[Path, BinaryIO, WavInfo] | None = None

    def close(self) -> None:
        if self.handle is not None:
            self.handle[1].close()
            self.handle = None

    def __call__(self, d: Mapping[str, Any]) -> dict[str, bytes] | None:
        kind, size = d.get("type"), _length(d.get("pcm") if "pcm" in d else d.get("png"))
        turn = d.get("turn")
        if size is None or not isinstance(turn, int):
            return None
        if kind == "image.out":
            k = self.images.get(turn, 0)
            self.images[turn] = k + 1
            image = image_path(self.folder, turn, k)
            png = image.read_bytes() if image.exists() else b""
            return {"png": png} if len(png) == size else None
        if kind not in ("audio.in", "audio.out"):
            return None
        role = "user" if kind == "audio.in" else "assistant"
        rate, channels = d.get("sample_rate"), d.get("channels", 1)
        if not isinstance(rate, int) or not isinstance(channels, int):
            return None
        key = (role, turn, rate, channels)
        if key not in self.paths:
            self.paths[key] = wav_path(self.folder, role, turn, rate, channels, new=False)
        path = self.paths[key]
        if path is None:
            return None
        if self.handle is None or self.handle[0] != path:
            self.close()
            f = open(path, "rb")  # noqa: SIM115 - kept for the next events of this file
            self.handle = (path, f, read_wav_info(f, path))
        _, wav, info = self.handle
        done = self.read.get(path, 0)
        if done + size > info.data_bytes:
            return None
        wav.seek(info.data_offset + done)
        self.read[path] = done + size
        return {"pcm": wav.read(size)}


def _length(value: object) -> int | None:
    if isinstance(value, dict) and type(value.get("bytes")) is int:
        return int(value["bytes"])
    return None


def _rebuild(d: Mapping[str, Any], payloads: Mapping[str, bytes] | None) -> Event | dict[str, Any]:
    try:
        return event_from_dict(d, payloads=payloads)
    except EventError:
        return dict(d)


def attach_payloads(
    dicts: Iterable[Mapping[str, Any]], folder: str | Path
) -> Iterator[Event | dict[str, Any]]:
    """Events from their dicts (events.jsonl lines, or `StoredEvent.data` from the store), with the
    bytes of audio and images read back from the session folder `folder`.

    Yields the Event where it can be rebuilt; the dict itself for a type or field this version
    does not know, a VideoFrame (pixels are not kept), or bytes that are missing on disk.
    """
    payloads = _Payloads(Path(folder))
    try:
        for d in dicts:
            yield _rebuild(d, payloads(d) if "pcm" in d or "png" in d else None)
    finally:
        payloads.close()


def read_events(path: str | Path, *, payloads: bool = True) -> Iterator[Event | dict[str, Any]]:
    """Read a session's events back from its folder or its events.jsonl, in order.

    An unfinished last line (the process was killed while writing it) is skipped; damage
    anywhere else raises StoreError with the line number. With `payloads`, audio and images come
    back from the folder's files (see `attach_payloads`); without, binary events stay dicts.
    """
    p = Path(path)
    file = p / EVENTS_FILE if p.is_dir() else p
    if not file.exists():
        raise StoreError(f"no {EVENTS_FILE} at {p}: give a session folder or its events file")
    if payloads:
        yield from attach_payloads(_read_lines(file), file.parent)
    else:
        for d in _read_lines(file):
            yield _rebuild(d, None)
