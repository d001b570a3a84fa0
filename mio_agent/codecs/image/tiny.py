"""Tiny SEED-2 tokenizer and unCLIP folders from a seed, in the official file formats and layouts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mio_agent.codecs.image.checkpoint import QUANTIZER_FILE, VIT_FILE
from mio_agent.codecs.image.eva_vit import EvaViTConfig
from mio_agent.codecs.image.model import VIT_PREFIX, SeedConfig, SeedImageTokenizer
from mio_agent.codecs.image.qformer import BERT_BASE_UNCASED_CONFIG, QFormerConfig
from mio_agent.codecs.image.quantizer import DecoderConfig
from mio_agent.exceptions import ConfigError

__all__ = ["TINY_CONFIG", "build_random", "random_init_", "save_tiny_image_tokenizer", "save_tiny_unclip"]

# Head counts stay the official ones (16, 12, 12), so widths are multiples of them; the 224×224
# input, the 32 queries and the 8192 codes stay too, so tiny codes are valid MIO codes.
TINY_CONFIG = SeedConfig(
    vit=EvaViTConfig(width=64, depth=2, mlp_hidden=int(64 * 4.3637), patch_size=28, grid=8),
    qformer=QFormerConfig(hidden=48, layers=2, intermediate=96, encoder_width=64),
    codebook_size=8192,
    decoder=DecoderConfig(code_dim=8, hidden=48, depth=2, mlp_hidden=192, down=(24, 16, 4), embed_dim=32),
)


def random_init_(module: nn.Module, *, seed: int) -> nn.Module:
    """Fill every parameter from `seed` alone (never the global RNG), scaled to keep activations O(1)."""
    gen = torch.Generator().manual_seed(seed)
    norm_weights = {id(m.weight) for m in module.modules() if isinstance(m, nn.LayerNorm)}
    with torch.no_grad():
        for p in module.parameters():
            values = torch.empty(p.shape, dtype=torch.float32)
            if id(p) in norm_weights:
                values.fill_(1.0)
            elif p.ndim == 1:
                values.normal_(0.0, 0.02, generator=gen)
            elif p.ndim == 3:
                # class token, query tokens and position tables
                values.normal_(0.0, 1.0, generator=gen)
            else:
                values.normal_(0.0, 1.0 / math.sqrt(math.prod(p.shape[1:])), generator=gen)
            p.copy_(values)
    return module


def build_random(cfg: SeedConfig, *, seed: int, dtype: torch.dtype = torch.float32) -> SeedImageTokenizer:
    """The tokenizer at sizes `cfg` with random weights (built on the meta device, then filled)."""
    with torch.device("meta"):
        model = SeedImageTokenizer(cfg)
    model = model.to_empty(device="cpu")
    random_init_(model, seed=seed)
    return model.to(dtype).eval().requires_grad_(False)


def _randn(gen: torch.Generator, *shape: int, std: float = 0.02) -> torch.Tensor:
    return torch.randn(shape, generator=gen) * std


def _quantizer_extras(
    cfg: SeedConfig, model: SeedImageTokenizer, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Keys the official file holds but the tokenizer never reads: text branch, recon branch, positions."""
    q, d = cfg.qformer, cfg.decoder
    out: dict[str, torch.Tensor] = {
        "Qformer.bert.embeddings.position_ids": torch.arange(
            BERT_BASE_UNCASED_CONFIG["max_position_embeddings"]
        )[None],
    }
    for i in range(q.layers):
        pre = f"Qformer.bert.encoder.layer.{i}."
        out[pre + "intermediate.dense.weight"] = _randn(gen, q.intermediate, q.hidden)
        out[pre + "intermediate.dense.bias"] = _randn(gen, q.intermediate)
        out[pre + "output.dense.weight"] = _randn(gen, q.hidden, q.intermediate)
        out[pre + "output.dense.bias"] = _randn(gen, q.hidden)
        out[pre + "output.LayerNorm.weight"] = torch.ones(q.hidden)
        out[pre + "output.LayerNorm.bias"] = torch.zeros(q.hidden)
    out["pos_embed"] = _randn(gen, 1, q.num_queries, d.hidden)
    # the reconstruction branch (`blocks`) has the layout of the decoder blocks
    block = model.blocks_image[0].state_dict()
    for j in range(d.depth):
        out.update({f"blocks.{j}.{k}": _randn(gen, *v.shape) for k, v in block.items()})
    return out


def _vit_extras(cfg: SeedConfig, model: SeedImageTokenizer, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One more block than the tokenizer runs, a final norm and a CLIP head, as in EVA-CLIP's file."""
    w = cfg.vit.width
    last = f"blocks.{cfg.vit.depth}."
    block = model.visual_encoder.blocks[0].state_dict()
    out = {last + k: _randn(gen, *v.shape) for k, v in block.items()}
    out["norm.weight"] = torch.ones(w)
    out["norm.bias"] = torch.zeros(w)
    out["head.weight"] = _randn(gen, cfg.embed_dim, w)
    out["head.bias"] = torch.zeros(cfg.embed_dim)
    return out


def save_tiny_image_tokenizer(directory: Path, *, seed: int = 0, config: SeedConfig = TINY_CONFIG) -> Path:
    """Write `directory`/seed_quantizer.pt (float32, full module paths, extra keys) and
    `directory`/eva_vit_g.pth (float16, no prefix, an extra block, norm and head); the same seed
    gives byte-identical files. Returns `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = build_random(config, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    quantizer = {k: v for k, v in state.items() if not k.startswith(VIT_PREFIX)}
    quantizer.update(_quantizer_extras(config, model, gen))
    vit = {k[len(VIT_PREFIX) :]: v for k, v in state.items() if k.startswith(VIT_PREFIX)}
    vit.update(_vit_extras(config, model, gen))
    torch.save(quantizer, directory / QUANTIZER_FILE)
    torch.save({k: v.half() for k, v in vit.items()}, directory / VIT_FILE)
    return directory


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes that CLIP's byte-level BPE uses (GPT-2's mapping)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = 0
    symbols = {}
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + shifted)
            shifted += 1
    return [symbols[b] for b in range(256)]


def _tiny_clip_vocab() -> dict[str, int]:
    """Single symbols, word-final symbols and the two specials: a complete BPE vocab with no merges."""
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def save_tiny_unclip(directory: Path, *, seed: int = 0, embed_dim: int = TINY_CONFIG.embed_dim) -> Path:
    """Write a tiny Stable-unCLIP img2img folder with diffusers' save_pretrained (all nine components,
    image encoder and feature extractor included, so diffusers' own pipeline loads it too); it takes
    `embed_dim`-d image embeddings and makes 32×32 images. Returns `directory`."""
    try:
        from diffusers import (
            AutoencoderKL,
            DDIMScheduler,
            DDPMScheduler,
            StableUnCLIPImg2ImgPipeline,
            UNet2DConditionModel,
        )
        from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
            StableUnCLIPImageNormalizer,
        )
        from transformers import (
            CLIPTextConfig,
            CLIPTextModel,
            CLIPTokenizer,
            CLIPVisionConfig,
            CLIPVisionModelWithProjection,
        )
    except ImportError as exc:
        raise ConfigError(
            f"building the tiny unCLIP folder needs diffusers ({exc}); install it with pip install 'diffusers>=0.35'"
        ) from exc
    try:
        # the PIL backend avoids transformers' warning about torchvision; the saved folder names
        # the class CLIPImageProcessor either way (see below)
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    directory = Path(directory)
    vocab = _tiny_clip_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    text_cfg = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="gelu",
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    vision_cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=embed_dim,
        hidden_act="gelu",
    )
    parts: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):
        # diffusers and transformers initialise from the global RNG: seed it, then restore it
        torch.manual_seed(seed)
        parts["text_encoder"] = CLIPTextModel(text_cfg)
        parts["image_encoder"] = CLIPVisionModelWithProjection(vision_cfg)
        parts["unet"] = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=(2, 4),
            norm_num_groups=8,
            use_linear_projection=True,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=2 * embed_dim,
        )
        parts["vae"] = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(16, 32),
            latent_channels=4,
            norm_num_groups=8,
            sample_size=32,
        )
        normalizer = StableUnCLIPImageNormalizer(embedding_dim=embed_dim)
        with torch.no_grad():
            normalizer.mean.normal_(0.0, 0.1)
            normalizer.std.uniform_(0.5, 1.5)
        parts["image_normalizer"] = normalizer
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        image_encoder=parts["image_encoder"],
        image_normalizer=parts["image_normalizer"],
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000),
        tokenizer=tokenizer,
        text_encoder=parts["text_encoder"],
        unet=parts["unet"],
        # the scheduler settings of stable-diffusion-2-1-unclip
        scheduler=DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type="v_prediction",
        ),
        vae=parts["vae"],
    )
    pipe.save_pretrained(directory)
    # name the processor class as the official folder does, whichever backend wrote it
    index_path = directory / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # the official folder also ships the slow tokenizer's files
    tok_dir = directory / "tokenizer"
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tok_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return directory
