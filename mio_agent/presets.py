"""The reference's generation presets by feature (beams, sampling, penalties) and their streaming form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from mio_agent.exceptions import ConfigError
from mio_agent.sampling import SamplingParams

__all__ = [
    "INTERLEAVED_MAX_NEW_TOKENS",
    "PRESETS",
    "SPEECH_MAX_NEW_TOKENS",
    "TEXT_MAX_NEW_TOKENS",
    "GenerationPreset",
    "get_preset",
    "preset_names",
]

# Speech output costs 200 tokens per second of audio (4 layers x 50 frames/s), so the reference's
# default of 512 new tokens is 2.5 s. 2048 holds about 10 s of speech and still leaves half of
# MIO's 4096 positions for the conversation; longer answers are best split into several turns.
SPEECH_MAX_NEW_TOKENS = 2048
# an image block is 34 tokens; ~10 keyframes of a video or a few images with text fit in 1024
INTERLEAVED_MAX_NEW_TOKENS = 1024
TEXT_MAX_NEW_TOKENS = 512


@dataclass(frozen=True, slots=True)
class GenerationPreset:
    """Generation settings of one feature, as the reference runs it (temperature, length_penalty 1.0).

    Beam search (`num_beams` > 1) cannot stream: the best beam is only known at the end. The
    streaming loop therefore runs `streaming_params()`, the greedy equivalent of a beam preset;
    the beam settings are kept for one-shot, non-streaming generation (`generate_kwargs()`),
    e.g. offline evaluation against the reference. `top_p` only matters when sampling: the
    reference passes 0.7 to its beam presets too, and `generate` ignores it there.
    """

    name: str
    description: str
    num_beams: int
    do_sample: bool
    repetition_penalty: float
    top_p: float = 1.0
    temperature: float = 1.0
    length_penalty: float = 1.0
    max_new_tokens: int = TEXT_MAX_NEW_TOKENS

    @property
    def streams(self) -> bool:
        """Whether this preset's own settings can stream (no beam search)."""
        return self.num_beams == 1

    def sampling_params(self, seed: int | None = None) -> SamplingParams:
        """The preset's per-step settings (beam search aside)."""
        return SamplingParams(
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=0,
            repetition_penalty=self.repetition_penalty,
            seed=seed,
        )

    def streaming_params(self, seed: int | None = None) -> SamplingParams:
        """Settings for the token-by-token loop: a beam preset becomes greedy with the same penalty."""
        if self.streams:
            return self.sampling_params(seed)
        return SamplingParams(do_sample=False, repetition_penalty=self.repetition_penalty, seed=seed)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for Hugging Face `generate` (the non-streaming, beam-search path)."""
        kwargs: dict[str, Any] = {
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
            "length_penalty": self.length_penalty,
            "max_new_tokens": self.max_new_tokens,
        }
        if self.do_sample:
            kwargs["top_p"] = self.top_p
            kwargs["temperature"] = self.temperature
        return kwargs


_BY_NAME: dict[str, GenerationPreset] = {
    p.name: p
    for p in (
        GenerationPreset("text", "text replies (captions, answers, ASR)", 5, False, 1.0),
        GenerationPreset("image_generation", "text to image", 5, False, 1.15, top_p=0.7),
        GenerationPreset(
            "tts",
            "text to speech, and voice-mode replies",
            1,
            True,
            1.15,
            top_p=0.7,
            max_new_tokens=SPEECH_MAX_NEW_TOKENS,
        ),
        GenerationPreset(
            "speech_generation",
            "speech about a text prompt (not a transcription)",
            5,
            False,
            2.0,
            top_p=0.7,
            max_new_tokens=SPEECH_MAX_NEW_TOKENS,
        ),
        GenerationPreset(
            "speech_to_speech",
            "a spoken reply to speech",
            5,
            False,
            1.15,
            top_p=0.7,
            max_new_tokens=SPEECH_MAX_NEW_TOKENS,
        ),
        GenerationPreset(
            "interleaved",
            "video and interleaved text/image generation",
            1,
            True,
            1.15,
            top_p=0.7,
            max_new_tokens=INTERLEAVED_MAX_NEW_TOKENS,
        ),
    )
}
PRESETS: Mapping[str, GenerationPreset] = MappingProxyType(_BY_NAME)


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def get_preset(name: str) -> GenerationPreset:
    """The preset called `name`; ConfigError naming the valid ones if there is none."""
    preset = PRESETS.get(name)
    if preset is None:
        raise ConfigError(f"unknown generation preset {name!r}; use one of {', '.join(PRESETS)}")
    return preset
