"""Network front ends: the WebSocket server and its channels, the Python client, the MQTT bridge, the browser page; may import runtime.voice and runtime.audio."""

from __future__ import annotations

__all__: list[str] = []
