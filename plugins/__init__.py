"""Built-in capability plugins, written against the public API only (installed as mio_agent.plugins)."""

from __future__ import annotations

__all__: list[str] = []
