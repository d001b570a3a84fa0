"""The runtime's benchmarks (voice, transport, soak), found by `mio-agent bench` through the mio_agent.benchmarks entry points."""

from __future__ import annotations

__all__: list[str] = []
