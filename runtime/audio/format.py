"""The one audio format of the voice path: 16 kHz mono int16 in 20 ms frames."""

from __future__ import annotations

__all__ = ["FRAME_MS", "FRAME_SAMPLES", "SAMPLE_RATE"]

SAMPLE_RATE = 16_000
"""Rate of every frame a source delivers (what the VAD and the speech codec take), in Hz."""
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
