"""Image decoding through a tiny Stable-unCLIP folder: images, progress, seeds, and diffusers' own pipeline."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import diffusers  # noqa: F401  (a required dependency: missing, the run fails here)
import numpy as np
import pytest
import torch

from mio_agent.codecs.image import ImageCodec, save_tiny_image_tokenizer, save_tiny_unclip
from mio_agent.exceptions import ModelFilesError

torch.set_num_threads(1)

CODES = [(i * 257) % 8192 for i in range(32)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("image")
    return (
        save_tiny_image_tokenizer(root / "seed-tokenizer-2", seed=0),
        save_tiny_unclip(root / "stable-diffusion-2-1-unclip", seed=0),
    )


@pytest.fixture(scope="module")
def codec(folders: tuple[Path, Path]) -> ImageCodec:
    return ImageCodec.from_pretrained(folders[0], diffusion_dir=folders[1])


def test_tiny_folder_has_the_official_layout(folders: tuple[Path, Path]) -> None:
    unclip = folders[1]
    index = json.loads((unclip / "model_index.json").read_text())
    assert index["_class_name"] == "StableUnCLIPImg2ImgPipeline"
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    for sub in ("unet", "vae", "text_encoder", "image_encoder", "image_normalizer"):
        assert any((unclip / sub).glob("*.safetensors")), sub
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= {
        p.name for p in (unclip / "tokenizer").iterdir()
    }
    unet = json.loads((unclip / "unet" / "config.json").read_text())
    assert unet["class_embed_type"] == "projection"
    assert unet["projection_class_embeddings_input_dim"] == 2 * 32


def test_decode_is_lazy_then_makes_an_image(codec: ImageCodec) -> None:
    assert codec.decoder is not None and not codec.decoder.loaded
    seen: list[tuple[int, int]] = []
    image = codec.decode(CODES, steps=2, progress=lambda done, total: seen.append((done, total)))
    assert codec.decoder.loaded
    assert (image.mode, image.size) == ("RGB", (32, 32))
    assert seen == [(1, 2), (2, 2)]
    assert np.asarray(image).std() > 0


def test_same_seed_same_image_other_seed_other_image(codec: ImageCodec) -> None:
    a = np.asarray(codec.decode(CODES, steps=1, seed=3))
    b = np.asarray(codec.decode(CODES, steps=1, seed=3))
    c = np.asarray(codec.decode(CODES, steps=1, seed=4))
    d = np.asarray(codec.decode([*CODES[1:], CODES[0]], steps=1, seed=3))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)


def test_matches_diffusers_unclip_img2img_pipeline(codec: ImageCodec, folders: tuple[Path, Path]) -> None:
    """Our loop is the reference call: pipeline(image_embeds=…, noise_level=0, guidance_scale=10, latents=…)."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(folders[1])
    pipe.set_progress_bar_config(disable=True)
    seed = 7
    gen = torch.Generator().manual_seed(seed)
    torch.randn(1, 32, generator=gen)  # the embedding noise comes first, then the latent
    latents = torch.randn(1, 4, 16, 16, generator=gen)
    ref = pipe(
        image_embeds=codec.embed(CODES),
        noise_level=0,
        guidance_scale=10.0,
        num_inference_steps=2,
        latents=latents,
        generator=torch.Generator().manual_seed(seed),
    ).images[0]
    ours = codec.decode(CODES, steps=2, seed=seed)
    assert np.array_equal(np.asarray(ours), np.asarray(ref))


def test_tiny_unclip_is_byte_identical_per_seed(folders: tuple[Path, Path], tmp_path: Path) -> None:
    def digest(folder: Path) -> dict[str, str]:
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    again = save_tiny_unclip(tmp_path / "again", seed=0)
    assert digest(again) == digest(folders[1])


def test_mismatched_embedding_width_is_explained(folders: tuple[Path, Path], tmp_path: Path) -> None:
    wide = save_tiny_unclip(tmp_path / "wide", seed=0, embed_dim=16)
    codec = ImageCodec.from_pretrained(folders[0], diffusion_dir=wide)
    with pytest.raises(ModelFilesError, match="do not belong together"):
        codec.decode(CODES, steps=1)


def test_damaged_folder_fails_on_load(folders: tuple[Path, Path], tmp_path: Path) -> None:
    broken = Path(shutil.copytree(folders[1], tmp_path / "broken"))
    (broken / "unet" / "config.json").write_text("{ not json")
    codec = ImageCodec.from_pretrained(folders[0], diffusion_dir=broken)
    with pytest.raises(ModelFilesError, match="cannot load the unCLIP decoder"):
        codec.load_decoder()
