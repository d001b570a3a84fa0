"""Our SpeechTokenizer against the authors' code, when its source is given (it cannot be a dependency).

Set MIO_SPEECHTOKENIZER_SRC to the `speechtokenizer/` package folder of ZhangXInFD/SpeechTokenizer
(or MIO's vendored `speech_tokenizer/`) and install einops; its package __init__ is not run, so the
trainer's dependencies are not needed.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mio_agent.codecs.speech import SpeechCodec, save_tiny_speech_tokenizer, synthetic_speech
from mio_agent.codecs.speech.checkpoint import CONFIG_FILE, WEIGHTS_FILE

SOURCE = os.environ.get("MIO_SPEECHTOKENIZER_SRC", "")
pytestmark = pytest.mark.skipif(not SOURCE, reason="MIO_SPEECHTOKENIZER_SRC (the authors' source) is not set")


def _reference_model(folder: Path) -> Any:
    pytest.importorskip("einops")
    name = "_reference_speechtokenizer"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [SOURCE]
        sys.modules[name] = package
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its legacy weight_norm and jit warnings
        module = importlib.import_module(f"{name}.model")
        model = module.SpeechTokenizer.load_from_checkpoint(
            str(folder / CONFIG_FILE), str(folder / WEIGHTS_FILE)
        )
    return model.eval()


def test_same_codes_and_waveforms_as_the_authors_code(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    folder = save_tiny_speech_tokenizer(tmp_path / "SpeechTokenizer", seed=5)
    reference = _reference_model(folder)
    codec = SpeechCodec.from_pretrained(folder)
    for seconds in (0.01, 0.7, 2.0):
        voice = synthetic_speech(seconds, 16000, seed=7)
        x = torch.from_numpy(voice)[None, None, :]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            codes = reference.encode(x)
            audio = {k: reference.decode(codes[:k])[0, 0].numpy() for k in (1, 4, 8)}
        assert torch.equal(codes, torch.from_numpy(codec.encode_samples(voice, 8))[:, None, :])
        ours = codec.encode(voice, 16000)
        assert ours.content == tuple(codes[0, 0].tolist())
        assert np.array_equal(codec.decode(ours.content), audio[1])
        assert np.array_equal(codec.decode(ours.content, ours.timbre), audio[4])
        eight = codes[:, 0, :].numpy()
        assert np.array_equal(codec.decode(eight[0], list(eight[1:])), audio[8])
