"""SEED-2 files: the official key names, sizes inferred from shapes, tiny files in the official layout."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from mio_agent.codecs.image import (
    QUANTIZER_FILE,
    TINY_CONFIG,
    VIT_FILE,
    ImageCodec,
    SeedConfig,
    save_tiny_image_tokenizer,
)
from mio_agent.codecs.image.checkpoint import infer_config
from mio_agent.codecs.image.model import SeedImageTokenizer
from mio_agent.exceptions import ModelFilesError

torch.set_num_threads(1)


def official_quantizer_names() -> set[str]:
    """The keys of seed_quantizer.pt that encoding and decoding read, written out from the official module tree."""
    names = {
        "ln_vision.weight",
        "ln_vision.bias",
        "query_tokens",
        "quantize.embedding.weight",
        "pos_embed_image",
    }
    names |= {f"Qformer.bert.embeddings.LayerNorm.{p}" for p in ("weight", "bias")}
    for i in range(12):
        layer = f"Qformer.bert.encoder.layer.{i}"
        branches = ["attention", "crossattention"] if i % 2 == 0 else ["attention"]
        for branch in branches:
            for part in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
                names |= {f"{layer}.{branch}.{part}.{p}" for p in ("weight", "bias")}
        for part in ("intermediate_query.dense", "output_query.dense", "output_query.LayerNorm"):
            names |= {f"{layer}.{part}.{p}" for p in ("weight", "bias")}
    for seq in ("encode_task_layer", "decode_task_layer"):
        names |= {f"{seq}.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    for j in range(4):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            names |= {f"blocks_image.{j}.{part}.{p}" for p in ("weight", "bias")}
    names |= {f"image_down.{i}.weight" for i in (0, 2, 4)}
    names |= {"distill_image_proj.weight", "distill_image_proj.bias"}
    return names


def official_vit_names(blocks: int = 39) -> set[str]:
    names = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    for k in range(blocks):
        names |= {f"blocks.{k}.attn.q_bias", f"blocks.{k}.attn.v_bias", f"blocks.{k}.attn.qkv.weight"}
        for part in ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            names |= {f"blocks.{k}.{part}.{p}" for p in ("weight", "bias")}
    return names


@pytest.fixture(scope="module")
def official_shapes() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Shape-only (meta) stand-ins of the two official files, with their extra keys."""
    with torch.device("meta"):
        model = SeedImageTokenizer(SeedConfig())
    state = model.state_dict()
    quantizer = {k: v for k, v in state.items() if not k.startswith("visual_encoder.")}
    quantizer["Qformer.bert.embeddings.position_ids"] = torch.empty(1, 512, dtype=torch.long, device="meta")
    quantizer["Qformer.bert.encoder.layer.3.output.dense.weight"] = torch.empty(768, 3072, device="meta")
    vit = {k.removeprefix("visual_encoder."): v for k, v in state.items() if k.startswith("visual_encoder.")}
    vit |= {k.replace("blocks.38.", "blocks.39."): v for k, v in vit.items() if k.startswith("blocks.38.")}
    vit |= {
        "norm.weight": torch.empty(1408, device="meta"),
        "head.weight": torch.empty(1024, 1408, device="meta"),
    }
    return quantizer, vit


def test_module_names_are_the_official_keys() -> None:
    with torch.device("meta"):
        state = SeedImageTokenizer(SeedConfig()).state_dict()
    vit = {k.removeprefix("visual_encoder.") for k in state if k.startswith("visual_encoder.")}
    assert {k for k in state if not k.startswith("visual_encoder.")} == official_quantizer_names()
    assert vit == official_vit_names()
    assert state["Qformer.bert.encoder.layer.0.crossattention.self.key.weight"].shape == (768, 1408)
    assert state["visual_encoder.blocks.0.mlp.fc1.weight"].shape == (6144, 1408)
    assert state["visual_encoder.pos_embed"].shape == (1, 257, 1408)
    assert state["quantize.embedding.weight"].shape == (8192, 32)
    assert state["distill_image_proj.weight"].shape == (1024, 1024)


def test_official_sizes_are_inferred_from_shapes(
    official_shapes: tuple[dict[str, torch.Tensor], ...],
) -> None:
    quantizer, vit = official_shapes
    cfg = infer_config(quantizer, vit)
    assert cfg == SeedConfig()
    # the file's 40th block and head are there, yet the tokenizer runs 39 blocks on 224×224 input
    assert (cfg.vit.depth, cfg.image_size, cfg.num_codes, cfg.codebook_size, cfg.embed_dim) == (
        39,
        224,
        32,
        8192,
        1024,
    )


def test_missing_shape_key_is_named(official_shapes: tuple[dict[str, torch.Tensor], ...]) -> None:
    quantizer, vit = official_shapes
    broken = {k: v for k, v in quantizer.items() if k != "quantize.embedding.weight"}
    with pytest.raises(
        ModelFilesError, match=r"seed_quantizer\.pt lacks the key 'quantize\.embedding\.weight'"
    ):
        infer_config(broken, vit)


def test_mismatched_files_are_refused(official_shapes: tuple[dict[str, torch.Tensor], ...]) -> None:
    quantizer, vit = official_shapes
    small_vit = {
        k: torch.empty(*v.shape[:-1], 1024, device="meta") if k == "cls_token" else v for k, v in vit.items()
    }
    with pytest.raises(ModelFilesError, match="not from the same tokenizer"):
        infer_config(quantizer, small_vit)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_image_tokenizer(tmp_path_factory.mktemp("seed") / "seed-tokenizer-2", seed=0)


def test_tiny_files_have_the_official_formats(tiny_dir: Path) -> None:
    quantizer = torch.load(tiny_dir / QUANTIZER_FILE, weights_only=True)
    vit = torch.load(tiny_dir / VIT_FILE, weights_only=True)
    assert not any(k.startswith("visual_encoder.") for k in quantizer)
    assert {v.dtype for k, v in quantizer.items() if k != "Qformer.bert.embeddings.position_ids"} == {
        torch.float32
    }
    assert quantizer["Qformer.bert.embeddings.position_ids"].dtype == torch.int64
    assert {v.dtype for v in vit.values()} == {torch.float16}
    # the known extras: text branch, reconstruction branch, one more ViT block, final norm, head
    for key in (
        "Qformer.bert.encoder.layer.1.intermediate.dense.weight",
        "pos_embed",
        "blocks.0.attn.qkv.weight",
    ):
        assert key in quantizer
    assert {"blocks.2.mlp.fc2.weight", "norm.weight", "head.weight"} <= set(vit)
    # every key the official module reads, cut to the tiny depths (2 Q-Former layers, 2 decoder blocks)
    shallow = {
        k for k in official_quantizer_names() if not re.search(r"(layer|blocks_image)\.([2-9]|1\d)\.", k)
    }
    assert shallow <= quantizer.keys()
    assert official_vit_names(blocks=2) <= vit.keys()


def test_tiny_files_load_with_inferred_sizes(tiny_dir: Path) -> None:
    codec = ImageCodec.from_pretrained(tiny_dir)
    assert codec.config == TINY_CONFIG
    assert (codec.num_codes, codec.codebook_size) == (32, 8192)
    params = dict(codec.model.named_parameters())
    saved = torch.load(tiny_dir / VIT_FILE, weights_only=True)
    assert torch.equal(params["visual_encoder.blocks.1.attn.q_bias"], saved["blocks.1.attn.q_bias"].float())


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_files_are_byte_identical_per_seed(tiny_dir: Path, tmp_path: Path) -> None:
    again = save_tiny_image_tokenizer(tmp_path / "again", seed=0)
    other = save_tiny_image_tokenizer(tmp_path / "other", seed=1)
    assert _digest(again) == _digest(tiny_dir)
    assert _digest(other)[QUANTIZER_FILE] != _digest(tiny_dir)[QUANTIZER_FILE]


def _resave(src: Path, dst: Path, name: str, edit: dict[str, torch.Tensor | None]) -> Path:
    dst.mkdir()
    for file in (QUANTIZER_FILE, VIT_FILE):
        state = torch.load(src / file, weights_only=True)
        if file == name:
            for key, value in edit.items():
                if value is None:
                    del state[key]
                else:
                    state[key] = value
        torch.save(state, dst / file)
    return dst


@pytest.mark.parametrize(
    ("file", "key"),
    [
        (QUANTIZER_FILE, "Qformer.bert.encoder.layer.1.output_query.LayerNorm.bias"),
        (QUANTIZER_FILE, "ln_vision.weight"),
        (QUANTIZER_FILE, "blocks_image.1.attn.qkv.bias"),
        (VIT_FILE, "blocks.0.attn.v_bias"),
    ],
)
def test_missing_needed_key_fails_naming_it(tiny_dir: Path, tmp_path: Path, file: str, key: str) -> None:
    broken = _resave(tiny_dir, tmp_path / "broken", file, {key: None})
    with pytest.raises(ModelFilesError, match=f"{re.escape(file)} lacks the key '{re.escape(key)}'"):
        ImageCodec.from_pretrained(broken)


def test_unused_keys_may_be_absent_or_extra(tiny_dir: Path, tmp_path: Path) -> None:
    edit: dict[str, torch.Tensor | None] = {
        "pos_embed": None,
        "Qformer.bert.encoder.layer.0.output.dense.weight": None,
        "some_future_head.weight": torch.zeros(3),
    }
    codec = ImageCodec.from_pretrained(_resave(tiny_dir, tmp_path / "lean", QUANTIZER_FILE, edit))
    assert codec.config == TINY_CONFIG


def test_wrong_shape_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    broken = _resave(
        tiny_dir, tmp_path / "shape", QUANTIZER_FILE, {"encode_task_layer.0.bias": torch.zeros(7)}
    )
    with pytest.raises(ModelFilesError, match=r"'encode_task_layer\.0\.bias' has shape \(7,\)"):
        ImageCodec.from_pretrained(broken)


def test_unreadable_or_absent_files(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match="not found"):
        ImageCodec.from_pretrained(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / QUANTIZER_FILE).write_bytes((tiny_dir / QUANTIZER_FILE).read_bytes())
    with pytest.raises(ModelFilesError, match=r"eva_vit_g\.pth not found"):
        ImageCodec.from_pretrained(partial)
    (partial / VIT_FILE).write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelFilesError, match="not a readable PyTorch checkpoint"):
        ImageCodec.from_pretrained(partial)
    torch.save([torch.zeros(1)], partial / VIT_FILE)
    with pytest.raises(ModelFilesError, match="not a flat state dict"):
        ImageCodec.from_pretrained(partial)


def test_legacy_pickle_format_loads(tiny_dir: Path, tmp_path: Path) -> None:
    """Files written by old torch (before the zip format) cannot be memory-mapped but still load."""
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for file in (QUANTIZER_FILE, VIT_FILE):
        state = torch.load(tiny_dir / file, weights_only=True)
        torch.save(state, legacy / file, _use_new_zipfile_serialization=False)
    image = torch.zeros(1, 3, 224, 224)
    assert torch.equal(
        ImageCodec.from_pretrained(legacy).model.encode(image),
        ImageCodec.from_pretrained(tiny_dir).model.encode(image),
    )
