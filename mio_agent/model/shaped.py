"""Random-weight models of a named shape built straight on a device (no files): for benchmarks at MIO-7B's size."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mio_agent.exceptions import ConfigError
from mio_agent.model.builder import PRESETS, ModelSizes, mio_config
from mio_agent.model.loading import LoadedModel, load_model, resolve_device_dtype
from mio_agent.model.tokenizer import build_byte_tokenizer
from mio_agent.vocab import MioVocab

__all__ = ["MIO_7B", "MIO_7B_VOCAB", "SHAPES", "shaped_model"]

# MIO-7B: Yi-6B's decoder (hidden 4096, 32 layers, 32/4 heads, MLP 11008) and MIO's 76294 ids
MIO_7B = ModelSizes(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=4, intermediate_size=11008)
MIO_7B_VOCAB = 64000 + 6 + 8192 + 4096
SHAPES = ("embedded", "bench", "mio-7b")


def _random_on_device(
    sizes: ModelSizes, vocab_size: int, device: torch.device, dtype: torch.dtype, seed: int
) -> LlamaForCausalLM:
    config = mio_config(sizes)
    config["vocab_size"] = vocab_size
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model = model.to_empty(device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                # N(0, 0.02) as a fresh Llama; drawn where the weight lives, so 12 GB never cross the bus
                p.normal_(0.0, 0.02, generator=gen)
        for name, module in list(model.named_modules()):
            if type(module).__name__.endswith("RotaryEmbedding"):
                parent_name, _, attr = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, attr, type(module)(config=model.config).to(device))
    model.eval()
    model.requires_grad_(False)
    return model


def shaped_model(shape: str, *, device: str = "cpu", dtype: str = "auto", seed: int = 0) -> LoadedModel:
    """A loaded model of `shape`: "embedded" and "bench" are the built folders (float32 unless `dtype`
    says otherwise); "mio-7b" is MIO-7B's exact tensor shapes with random weights drawn on `device`
    (bfloat16 by default), with the embedded byte-level tokenizer (its ids are a subset of MIO's)."""
    if shape not in SHAPES:
        raise ConfigError(f"unknown model shape {shape!r}; use one of {', '.join(SHAPES)}")
    if shape in PRESETS:
        from mio_agent.model.embedded import embedded_model_path

        path = embedded_model_path(seed=seed, preset=shape)
        return load_model(path, device=device, dtype="float32" if dtype == "auto" else dtype, progress=False)
    dev, dt = resolve_device_dtype(device, "bfloat16" if dtype == "auto" else dtype)
    model = _random_on_device(MIO_7B, MIO_7B_VOCAB, dev, dt, seed)
    tokenizer = build_byte_tokenizer(model_max_length=MIO_7B.max_position_embeddings)
    vocab = MioVocab.from_tokenizer(tokenizer, vocab_size=MIO_7B_VOCAB)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        vocab=vocab,
        path=Path(f"<random {shape} on {dev}>"),
        device=dev,
        dtype=dt,
        max_positions=MIO_7B.max_position_embeddings,
        stop_ids=tuple(dict.fromkeys((vocab.im_end, vocab.eos))),
        is_embedded=True,
    )


def describe_shape(shape: str) -> dict[str, int]:
    """The sizes of a shape, for benchmark reports."""
    if shape == "mio-7b":
        return {**asdict(MIO_7B), "vocab_size": MIO_7B_VOCAB}
    return asdict(PRESETS[shape])
