"""The user's speech as text, for routing: MIO's own recognition (the `transcribe` capability) or an ASR plugin's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mio_agent.capability import CapabilityContext
from mio_agent.capability_runner import run_capability
from mio_agent.conversation import SpeechPart, Turn
from mio_agent.events import Event, TextDelta, Transcript
from mio_agent.exceptions import PluginError

if TYPE_CHECKING:
    from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["TRANSCRIBE_CAPABILITY", "TRANSCRIPT_TOKENS", "needs_transcript", "transcribe"]

log = logging.getLogger(__name__)

TRANSCRIBE_CAPABILITY = "transcribe"
"""MIO's own speech recognition; `router.transcriber` may name an ASR plugin's capability instead."""
TRANSCRIPT_TOKENS = 64
"""Enough for the sentence of a spoken command; longer speech is cut (routing needs its start)."""


def needs_transcript(shared: SharedResources, turn: Turn) -> bool:
    """Whether routing this turn needs its speech as text (config `router.transcribe`)."""
    mode = shared.config.router.transcribe
    if mode == "never" or not any(isinstance(p, SpeechPart) for p in turn.parts):
        return False
    caps = shared.capabilities()
    asr = shared.config.router.transcriber
    if not any(c.name == asr for c in caps):
        return False
    if mode == "always":
        return True
    # auto: only when some capability can be claimed by what the user says
    return any(
        (c.trigger.keywords or c.trigger.patterns) and not c.trigger.explicit_only
        for c in caps
        if c.name not in (TRANSCRIBE_CAPABILITY, asr)
    )


async def transcribe(
    shared: SharedResources, turn: Turn, *, session: str, turn_no: int, publish: Callable[[Event], None]
) -> str | None:
    """The turn's speech as text (published as a `user.transcript` event); None if it failed."""
    try:
        cap = shared.plugins.capability(shared.config.router.transcriber)
    except PluginError:
        return None
    parts = tuple(p for p in turn.parts if isinstance(p, SpeechPart))
    ctx = CapabilityContext(
        parts=parts,
        engine_factory=shared.engine,
        session=session,
        turn=turn_no,
        capability=cap.name,
        max_new_tokens=TRANSCRIPT_TOKENS,
    )
    pieces: list[str] = []
    async for ev in run_capability(cap, ctx, timeout_s=30.0):
        if isinstance(ev, TextDelta):
            pieces.append(ev.text)
        elif ev.type == "error":
            log.warning("transcription of turn %d failed: %s", turn_no, ev)
            return None
    text = "".join(pieces).strip()
    publish(Transcript(session=session, turn=turn_no, text=text))
    return text
