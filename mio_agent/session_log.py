"""Session log: a session's events.jsonl, its user and assistant audio as WAV files, and the store."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mio_agent.events import AudioIn, AudioOut, Event, ImageOut, event_to_dict
from mio_agent.exceptions import StoreError
from mio_agent.session_log_layout import EVENTS_FILE, SESSION_FILE, image_path, wav_path
from mio_agent.session_log_read import attach_payloads, read_events
from mio_agent.session_log_wav import WavInfo, WavWriter, repair_wav, wav_info, write_all
from mio_agent.store import SessionStore
from mio_agent.store_records import file_sha256, new_session_id

if TYPE_CHECKING:
    from mio_agent.conversation import Part, Role

# the folder layout, WAV files and reading back live in session_log_*; re-exported here, where
# callers have always imported them from
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
            write_all(events, (line + "\n").encode())
            if self.store is not None:
                self.store.append_event(ev, encoded=line)

    def _wav(self, role: str, turn: int, rate: int, channels: int) -> WavWriter:
        current = self._wavs.get(role)
        if current is not None:
            w = current.writer
            if current.turn == turn and (w.sample_rate, w.channels) == (rate, channels):
                return w
            self._close_wav(role)
        path = wav_path(self.folder, role, turn, rate, channels, new=True)
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
        while image_path(self.folder, turn, k).exists():
            k += 1
        path = image_path(self.folder, turn, k)
        with open(path, "xb") as f:
            write_all(f, png)
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
