"""The state of one streaming reply, shared by the engine's worker thread and the reply's async consumer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

from mio_agent.constraints import MioConstraint
from mio_agent.parser import StreamParser
from mio_agent.sampling import Sampler

__all__ = ["ReplyJob", "StopReason"]

StopReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(slots=True)
class ReplyJob:
    """What one reply needs while it decodes, and what it has produced so far.

    `pending` are the ids fed before the first decode step (the turn's unprefilled ids and the
    generation prompt); `fed` counts generated ids whose keys and values are in the cache.
    """

    pending: list[int]
    constraint: MioConstraint
    sampler: Sampler
    parser: StreamParser
    max_new_tokens: int
    stop_ids: frozenset[int]
    cancel: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    fed: int = 0
    prefill_s: float = 0.0
    first_token_s: float | None = None
    decode_s: float = 0.0
    reason: StopReason = "length"
    error: str | None = None
