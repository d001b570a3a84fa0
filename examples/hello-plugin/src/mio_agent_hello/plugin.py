"""The `hello` capability: greets the user by name in text, then asks MIO to say it aloud."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from mio_agent import hookimpl
from mio_agent.capability import Capability, CapabilityContext, Trigger, render_prompt
from mio_agent.conversation import TextPart
from mio_agent.engine import ReplyOptions
from mio_agent.events import OutputEvent, TextDelta

# MIO's own text-to-speech instruction (the reference prompt of its TTS task)
SAY = (
    "The transcription is ``{text}''. Please generate a speech according to the given transcription. "
    "Start with <spch>."
)


@dataclass(frozen=True, slots=True)
class Hello(Capability):
    """Writes the greeting itself (no model needed), then has MIO speak it."""

    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        name = ctx.text or "there"
        greeting = f"Hello, {name}!"
        yield ctx.progress(0, 2, "greeting")
        yield TextDelta(session=ctx.session, turn=ctx.turn, text=greeting)
        yield ctx.progress(1, 2, "saying it")
        turn = render_prompt(SAY, (TextPart(greeting),), capability=self.name)
        options = ReplyOptions(preset="tts", allow_text=False, allow_image=False, max_speech_codes=100)
        async for ev in ctx.stream(ctx.engine("voice"), turn, options):
            yield ev
        yield ctx.progress(2, 2, "done")


HELLO = Hello(
    name="hello",
    description="Greet someone by name, in text and aloud.",
    inputs=("text",),
    outputs=("text", "speech"),
    mode="std",
    preset="tts",
    prompt="{text}",
    trigger=Trigger(keywords=("say hello", "greet me")),
    prompt_source="project",
)


@hookimpl
def mio_agent_capabilities() -> list[Capability]:
    return [HELLO]
