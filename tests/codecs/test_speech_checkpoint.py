"""SpeechTokenizer files: the official key layout, tiny checkpoints saved alike, strict loading errors."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from mio_agent.codecs.speech import (
    CONFIG_FILE,
    FULL_CONFIG,
    TINY_CONFIG,
    WEIGHTS_FILE,
    SpeechCodec,
    SpeechTokenizerModel,
    load_speech_tokenizer,
    save_tiny_speech_tokenizer,
)
from mio_agent.exceptions import ModelFilesError

torch.set_num_threads(1)


def official_names() -> list[str]:
    """The 166 tensor names of speechtokenizer_hubert_avg's SpeechTokenizer.pt, in file order, from its layout."""
    names: list[str] = []

    def conv(prefix: str, slot: str = "conv.conv") -> None:
        names.extend(f"{prefix}.{slot}.{p}" for p in ("bias", "weight_g", "weight_v"))

    def residual(prefix: str) -> None:
        for part in ("block.1", "block.3", "shortcut"):
            conv(f"{prefix}.{part}")

    def lstm(prefix: str, *, bidirectional: bool) -> None:
        for layer in range(2):
            for suffix in ("", "_reverse") if bidirectional else ("",):
                names.extend(
                    f"{prefix}.lstm.{w}_l{layer}{suffix}"
                    for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                )

    conv("encoder.model.0")
    for stage in range(4):
        residual(f"encoder.model.{1 + 3 * stage}")
        conv(f"encoder.model.{3 + 3 * stage}")
    lstm("encoder.model.13", bidirectional=True)
    conv("encoder.model.15")
    names += ["transform.weight", "transform.bias"]
    for layer in range(8):
        names.extend(
            f"quantizer.vq.layers.{layer}._codebook.{b}"
            for b in ("inited", "cluster_size", "embed", "embed_avg")
        )
    conv("decoder.model.0")
    lstm("decoder.model.1", bidirectional=False)
    for stage in range(4):
        conv(f"decoder.model.{3 + 3 * stage}", "convtr.convtr")
        residual(f"decoder.model.{4 + 3 * stage}")
    conv("decoder.model.15")
    return names


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_speech_tokenizer(tmp_path_factory.mktemp("speech") / "SpeechTokenizer", seed=0)


@pytest.fixture
def tiny_copy(tiny_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny folder, for tests that break it."""
    folder = tmp_path / "SpeechTokenizer"
    folder.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (folder / name).write_bytes((tiny_dir / name).read_bytes())
    return folder


def test_full_size_state_dict_is_the_official_166_tensors() -> None:
    with torch.device("meta"):
        model = SpeechTokenizerModel(FULL_CONFIG)
    state = model.state_dict()
    assert list(state) == official_names()
    assert len(state) == 166
    shapes = {name: tuple(t.shape) for name, t in state.items()}
    assert shapes["encoder.model.13.lstm.weight_ih_l1"] == (4096, 2048)
    assert shapes["encoder.model.15.conv.conv.weight_v"] == (1024, 2048, 7)
    assert shapes["decoder.model.3.convtr.convtr.weight_g"] == (1024, 1, 1)
    assert shapes["decoder.model.3.convtr.convtr.weight_v"] == (1024, 512, 16)
    assert shapes["quantizer.vq.layers.7._codebook.embed"] == (1024, 1024)
    assert shapes["transform.weight"] == (768, 1024)
    # the release's SpeechTokenizer.pt is 482 MB of float32
    size_mb = sum(t.numel() for t in state.values()) * 4 / 1e6
    assert 481 < size_mb < 483


def test_tiny_checkpoint_uses_the_official_layout(tiny_dir: Path) -> None:
    assert sorted(p.name for p in tiny_dir.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    config = json.loads((tiny_dir / CONFIG_FILE).read_text())
    assert config["strides"] == [8, 5, 4, 2] and config["codebook_size"] == 1024 and config["n_q"] == 8
    assert config["sample_rate"] == 16000 and config["n_filters"] == TINY_CONFIG.n_filters
    state = torch.load(tiny_dir / WEIGHTS_FILE, weights_only=True)
    assert isinstance(state, OrderedDict)
    # same names as the release: the tiny sizes change shapes only
    assert list(state) == official_names()
    assert all(t.dtype == torch.float32 for t in state.values())
    assert state["quantizer.vq.layers.0._codebook.inited"].item() == 1.0
    assert state["transform.weight"].shape == (TINY_CONFIG.semantic_dimension, TINY_CONFIG.dimension)


def test_tiny_checkpoint_is_byte_identical_per_seed(tiny_dir: Path, tmp_path: Path) -> None:
    again = save_tiny_speech_tokenizer(tmp_path / "again", seed=0)
    other = save_tiny_speech_tokenizer(tmp_path / "other", seed=1)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes()
    assert (other / WEIGHTS_FILE).read_bytes() != (tiny_dir / WEIGHTS_FILE).read_bytes()
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_loads_strictly_into_eval_mode(tiny_dir: Path) -> None:
    model = load_speech_tokenizer(tiny_dir)
    assert not model.training
    saved = torch.load(tiny_dir / WEIGHTS_FILE, weights_only=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[name], saved[name]) for name in saved)
    codec = SpeechCodec.from_pretrained(tiny_dir)
    assert (codec.sample_rate, codec.hop_length, codec.codebook_size) == (16000, 320, 1024)


def _rewrite(folder: Path, edit: dict[str, torch.Tensor | None]) -> None:
    state = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    for name, value in edit.items():
        if value is None:
            del state[name]
        else:
            state[name] = value
    torch.save(state, folder / WEIGHTS_FILE)


def test_a_missing_tensor_is_named(tiny_copy: Path) -> None:
    _rewrite(tiny_copy, {"decoder.model.3.convtr.convtr.weight_g": None})
    with pytest.raises(
        ModelFilesError, match=r"lacks 1 needed tensor\(s\): decoder\.model\.3\.convtr\.convtr\.weight_g"
    ):
        load_speech_tokenizer(tiny_copy)


def test_an_unexpected_tensor_is_named(tiny_copy: Path) -> None:
    _rewrite(tiny_copy, {"encoder.model.0.conv.conv.weight": torch.zeros(4, 1, 7)})
    with pytest.raises(ModelFilesError, match=r"encoder\.model\.0\.conv\.conv\.weight; expected the flat"):
        load_speech_tokenizer(tiny_copy)


def test_a_wrong_shape_names_tensor_and_shapes(tiny_copy: Path) -> None:
    _rewrite(tiny_copy, {"quantizer.vq.layers.2._codebook.embed": torch.zeros(512, 16)})
    with pytest.raises(
        ModelFilesError, match=r"layers\.2\._codebook\.embed has shape \(512, 16\) but config\.json"
    ):
        load_speech_tokenizer(tiny_copy)


def test_config_that_does_not_match_the_weights(tiny_copy: Path) -> None:
    config = json.loads((tiny_copy / CONFIG_FILE).read_text())
    config["dimension"] = 32
    (tiny_copy / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelFilesError, match="do not belong together"):
        load_speech_tokenizer(tiny_copy)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / WEIGHTS_FILE).unlink(), r"SpeechTokenizer\.pt is missing"),
        (lambda d: (d / CONFIG_FILE).unlink(), r"config\.json is missing"),
        (lambda d: (d / CONFIG_FILE).write_text("{not json"), r"config\.json is not readable JSON"),
        (
            lambda d: (d / CONFIG_FILE).write_text('{"activation": "Snake"}'),
            "activation 'Snake' is not supported",
        ),
        (lambda d: (d / CONFIG_FILE).write_text('{"n_q": 0}'), "'n_q' must be a positive integer"),
        (lambda d: (d / WEIGHTS_FILE).write_bytes(b"garbage"), r"SpeechTokenizer\.pt cannot be read"),
        (lambda d: torch.save([torch.zeros(1)], d / WEIGHTS_FILE), "holds a list, not a state dict"),
    ],
)
def test_broken_files_name_the_file(tiny_copy: Path, damage: object, message: str) -> None:
    assert callable(damage)
    damage(tiny_copy)
    with pytest.raises(ModelFilesError, match=message):
        SpeechCodec.from_pretrained(tiny_copy)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match="does not exist"):
        SpeechCodec.from_pretrained(tmp_path / "nowhere")
