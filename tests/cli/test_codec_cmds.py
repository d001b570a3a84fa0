"""`mio-agent tokenize` / `detokenize` on the embedded tiny codecs: round trips and bad input."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mio_agent.cli.main import main
from tests.cli.conftest import run_cli


def test_speech_round_trip(speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenize", "speech", str(speech_wav), "--timbre", "--json"]) == 0
    codes = json.loads(capsys.readouterr().out)
    with wave.open(str(speech_wav)) as w:
        seconds = w.getnframes() / w.getframerate()
    n = len(codes["content"])
    assert abs(n - seconds * 50) <= 2
    assert [len(t) for t in codes["timbre"]] == [n, n, n]
    assert all(0 <= c < 1024 for layer in [codes["content"], *codes["timbre"]] for c in layer)
    codes_file = tmp_path / "codes.json"
    codes_file.write_text(json.dumps(codes), encoding="utf-8")
    out = tmp_path / "back.wav"
    assert main(["detokenize", "speech", str(codes_file), "-o", str(out)]) == 0
    with wave.open(str(out)) as w:
        assert w.getframerate() == 16000 and w.getnframes() == n * 320
    assert out.stat().st_mode & 0o044 == 0o044  # readable like any file the user writes


def test_content_only_tokenize_has_no_timbre(speech_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenize", "speech", str(speech_wav), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"content"}


@pytest.mark.parametrize(
    ("codes", "fragment"),
    [
        ({"content": [1, 2, 3], "timbre": [[1, 2, 3], [1, 2], [1, 2, 3]]}, "timbre"),
        ({"content": [1, 2, 1024]}, "1024"),
        ({"content": []}, "content"),
        ({"codes": [1]}, '"content"'),
    ],
)
def test_bad_speech_codes_leave_no_file(tmp_path: Path, codes: dict[str, object], fragment: str) -> None:
    codes_file = tmp_path / "bad.json"
    codes_file.write_text(json.dumps(codes), encoding="utf-8")
    out = tmp_path / "out.wav"
    proc = run_cli("detokenize", "speech", str(codes_file), "-o", str(out))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert fragment in proc.stderr
    assert not out.exists() and list(tmp_path.glob(".out.wav*")) == []


def test_bad_audio_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    not_audio = tmp_path / "text.wav"
    not_audio.write_text("hello", encoding="utf-8")
    for path in (empty, not_audio, tmp_path / "missing.wav"):
        proc = run_cli("tokenize", "speech", str(path))
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and path.name in proc.stderr


def test_image_tokenize_and_detokenize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(src)
    assert main(["tokenize", "image", str(src), "--json"]) == 0
    codes = json.loads(capsys.readouterr().out)["codes"]
    assert len(codes) == 32 and all(0 <= c < 8192 for c in codes)
    codes_file = tmp_path / "img.json"
    codes_file.write_text(json.dumps({"image": {"codes": codes}}), encoding="utf-8")
    out = tmp_path / "out.png"
    assert main(["detokenize", "image", str(codes_file), "-o", str(out), "--steps", "1"]) == 0
    assert "denoising 1/1" in capsys.readouterr().err
    with Image.open(out) as img:
        assert img.size[0] == img.size[1] > 0


def test_bad_images_and_codes(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    proc = run_cli("tokenize", "image", str(corrupt))
    assert proc.returncode == 2 and "corrupt.png" in proc.stderr and "Traceback" not in proc.stderr
    codes_file = tmp_path / "c.json"
    codes_file.write_text(json.dumps({"codes": [8192] * 32}), encoding="utf-8")
    out = tmp_path / "o.png"
    proc = run_cli("detokenize", "image", str(codes_file), "-o", str(out), "--steps", "1")
    assert proc.returncode == 2 and "8192" in proc.stderr and not out.exists()


def test_video_keyframes_per_scene(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cuts.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    # three scenes of two seconds (longer than the 15-frame minimum), differing in brightness and colour
    for color in ((20, 20, 200), (230, 230, 40), (90, 30, 90)):
        for _ in range(20):
            writer.write(np.full((48, 64, 3), color, dtype=np.uint8))
    writer.release()
    assert main(["tokenize", "video", str(path), "--json"]) == 0
    frames = json.loads(capsys.readouterr().out)["keyframes"]
    assert len(frames) == 3
    times = [f["time_s"] for f in frames]
    assert times == sorted(times) and times[0] < 2.0 <= times[1] < 4.0 <= times[2]
    assert all(len(f["codes"]) == 32 for f in frames)
