"""The default router, a built-in plugin: `/name` commands first, then capability trigger words."""

from __future__ import annotations

import re
from collections.abc import Sequence

from mio_agent.capability import Capability, Modality, RouteContext, RouteDecision, turn_text
from mio_agent.conversation import ImagePart, SpeechPart, Turn
from mio_agent.markers import hookimpl

__all__ = ["match_command", "mio_agent_route", "present_modalities"]

_COMMAND = re.compile(r"^\s*/([A-Za-z][A-Za-z0-9_-]*)\b\s*(.*)$", re.DOTALL)


def match_command(text: str) -> tuple[str, str] | None:
    """(name, rest) of a leading `/name rest` command, the name lower-cased with '-' as '_'; else None."""
    m = _COMMAND.match(text)
    if m is None:
        return None
    return m.group(1).lower().replace("-", "_"), m.group(2).strip()


def present_modalities(turn: Turn, context: RouteContext) -> set[Modality]:
    """The input modalities a turn brings (an image at hand counts as an image)."""
    found: set[Modality] = set()
    for p in turn.parts:
        if isinstance(p, ImagePart):
            found.add("image")
        elif isinstance(p, SpeechPart):
            found.add("speech")
        elif p.text.strip():
            found.add("text")
    if context.recent_image:
        found.add("image")
    return found


@hookimpl(trylast=True)
def mio_agent_route(
    turn: Turn, capabilities: Sequence[Capability], context: RouteContext
) -> RouteDecision | None:
    """`/name` picks capability `name`; otherwise the first capability whose trigger matches the
    turn's text (or the transcript of its speech) and whose needed inputs are present; else None."""
    by_name = {c.name: c for c in capabilities}
    text = turn_text(turn)
    command = match_command(text)
    if command is not None and command[0] in by_name:
        return RouteDecision(command[0], f"explicit command /{command[0]}", command[1])
    heard = " ".join(t for t in (text, context.transcript or "") if t)
    if not heard:
        return None
    present = present_modalities(turn, context)
    for cap in capabilities:
        hit = cap.trigger.matches(heard)
        if hit is None:
            continue
        if not set(cap.trigger.needs) <= present:
            continue
        return RouteDecision(cap.name, f"trigger {hit!r} matched", text)
    return None
