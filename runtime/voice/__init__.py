"""The voice path: sessions, listening and turn detection, agent turns, speech out, playback, visual inputs, the hub; imports mio_agent and runtime.audio, never runtime.net."""

from __future__ import annotations

__all__: list[str] = []
