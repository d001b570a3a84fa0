"""Visual storytelling: a premise becomes a story of text and images, streamed part by part."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from mio_agent import hookimpl
from mio_agent.capability import Capability, CapabilityContext, Trigger, render_prompt
from mio_agent.conversation import TextPart, Turn
from mio_agent.engine import ReplyOptions
from mio_agent.events import OutputEvent

__all__ = ["VISUAL_STORYTELLING", "VisualStorytelling", "mio_agent_capabilities"]

_ONE_IMAGE = 40
_PART_TOKENS = 160


@dataclass(frozen=True, slots=True)
class VisualStorytelling(Capability):
    """Writes `scenes` parts of a story, each a short text then an image of it, in one conversation
    so every part sees the story so far; each part is streamed as soon as it is generated."""

    scenes: int = 3

    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        engine = ctx.engine(self.mode)
        total = 2 * self.scenes
        turn: Turn | None = render_prompt(self.prompt, ctx.parts, capability=self.name)
        write = ReplyOptions(
            preset=self.preset, max_new_tokens=_PART_TOKENS, allow_speech=False, allow_image=False
        )
        draw = ReplyOptions(
            preset=self.preset, max_new_tokens=_ONE_IMAGE, allow_text=False, allow_speech=False
        )
        for scene in range(self.scenes):
            if scene > 0:
                turn = Turn("user", (TextPart(f"Continue the story with part {scene + 1}."),))
            yield ctx.progress(2 * scene, total, f"writing part {scene + 1} of {self.scenes}")
            async for ev in ctx.stream(engine, turn, write):
                yield ev
            yield ctx.progress(2 * scene + 1, total, f"drawing part {scene + 1} of {self.scenes}")
            picture = Turn("user", (TextPart("Draw an image of this part of the story."),))
            async for ev in ctx.stream(engine, picture, draw):
                yield ev
        yield ctx.progress(total, total, "the story is complete")


VISUAL_STORYTELLING = VisualStorytelling(
    name="visual_storytelling",
    description="Tell an illustrated story from a premise, text and images part by part.",
    inputs=("text",),
    outputs=("text", "image"),
    mode="std",
    preset="interleaved",
    prompt="Let's tell an illustrated story about {text}. Write part 1 of the story in two or three sentences.",
    trigger=Trigger(keywords=("tell me a story", "illustrated story", "story about", "storybook")),
    prompt_source="project",
    covers=("visual storytelling",),
)


@hookimpl
def mio_agent_capabilities() -> list[Capability]:
    return [VISUAL_STORYTELLING]
