"""Speech and image codecs: MIO's modalities to codes and back."""

from __future__ import annotations

__all__: list[str] = []
