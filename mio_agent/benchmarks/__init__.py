"""Benchmarks run by `mio-agent bench`: ratios measured side by side in one run."""

from __future__ import annotations

__all__: list[str] = []
