"""`mio-agent replay`: a recorded session's input fed back through the real pipeline, and what changed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mio_agent.events import (
    AudioIn,
    ErrorEvent,
    Event,
    ImageOut,
    Interrupt,
    InvokeCapability,
    Metrics,
    Mute,
    RouteDecided,
    SpeechCodes,
    TextDelta,
    TextIn,
    Transcript,
    TurnEnded,
    TurnStarted,
    UserTurn,
)
from mio_agent.exceptions import StoreError
from mio_agent.session_log import read_events

if TYPE_CHECKING:
    from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["ReplayReport", "TurnSummary", "recorded_inputs", "replay_session", "summarize"]

_REPLAYED = (AudioIn, TextIn, InvokeCapability, Interrupt, Mute)
# reply audio lengths may differ by this much (seconds) and still count as the same audio: the
# decoder's last chunk is sized by when the reply ended, not by what was said
_AUDIO_TOLERANCE_S = 0.05


@dataclass(slots=True)
class TurnSummary:
    """What one agent turn was: what the user gave, how it was routed and ended, and its latencies."""

    turn: int
    user: str = ""
    speech_s: float = 0.0
    route: str = ""
    kind: str = ""
    reason: str = ""
    tokens: int = 0
    audio_s: float = 0.0
    transcript: str = ""
    text: str = ""
    codes: dict[int, list[int]] = field(default_factory=dict)
    images: list[tuple[int, ...]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def shape(self) -> dict[str, Any]:
        """What a faithful replay must reproduce exactly: what the user gave, how the turn was
        routed and ended, and what it produced (text, speech codes per layer, image codes, errors).
        With a fixed `engine.seed` the replies are reproduced too. Timings are never compared: they
        depend on the machine and its load, not on what the pipeline did."""
        return {
            "user": self.user,
            "speech_s": round(self.speech_s, 2),
            "transcript": self.transcript,
            "route": self.route,
            "kind": self.kind,
            "reason": self.reason,
            "tokens": self.tokens,
            "text": self.text,
            "codes": {layer: list(c) for layer, c in sorted(self.codes.items())},
            "images": list(self.images),
            "errors": list(self.errors),
        }


def summarize(events: Iterable[Event | dict[str, Any]]) -> list[TurnSummary]:
    """Per agent turn, in order, from a session's events."""
    turns: dict[int, TurnSummary] = {}

    def of(n: int) -> TurnSummary:
        return turns.setdefault(n, TurnSummary(n))

    for ev in events:
        if isinstance(ev, dict):
            if ev.get("type") == "audio.out":
                of(int(ev["turn"])).audio_s += ev["pcm"]["bytes"] / 2 / ev["sample_rate"]
            elif ev.get("type") == "image.out":
                of(int(ev["turn"])).images.append(tuple(int(c) for c in ev.get("codes", ())))
            continue
        if isinstance(ev, UserTurn):
            t = of(ev.turn)
            t.user, t.speech_s = ev.text, ev.speech_s
        elif isinstance(ev, RouteDecided):
            of(ev.turn).route = ev.capability or "reply"
        elif isinstance(ev, TurnStarted):
            of(ev.turn).kind = ev.kind
        elif isinstance(ev, TurnEnded):
            t = of(ev.turn)
            t.reason, t.tokens = ev.reason, ev.tokens
        elif isinstance(ev, Metrics):
            of(ev.turn).timings[ev.stage] = ev.seconds
        elif isinstance(ev, Transcript):
            of(ev.turn).transcript = ev.text
        elif isinstance(ev, TextDelta):
            of(ev.turn).text += ev.text
        elif isinstance(ev, SpeechCodes):
            of(ev.turn).codes.setdefault(ev.layer, []).extend(ev.codes)
        elif isinstance(ev, ImageOut):
            of(ev.turn).images.append(tuple(ev.codes))
        elif isinstance(ev, ErrorEvent):
            of(ev.turn).errors.append(ev.code)
        elif ev.type == "audio.out":
            of(ev.turn).audio_s += len(getattr(ev, "pcm", b"")) / 2 / getattr(ev, "sample_rate", 16000)
    return [turns[n] for n in sorted(turns) if turns[n].reason]


def recorded_inputs(folder: Path) -> list[Event]:
    """The input events of a recorded session, in order: microphone frames, text, commands."""
    if not (folder / "events.jsonl").exists():
        raise StoreError(f"{folder} is not a session folder (no events.jsonl); see mio-agent replay --help")
    return [ev for ev in read_events(folder) if isinstance(ev, _REPLAYED)]


@dataclass(slots=True)
class ReplayReport:
    """The recorded and the replayed turns, and every difference found."""

    recorded: list[TurnSummary]
    replayed: list[TurnSummary]
    differences: list[str]
    inputs: int
    seconds: float

    @property
    def same(self) -> bool:
        return not self.differences

    def lines(self) -> list[str]:
        out = [
            f"replayed {self.inputs} input events in {self.seconds:.1f} s: "
            f"{len(self.recorded)} recorded turn(s), {len(self.replayed)} replayed"
        ]
        for rec, new in zip(self.recorded, self.replayed, strict=False):
            stages = sorted(set(rec.timings) & set(new.timings))
            timing = ", ".join(
                f"{s} {rec.timings[s] * 1000:.0f}→{new.timings[s] * 1000:.0f} ms" for s in stages
            )
            out.append(f"  turn {rec.turn}: {rec.route or '?'} {rec.reason} | {timing}")
        out += [f"  DIFF {d}" for d in self.differences] or [
            "  no differences in what was heard, routed, said or produced"
        ]
        return out


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compare(recorded: Sequence[TurnSummary], replayed: Sequence[TurnSummary]) -> list[str]:
    """Differences in what happened and what was produced: turn count, inputs, transcripts, routes,
    end reasons, text, speech and image codes, errors, and reply audio length (within 50 ms).
    Timings are shown by `ReplayReport.lines` but never make a difference."""
    diffs: list[str] = []
    if len(recorded) != len(replayed):
        diffs.append(f"{len(recorded)} turn(s) recorded but {len(replayed)} in the replay")
    for rec, new in zip(recorded, replayed, strict=False):
        a, b = rec.shape(), new.shape()
        for key in a:
            if a[key] != b[key]:
                diffs.append(f"turn {rec.turn}: {key} was {_short(a[key])}, now {_short(b[key])}")
        if abs(rec.audio_s - new.audio_s) > _AUDIO_TOLERANCE_S:
            diffs.append(f"turn {rec.turn}: reply audio was {rec.audio_s:.2f} s, now {new.audio_s:.2f} s")
    return diffs


async def replay_session(shared: SharedResources, folder: Path, *, fast: bool = False) -> ReplayReport:
    """Run the recorded inputs through a new session (no devices; real time unless `fast`)."""
    from mio_agent.runtime.voice.hub import SessionHub

    inputs = recorded_inputs(folder)
    recorded = summarize(read_events(folder, payloads=False))
    hub = SessionHub(shared)
    session = await hub.open()
    sub = session.bus.subscribe(
        "replay", maxsize=1 << 16, policy="block", filter=lambda e: e.type != "audio.in"
    )
    got: list[Event] = []
    started = time.monotonic()
    try:
        t_first = inputs[0].t if inputs else 0.0
        for ev in inputs:
            if not fast:
                delay = (ev.t - t_first) - (time.monotonic() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
            session.submit(ev)
            if fast and isinstance(ev, AudioIn):
                # in fast mode, let the session keep pace with the input so the order of events holds
                await session.drained()
        await session.idle()
    finally:
        await hub.aclose()
    while sub.pending:
        got.append(await sub.get())
    replayed = summarize(got)
    return ReplayReport(
        recorded, replayed, compare(recorded, replayed), len(inputs), time.monotonic() - started
    )
