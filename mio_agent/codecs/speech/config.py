"""SpeechTokenizer's `config.json`: the fields the model reads, checked, plus the full and tiny presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from mio_agent.exceptions import ModelFilesError

__all__ = ["FULL_CONFIG", "TINY_CONFIG", "SpeechTokenizerConfig"]

# what the official file's other fields mean to us: nothing (mel-loss, trainer and data settings)
_INT_FIELDS = (
    "n_filters",
    "dimension",
    "semantic_dimension",
    "dilation_base",
    "residual_kernel_size",
    "n_residual_layers",
    "lstm_layers",
    "codebook_size",
    "n_q",
    "sample_rate",
)


@dataclass(frozen=True)
class SpeechTokenizerConfig:
    """The architecture fields of SpeechTokenizer's `config.json`; defaults are the hubert_avg release."""

    n_filters: int = 64
    strides: tuple[int, ...] = (8, 5, 4, 2)
    dimension: int = 1024
    semantic_dimension: int = 768
    bidirectional: bool = True
    dilation_base: int = 2
    residual_kernel_size: int = 3
    n_residual_layers: int = 1
    lstm_layers: int = 2
    activation: str = "ELU"
    codebook_size: int = 1024
    n_q: int = 8
    sample_rate: int = 16000

    @property
    def hop_length(self) -> int:
        """Samples per code frame (the product of the strides): 320 for the release, 50 frames/s."""
        return math.prod(self.strides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config.json") -> SpeechTokenizerConfig:
        """Read and check the fields the model uses; other keys are training leftovers and are ignored."""
        if not isinstance(data, dict):
            raise ModelFilesError(f"{source} must hold a JSON object, not {type(data).__name__}")
        defaults = cls()
        values: dict[str, Any] = {}
        for name in _INT_FIELDS:
            raw = data.get(name, getattr(defaults, name))
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                raise ModelFilesError(f"{source}: field {name!r} must be a positive integer, got {raw!r}")
            values[name] = raw
        strides = data.get("strides", list(defaults.strides))
        if (
            not isinstance(strides, list)
            or not strides
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in strides)
        ):
            raise ModelFilesError(
                f"{source}: field 'strides' must be a list of positive integers, got {strides!r}"
            )
        bidirectional = data.get("bidirectional", defaults.bidirectional)
        if not isinstance(bidirectional, bool):
            raise ModelFilesError(
                f"{source}: field 'bidirectional' must be true or false, got {bidirectional!r}"
            )
        activation = data.get("activation", defaults.activation)
        if activation != "ELU":
            # the Snake release adds `alpha` parameters per activation; MIO ships the ELU one
            raise ModelFilesError(
                f"{source}: activation {activation!r} is not supported; MIO uses speechtokenizer_hubert_avg "
                "(activation ELU)"
            )
        return cls(strides=tuple(strides), bidirectional=bidirectional, activation=activation, **values)

    def to_dict(self) -> dict[str, Any]:
        """The fields as the official `config.json` spells them (strides as a list)."""
        out = asdict(self)
        out["strides"] = list(self.strides)
        return out


FULL_CONFIG = SpeechTokenizerConfig()
# same strides (hop 320, 16 kHz) and codebooks (8 x 1024) as the release, so MIO's code layout holds
TINY_CONFIG = SpeechTokenizerConfig(n_filters=4, dimension=16, semantic_dimension=12)
