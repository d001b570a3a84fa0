"""Video keyframes for MIO: one frame per scene, else about ten evenly spaced frames, in time order."""

# MIO sees a video as a list of keyframes, each one image block. The reference picks them with
# PySceneDetect's ContentDetector (a cut where the mean HSV difference between consecutive frames
# reaches 27, scenes at least 15 frames long, the middle frame of each scene) and falls back to
# ~10 uniformly spaced frames when it finds no cut. This module measures the same HSV difference
# directly with OpenCV (opencv-python-headless) instead of depending on PySceneDetect: that
# detector is a few lines of arithmetic over frames OpenCV already decodes (PySceneDetect decodes
# with OpenCV too), owning it lets one measure serve both finished files and a live camera stream
# fed frame by frame (`KeyframePicker`), and it avoids a second dependency whose Python API broke
# between releases (0.6's VideoManager, which the reference uses, is gone in 0.7).

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mio_agent.exceptions import CodecError, ConfigError

__all__ = [
    "ANALYSIS_WIDTH",
    "DEFAULT_THRESHOLD",
    "MIN_SCENE_FRAMES",
    "ContentMeter",
    "Keyframe",
    "KeyframePicker",
    "keyframes_from_file",
]

DEFAULT_THRESHOLD = 27.0
MIN_SCENE_FRAMES = 15
# frames are compared at about this width (PySceneDetect's default downscaling target)
ANALYSIS_WIDTH = 256
# frames per second assumed when a container does not say
FALLBACK_FPS = 25.0


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise ConfigError(
            f"video keyframes need OpenCV ({exc}); install it with pip install opencv-python-headless"
        ) from exc
    return cv2


@dataclass(frozen=True)
class Keyframe:
    """One keyframe: its frame number (from 0), its time in seconds from the start, and the RGB image."""

    index: int
    time_s: float
    image: Image.Image


class ContentMeter:
    """How much a frame differs from the previous one: mean absolute difference of H, S and V.

    Values are on OpenCV's 8-bit HSV scale (hue 0..179), so a hard cut between unrelated shots
    scores tens and a still scene close to 0.
    """

    def __init__(self, *, analysis_width: int = ANALYSIS_WIDTH) -> None:
        self.analysis_width = analysis_width
        self._prev: np.ndarray | None = None

    def reset(self) -> None:
        self._prev = None

    def score(self, frame: np.ndarray, *, bgr: bool) -> float | None:
        """The change from the previous frame, or None for the first frame (or after a size change)."""
        cv2 = _cv2()
        h, w = frame.shape[:2]
        factor = max(1, w // self.analysis_width)
        if factor > 1:
            frame = cv2.resize(
                frame, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA
            )
        hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV if bgr else cv2.COLOR_RGB2HSV).astype(np.int16)
        prev, self._prev = self._prev, hsv
        if prev is None or prev.shape != hsv.shape:
            return None
        return float(np.abs(hsv - prev).mean())


def _check_frame(frame: object) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        what = (
            f"{frame.dtype} array of shape {frame.shape}"
            if isinstance(frame, np.ndarray)
            else type(frame).__name__
        )
        raise CodecError(f"a video frame must be a uint8 RGB array of shape (H, W, 3), not a {what}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise CodecError(f"a video frame is empty ({frame.shape[1]}×{frame.shape[0]} pixels)")
    return frame


def _scene_cuts(scores: list[float | None], threshold: float, min_scene_frames: int) -> list[int]:
    """Frame numbers where a new scene starts (never 0), each scene at least `min_scene_frames` long."""
    cuts: list[int] = []
    last = 0
    for i, s in enumerate(scores):
        if s is not None and s >= threshold and i - last >= min_scene_frames:
            cuts.append(i)
            last = i
    return cuts


def _picks(total: int, cuts: list[int], max_frames: int) -> list[int]:
    """The middle frame of each scene (the longest `max_frames` scenes if more), else uniform frames."""
    if not cuts:
        n = min(max_frames, total)
        return [i * total // n for i in range(n)]
    bounds = [0, *cuts, total]
    scenes = [(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]
    if len(scenes) > max_frames:
        scenes = sorted(sorted(scenes, key=lambda s: s[0] - s[1])[:max_frames])
    return [a + (b - a) // 2 for a, b in scenes]


def _open(path: Path) -> Any:
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise CodecError(f"video {path} cannot be opened: not a video, or in a codec OpenCV lacks")
    return cap


def keyframes_from_file(
    path: str | os.PathLike[str],
    *,
    max_frames: int = 10,
    threshold: float = DEFAULT_THRESHOLD,
    min_scene_frames: int = MIN_SCENE_FRAMES,
) -> list[Keyframe]:
    """Keyframes of a video file, in time order: the middle frame of each scene when the video
    has cuts (at most `max_frames`, the longest scenes kept), else `max_frames` evenly spaced
    frames (all frames of a shorter video). The audio track is ignored.

    `threshold` is the HSV change (0..255 scale) that makes a cut, `min_scene_frames` the
    shortest scene. Reads the file twice (measure, then pick) so memory stays one frame.
    """
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise ConfigError(f"max_frames must be a positive integer, not {max_frames!r}")
    p = Path(path)
    if not p.is_file():
        raise CodecError(f"video {p} not found")
    cv2 = _cv2()
    meter = ContentMeter()
    scores: list[float | None] = []
    cap = _open(p)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            scores.append(meter.score(frame, bgr=True))
    finally:
        cap.release()
    if not scores:
        raise CodecError(f"video {p} has no frame OpenCV can decode")
    if not math.isfinite(fps) or fps <= 0:
        fps = FALLBACK_FPS
    wanted = _picks(len(scores), _scene_cuts(scores, threshold, min_scene_frames), max_frames)
    out: list[Keyframe] = []
    cap = _open(p)
    try:
        index, want = 0, set(wanted)
        while want:
            if index in want:
                ok, frame = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                out.append(Keyframe(index, index / fps, Image.fromarray(rgb)))
                want.discard(index)
            elif not cap.grab():
                break
            index += 1
    finally:
        cap.release()
    if not out:
        raise CodecError(f"video {p} stopped decoding before its keyframes")
    return out


class KeyframePicker:
    """Keyframes of a live stream, one frame at a time: the first frame, the first frame of each
    new scene, and one frame every `interval_s` seconds while a scene lasts (the uniform fallback).

    A cut is a change of at least `threshold` (as in `keyframes_from_file`) at least
    `min_scene_s` seconds after the previous one. Not thread-safe: feed it from one thread.
    """

    def __init__(
        self,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        min_scene_s: float = 0.5,
        interval_s: float = 10.0,
        analysis_width: int = ANALYSIS_WIDTH,
    ) -> None:
        if not min_scene_s >= 0 or not interval_s > 0:
            raise ConfigError(
                f"KeyframePicker needs min_scene_s >= 0 and interval_s > 0, not {min_scene_s!r} and {interval_s!r}"
            )
        self.threshold = threshold
        self.min_scene_s = min_scene_s
        self.interval_s = interval_s
        self._meter = ContentMeter(analysis_width=analysis_width)
        self._count = 0
        self._scene_start_s = 0.0
        self._last_emit_s = 0.0

    def reset(self) -> None:
        """Forget the stream: the next frame pushed starts a new one (and is a keyframe)."""
        self._meter.reset()
        self._count = 0

    def push(self, frame_rgb: np.ndarray, time_s: float) -> Keyframe | None:
        """Feed the next frame (uint8 RGB, H×W×3) shot at `time_s` seconds; a Keyframe when it is one."""
        frame = _check_frame(frame_rgb)
        index = self._count
        self._count += 1
        score = self._meter.score(frame, bgr=False)
        if score is None or (score >= self.threshold and time_s - self._scene_start_s >= self.min_scene_s):
            self._scene_start_s = time_s
        elif time_s - self._last_emit_s < self.interval_s:
            return None
        self._last_emit_s = time_s
        # copy: capture code often reuses its frame buffer
        return Keyframe(index, float(time_s), Image.fromarray(np.ascontiguousarray(frame)).copy())
