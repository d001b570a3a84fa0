"""`mio-agent chat` on the embedded model: one shot, REPL, and a WAV for spoken replies."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import pytest

from mio_agent.cli.main import main
from tests.cli.conftest import run_cli


def test_voice_one_shot_writes_the_reply_as_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["chat", "--mode", "voice", "--text", "hello", "--seed", "1", "--out-dir", str(tmp_path)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "replies are noise" in captured.err
    match = re.search(r"\[speech block: (\d+) content codes \+ 3×\d+ timbre codes", captured.out)
    assert match, captured.out
    frames = int(match.group(1))
    with wave.open(str(tmp_path / "reply-1.wav")) as wav:
        assert wav.getframerate() == 16000
        assert wav.getnchannels() == 1
        # SpeechTokenizer: 320 samples (20 ms) per code frame
        assert wav.getnframes() == frames * 320


def test_std_one_shot_streams_and_exits_zero(tmp_path: Path) -> None:
    proc = run_cli(
        "chat", "--mode", "std", "--text", "hi", "--max-new-tokens", "24", "--out-dir", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("replies are noise") == 1


def test_repl_reads_lines_until_quit(tmp_path: Path) -> None:
    proc = run_cli(
        "chat",
        "--mode",
        "voice",
        "--seed",
        "2",
        "--out-dir",
        str(tmp_path),
        stdin="first\nsecond\n/quit\nignored\n",
    )
    assert proc.returncode == 0, proc.stderr
    # one spoken reply per line before /quit
    assert sorted(p.name for p in tmp_path.glob("reply-*.wav")) == ["reply-1.wav", "reply-2.wav"]


def test_a_missing_out_dir_is_created_and_a_file_there_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "replies"
    proc = run_cli("chat", "--text", "x", "--mode", "voice", "--out-dir", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert (folder / "reply-1.wav").is_file()
    # a second run numbers after what is there: nothing earlier is overwritten
    first = (folder / "reply-1.wav").read_bytes()
    again = run_cli("chat", "--text", "y", "--mode", "voice", "--out-dir", str(folder))
    assert again.returncode == 0, again.stderr
    assert (folder / "reply-2.wav").is_file() and (folder / "reply-1.wav").read_bytes() == first
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bad = run_cli("chat", "--text", "x", "--out-dir", str(blocker))
    assert bad.returncode == 2 and "--out-dir" in bad.stderr and "Traceback" not in bad.stderr


def test_an_empty_text_is_refused_before_the_model_loads() -> None:
    proc = run_cli("chat", "--text", "  ")
    assert proc.returncode == 2 and "--text is empty" in proc.stderr and "Traceback" not in proc.stderr
