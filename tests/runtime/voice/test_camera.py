"""The camera source on an OpenCV-written video file: frames reach the session, keyframes get their codes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest

from mio_agent.config import load_config
from mio_agent.exceptions import DeviceError
from mio_agent.runtime.voice.camera import CameraSource
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.runtime.voice.session import Session


def write_video(
    path: Path, scenes: list[tuple[int, int, int]], frames_each: int = 10, fps: float = 10.0
) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (96, 64))
    assert writer.isOpened()
    for color in scenes:
        for i in range(frames_each):
            frame = np.zeros((64, 96, 3), np.uint8)
            frame[:] = color
            cv2.rectangle(frame, (i * 4, 10), (i * 4 + 20, 40), (255, 255, 255), -1)
            writer.write(frame)
    writer.release()
    return path


async def test_a_video_file_gives_keyframes_with_codes(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", [(0, 0, 200), (0, 200, 0), (200, 0, 0)])
    shared = SharedResources.load(load_config(None))
    async with Session(shared) as session:
        sub = session.bus.subscribe("frames", maxsize=1000, filter=lambda e: e.type == "video.frame")
        camera = CameraSource(str(video), session=session.id, fps=10.0, fast=True)
        camera.start(session.submit)
        await asyncio.wait_for(camera.finished.wait(), 30)
        camera.close()
        await session.drained()
        await session.images.settle()
        assert camera.frames == 30
        assert session.images.frames_seen == 30
        # the first frame and each scene change are keyframes; their codes are ready before any
        # turn (a keyframe that waited while another was encoded may be replaced by a newer one)
        assert session.images.keyframes_encoded >= 2
        chosen = [index for index, _ in session.images.for_turn()]
        assert chosen and chosen[-1] >= 20  # the newest scene (frames 20-29) is what a turn would get
        recent = session.images.recent()
        assert recent is not None and len(recent.codes) == 32
        sub.close()


def test_a_missing_camera_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="no such video file"):
        CameraSource(str(tmp_path / "nope.avi"), session="s")._open()
    with pytest.raises(DeviceError, match="could not be opened"):
        CameraSource("97", session="s")._open()
