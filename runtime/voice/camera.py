"""Camera (or video file) frames read on their own thread and handed to the event loop as VideoFrame events."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mio_agent.events import VideoFrame
from mio_agent.exceptions import DeviceError

__all__ = ["CameraSource"]

log = logging.getLogger(__name__)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # pragma: no cover - a dependency
        raise DeviceError("the camera needs OpenCV: pip install opencv-python-headless") from None
    return cv2


class CameraSource:
    """Reads `device` (a camera index, or a video file) at up to `fps` frames a second on a thread.

    Each frame goes to `on_frame` on the event loop as RGB bytes. A video file plays in real time
    (its own frame rate) unless `fast`; at its end the source stops (`finished` is set). Frames are
    never queued: when the loop is busy, a newer frame replaces the one not yet taken.
    """

    def __init__(
        self,
        device: str | int,
        *,
        session: str,
        fps: float = 5.0,
        fast: bool = False,
        max_width: int = 640,
    ) -> None:
        self.device = device
        self.session = session
        self.fps = fps
        self.fast = fast
        self.max_width = max_width
        self.frames = 0
        self.finished = asyncio.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cap: object = None

    def _open(self) -> object:
        cv2 = _cv2()
        dev = self.device
        if isinstance(dev, str) and dev.isdigit():
            dev = int(dev)
        if isinstance(dev, str) and not Path(dev).is_file():
            raise DeviceError(f"camera {dev!r}: no such video file, and not a camera index (0, 1, ...)")
        cap = cv2.VideoCapture(dev)
        if not cap.isOpened():
            raise DeviceError(
                f"camera {self.device!r} could not be opened; give a camera index that exists (--camera 0) "
                "or a video file"
            )
        return cap

    def start(self, on_frame: Callable[[VideoFrame], None]) -> None:
        """Open the camera (DeviceError if it cannot) and start reading."""
        cap = self._open()
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, args=(cap, loop, on_frame), name="mio-camera", daemon=True
        )
        self._thread.start()

    def _run(
        self, cap: object, loop: asyncio.AbstractEventLoop, on_frame: Callable[[VideoFrame], None]
    ) -> None:
        cv2 = _cv2()
        src_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)  # type: ignore[attr-defined]
        is_file = isinstance(self.device, str) and not self.device.isdigit()
        step_s = 1.0 / self.fps
        next_t = 0.0
        index = 0
        t0 = time.monotonic()
        try:
            while not self._stop.is_set():
                ok, bgr = cap.read()  # type: ignore[attr-defined]
                if not ok:
                    break
                # a file's frame time comes from its frame rate; a camera's from the clock
                t = index / src_fps if is_file and src_fps > 0 else time.monotonic() - t0
                index += 1
                if t + 1e-9 < next_t:
                    continue
                next_t = t + step_s
                if is_file and not self.fast:
                    delay = t0 + t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                h, w = bgr.shape[:2]
                if w > self.max_width:
                    bgr = cv2.resize(bgr, (self.max_width, h * self.max_width // w))
                rgb = np.ascontiguousarray(bgr[:, :, ::-1])
                # a file's frames are stamped on its own timeline (also when read fast), so scene
                # changes are judged by the video's time, not by how fast it was read
                ev = VideoFrame(
                    session=self.session,
                    turn=0,
                    t=t0 + t,
                    width=rgb.shape[1],
                    height=rgb.shape[0],
                    rgb=rgb.tobytes(),
                )
                self.frames += 1
                loop.call_soon_threadsafe(on_frame, ev)
        except Exception:  # a camera unplugged mid-session: say so, the voice loop goes on
            log.exception("camera %r stopped", self.device)
        finally:
            cap.release()  # type: ignore[attr-defined]
            loop.call_soon_threadsafe(self.finished.set)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
