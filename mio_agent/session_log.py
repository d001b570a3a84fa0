"""Session log: a session's events.jsonl, its user and assistant audio as WAV files, and the store."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mio_agent.events import AudioIn, AudioOut, Event, EventError, ImageOut, event_from_dict, event_to_dict
from mio_agent.exceptions import StoreError
from mio_agent.store import SessionStore
from mio_agent.store_records import file_sha256, new_session_id

if TYPE_CHECKING:
    from mio_agent.conversation import Part, Role

__all__ = [
    "EVENTS_FILE",
    "SESSION_FILE",
    "SessionLog",
    "WavInfo",
    "WavWriter",
    "attach_payloads",
    "read_events",
    "repair_wav",
    "wav_info",
]

EVENTS_FILE = "events.jsonl"
"""One event a line, in the order they were written."""
SESSION_FILE = "session.json"
"""The session's id, mode, config and creation time, so a folder explains itself without the store."""

_HEADER = struct.Struct(
    "<4sI4s4sIHHIIHH4sI"
)  # RIFF, size, WAVE, fmt, 16, PCM, ch, rate, byte rate, align, bits, data, size
_PCM = 1


# -- WAV files ------------------------------------------------------------------------------------


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


def _read_info(f: BinaryIO, name: object) -> WavInfo:
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
        return _read_info(f, path)


def repair_wav(path: str | Path) -> bool:
    """Finish the header of a WAV left open by a crash (sizes from the frames on disk, a cut last
    frame dropped); True when the file was changed, False when it was already complete."""
    with open(path, "r+b") as f:
        info = _read_info(f, path)
        if info.complete:
            return False
        _finish(f, info.data_offset, info.data_bytes)
    return True


def _finish(f: BinaryIO, data_offset: int, data_bytes: int) -> None:
    f.truncate(data_offset + data_bytes)
    f.seek(4)
    f.write(struct.pack("<I", data_offset - 8 + data_bytes))
    f.seek(data_offset - 4)
    f.write(struct.pack("<I", data_bytes))


def _write_all(f: BinaryIO, data: bytes) -> None:
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
                info = _read_info(f, self.path)
                if (info.sample_rate, info.channels, info.bits) != (sample_rate, channels, 16):
                    raise StoreError(
                        f"{self.path} holds {info.bits}-bit audio at {info.sample_rate} Hz × {info.channels}, "
                        f"cannot append 16-bit audio at {sample_rate} Hz × {channels}"
                    )
                _finish(f, info.data_offset, info.data_bytes)
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
            _write_all(f, _HEADER.pack(*header))
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
        _write_all(self._file, pcm)
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
            _finish(f, self._offset, self._bytes)
        finally:
            f.close()


def _wav_path(folder: Path, role: str, turn: int, rate: int, channels: int, *, new: bool) -> Path | None:
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


def _image_path(folder: Path, turn: int, k: int) -> Path:
    return folder / f"image-{turn}-{k}.png"


# -- the log --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _OpenWav:
    turn: int
    writer: WavWriter


class SessionLog:
    """Everything of one session in `<root>/<session id>/`, and in the store at `<root>` (optional).

    - `events.jsonl`: every event written, one `event_to_dict` object a line. Each line is handed
      to the OS in one write, so a killed process loses at most the line in progress; `flush()`
      also fsyncs (for power cuts) and commits the store.
    - `user-<turn>.wav` / `assistant-<turn>.wav`: AudioIn / AudioOut samples, appended as they
      come (before the event's line, so a line's audio is always on disk), headers finished on
      close or by `repair_wav`. `image-<turn>-<k>.png`: decoded images of ImageOut events.
      VideoFrame pixels are not kept (their lines record the size only).
    - the store (`SessionStore`): the same events, turns via `record_turn`, and the media files.

    Memory does not grow with the session: one open WAV per role, nothing kept per event.
    Any thread may call it (a lock orders the writes). `write` costs a few system calls; when a
    turn's audio file is finished it also hashes it, so event-loop code may prefer to call it
    from a worker thread.
    """

    def __init__(self, folder: Path, session_id: str, store: SessionStore | None, *, own_store: bool) -> None:
        """Use `SessionLog.start` or `SessionLog.resume`."""
        self.folder = folder
        self.session_id = session_id
        self.store = store
        self._own_store = own_store
        self._lock = threading.Lock()
        self._wavs: dict[str, _OpenWav] = {}
        events = folder / EVENTS_FILE
        _drop_partial_line(events)
        self._events: BinaryIO | None = open(events, "ab", buffering=0)  # noqa: SIM115 - closed in close()

    @classmethod
    def start(
        cls,
        root: str | Path | None = None,
        *,
        mode: str = "voice",
        config: Mapping[str, Any] | None = None,
        store: SessionStore | bool = True,
    ) -> SessionLog:
        """Create a new session and its folder under `root` (default: the configured session dir,
        `Config().session.resolved_dir()`). `store`: True opens `<root>/sessions.sqlite3` (closed
        with the log), False keeps files only, a SessionStore is used as is (left open)."""
        base, db, own = _resolve(root, store)
        try:
            session_id = db.create_session(mode, config) if db is not None else new_session_id()
            folder = base / session_id
            try:
                folder.mkdir(parents=True, exist_ok=db is not None)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the session folder {folder}: {exc.strerror or exc}"
                ) from None
            meta = {"id": session_id, "mode": mode, "config": dict(config or {}), "created": time.time()}
            try:
                text = json.dumps(meta, indent=1)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"session config must be JSON-serialisable: {exc}") from None
            (folder / SESSION_FILE).write_text(text + "\n", encoding="utf-8")
            return cls(folder, session_id, db, own_store=own)
        except BaseException:
            if own and db is not None:
                db.close()
            raise

    @classmethod
    def resume(
        cls, root: str | Path | None, session_id: str, *, store: SessionStore | bool = True
    ) -> SessionLog:
        """Go on writing an existing session: files are appended to, an unfinished last line of
        events.jsonl (a crash) is dropped, and its sequence in the store continues."""
        base, db, own = _resolve(root, store)
        try:
            folder = base / session_id
            if not folder.is_dir():
                raise StoreError(f"no session folder {folder}: check the session id and --session-dir")
            if db is not None:
                db.session_info(session_id)  # raises StoreError naming recent sessions
            return cls(folder, session_id, db, own_store=own)
        except BaseException:
            if own and db is not None:
                db.close()
            raise

    def _check_open(self) -> BinaryIO:
        if self._events is None:
            raise StoreError(f"the session log of {self.session_id} is closed")
        return self._events

    def write(self, ev: Event) -> None:
        """Log one event: its line, its audio or image file, and the store."""
        if ev.session != self.session_id:
            raise StoreError(f"event {ev.type} belongs to session {ev.session!r}, not {self.session_id!r}")
        line = json.dumps(event_to_dict(ev), separators=(",", ":"))
        with self._lock:
            events = self._check_open()
            if isinstance(ev, AudioIn | AudioOut):
                role, channels = ("user", ev.channels) if isinstance(ev, AudioIn) else ("assistant", 1)
                self._wav(role, ev.turn, ev.sample_rate, channels).write(ev.pcm)
            elif isinstance(ev, ImageOut) and ev.png is not None:
                self._image(ev.turn, ev.png)
            _write_all(events, (line + "\n").encode())
            if self.store is not None:
                self.store.append_event(ev, encoded=line)

    def _wav(self, role: str, turn: int, rate: int, channels: int) -> WavWriter:
        current = self._wavs.get(role)
        if current is not None:
            w = current.writer
            if current.turn == turn and (w.sample_rate, w.channels) == (rate, channels):
                return w
            self._close_wav(role)
        path = _wav_path(self.folder, role, turn, rate, channels, new=True)
        assert path is not None
        writer = WavWriter(path, sample_rate=rate, channels=channels)
        self._wavs[role] = _OpenWav(turn, writer)
        if self.store is not None:
            self.store.add_media(self.session_id, turn, f"{role}_audio", path)
        return writer

    def _close_wav(self, role: str) -> None:
        current = self._wavs.pop(role)
        current.writer.close()
        if self.store is not None:
            path = current.writer.path
            sha, duration = file_sha256(path), current.writer.duration_s
            self.store.add_media(
                self.session_id, current.turn, f"{role}_audio", path, sha256=sha, duration_s=duration
            )

    def _image(self, turn: int, png: bytes) -> None:
        k = 0
        while _image_path(self.folder, turn, k).exists():
            k += 1
        path = _image_path(self.folder, turn, k)
        with open(path, "xb") as f:
            _write_all(f, png)
        if self.store is not None:
            sha = file_sha256(path)
            self.store.add_media(self.session_id, turn, "image", path, sha256=sha, size=len(png))

    def record_turn(
        self,
        turn: int,
        role: Role,
        *,
        token_ids: Sequence[int] = (),
        parts: Sequence[Part] = (),
        reason: str | None = None,
        timings: Mapping[str, Any] | None = None,
    ) -> None:
        """Store a turn (see SessionStore.record_turn); without a store, events.jsonl is all there is."""
        if self.store is not None:
            self.store.record_turn(
                self.session_id, turn, role, token_ids=token_ids, parts=parts, reason=reason, timings=timings
            )

    def flush(self) -> int:
        """Make everything written so far durable: fsync the files, commit the store; the store's `acked`."""
        with self._lock:
            os.fsync(self._check_open().fileno())
            for current in self._wavs.values():
                current.writer.sync()
        return self.store.flush() if self.store is not None else 0

    def close(self, status: str = "closed") -> None:
        """Finish the WAV files, flush, mark the session ended with `status` (idempotent)."""
        with self._lock:
            if self._events is None:
                return
            try:
                for role in list(self._wavs):
                    self._close_wav(role)
                os.fsync(self._events.fileno())
                if self.store is not None:
                    self.store.flush()
                    self.store.end_session(self.session_id, status)
            finally:
                self._events.close()
                self._events = None
                for current in self._wavs.values():
                    current.writer.close()
                if self.store is not None and self._own_store:
                    self.store.close()

    def __enter__(self) -> SessionLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        clean = exc_type is None or issubclass(exc_type, KeyboardInterrupt)
        self.close("closed" if clean else "error")


def _resolve(root: str | Path | None, store: SessionStore | bool) -> tuple[Path, SessionStore | None, bool]:
    """The session root, the store to use and whether the log owns (closes) it."""
    if root is not None:
        base = Path(root).expanduser()
    elif isinstance(store, SessionStore):
        base = store.root
    else:
        from mio_agent.config import SessionConfig

        base = SessionConfig().resolved_dir()
    if isinstance(store, SessionStore):
        return base, store, False
    return base, (SessionStore.open(base) if store else None), bool(store)


def _drop_partial_line(path: Path) -> None:
    """Cut an unfinished last line (a crash mid-write) so that appended lines start clean."""
    if not path.exists():
        return
    with open(path, "r+b") as f:
        end = f.seek(0, io.SEEK_END)
        pos = end
        while pos > 0:
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            piece = f.read(step)
            nl = piece.rfind(b"\n")
            if nl >= 0:
                keep = pos - step + nl + 1
                break
            pos -= step
        else:
            keep = 0
        if keep != end:
            f.truncate(keep)


# -- reading --------------------------------------------------------------------------------------


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
            image = _image_path(self.folder, turn, k)
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
            self.paths[key] = _wav_path(self.folder, role, turn, rate, channels, new=False)
        path = self.paths[key]
        if path is None:
            return None
        if self.handle is None or self.handle[0] != path:
            self.close()
            f = open(path, "rb")  # noqa: SIM115 - kept for the next events of this file
            self.handle = (path, f, _read_info(f, path))
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
