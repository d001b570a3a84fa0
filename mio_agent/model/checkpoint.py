"""A model folder's files: config, tokenizer and weight shards; finding, checking and reading them."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from mio_agent.exceptions import ModelFilesError

__all__ = [
    "OFFICIAL_REPO",
    "KeySpec",
    "WeightFiles",
    "check_keys",
    "check_weight_files",
    "expected_keys",
    "find_weights",
    "meta_model",
    "missing_in_shard",
    "read_config",
    "read_shard",
    "reject_unexpected",
    "require_folder",
    "require_tokenizer_files",
    "shard_lacks",
]

OFFICIAL_REPO = "m-a-p/MIO-7B-Instruct"
# older transformers saved the rotary frequencies; they are recomputed from the config
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# the first bytes of a zip archive, as torch.save has written since torch 1.6
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class WeightFiles:
    """Where a folder's weights are: the shards in order and, when sharded, the index's key map."""

    format: Literal["safetensors", "bin"]
    shards: tuple[Path, ...]
    index: Path | None
    weight_map: dict[str, str] | None


def require_folder(path: Path) -> None:
    """Raise unless `path` is an existing folder."""
    if not path.exists():
        raise ModelFilesError(
            f"model folder {path} does not exist; download the Hugging Face repo {OFFICIAL_REPO} there "
            f"(hf download {OFFICIAL_REPO} --local-dir {path}) or point model.path at the folder that has it"
        )
    if not path.is_dir():
        raise ModelFilesError(f"model path {path} is a file, not a folder; point model.path at the folder")


def _read_json(file: Path, what: str) -> dict[str, Any]:
    if not file.is_file():
        raise ModelFilesError(f"{file} is missing; {what} (the official release {OFFICIAL_REPO} has it)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFilesError(
            f"{file} is not readable JSON ({exc}); download it again from {OFFICIAL_REPO}"
        ) from exc
    if not isinstance(data, dict):
        raise ModelFilesError(f"{file} holds a JSON {type(data).__name__}, not an object; download it again")
    return data


def read_config(path: Path) -> tuple[LlamaConfig, dict[str, Any]]:
    """config.json as a LlamaConfig, and its raw keys."""
    file = path / "config.json"
    raw = _read_json(file, "it holds the model's sizes")
    if raw.get("model_type") != "llama":
        raise ModelFilesError(
            f"{file} has model_type {raw.get('model_type')!r}; MIO is a 'llama' model, "
            f"use the config.json of {OFFICIAL_REPO}"
        )
    for key in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
    ):
        if not isinstance(raw.get(key), int) or raw[key] <= 0:
            raise ModelFilesError(
                f"{file} lacks a positive integer {key!r}; use the config.json of {OFFICIAL_REPO}"
            )
    extra = ("text_vocab_size", "num_new_special_tokens", "visual_vocab_size", "speech_vocab_size")
    if all(isinstance(raw.get(k), int) for k in extra):
        total = sum(int(raw[k]) for k in extra)
        if total != raw["vocab_size"]:
            raise ModelFilesError(
                f"{file}: vocab_size {raw['vocab_size']} is not text_vocab_size + num_new_special_tokens + "
                f"visual_vocab_size + speech_vocab_size = {total}; "
                "the file was edited or is from another model"
            )
    try:
        config = LlamaConfig.from_dict(dict(raw))
    except Exception as exc:  # transformers' config validation raises several kinds
        raise ModelFilesError(
            f"{file} is not a valid Llama config ({exc}); use the one of {OFFICIAL_REPO}"
        ) from exc
    return config, raw


def require_tokenizer_files(path: Path) -> None:
    """Raise unless the folder has a tokenizer: tokenizer.json, or MIO's sentencepiece tokenizer.model."""
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise ModelFilesError(
            f"{path} has no tokenizer: expected tokenizer.model (sentencepiece, with tokenizer_config.json "
            f"and special_tokens_map.json, as in {OFFICIAL_REPO}) or tokenizer.json; "
            "copy them from the release"
        )


def _index(path: Path, name: str, fmt: Literal["safetensors", "bin"]) -> WeightFiles:
    file = path / name
    data = _read_json(file, "it lists the weight shards")
    weight_map = data.get("weight_map")
    if (
        not isinstance(weight_map, dict)
        or not weight_map
        or not all(isinstance(v, str) for v in weight_map.values())
    ):
        raise ModelFilesError(
            f"{file} has no 'weight_map' of key -> shard file; download it again from {OFFICIAL_REPO}"
        )
    shard_names = sorted(set(weight_map.values()))
    missing = [s for s in shard_names if not (path / s).is_file()]
    if missing:
        raise ModelFilesError(
            f"{path / missing[0]} is missing ({len(missing)} of the {len(shard_names)} shards "
            f"named in {name} are); "
            f"the download is incomplete: fetch the missing shards from {OFFICIAL_REPO}"
        )
    return WeightFiles(fmt, tuple(path / s for s in shard_names), file, dict(weight_map))


def find_weights(path: Path) -> WeightFiles:
    """The folder's weight files, preferring safetensors; raises when none or a named shard is missing."""
    if (path / "model.safetensors.index.json").is_file():
        return _index(path, "model.safetensors.index.json", "safetensors")
    if (path / "model.safetensors").is_file():
        return WeightFiles("safetensors", (path / "model.safetensors",), None, None)
    if (path / "pytorch_model.bin.index.json").is_file():
        return _index(path, "pytorch_model.bin.index.json", "bin")
    if (path / "pytorch_model.bin").is_file():
        return WeightFiles("bin", (path / "pytorch_model.bin",), None, None)
    raise ModelFilesError(
        f"{path} has no weights: expected pytorch_model.bin.index.json and its six "
        f"pytorch_model-0000x-of-00006.bin shards (as in {OFFICIAL_REPO}), or model.safetensors "
        f"(or model.safetensors.index.json with its shards); download the weights into that folder"
    )


def meta_model(config: LlamaConfig) -> LlamaForCausalLM:
    """The model with no storage behind its tensors, for its key names and shapes."""
    with torch.device("meta"):
        return LlamaForCausalLM(config)


@dataclass(frozen=True)
class KeySpec:
    """The state-dict keys a checkpoint must provide (with shapes) and those it may hold but need not."""

    required: dict[str, torch.Size]
    optional: frozenset[str]

    def tolerates(self, key: str) -> bool:
        """True for keys that may be in a checkpoint and are not loaded (tied or recomputed tensors)."""
        return key in self.optional or key.endswith(_IGNORED_SUFFIXES)


def expected_keys(model: LlamaForCausalLM) -> KeySpec:
    """What a checkpoint of `model` holds; a tied lm_head may be stored or not."""
    shapes = {k: t.shape for k, t in model.state_dict().items()}
    optional = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    return KeySpec({k: v for k, v in shapes.items() if k not in optional}, frozenset(optional))


def _key_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def check_keys(found: set[str], expected: KeySpec, where: Path) -> None:
    """Raise when `found` (keys of a checkpoint) lacks an expected key or has one the model does not."""
    missing = sorted(set(expected.required) - found)
    if missing:
        raise ModelFilesError(
            f"{where} provides no tensor for {_key_list(missing)}; the weights are incomplete or for another "
            f"model than config.json describes: download them again from {OFFICIAL_REPO}"
        )
    reject_unexpected(sorted(k for k in found - set(expected.required) if not expected.tolerates(k)), where)


def reject_unexpected(keys: list[str], where: Path) -> None:
    """Raise naming `keys` when there are any: tensors the model has no place for."""
    if keys:
        raise ModelFilesError(
            f"{where} holds tensors the model of config.json has no place for: {_key_list(keys)}; "
            "config.json and the weights come from different models"
        )


def read_shard(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) of one weight file, on the CPU, memory-mapped where the format allows.

    Tensors come one at a time and are not kept here once handed over, so a caller that converts
    each to its device and dtype and drops it holds at most one shard's source tensors (file-backed
    pages for safetensors and zip-format .bin files) beside what it converted.
    """
    if file.suffix == ".safetensors":
        yield from _read_safetensors(file)
        return
    data = _load_bin(file)
    # popped, not iterated: a tensor the caller has dropped is freed at once (a legacy pickle's
    # tensors are in memory, not in a mapped file)
    for key in list(data):
        yield key, data.pop(key)


def _is_zip(file: Path) -> bool:
    # torch.save's format since torch 1.6; only these pickles can be memory-mapped
    with file.open("rb") as f:
        return f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    try:
        data: object = None
        if _is_zip(file):
            try:
                # the tensors stay pages of the file, read as they are converted: no copy of the shard
                data = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:
                data = None  # a zip torch cannot map (e.g. repacked by another tool): read it whole
        if data is None:
            # pickles from before torch's zip format cannot be mapped; read them whole
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds on a damaged pickle
        raise ModelFilesError(f"{file} cannot be read ({exc}); it is damaged: download it again") from exc
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelFilesError(
            f"{file} is not a state dict of tensors; download it again from {OFFICIAL_REPO}"
        )
    return data


def _read_safetensors(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    # one tensor at a time, so a shard is never held whole beside the model
    try:
        handle = safe_open(str(file), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own untyped errors on a bad header
        raise ModelFilesError(
            f"{file} is not a readable safetensors file ({exc}); download it again"
        ) from exc
    with handle as f:
        for key in f.keys():  # noqa: SIM118  (safe_open is not a mapping)
            yield key, f.get_tensor(key)


def _safetensors_keys(file: Path) -> set[str]:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return set(f.keys())
    except Exception as exc:  # safetensors raises its own untyped errors on a bad header
        raise ModelFilesError(
            f"{file} is not a readable safetensors file ({exc}); download it again"
        ) from exc


def check_weight_files(files: WeightFiles, expected: KeySpec) -> None:
    """Raise when the weight files cannot provide the `expected` keys, reading no tensor data.

    The index (if any) must map every key; safetensors headers are read for their keys. A .bin
    shard's keys are known only by loading it, so those are checked at load time.
    """
    if files.weight_map is not None and files.index is not None:
        check_keys(set(files.weight_map), expected, files.index)
    if files.format != "safetensors":
        return
    for shard in files.shards:
        found = _safetensors_keys(shard)
        if files.weight_map is None:
            check_keys(found, expected, shard)
            continue
        absent = shard_lacks(files, shard, found, expected)
        if absent:
            raise ModelFilesError(missing_in_shard(shard, absent, files.index))


def shard_lacks(files: WeightFiles, shard: Path, found: Collection[str], expected: KeySpec) -> list[str]:
    """Keys the index places in `shard` that it does not hold (tolerated keys aside)."""
    placed = files.weight_map or {}
    return sorted(
        k for k, f in placed.items() if f == shard.name and k not in found and not expected.tolerates(k)
    )


def missing_in_shard(shard: Path, absent: list[str], index: Path | None) -> str:
    """Message for a shard that lacks keys its index places in it."""
    return (
        f"{shard} lacks {_key_list(absent)}, which {index.name if index else 'the index'} places in it; "
        f"the shard is damaged or from another release: download it again from {OFFICIAL_REPO}"
    )
