"""The Textual terminal UI (installed as mio_agent.tui)."""

from __future__ import annotations

__all__: list[str] = []
