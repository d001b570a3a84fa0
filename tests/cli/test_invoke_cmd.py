"""`mio-agent invoke`: capabilities run from the command line write their media where asked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mio_agent.capability import CapabilityContext
from mio_agent.capability_runner import run_capability
from mio_agent.cli.common import open_model
from mio_agent.cli.main import main
from mio_agent.codecs.folders import diffusion_dir, speech_tokenizer_dir
from mio_agent.codecs.image.unclip import UnclipDecoder
from mio_agent.codecs.speech import SpeechCodec, write_wav
from mio_agent.config import load_config
from mio_agent.conversation import TextPart
from mio_agent.engine import ConversationEngine
from mio_agent.events import OutputEvent, SpeechCodes
from mio_agent.plugin import PluginManager
from mio_agent.session_log import wav_info
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


# -- what the products hold ------------------------------------------------------------------------

SEED = 7  # the CLI and the reproduction below sample alike with the same engine seed


def _reproduce(name: str, text: str, max_new_tokens: int) -> list[OutputEvent]:
    """The events the capability makes in this process, on the same configuration and seed as the CLI."""
    cfg = load_config(None, overrides={"engine.seed": SEED})
    lm = open_model(cfg, quiet=True)
    ctx = CapabilityContext(
        parts=(TextPart(text),),
        engine_factory=lambda mode: ConversationEngine.from_config(lm, cfg.engine, mode=mode),
        capability=name,
        max_new_tokens=max_new_tokens,
    )
    cap = PluginManager.from_config(cfg).capability(name)

    async def events() -> list[OutputEvent]:
        return [ev async for ev in run_capability(cap, ctx)]

    return asyncio.run(events())


def test_speak_writes_the_speech_of_the_codes_it_generated(tmp_path: Path) -> None:
    env = {**os.environ, "MIO_AGENT__ENGINE__SEED": str(SEED), "MIO_AGENT__ROUTER__TRANSCRIBE": "never"}
    args = ["invoke", "speak", "--text", "hello there", "--max-new-tokens", "160", "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "mio_agent.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    wav = tmp_path / "speech-1.wav"
    assert f"[wrote {wav}]" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech-1.wav"]  # one block, one file
    layers = [e.codes for e in _reproduce("speak", "hello there", 160) if isinstance(e, SpeechCodes)]
    # four-part speech: content codes, then three timbre layers of the same length
    assert len(layers) == 4 and len({len(c) for c in layers}) == 1 and layers[0]
    content, *timbre = layers
    info = wav_info(wav)
    assert (info.sample_rate, info.channels, info.bits, info.complete) == (16000, 1, 16, True)
    # SpeechTokenizer: 320 samples (20 ms) per code
    assert info.frames == len(content) * 320 and info.duration_s == pytest.approx(len(content) * 0.02)
    # and the samples are those codes decoded, with their timbre
    codec = SpeechCodec.from_pretrained(speech_tokenizer_dir(load_config(None)))
    expected = tmp_path / "expected.wav"
    write_wav(expected, codec.decode(content, timbre), codec.sample_rate)
    assert np.abs(_samples(wav) - _samples(expected)).max() <= 1


def _samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int32)


def test_generate_image_writes_a_png_of_the_decoders_size(tmp_path: Path) -> None:
    proc = run_cli(
        "invoke", "generate_image", "--text", "a lighthouse", "--steps", "1", "--out", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    png = tmp_path / "image-1.png"
    assert f"[wrote {png}]" in proc.stdout
    # the decoder's output size (768 × 768 with MIO's unCLIP, docs/codecs.md; 32 × 32 for the tiny one)
    size = UnclipDecoder(
        diffusion_dir(load_config(None)), device=torch.device("cpu"), dtype=torch.float32
    ).image_size
    with Image.open(png) as img:
        img.load()  # the whole file decodes, not only its header
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (size, size))
        pixels = np.asarray(img)
    assert pixels.std() > 0  # a picture, not a blank
