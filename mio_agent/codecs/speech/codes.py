"""Speech codes: content and timbre layers, MIO's four-part block layout, and their checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mio_agent.exceptions import CodecError

__all__ = ["PART_NAMES", "SpeechCodes", "check_layer", "check_layers", "split_block"]

# MIO's names for RVQ layers 1-4 as they appear in a speech block, in order
PART_NAMES = ("content", "timbre0", "timbre1", "timbre2")
# MIO keeps RVQ layers 1-4 of SpeechTokenizer's 8
_BLOCK_LAYERS = 4


def _part_name(layer: int) -> str:
    return PART_NAMES[layer] if layer < len(PART_NAMES) else f"RVQ layer {layer + 1}"


@dataclass(frozen=True)
class SpeechCodes:
    """The codes of one utterance: content (RVQ layer 1) and, when asked for, timbre (layers 2-4).

    Codes are per layer, 0..codebook_size-1, without MIO's 1024 * layer offsets; one code per 20 ms.
    """

    content: tuple[int, ...]
    timbre: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None

    @property
    def frames(self) -> int:
        """Number of code frames (50 per second of audio)."""
        return len(self.content)

    def block_codes(self, codebook_size: int = 1024) -> list[int]:
        """Speech code indices in MIO's block order: content, then each timbre layer offset by 1024 * layer.

        Without timbre this is the content alone, as user speech is written.
        """
        out = list(self.content)
        for layer, codes in enumerate(self.timbre or (), start=1):
            out.extend(layer * codebook_size + c for c in codes)
        return out

    @classmethod
    def from_block_codes(cls, codes: Sequence[int], codebook_size: int = 1024) -> SpeechCodes:
        """Parse speech code indices (0 .. 4 * codebook_size - 1) laid out as MIO writes a speech block."""
        parts = split_block(codes, codebook_size)
        if len(parts) == 1:
            return cls(content=tuple(parts[0]))
        return cls(content=tuple(parts[0]), timbre=(tuple(parts[1]), tuple(parts[2]), tuple(parts[3])))


def check_layer(codes: Sequence[int] | np.ndarray, layer: int, codebook_size: int) -> np.ndarray:
    """Codes of one RVQ layer as int64, or CodecError naming the first bad one and why."""
    arr = np.asarray(codes)
    name = _part_name(layer)
    if arr.ndim != 1:
        raise CodecError(f"{name} codes must be a flat sequence of integers, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise CodecError(f"{name} codes must be integers, got {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= codebook_size))
    if bad.size:
        i = int(bad[0])
        hint = "; pass per-layer codes without MIO's 1024 * layer offsets" if arr[i] >= codebook_size else ""
        raise CodecError(f"{name} code {int(arr[i])} at position {i} is outside 0..{codebook_size - 1}{hint}")
    return arr


def check_layers(
    content: Sequence[int] | np.ndarray,
    timbre: Sequence[Sequence[int]] | None,
    *,
    codebook_size: int,
    n_q: int,
) -> np.ndarray:
    """Content and optional timbre layers as int64 [layers, frames], or CodecError saying what is wrong."""
    rows = [check_layer(content, 0, codebook_size)]
    if rows[0].size == 0:
        raise CodecError("no content codes to decode; a speech block needs at least one frame")
    if timbre is not None:
        if len(timbre) > n_q - 1:
            raise CodecError(f"{len(timbre)} timbre layers given; the codec has only {n_q - 1}")
        for layer, codes in enumerate(timbre, start=1):
            row = check_layer(codes, layer, codebook_size)
            if row.size != rows[0].size:
                raise CodecError(
                    f"{_part_name(layer)} has {row.size} codes but content has {rows[0].size}; "
                    "the parts of a speech block must be of equal length"
                )
            rows.append(row)
    return np.stack(rows)


def split_block(codes: Sequence[int], codebook_size: int) -> list[list[int]]:
    """Split speech code indices in MIO's layout into parts: [content] or [content, t0, t1, t2], checked.

    The parts must come in order, each part's codes offset by codebook_size * part, all of equal
    length (the reference cannot decode anything else).
    """
    parts: list[list[int]] = [[]]
    for i, raw in enumerate(codes):
        value = int(raw)
        part, code = divmod(value, codebook_size)
        if value < 0 or part >= _BLOCK_LAYERS:
            raise CodecError(
                f"speech code index {value} at position {i} is outside 0..{_BLOCK_LAYERS * codebook_size - 1}"
            )
        if part < len(parts) - 1:
            raise CodecError(
                f"a {_part_name(part)} code at position {i} comes after {_part_name(len(parts) - 1)} codes; "
                "a speech block holds content, timbre0, timbre1, timbre2 in that order"
            )
        while part > len(parts) - 1:
            parts.append([])
        parts[part].append(code)
    if not parts[0]:
        raise CodecError("the speech block holds no content codes")
    if len(parts) > 1:
        if len(parts) < _BLOCK_LAYERS:
            parts.extend([] for _ in range(_BLOCK_LAYERS - len(parts)))
        lengths = [len(p) for p in parts]
        if len(set(lengths)) != 1:
            shown = ", ".join(f"{_part_name(k)} {n}" for k, n in enumerate(lengths))
            raise CodecError(
                f"the speech block's four parts differ in length ({shown}); it cannot be decoded"
            )
    return parts
