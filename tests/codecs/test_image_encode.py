"""Image encoding with the tiny SEED-2 files: 32 codes, determinism, causal queries, bad input, laziness."""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mio_agent.codecs.image as image_pkg
from mio_agent.codecs.image import ImageCodec, benchmark_image_codec, load_image, save_tiny_image_tokenizer
from mio_agent.codecs.image.io import CLIP_MEAN, CLIP_STD, preprocess
from mio_agent.codecs.image.unclip import UNCLIP_FOLDERS
from mio_agent.exceptions import CodecError, ConfigError, ModelFilesError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_image_tokenizer(tmp_path_factory.mktemp("seed") / "seed-tokenizer-2", seed=0)


@pytest.fixture(scope="module")
def codec(tiny_dir: Path) -> ImageCodec:
    return ImageCodec.from_pretrained(tiny_dir)


def picture(seed: int, size: tuple[int, int] = (150, 100)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_public_names_exist() -> None:
    assert image_pkg.__all__
    for name in image_pkg.__all__:
        assert getattr(image_pkg, name) is not None


def test_encode_gives_32_codes_in_range(codec: ImageCodec) -> None:
    codes = codec.encode(picture(0))
    assert len(codes) == 32
    assert all(isinstance(c, int) and 0 <= c < 8192 for c in codes)
    assert len(set(codes)) > 1


def test_encode_is_deterministic_across_loads(codec: ImageCodec, tiny_dir: Path) -> None:
    image = picture(1)
    again = ImageCodec.from_pretrained(tiny_dir)
    assert codec.encode(image) == codec.encode(image) == again.encode(image)
    assert codec.encode(image) != codec.encode(picture(2))


def test_encode_many_matches_one_by_one(codec: ImageCodec) -> None:
    images = [picture(i, (60 + 30 * i, 200 - 20 * i)) for i in range(10)]  # more than one batch
    assert codec.encode_many(images) == [codec.encode(im) for im in images]
    assert codec.encode_many([]) == []


def test_any_mode_is_converted_to_rgb(codec: ImageCodec) -> None:
    rgb = picture(3)
    assert codec.encode(rgb.convert("RGBA")) == codec.encode(rgb)
    grey = rgb.convert("L")
    assert codec.encode(grey) == codec.encode(grey.convert("RGB"))


def test_preprocess_is_bilinear_224_with_clip_statistics() -> None:
    flat = Image.new("RGB", (300, 90), (255, 0, 128))
    pixels = preprocess([flat], 224)
    assert pixels.shape == (1, 3, 224, 224)
    expected = [(v / 255.0 - m) / s for v, m, s in zip((255, 0, 128), CLIP_MEAN, CLIP_STD, strict=True)]
    assert torch.allclose(pixels[0, :, 100, 100], torch.tensor(expected), atol=1e-6)
    stripes = Image.fromarray(
        np.tile(np.array([0, 255], dtype=np.uint8).repeat(3), (224, 1)).reshape(224, 6, 1).repeat(3, 2)
    )
    # a 6-px-wide image of two bands is stretched, so the left edge stays dark and the right bright
    row = preprocess([stripes], 224)[0, 0, 0]
    assert row[0] < 0 < row[-1]


def test_queries_are_causal(codec: ImageCodec) -> None:
    """Query i of the Q-Former sees queries 0..i only: changing the last query changes only its own output."""
    model = codec.model
    image = model.ln_vision(model.visual_encoder(preprocess([picture(4)], 224)))
    queries = model.query_tokens.clone()
    with torch.inference_mode():
        base = model.Qformer(queries, image)
        queries[0, -1] += 1.0
        moved = model.Qformer(queries, image)
        queries[0, 0] += 1.0
        first = model.Qformer(queries, image)
    assert torch.equal(base[0, :-1], moved[0, :-1])
    assert not torch.equal(base[0, -1], moved[0, -1])
    assert not torch.allclose(first[0, 1:], moved[0, 1:])


def test_embed_shape_and_determinism(codec: ImageCodec) -> None:
    codes = codec.encode(picture(5))
    emb = codec.embed(codes)
    assert emb.shape == (1, codec.config.embed_dim)
    assert emb.dtype == torch.float32
    assert torch.equal(emb, codec.embed(tuple(codes)))
    assert not torch.equal(emb, codec.embed([*codes[:-1], (codes[-1] + 1) % 8192]))


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (list(range(31)), "exactly 32 codes, got 31"),
        (list(range(33)), "exactly 32 codes, got 33"),
        ([*range(31), 8192], "code 31 is 8192, outside 0..8191"),
        ([-1, *range(31)], "code 0 is -1, outside"),
        ([*range(31), 2.0], "not an integer"),
        ([True, *range(31)], "not an integer"),
        ("0" * 32, "sequence of 32 integers"),
    ],
)
def test_bad_codes_raise_codec_error(codec: ImageCodec, codes: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.embed(codes)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=message):
        codec.decode(codes, steps=1)  # type: ignore[arg-type]


def test_decode_needs_a_diffusion_folder(codec: ImageCodec) -> None:
    with pytest.raises(ConfigError, match="diffusion_dir"):
        codec.decode([0] * 32, steps=1)


def _png(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but whose data is one row: enough to test the header check."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def test_load_image_reads_files_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    picture(6).convert("RGBA").save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (150, 100)
    assert np.array_equal(np.asarray(load_image(path.read_bytes())), np.asarray(loaded))


def test_load_image_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG but nothing else")
    with pytest.raises(CodecError, match="not an image"):
        load_image(tmp_path / "junk.png")
    buf = io.BytesIO()
    picture(7, (200, 200)).save(buf, format="JPEG")
    with pytest.raises(CodecError, match="cannot be decoded"):
        load_image(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(CodecError, match=r"9000×9000 pixels, more than the limit of 67,108,864"):
        load_image(_png(9000, 9000))
    # past Pillow's own limits, its warning (12000²) and its error (30000²) are refused alike
    for side in (12000, 30000):
        with pytest.raises(CodecError, match="too large to decode safely"):
            load_image(_png(side, side))
    small = tmp_path / "small.png"
    picture(8, (20, 20)).save(small)
    with pytest.raises(CodecError, match="20×20 pixels, more than the limit of 100"):
        load_image(small, max_pixels=100)


def test_encode_refuses_non_images(codec: ImageCodec) -> None:
    with pytest.raises(CodecError, match="expected a PIL image"):
        codec.encode(np.zeros((4, 4, 3), dtype=np.uint8))  # type: ignore[arg-type]


def test_bad_device_is_a_config_error(tiny_dir: Path) -> None:
    with pytest.raises(ConfigError, match="not a torch device"):
        ImageCodec.from_pretrained(tiny_dir, device="gpu-please")


def test_diffusion_folder_is_checked_early(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match=r"model_index\.json not found"):
        ImageCodec.from_pretrained(tiny_dir, diffusion_dir=tmp_path)
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ModelFilesError, match="lacks the subfolders unet, vae"):
        ImageCodec.from_pretrained(tiny_dir, diffusion_dir=tmp_path)


def test_encoding_never_imports_diffusers(tiny_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "unclip"
    for name in UNCLIP_FOLDERS:
        (fake / name).mkdir(parents=True)
    (fake / "model_index.json").write_text(json.dumps({"_class_name": "StableUnCLIPImg2ImgPipeline"}))
    script = (
        "import sys\n"
        "from PIL import Image\n"
        "from mio_agent.codecs.image import ImageCodec\n"
        f"c = ImageCodec.from_pretrained({str(tiny_dir)!r}, diffusion_dir={str(fake)!r})\n"
        "codes = c.encode(Image.new('RGB', (64, 64), (10, 200, 30)))\n"
        "c.embed(codes)\n"
        "print(len(codes), 'diffusers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["32", "False"]


def test_benchmark_reports_tiny_timings() -> None:
    figures = benchmark_image_codec(full=False, repeats=1)
    assert {"tiny_encode_s", "tiny_embed_s", "tiny_build_s", "tiny_params_m", "threads"} <= figures.keys()
    assert "full_encode_s" not in figures
    # the timings are figures to report, not bounds: how long they are depends on the machine's load
    for key in ("tiny_encode_s", "tiny_embed_s", "tiny_build_s"):
        assert math.isfinite(figures[key]) and figures[key] >= 0, (key, figures[key])
    assert 0.1 < figures["tiny_params_m"] < 5
