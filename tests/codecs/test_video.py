"""Video keyframes on generated videos with known cuts (OpenCV-written MJPG and FFV1), files and live streams."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from mio_agent.codecs.video import KeyframePicker, keyframes_from_file
from mio_agent.exceptions import CodecError, ConfigError

W, H, FPS = 64, 48, 10.0
# the shots differ in brightness too: flat colours of equal brightness can differ by less than the
# HSV threshold (27), exactly as with the reference detector
RED, GREEN, BLUE, WHITE = (220, 30, 30), (20, 100, 30), (20, 40, 210), (240, 240, 240)


def frame(rgb: tuple[int, int, int], i: int) -> np.ndarray:
    """A flat colour with a small moving square, so frames of one scene differ a little."""
    out = np.empty((H, W, 3), dtype=np.uint8)
    out[:] = rgb
    x = (3 * i) % (W - 8)
    out[20:28, x : x + 8] = (128, 128, 128)
    return out


def write(path: Path, scenes: list[tuple[tuple[int, int, int], int]], fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), FPS, (W, H))
    assert writer.isOpened()
    i = 0
    for rgb, n in scenes:
        for _ in range(n):
            writer.write(cv2.cvtColor(frame(rgb, i), cv2.COLOR_RGB2BGR))
            i += 1
    writer.release()
    return path


def colour(image: object) -> np.ndarray:
    mean: np.ndarray = np.asarray(image)[:10, :10].reshape(-1, 3).mean(axis=0)
    return mean


@pytest.mark.parametrize(("fourcc", "suffix"), [("MJPG", ".avi"), ("FFV1", ".mkv")])
def test_one_middle_frame_per_scene(tmp_path: Path, fourcc: str, suffix: str) -> None:
    path = write(tmp_path / f"cuts{suffix}", [(RED, 20), (GREEN, 30), (BLUE, 20)], fourcc)
    frames = keyframes_from_file(path)
    assert [k.index for k in frames] == [10, 35, 60]
    assert [k.time_s for k in frames] == pytest.approx([1.0, 3.5, 6.0])
    for k, rgb in zip(frames, (RED, GREEN, BLUE), strict=True):
        assert k.image.mode == "RGB" and k.image.size == (W, H)
        assert np.abs(colour(k.image) - rgb).max() < 12


def test_no_cut_falls_back_to_ten_uniform_frames(tmp_path: Path) -> None:
    frames = keyframes_from_file(write(tmp_path / "still.avi", [(GREEN, 60)]))
    assert [k.index for k in frames] == list(range(0, 60, 6))
    assert all(a.time_s < b.time_s for a, b in itertools.pairwise(frames))


def test_short_video_gives_every_frame(tmp_path: Path) -> None:
    frames = keyframes_from_file(write(tmp_path / "short.avi", [(RED, 4)]))
    assert [k.index for k in frames] == [0, 1, 2, 3]


def test_scenes_shorter_than_the_minimum_are_not_cut(tmp_path: Path) -> None:
    # a 5-frame flash of white inside a red shot is not a scene of its own
    path = write(tmp_path / "flash.avi", [(RED, 20), (WHITE, 5), (RED, 25)])
    assert [k.index for k in keyframes_from_file(path)] == [10, 35]
    assert [k.index for k in keyframes_from_file(path, min_scene_frames=3)] == [10, 22, 37]


def test_many_scenes_keep_the_longest_in_time_order(tmp_path: Path) -> None:
    lengths = [16, 40, 16, 30, 16]
    colours = [RED, GREEN, BLUE, WHITE, GREEN]
    path = write(tmp_path / "many.avi", list(zip(colours, lengths, strict=True)))
    frames = keyframes_from_file(path, max_frames=2)
    assert [k.index for k in frames] == [16 + 20, 72 + 15]


def test_threshold_controls_the_cuts(tmp_path: Path) -> None:
    path = write(tmp_path / "cuts.avi", [(RED, 20), (GREEN, 20)])
    assert len(keyframes_from_file(path)) == 2
    assert len(keyframes_from_file(path, threshold=255.0, max_frames=3)) == 3  # no cut: uniform


def test_bad_files_and_arguments(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="not found"):
        keyframes_from_file(tmp_path / "missing.avi")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 10)
    with pytest.raises(CodecError, match=r"junk\.avi"):
        keyframes_from_file(junk)
    with pytest.raises(ConfigError, match="max_frames"):
        keyframes_from_file(write(tmp_path / "ok.avi", [(RED, 3)]), max_frames=0)


def test_live_picker_emits_first_frame_and_each_new_scene() -> None:
    picker = KeyframePicker(min_scene_s=1.0, interval_s=100.0)
    shots = [(RED, 20), (GREEN, 5), (BLUE, 25)]  # the green shot is shorter than min_scene_s
    emitted = []
    i = 0
    for rgb, n in shots:
        for _ in range(n):
            k = picker.push(frame(rgb, i), i / FPS)
            if k is not None:
                emitted.append(k)
            i += 1
    assert [k.index for k in emitted] == [0, 20]
    assert emitted[1].time_s == pytest.approx(2.0)
    assert np.abs(colour(emitted[1].image) - GREEN).max() < 3


def test_live_picker_samples_a_still_scene_every_interval() -> None:
    picker = KeyframePicker(interval_s=2.0)
    hits = [i for i in range(60) if picker.push(frame(RED, i), i / FPS) is not None]
    assert hits == [0, 20, 40]
    picker.reset()
    assert picker.push(frame(RED, 0), 0.0) is not None


def test_live_picker_copies_frames_and_checks_them() -> None:
    picker = KeyframePicker()
    buf = frame(RED, 0)
    first = picker.push(buf, 0.0)
    assert first is not None
    buf[:] = 0
    assert colour(first.image).max() > 100
    with pytest.raises(CodecError, match="uint8 RGB array"):
        picker.push(np.zeros((4, 4), dtype=np.uint8), 0.1)
    with pytest.raises(CodecError, match="uint8 RGB array"):
        picker.push(np.zeros((4, 4, 3), dtype=np.float32), 0.1)
    with pytest.raises(ConfigError):
        KeyframePicker(interval_s=0)
