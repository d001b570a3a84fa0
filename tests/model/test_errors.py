"""Broken model folders: load_model and check_model_folder name the file or key and the fix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from mio_agent.exceptions import ModelFilesError, VocabularyError
from mio_agent.model.loading import check_model_folder, load_model

Copy = Callable[[str], Path]
SHARD2 = "pytorch_model-00002-of-00003.bin"
RELEASE = "m-a-p/MIO-7B-Instruct"


def load(folder: Path) -> None:
    load_model(folder, device="cpu", progress=False)


def edit_json(file: Path, **changes: object) -> None:
    data = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    file.write_text(json.dumps(data))


def test_good_folders_have_no_problems(folders: dict[str, Path]) -> None:
    assert [check_model_folder(f) for f in folders.values()] == [[], [], []]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match=RELEASE) as err:
        load(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "does not exist" in str(err.value)
    [problem] = check_model_folder(tmp_path / "nowhere")
    assert "does not exist" in problem


def test_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelFilesError, match="is a file"):
        load(tmp_path / "weights.bin")


def test_missing_config(copy_of: Copy) -> None:
    folder = copy_of("st1")
    (folder / "config.json").unlink()
    with pytest.raises(ModelFilesError, match=r"config\.json is missing.*MIO-7B-Instruct"):
        load(folder)
    assert any("config.json" in p for p in check_model_folder(folder))


def test_config_not_json_or_not_llama(copy_of: Copy) -> None:
    folder = copy_of("st1")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelFilesError, match="not readable JSON"):
        load(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    with pytest.raises(ModelFilesError, match="model_type 'bert'"):
        load(folder)


def test_inconsistent_mio_vocab_keys(copy_of: Copy) -> None:
    folder = copy_of("st1")
    edit_json(folder / "config.json", speech_vocab_size=4000)
    with pytest.raises(ModelFilesError, match="speech_vocab_size = 12462"):
        load(folder)


def test_missing_tokenizer_and_config_both_reported(copy_of: Copy) -> None:
    folder = copy_of("bin3")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelFilesError, match=r"no tokenizer: expected tokenizer\.model"):
        load(folder)
    (folder / "config.json").unlink()
    problems = check_model_folder(folder)
    assert len(problems) == 2
    assert "config.json" in problems[0] and "tokenizer.model" in problems[1]


def test_no_weights(copy_of: Copy) -> None:
    folder = copy_of("st1")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFilesError, match=r"no weights: expected pytorch_model\.bin\.index\.json"):
        load(folder)


def test_missing_shard_named_in_index(copy_of: Copy) -> None:
    folder = copy_of("bin3")
    (folder / SHARD2).unlink()
    with pytest.raises(ModelFilesError, match=SHARD2 + r" is missing \(1 of the 3 shards"):
        load(folder)
    [problem] = check_model_folder(folder)
    assert SHARD2 in problem


def test_bin_shard_lacking_a_key(copy_of: Copy) -> None:
    folder = copy_of("bin3")
    state = torch.load(folder / SHARD2, weights_only=True)
    del state["model.layers.1.mlp.up_proj.weight"]
    torch.save(state, folder / SHARD2)
    with pytest.raises(ModelFilesError, match=SHARD2 + r" lacks model\.layers\.1\.mlp\.up_proj\.weight"):
        load(folder)


def test_safetensors_shard_lacking_a_key_found_without_loading(copy_of: Copy) -> None:
    folder = copy_of("st2")
    shard = folder / "model-00001-of-00002.safetensors"
    state = load_file(shard)
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(shard))
    [problem] = check_model_folder(folder)
    assert shard.name in problem and dropped in problem
    with pytest.raises(ModelFilesError, match=f"lacks {dropped}"):
        load(folder)


def test_index_without_a_key(copy_of: Copy) -> None:
    folder = copy_of("bin3")
    index = folder / "pytorch_model.bin.index.json"
    data = json.loads(index.read_text())
    del data["weight_map"]["model.norm.weight"]
    index.write_text(json.dumps(data))
    with pytest.raises(ModelFilesError, match=r"index\.json provides no tensor for model\.norm\.weight"):
        load(folder)
    assert any("model.norm.weight" in p for p in check_model_folder(folder))


def test_single_file_missing_and_unexpected_keys(copy_of: Copy) -> None:
    folder = copy_of("st1")
    file = folder / "model.safetensors"
    state = load_file(file)
    state["model.extra.weight"] = torch.zeros(2)
    save_file(state, str(file))
    with pytest.raises(ModelFilesError, match=r"no place for: model\.extra\.weight"):
        load(folder)
    del state["model.extra.weight"], state["lm_head.weight"]
    save_file(state, str(file))
    with pytest.raises(ModelFilesError, match=r"model\.safetensors provides no tensor for lm_head\.weight"):
        load(folder)
    assert any("lm_head.weight" in p for p in check_model_folder(folder))


def test_old_rotary_buffers_in_a_checkpoint_are_ignored(copy_of: Copy) -> None:
    folder = copy_of("st1")
    file = folder / "model.safetensors"
    state = load_file(file)
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    save_file(state, str(file))
    load(folder)


def test_shape_mismatch_names_key(copy_of: Copy) -> None:
    folder = copy_of("bin3")
    edit_json(folder / "config.json", intermediate_size=48)
    with pytest.raises(ModelFilesError, match=r"mlp\.\w+_proj\.weight has shape .* config\.json asks for"):
        load(folder)


def test_damaged_shard(copy_of: Copy) -> None:
    folder = copy_of("bin3")
    (folder / SHARD2).write_bytes(b"not a pickle")
    with pytest.raises(ModelFilesError, match=SHARD2 + " cannot be read"):
        load(folder)


def test_config_vocab_smaller_than_tokenizer(copy_of: Copy) -> None:
    folder = copy_of("st1")
    edit_json(folder / "config.json", vocab_size=12000, text_vocab_size=None)
    with pytest.raises(VocabularyError, match=r"12558 tokens but config\.json.s vocab_size is 12000"):
        load(folder)
    [problem] = check_model_folder(folder)
    assert "vocab_size is 12000" in problem


def test_tokenizer_without_mio_tokens(copy_of: Copy) -> None:
    folder = copy_of("st1")
    plain = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    (folder / "tokenizer.json").unlink()
    PreTrainedTokenizerFast(tokenizer_object=plain, unk_token="<unk>").save_pretrained(str(folder))
    with pytest.raises(VocabularyError, match=r"not a MIO tokenizer") as err:
        load(folder)
    assert str(folder) in str(err.value)


def test_damaged_tokenizer_file(copy_of: Copy) -> None:
    folder = copy_of("st1")
    (folder / "tokenizer.json").write_text('{"model": 3}')
    with pytest.raises(ModelFilesError, match=r"tokenizer in .* does not load"):
        load(folder)
