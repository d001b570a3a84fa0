"""Writes MIO-format model folders with seeded random weights (the embedded model, tests, benchmarks)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from mio_agent.exceptions import ConfigError
from mio_agent.model.tokenizer import (
    EMBEDDED_VOCAB_SIZE,
    NEW_SPECIAL_TOKENS,
    TEXT_VOCAB_SIZE,
    save_byte_tokenizer,
)
from mio_agent.vocab import IMAGE_CODES, SPEECH_CODES

__all__ = [
    "BUILD_FORMAT_VERSION",
    "BUILT_BY_KEY",
    "PRESETS",
    "ModelSizes",
    "build_mio_format_model",
    "build_preset",
    "count_parameters",
    "mio_config",
    "write_json",
]

# bump when the files a given seed produces change, so caches keyed on it are rebuilt
BUILD_FORMAT_VERSION = 1
# config.json key that marks a folder as written here (random weights, not a trained release)
BUILT_BY_KEY = "mio_agent_build"
_INIT_STD = 0.02


@dataclass(frozen=True)
class ModelSizes:
    """The shape of a Llama model; everything else (vocabulary, norms, rope) is MIO's."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int = 4096


PRESETS: dict[str, ModelSizes] = {
    # builds in about a second; for the embedded model and tests
    "embedded": ModelSizes(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
    # about 70 M parameters with the 12558-row embedding and untied lm_head; for benchmarks
    "bench": ModelSizes(hidden_size=768, num_layers=8, num_heads=12, num_kv_heads=4, intermediate_size=2048),
}


def mio_config(sizes: ModelSizes, *, rope_theta: float = 5e6, seed: int | None = None) -> dict[str, Any]:
    """config.json of a MIO-format model of these sizes (MIO's keys, its extra vocabulary keys included)."""
    if sizes.hidden_size % sizes.num_heads or sizes.num_heads % sizes.num_kv_heads:
        raise ValueError(
            f"hidden_size {sizes.hidden_size}, num_heads {sizes.num_heads} and num_kv_heads "
            f"{sizes.num_kv_heads} must divide evenly (hidden by heads, heads by kv heads)"
        )
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": sizes.hidden_size,
        "initializer_range": _INIT_STD,
        "intermediate_size": sizes.intermediate_size,
        "max_position_embeddings": sizes.max_position_embeddings,
        "model_type": "llama",
        "num_attention_heads": sizes.num_heads,
        "num_hidden_layers": sizes.num_layers,
        "num_key_value_heads": sizes.num_kv_heads,
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-5,
        "rope_scaling": None,
        "rope_theta": float(rope_theta),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "text_vocab_size": TEXT_VOCAB_SIZE,
        "num_new_special_tokens": len(NEW_SPECIAL_TOKENS),
        "visual_vocab_size": IMAGE_CODES,
        "speech_vocab_size": SPEECH_CODES,
        "vocab_size": EMBEDDED_VOCAB_SIZE,
    }
    if seed is not None:
        config[BUILT_BY_KEY] = {"format": BUILD_FORMAT_VERSION, "seed": seed}
    return config


def _meta_model(config: Mapping[str, Any]) -> LlamaForCausalLM:
    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig.from_dict(dict(config)))


def count_parameters(sizes: ModelSizes) -> int:
    """Parameter count of a MIO-format model of these sizes, embedding and lm_head included."""
    return sum(p.numel() for p in _meta_model(mio_config(sizes)).parameters())


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """JSON the same bytes for the same data: sorted keys, two-space indent, final newline."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _init_tensor(name: str, shape: torch.Size, seed: int) -> torch.Tensor:
    # norm gains start at one as in a fresh Llama; every other weight is N(0, 0.02). Each tensor
    # has its own stream (seed and name), so its values do not depend on the other tensors.
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.float32)
    # torch's CPU generator keeps only 32 bits of a seed, so seed and name are hashed into 32 bits
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:4], "little"))
    return torch.randn(shape, generator=gen, dtype=torch.float32).mul_(_INIT_STD)


def _split(names: list[str], sizes: dict[str, int], num_shards: int) -> list[list[str]]:
    """Consecutive groups of about equal bytes, none empty."""
    target = sum(sizes.values()) / num_shards
    groups: list[list[str]] = [[]]
    held = 0
    for i, name in enumerate(names):
        unstarted = num_shards - len(groups)
        if groups[-1] and unstarted > 0 and (held >= target or len(names) - i <= unstarted):
            groups.append([])
            held = 0
        groups[-1].append(name)
        held += sizes[name]
    return groups


def build_mio_format_model(
    directory: str | Path,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    max_position_embeddings: int = 4096,
    rope_theta: float = 5e6,
    seed: int,
    weights: Literal["safetensors", "bin"] = "safetensors",
    num_shards: int = 1,
) -> Path:
    """Write a MIO-format folder: config.json, the byte tokenizer, float32 weights drawn from `seed`.

    `weights="bin"` writes MIO's own layout, `pytorch_model-0000i-of-0000N.bin` pickles plus
    `pytorch_model.bin.index.json`, even for one shard. `"safetensors"` writes `model.safetensors`,
    or `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json` when `num_shards` > 1.
    The same arguments give byte-identical files. Returns the folder.
    """
    if weights not in ("safetensors", "bin"):
        raise ValueError(f"weights must be 'safetensors' or 'bin', not {weights!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    sizes = ModelSizes(
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
    )
    config = mio_config(sizes, rope_theta=rope_theta, seed=seed)
    shapes = {name: t.shape for name, t in _meta_model(config).state_dict().items()}
    names = list(shapes)
    if not 1 <= num_shards <= len(names):
        raise ValueError(f"num_shards must be between 1 and {len(names)}, not {num_shards}")

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    save_byte_tokenizer(out, model_max_length=max_position_embeddings)

    nbytes = {name: 4 * shapes[name].numel() for name in names}
    groups = _split(names, nbytes, num_shards)
    stem, suffix = ("pytorch_model", "bin") if weights == "bin" else ("model", "safetensors")
    sharded = weights == "bin" or num_shards > 1
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups, start=1):
        filename = f"{stem}-{i:05d}-of-{num_shards:05d}.{suffix}" if sharded else f"{stem}.{suffix}"
        tensors = {name: _init_tensor(name, shapes[name], seed) for name in group}
        if weights == "bin":
            torch.save(tensors, out / filename)
        else:
            save_file(tensors, str(out / filename), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, filename))
    if sharded:
        index = {"metadata": {"total_size": sum(nbytes.values())}, "weight_map": weight_map}
        write_json(out / f"{stem}.{suffix}.index.json", index)
    return out


def build_preset(directory: str | Path, preset: str, *, seed: int, **options: Any) -> Path:
    """`build_mio_format_model` with the sizes of a named preset ("embedded", "bench"); `options` override."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; use one of {', '.join(sorted(PRESETS))}")
    return build_mio_format_model(directory, **{**asdict(PRESETS[preset]), **options}, seed=seed)
