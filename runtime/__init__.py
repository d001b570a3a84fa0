"""Everything that touches devices, sockets and the event loop (installed as mio_agent.runtime)."""

from __future__ import annotations

__all__: list[str] = []
