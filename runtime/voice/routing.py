"""A turn's route, decided once: the model's reply or a capability, with the transcript it needed and the parts it gets."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mio_agent.capability import Capability, RouteContext, RouteDecision
from mio_agent.conversation import ImagePart, Part, SpeechPart, TextPart, Turn
from mio_agent.events import Event, RouteDecided
from mio_agent.runtime.voice.agent_turn import TurnInputTimes
from mio_agent.runtime.voice.transcribe import needs_transcript, transcribe

if TYPE_CHECKING:
    from mio_agent.runtime.voice.resources import SharedResources
    from mio_agent.runtime.voice.visual import ImageInputs

__all__ = ["Route", "TurnRouter"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a turn goes: `capability` with `parts` (None: the model replies to the turn itself)."""

    decision: RouteDecision | None
    capability: Capability | None = None
    parts: tuple[Part, ...] = ()


class TurnRouter:
    """Decides each turn's route once, publishes it (`route.decided`), and shapes a capability's parts.

    A spoken turn is transcribed first when a capability could be claimed by its words
    (`router.transcribe`); `transcribing(turn)` says so before the decision, so the session can
    start the model's reply speculatively meanwhile."""

    def __init__(
        self,
        shared: SharedResources,
        images: ImageInputs,
        *,
        session: str,
        mode: str,
        publish: Callable[[Event], None],
        error: Callable[[str, str, int], None],
    ) -> None:
        self._shared = shared
        self._images = images
        self._session = session
        self._mode = mode
        self._publish = publish
        self._error = error

    def transcribing(self, turn: Turn, invoked: RouteDecision | None = None) -> bool:
        """Whether deciding this turn's route waits for a transcript of its speech."""
        return invoked is None and needs_transcript(self._shared, turn)

    async def decide(
        self, turn: Turn, n: int, times: TurnInputTimes, *, invoked: RouteDecision | None = None
    ) -> Route:
        """The route of turn `n` (published), transcribing it first when `transcribing` says so."""
        decision = invoked
        transcript = None
        if decision is None:
            if needs_transcript(self._shared, turn):
                t0 = time.perf_counter()
                transcript = await transcribe(
                    self._shared, turn, session=self._session, turn_no=n, publish=self._publish
                )
                times.transcribe_s = time.perf_counter() - t0
            decision = self._ask_plugins(turn, n, transcript)
        self._publish(
            RouteDecided(
                session=self._session,
                turn=n,
                capability=decision.capability if decision else "",
                reason=decision.reason if decision else "no capability claimed the turn: the model replies",
            )
        )
        if decision is None:
            return Route(None)
        cap = self._shared.plugins.capability(decision.capability)
        return Route(decision, cap, self._parts(cap, turn, decision.text or transcript or ""))

    def _ask_plugins(self, turn: Turn, n: int, transcript: str | None) -> RouteDecision | None:
        context = RouteContext(
            mode="voice" if self._mode == "voice" else "std",
            transcript=transcript,
            recent_image=self._images.recent() is not None,
        )
        try:
            return self._shared.plugins.route(turn, context)
        except Exception as exc:  # a broken router plugin: the plain reply still works
            self._error("route.error", f"the router failed: {type(exc).__name__}: {exc}", n)
            return None

    def _parts(self, cap: Capability, turn: Turn, said: str) -> tuple[Part, ...]:
        # a spoken request reaches a capability as its transcript (and its speech, if it takes speech)
        parts = _with_text(turn.parts, said) if said else turn.parts
        if "speech" not in cap.inputs:
            parts = tuple(p for p in parts if not isinstance(p, SpeechPart))
        if "image" in cap.inputs and not any(isinstance(p, ImagePart) for p in parts):
            recent = self._images.recent()
            if recent is not None:
                parts = (recent, *parts)
        return parts


def _with_text(parts: tuple[Part, ...], text: str) -> tuple[Part, ...]:
    """The parts with their text replaced by `text` (a `/name` command stripped off)."""
    kept = [p for p in parts if not isinstance(p, TextPart)]
    return (*kept, TextPart(text))
