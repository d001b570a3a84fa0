"""build_mio_format_model: MIO's file names and config keys, seeded byte-identical files, presets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mio_agent.exceptions import ConfigError
from mio_agent.model.builder import PRESETS, build_preset, count_parameters
from tests.model.helpers import TINY, build_tiny


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_bin_layout_is_mios(folders: dict[str, Path]) -> None:
    folder = folders["bin3"]
    shards = [f"pytorch_model-0000{i}-of-00003.bin" for i in (1, 2, 3)]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*shards, "pytorch_model.bin.index.json", "config.json", "tokenizer.json", "tokenizer_config.json"]
    )
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    total = 0
    for name in shards:
        state = torch.load(folder / name, weights_only=True)
        assert state and all(t.dtype == torch.float32 for t in state.values())
        assert all(index["weight_map"][k] == name for k in state)
        total += sum(t.numel() * 4 for t in state.values())
    assert index["metadata"]["total_size"] == total


def test_safetensors_layouts(folders: dict[str, Path]) -> None:
    single = folders["st1"]
    assert (single / "model.safetensors").is_file()
    assert not (single / "model.safetensors.index.json").exists()
    sharded = folders["st2"]
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    }
    whole = load_file(single / "model.safetensors")
    parts = {
        **load_file(sharded / "model-00001-of-00002.safetensors"),
        **load_file(sharded / "model-00002-of-00002.safetensors"),
    }
    assert whole.keys() == parts.keys()
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def test_config_has_mio_keys(folders: dict[str, Path]) -> None:
    config = json.loads((folders["st1"] / "config.json").read_text())
    assert config["vocab_size"] == 12558 == (
        config["text_vocab_size"] + config["num_new_special_tokens"] + config["visual_vocab_size"]
        + config["speech_vocab_size"]
    )  # fmt: skip
    assert (config["text_vocab_size"], config["visual_vocab_size"], config["speech_vocab_size"]) == (
        264,
        8192,
        4096,
    )
    assert config["num_new_special_tokens"] == 6
    assert config["tie_word_embeddings"] is False
    assert config["rms_norm_eps"] == 1e-5 and config["rope_theta"] == 5e6
    assert config["torch_dtype"] == "float32" and config["model_type"] == "llama"
    assert (
        config["hidden_size"] == TINY["hidden_size"] and config["num_key_value_heads"] == TINY["num_kv_heads"]
    )


def test_same_seed_gives_byte_identical_files(folders: dict[str, Path], tmp_path: Path) -> None:
    again = build_tiny(tmp_path / "again", weights="bin", num_shards=3)
    assert digests(again) == digests(folders["bin3"])
    again = build_tiny(tmp_path / "again_st", num_shards=2)
    assert digests(again) == digests(folders["st2"])


def test_other_seed_gives_other_weights_same_tokenizer(folders: dict[str, Path], tmp_path: Path) -> None:
    other = digests(build_tiny(tmp_path / "other", seed=1))
    base = digests(folders["st1"])
    assert other["model.safetensors"] != base["model.safetensors"]
    assert other["tokenizer.json"] == base["tokenizer.json"]
    a = load_file(folders["st1"] / "model.safetensors")
    b = load_file(tmp_path / "other" / "model.safetensors")
    assert not torch.equal(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"])
    # norms start at one whatever the seed
    assert torch.equal(a["model.norm.weight"], torch.ones(TINY["hidden_size"]))


def test_presets_sizes() -> None:
    assert 50_000_000 <= count_parameters(PRESETS["bench"]) <= 100_000_000
    assert count_parameters(PRESETS["embedded"]) < 2_000_000


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_shards"):
        build_tiny(tmp_path / "a", num_shards=100)
    with pytest.raises(ValueError, match="weights"):
        build_tiny(tmp_path / "b", weights="gguf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divide"):
        build_preset(tmp_path / "c", "embedded", seed=0, num_heads=3)
    with pytest.raises(ConfigError, match="bench"):
        build_preset(tmp_path / "d", "huge", seed=0)
