"""`mio-agent chat` on the embedded model: one shot, REPL, and a WAV for spoken replies."""

from __future__ import annotations

import asyncio
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from mio_agent.cli.common import open_model
from mio_agent.cli.main import main
from mio_agent.codecs.folders import speech_tokenizer_dir
from mio_agent.codecs.speech import SpeechCodec, write_wav
from mio_agent.config import load_config
from mio_agent.conversation import SpeechPart, TextPart, Turn
from mio_agent.engine import ConversationEngine, ReplyOptions, ReplyResult
from mio_agent.session_log import wav_info
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


# -- what the products hold ------------------------------------------------------------------------


def _reply(mode: str, text: str, seed: int, max_new_tokens: int | None = None) -> ReplyResult:
    """The reply `chat` gets, made in this process with the same configuration, mode and seed."""
    cfg = load_config(None)
    lm = open_model(cfg, quiet=True)
    engine = ConversationEngine.from_config(
        lm, cfg.engine, mode=mode, max_new_tokens=max_new_tokens, preset=cfg.engine.preset, seed=seed
    )

    async def reply() -> ReplyResult:
        stream = engine.reply(Turn("user", (TextPart(text),)), ReplyOptions(max_new_tokens=max_new_tokens))
        return await stream.wait()

    try:
        return asyncio.run(reply())
    finally:
        engine.close()


def test_voice_reply_wav_is_the_spoken_reply(tmp_path: Path) -> None:
    proc = run_cli("chat", "--mode", "voice", "--text", "hi", "--seed", "4", "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    wav = tmp_path / "reply-1.wav"
    assert f"[wrote {wav}]" in proc.stdout
    info = wav_info(wav)
    assert (info.sample_rate, info.channels, info.bits, info.complete) == (16000, 1, 16, True)
    assert info.duration_s > 0
    match = re.search(r"\[speech block: (\d+) content codes \+ 3×(\d+) timbre codes", proc.stdout)
    assert match and match.group(1) == match.group(2), proc.stdout
    assert info.frames == int(match.group(1)) * 320
    # the samples are the reply's speech codes decoded with their timbre
    speech = [p for p in _reply("voice", "hi", 4).parts if isinstance(p, SpeechPart)]
    assert [len(p.content) for p in speech] == [int(match.group(1))]
    codec = SpeechCodec.from_pretrained(speech_tokenizer_dir(load_config(None)), device="cpu")
    expected = tmp_path / "expected.wav"
    write_wav(expected, codec.decode(speech[0].content, speech[0].timbre), codec.sample_rate)
    assert np.abs(_samples(wav) - _samples(expected)).max() <= 1


def _samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int32)


def test_std_reply_streams_the_models_text(tmp_path: Path) -> None:
    proc = run_cli(
        "chat",
        "--mode",
        "std",
        "--text",
        "hi",
        "--seed",
        "1",
        "--max-new-tokens",
        "24",
        "--out-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    result = _reply("std", "hi", 1, 24)
    assert 0 < result.decode_tokens <= 24
    text = "".join(p.text for p in result.parts if isinstance(p, TextPart))
    assert text and not [p for p in result.parts if not isinstance(p, TextPart)]
    # stdout is the reply's text as it streamed, then the end of the line; no files without speech
    assert proc.stdout == text + "\n"
    assert list(tmp_path.iterdir()) == []
