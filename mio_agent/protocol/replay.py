"""A bounded buffer of the server's numbered messages, so a client that reconnects gets what it missed."""

from __future__ import annotations

from collections import deque

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """The last `capacity` (seq, message) pairs; messages are text (JSON) or bytes (binary frames)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[tuple[int, str | bytes]] = deque(maxlen=capacity)
        self.last_seq = 0

    def add(self, seq: int, message: str | bytes) -> None:
        if seq <= self.last_seq:
            raise ValueError(f"sequence numbers must grow: {seq} after {self.last_seq}")
        self._items.append((seq, message))
        self.last_seq = seq

    def since(self, last_seen: int) -> tuple[list[str | bytes], int]:
        """Messages after `last_seen`, and how many of them are no longer kept (0: nothing lost)."""
        if last_seen >= self.last_seq:
            return [], 0
        kept = [m for s, m in self._items if s > last_seen]
        first = self._items[0][0] if self._items else self.last_seq + 1
        lost = max(0, first - last_seen - 1)
        return kept, lost
