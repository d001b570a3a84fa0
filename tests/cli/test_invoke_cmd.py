"""`mio-agent invoke`: capabilities run from the command line write their media where asked."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest
from PIL import Image

from mio_agent.cli.main import main
from tests.cli.conftest import run_cli


def test_generate_image_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["invoke", "generate_image", "--text", "a red cat", "--steps", "1", "--out", str(tmp_path)])
    assert rc == 0
    assert f"[wrote {tmp_path / 'image-1.png'}]" in capsys.readouterr().out
    with Image.open(tmp_path / "image-1.png") as img:
        assert img.size[0] == img.size[1] > 0


def test_speak_writes_a_wav_of_the_four_part_block(tmp_path: Path) -> None:
    assert (
        main(["invoke", "speak", "--text", "hello", "--max-new-tokens", "120", "--out", str(tmp_path)]) == 0
    )
    with wave.open(str(tmp_path / "speech-1.wav")) as wav:
        assert wav.getframerate() == 16000 and wav.getnframes() % 320 == 0 and wav.getnframes() > 0


def test_transcribe_reads_a_speech_file(speech_wav: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "invoke", "transcribe", "--speech", str(speech_wav), "--max-new-tokens", "16", "--out", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    assert "[transcribe 1/1]" in proc.stderr


def test_missing_input_and_unknown_name(tmp_path: Path) -> None:
    proc = run_cli("invoke", "image_editing", "--text", "make it winter", "--out", str(tmp_path))
    # a missing input is the user's error: exit 2, one line in plain words (no internal code)
    assert proc.returncode == 2, proc.stderr
    assert "image" in proc.stderr and "capability.bad_input" not in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    proc = run_cli("invoke", "no_such_thing")
    assert proc.returncode == 2
    assert "no capability 'no_such_thing'" in proc.stderr and "generate_image" in proc.stderr
