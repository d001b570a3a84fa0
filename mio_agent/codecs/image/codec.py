"""ImageCodec: MIO's image ⇄ 32 codes, with SEED-2's encoder and the unCLIP decoder."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mio_agent.codecs.image.checkpoint import load_tokenizer
from mio_agent.codecs.image.io import check_codes, preprocess
from mio_agent.codecs.image.model import SeedConfig, SeedImageTokenizer
from mio_agent.codecs.image.unclip import DEFAULT_GUIDANCE, DEFAULT_STEPS, Progress, UnclipDecoder
from mio_agent.exceptions import ConfigError

__all__ = ["ImageCodec"]

# images encoded per forward pass in encode_many: bounds activation memory of the big ViT
ENCODE_BATCH = 8


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"image codec device {device!r} is not a torch device (use 'cpu', 'cuda', 'cuda:1')"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"image codec device {device!r} asked for, but CUDA is not available here; use 'cpu'"
        )
    return dev


class ImageCodec:
    """Encode images to MIO's 32 image codes and decode codes back to images.

    The tokenizer weights load in `from_pretrained`; the diffusion stack (diffusers, ~5 GB for
    the real folder) loads on the first `decode` or `load_decoder`, so sessions that never
    decode never import diffusers. Encoding is thread-safe; decodes run one at a time.
    """

    def __init__(
        self,
        model: SeedImageTokenizer,
        *,
        decoder: UnclipDecoder | None = None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.model = model
        self.decoder = decoder
        self.device = device
        self.dtype = dtype
        # on CUDA, encodes run on the codec's own stream: they overlap the language model's decode
        # steps (on the default stream) instead of queueing behind them
        self._stream: Any = (
            torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
            if device.type == "cuda"
            else None
        )

    @classmethod
    def from_pretrained(
        cls,
        tokenizer_dir: str | Path,
        *,
        diffusion_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> ImageCodec:
        """Load seed_quantizer.pt and eva_vit_g.pth from `tokenizer_dir` (MIO's seed-tokenizer-2/).

        `diffusion_dir` is MIO's stable-diffusion-2-1-unclip/ folder, checked now and loaded on
        the first decode; None leaves the codec encode-only (plus `embed`). `dtype` defaults to
        float16 on CUDA (as the reference runs) and float32 elsewhere.
        """
        dev = _device(device)
        dt = dtype if dtype is not None else (torch.float16 if dev.type == "cuda" else torch.float32)
        model = load_tokenizer(Path(tokenizer_dir), device=dev, dtype=dt)
        decoder = None if diffusion_dir is None else UnclipDecoder(Path(diffusion_dir), device=dev, dtype=dt)
        return cls(model, decoder=decoder, device=dev, dtype=dt)

    @property
    def config(self) -> SeedConfig:
        return self.model.config

    @property
    def num_codes(self) -> int:
        """Codes per image: 32."""
        return self.model.config.num_codes

    @property
    def codebook_size(self) -> int:
        """Distinct codes: 8192."""
        return self.model.config.codebook_size

    def encode(self, image: Image.Image) -> list[int]:
        """The 32 codes (0..8191) of one image; any size or mode, resized to 224×224 without keeping the aspect."""
        return self.encode_many([image])[0]

    def encode_many(self, images: Sequence[Image.Image]) -> list[list[int]]:
        """Codes of each image, in order, batched through the encoder."""
        out: list[list[int]] = []
        size = self.model.config.image_size
        with contextlib.ExitStack() as stack:
            if self._stream is not None:
                stack.enter_context(torch.cuda.stream(self._stream))
            for start in range(0, len(images), ENCODE_BATCH):
                pixels = preprocess(images[start : start + ENCODE_BATCH], size).to(self.device, self.dtype)
                # .tolist() waits for this stream's work: the codes are on the host when it returns
                out.extend(self.model.encode(pixels).tolist())
        return out

    def embed(self, codes: Sequence[int]) -> torch.Tensor:
        """The unCLIP image embedding [1, 1024] of 32 codes (float32, on the CPU)."""
        checked = check_codes(codes, count=self.num_codes, size=self.codebook_size)
        ids = torch.tensor([checked], device=self.device)
        return self.model.embed(ids).float().cpu()

    def load_decoder(self) -> None:
        """Load the diffusion stack now rather than on the first decode."""
        self._decoder().load()

    def _decoder(self) -> UnclipDecoder:
        if self.decoder is None:
            raise ConfigError(
                "this image codec was loaded without a diffusion folder; pass diffusion_dir "
                "(MIO's stable-diffusion-2-1-unclip/) to decode images"
            )
        return self.decoder

    def decode(
        self,
        codes: Sequence[int],
        *,
        steps: int = DEFAULT_STEPS,
        progress: Progress | None = None,
        seed: int = 0,
        guidance_scale: float = DEFAULT_GUIDANCE,
    ) -> Image.Image:
        """The image of 32 codes: 768×768 with the real weights, after `steps` denoising steps.

        `progress(done, total)` is called after each step. The same codes and seed give the
        same image (the seed fixes the initial latent, as the reference fixes one per process).
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"decode steps must be a positive integer, not {steps!r}")
        embedding = self.embed(codes)
        return self._decoder().generate(
            embedding, steps=steps, seed=seed, guidance_scale=guidance_scale, progress=progress
        )
