"""Stable Diffusion 2.1 unCLIP img2img from given image embeddings, from a local diffusers folder."""

from __future__ import annotations

import importlib.util
import inspect
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mio_agent.exceptions import ConfigError, ModelFilesError

__all__ = ["DEFAULT_GUIDANCE", "DEFAULT_STEPS", "UNCLIP_FOLDERS", "UnclipDecoder"]

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 10.0
# the components this decoder reads; a full pipeline folder also has image_encoder/ and
# feature_extractor/, which are not needed when the image embedding is given
UNCLIP_FOLDERS = (
    "unet",
    "vae",
    "text_encoder",
    "tokenizer",
    "scheduler",
    "image_normalizer",
    "image_noising_scheduler",
)

Progress = Callable[[int, int], None]


class UnclipDecoder:
    """The unCLIP decoder of one diffusers folder; heavy parts load on the first `load()` or `generate()`.

    diffusers is imported only inside `load`, so a session that never decodes an image never
    imports it. The denoising loop is diffusers' StableUnCLIPImg2ImgPipeline as MIO calls it
    (empty prompt, noise_level 0, guidance 10, a given initial latent; a test checks the two give
    identical pixels), written out so that: the CLIP image encoder the pipeline insists on
    (~1.2 GB, unused when embeddings are given) is never loaded; the initial latent is always
    scaled by `init_noise_sigma` (diffusers stopped scaling given latents after the version MIO
    used); and each step reports progress.
    """

    def __init__(self, folder: Path, *, device: torch.device, dtype: torch.dtype) -> None:
        self.folder = folder
        self.device = device
        self.dtype = dtype
        index = folder / "model_index.json"
        if not index.is_file():
            raise ModelFilesError(
                f"{index} not found; the image decoder needs the diffusers folder stable-diffusion-2-1-unclip/"
            )
        try:
            self._index: dict[str, Any] = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelFilesError(f"{index} is not readable JSON: {exc}") from exc
        missing = [name for name in UNCLIP_FOLDERS if not (folder / name).is_dir()]
        if missing:
            raise ModelFilesError(
                f"the unCLIP folder {folder} lacks the subfolders {', '.join(missing)}; is it a complete copy?"
            )
        self._lock = threading.Lock()
        self._parts: dict[str, Any] | None = None

    @property
    def loaded(self) -> bool:
        return self._parts is not None

    def load(self) -> None:
        """Import diffusers and load the components (seconds to a minute for the real weights)."""
        with self._lock:
            if self._parts is None:
                self._parts = self._load()

    def _scheduler(self, diffusers: Any, name: str) -> Any:
        entry = self._index.get(name)
        cls = getattr(diffusers, entry[1], None) if isinstance(entry, list) and len(entry) == 2 else None
        if cls is None:
            raise ModelFilesError(
                f"{self.folder}/model_index.json names no diffusers scheduler class for {name!r}"
            )
        return cls.from_pretrained(self.folder, subfolder=name)

    def _load(self) -> dict[str, Any]:
        try:
            import diffusers
            from diffusers.image_processor import VaeImageProcessor
            from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
                StableUnCLIPImageNormalizer,
            )
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError as exc:
            raise ConfigError(
                f"decoding images needs the diffusers package ({exc}); install it with pip install 'diffusers>=0.35'"
            ) from exc
        # without accelerate, diffusers warns on every load unless told to build models plainly
        plain = {} if importlib.util.find_spec("accelerate") else {"low_cpu_mem_usage": False}
        kw = {"torch_dtype": self.dtype}
        try:
            parts: dict[str, Any] = {
                "unet": diffusers.UNet2DConditionModel.from_pretrained(
                    self.folder, subfolder="unet", **kw, **plain
                ),
                "vae": diffusers.AutoencoderKL.from_pretrained(self.folder, subfolder="vae", **kw, **plain),
                "normalizer": StableUnCLIPImageNormalizer.from_pretrained(
                    self.folder, subfolder="image_normalizer", **kw, **plain
                ),
                "text_encoder": CLIPTextModel.from_pretrained(
                    self.folder, subfolder="text_encoder", dtype=self.dtype
                ),
                "tokenizer": CLIPTokenizer.from_pretrained(self.folder, subfolder="tokenizer"),
                "scheduler": self._scheduler(diffusers, "scheduler"),
                "noising": self._scheduler(diffusers, "image_noising_scheduler"),
            }
        except ModelFilesError:
            raise
        except Exception as exc:
            raise ModelFilesError(f"cannot load the unCLIP decoder from {self.folder}: {exc}") from exc
        for name in ("unet", "vae", "normalizer", "text_encoder"):
            parts[name] = parts[name].to(self.device).eval().requires_grad_(False)
        vae_scale = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
        parts["vae_scale"] = vae_scale
        parts["postprocess"] = VaeImageProcessor(vae_scale_factor=vae_scale)
        parts["timestep_embedding"] = diffusers.models.embeddings.get_timestep_embedding
        parts["empty_prompt"] = self._empty_prompt(parts)
        return parts

    def _empty_prompt(self, parts: dict[str, Any]) -> torch.Tensor:
        """Text states of the empty prompt: MIO gives no prompt, and the negative prompt is empty too."""
        tok = parts["tokenizer"]
        ids = tok(
            "", padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            states: torch.Tensor = parts["text_encoder"](ids.input_ids.to(self.device))[0]
        return states.to(self.dtype)

    @property
    def embed_dim(self) -> int:
        """Width of the image embeddings the UNet takes (half its class-embedding input)."""
        self.load()
        assert self._parts is not None
        return int(self._parts["unet"].config.projection_class_embeddings_input_dim) // 2

    @property
    def image_size(self) -> int:
        self.load()
        assert self._parts is not None
        return int(self._parts["unet"].config.sample_size) * int(self._parts["vae_scale"])

    def generate(
        self,
        image_embeds: torch.Tensor,
        *,
        steps: int = DEFAULT_STEPS,
        seed: int = 0,
        guidance_scale: float = DEFAULT_GUIDANCE,
        noise_level: int = 0,
        progress: Progress | None = None,
    ) -> Image.Image:
        """One image from one embedding [1, D]; the same seed gives the same image.

        The seed draws, in this order, the noise added to the embedding at `noise_level` and
        the initial latent (the reference draws both once per process).
        """
        self.load()
        p = self._parts
        assert p is not None
        if image_embeds.shape != (1, self.embed_dim):
            raise ModelFilesError(
                f"the image tokenizer makes {tuple(image_embeds.shape)} embeddings but the unCLIP UNet in "
                f"{self.folder} takes (1, {self.embed_dim}): the two do not belong together"
            )
        unet, scheduler = p["unet"], p["scheduler"]
        gen = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(image_embeds.shape, generator=gen)
        size = int(unet.config.sample_size)
        latents = torch.randn((1, int(unet.config.in_channels), size, size), generator=gen)
        with self._lock, torch.inference_mode():
            cond = self._noised(
                p, image_embeds.to(self.device, self.dtype), noise.to(self.device, self.dtype), noise_level
            )
            guided = guidance_scale > 1.0
            class_labels = torch.cat([torch.zeros_like(cond), cond]) if guided else cond
            text = p["empty_prompt"].repeat(2 if guided else 1, 1, 1)
            scheduler.set_timesteps(steps, device=self.device)
            latents = latents.to(self.device, self.dtype) * scheduler.init_noise_sigma
            accepts = set(inspect.signature(scheduler.step).parameters)
            extra = {k: v for k, v in (("eta", 0.0), ("generator", gen)) if k in accepts}
            total = len(scheduler.timesteps)
            for i, t in enumerate(scheduler.timesteps):
                x = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
                pred = unet(x, t, encoder_hidden_states=text, class_labels=class_labels, return_dict=False)[0]
                if guided:
                    uncond, c = pred.chunk(2)
                    pred = uncond + guidance_scale * (c - uncond)
                latents = scheduler.step(pred, t, latents, **extra, return_dict=False)[0]
                if progress is not None:
                    progress(i + 1, total)
            vae = p["vae"]
            image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
            out: Image.Image = p["postprocess"].postprocess(image.float(), output_type="pil")[0]
        return out

    def _noised(
        self, p: dict[str, Any], embeds: torch.Tensor, noise: torch.Tensor, level: int
    ) -> torch.Tensor:
        """The embedding noised at `level` (normalised space) with the level's sinusoidal embedding appended."""
        levels = torch.tensor([level], device=self.device)
        x = p["normalizer"].scale(embeds)
        x = p["noising"].add_noise(x, timesteps=levels, noise=noise)
        x = p["normalizer"].unscale(x)
        level_emb = p["timestep_embedding"](levels, x.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
        return torch.cat((x, level_emb.to(x.dtype)), 1)
