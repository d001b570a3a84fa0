"""Reading SEED-2's official files: sizes inferred from tensor shapes, needed keys checked by name."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from mio_agent.codecs.image.eva_vit import EvaViTConfig
from mio_agent.codecs.image.model import VIT_PREFIX, SeedConfig, SeedImageTokenizer
from mio_agent.codecs.image.qformer import QFormerConfig
from mio_agent.codecs.image.quantizer import DecoderConfig
from mio_agent.exceptions import ModelFilesError

__all__ = [
    "EVA_G_DEPTH",
    "EVA_G_WIDTH",
    "QUANTIZER_FILE",
    "VIT_FILE",
    "infer_config",
    "load_tokenizer",
    "read_state_dict",
]

QUANTIZER_FILE = "seed_quantizer.pt"
VIT_FILE = "eva_vit_g.pth"
# EVA-ViT-g as BLIP-2 uses it: the file holds 40 blocks, the reference builds (and runs) 39.
EVA_G_WIDTH = 1408
EVA_G_DEPTH = 39
NUM_CODES = 32

StateDict = Mapping[str, torch.Tensor]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat name → tensor dict from a PyTorch checkpoint, loaded with `weights_only=True`."""
    if not path.is_file():
        raise ModelFilesError(
            f"{path} not found; SEED-2's folder seed-tokenizer-2/ holds {QUANTIZER_FILE} and {VIT_FILE}"
        )
    try:
        # mmap keeps the 2 GB ViT file out of memory until its tensors are converted
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelFilesError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    except Exception as exc:
        raise ModelFilesError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ModelFilesError(f"{path} is not a flat state dict of tensors as in SEED-2's official files")
    return dict(obj)


def _need(sd: StateDict, key: str, file: str, ndim: int) -> torch.Tensor:
    if key not in sd:
        raise ModelFilesError(f"{file} lacks the key {key!r}; it is not SEED-2's {file} (or it is damaged)")
    t = sd[key]
    if t.ndim != ndim:
        raise ModelFilesError(f"{file}: {key!r} has shape {tuple(t.shape)}, expected {ndim} dimensions")
    return t


def _count(sd: StateDict, prefix: str, file: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    if not found:
        raise ModelFilesError(f"{file} has no {prefix}N.* keys; it is not SEED-2's {file}")
    return max(found) + 1


def _vit_config(sd: StateDict) -> EvaViTConfig:
    f = VIT_FILE
    width = _need(sd, "cls_token", f, 3).shape[-1]
    patch = _need(sd, "patch_embed.proj.weight", f, 4).shape[-1]
    tokens = _need(sd, "pos_embed", f, 3).shape[1]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise ModelFilesError(
            f"{f}: pos_embed holds {tokens} positions, not a square grid plus a class token"
        )
    blocks = _count(sd, "blocks.", f)
    # BLIP-2 drops EVA-CLIP's last block; the official width runs the official 39 whatever the
    # file holds, other (tiny) widths run every block of the file but the last
    depth = EVA_G_DEPTH if width == EVA_G_WIDTH else blocks - 1
    if depth < 1:
        raise ModelFilesError(
            f"{f} holds {blocks} ViT block(s); the tokenizer needs at least 2 (it skips the last)"
        )
    mlp = _need(sd, "blocks.0.mlp.fc1.weight", f, 2).shape[0]
    return EvaViTConfig(width=width, depth=depth, mlp_hidden=mlp, patch_size=patch, grid=grid)


def _qformer_config(sd: StateDict, vit_width: int) -> QFormerConfig:
    f = QUANTIZER_FILE
    queries = _need(sd, "query_tokens", f, 3)
    num_queries, hidden = queries.shape[1], queries.shape[2]
    if num_queries != NUM_CODES:
        raise ModelFilesError(
            f"{f}: query_tokens holds {num_queries} queries; MIO's images are exactly {NUM_CODES} codes"
        )
    layer0 = "Qformer.bert.encoder.layer.0."
    intermediate = _need(sd, layer0 + "intermediate_query.dense.weight", f, 2).shape[0]
    encoder_width = _need(sd, layer0 + "crossattention.self.key.weight", f, 2).shape[1]
    if encoder_width != vit_width:
        raise ModelFilesError(
            f"{f} attends to {encoder_width}-d image tokens but {VIT_FILE} makes {vit_width}-d ones: "
            "the two files are not from the same tokenizer"
        )
    layers = _count(sd, "Qformer.bert.encoder.layer.", f)
    return QFormerConfig(
        hidden=hidden,
        layers=layers,
        intermediate=intermediate,
        encoder_width=encoder_width,
        num_queries=num_queries,
    )


def _decoder_config(sd: StateDict, num_queries: int) -> tuple[int, DecoderConfig]:
    f = QUANTIZER_FILE
    codebook_size, code_dim = _need(sd, "quantize.embedding.weight", f, 2).shape
    hidden = _need(sd, "decode_task_layer.2.weight", f, 2).shape[0]
    down = tuple(_need(sd, f"image_down.{i}.weight", f, 2).shape[0] for i in (0, 2, 4))
    embed_dim = _need(sd, "distill_image_proj.weight", f, 2).shape[0]
    mlp = _need(sd, "blocks_image.0.mlp.fc1.weight", f, 2).shape[0]
    cfg = DecoderConfig(
        code_dim=code_dim,
        hidden=hidden,
        depth=_count(sd, "blocks_image.", f),
        mlp_hidden=mlp,
        down=(down[0], down[1], down[2]),
        embed_dim=embed_dim,
        num_queries=num_queries,
    )
    return codebook_size, cfg


def infer_config(quantizer: StateDict, vit: StateDict) -> SeedConfig:
    """Sizes read from tensor shapes, so that official and tiny files load with no side file.

    Head counts cannot be read from shapes: they are the official ones at every size (ViT 16,
    Q-Former 12, decoder blocks 12), so tiny widths are multiples of them.
    """
    vit_cfg = _vit_config(vit)
    q_cfg = _qformer_config(quantizer, vit_cfg.width)
    codebook_size, d_cfg = _decoder_config(quantizer, q_cfg.num_queries)
    return SeedConfig(vit=vit_cfg, qformer=q_cfg, codebook_size=codebook_size, decoder=d_cfg)


def _gather(
    model: SeedImageTokenizer, quantizer: StateDict, vit: StateDict, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The model's state dict taken from the two files; extra keys ignored, missing ones an error."""
    out: dict[str, torch.Tensor] = {}
    for key, expected in model.state_dict().items():
        file, sd, name = (
            (VIT_FILE, vit, key[len(VIT_PREFIX) :])
            if key.startswith(VIT_PREFIX)
            else (
                QUANTIZER_FILE,
                quantizer,
                key,
            )
        )
        if name not in sd:
            raise ModelFilesError(
                f"{file} lacks the key {name!r}, which the image tokenizer needs; the file is damaged or not SEED-2's"
            )
        t = sd[name]
        if t.shape != expected.shape:
            raise ModelFilesError(
                f"{file}: {name!r} has shape {tuple(t.shape)} but the other tensors imply {tuple(expected.shape)}"
            )
        if not t.is_floating_point():
            raise ModelFilesError(f"{file}: {name!r} is {t.dtype}, expected floating-point weights")
        out[key] = t.to(dtype)
    return out


def load_tokenizer(directory: Path, *, device: torch.device, dtype: torch.dtype) -> SeedImageTokenizer:
    """The tokenizer from `directory`/seed_quantizer.pt and `directory`/eva_vit_g.pth, in eval mode."""
    if not directory.is_dir():
        raise ModelFilesError(
            f"image tokenizer folder {directory} not found; point it at MIO's seed-tokenizer-2/"
        )
    quantizer = read_state_dict(directory / QUANTIZER_FILE)
    vit = read_state_dict(directory / VIT_FILE)
    cfg = infer_config(quantizer, vit)
    with torch.device("meta"):
        model = SeedImageTokenizer(cfg)
    model.load_state_dict(_gather(model, quantizer, vit, dtype), strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)
