"""The runtime's commands (run, devices, replay, serve, client), registered with the core CLI through the mio_agent.commands entry points."""

from __future__ import annotations

__all__: list[str] = []
