"""Image editing: an image and an instruction become an edited image and a short written confirmation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from mio_agent import hookimpl
from mio_agent.capability import Capability, CapabilityContext, Trigger, render_prompt
from mio_agent.conversation import TextPart
from mio_agent.engine import ReplyOptions
from mio_agent.events import ImageOut, OutputEvent, TextDelta
from mio_agent.plugins.skills import TTS_PROMPT

__all__ = ["IMAGE_EDITING", "ImageEditing", "mio_agent_capabilities"]

# an image block is 34 tokens (markers included) and the stop token one more: room for exactly one
_ONE_IMAGE = 40


@dataclass(frozen=True, slots=True)
class ImageEditing(Capability):
    """Edits the last image of the input (the host puts there the last camera keyframe, the last
    image of the conversation or a file) as the text says; the reply is forced to one image."""

    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        turn = render_prompt(self.prompt, ctx.parts, capability=self.name)
        engine = ctx.engine(self.mode)
        yield ctx.progress(0, 2, "editing the image")
        options = ReplyOptions(
            preset=self.preset, max_new_tokens=_ONE_IMAGE, allow_text=False, allow_speech=False
        )
        edited = False
        async for ev in ctx.stream(engine, turn, options):
            edited = edited or isinstance(ev, ImageOut)
            yield ev
        if not edited:
            yield ctx.error("capability.no_output", "image editing produced no image; try again")
            return
        yield ctx.progress(1, 2, "image edited")
        confirmation = f"Here is the edited image: {ctx.text}."
        yield TextDelta(session=ctx.session, turn=ctx.turn, text=confirmation)
        if ctx.voice:
            # a voice user hears the confirmation too, spoken by MIO with its text-to-speech prompt
            speech = render_prompt(TTS_PROMPT, (TextPart(confirmation),), capability=self.name)
            tts = ReplyOptions(preset="tts", allow_text=False, allow_image=False, max_speech_codes=250)
            async for ev in ctx.stream(ctx.engine("voice"), speech, tts):
                yield ev
        yield ctx.progress(2, 2, "done")


IMAGE_EDITING = ImageEditing(
    name="image_editing",
    description="Edit an image as an instruction says (e.g. make this photo look like winter).",
    inputs=("text", "image"),
    outputs=("image", "text"),
    mode="std",
    preset="image_generation",
    prompt="{image}\nPlease edit this image as follows: {text}.",
    trigger=Trigger(
        keywords=("edit this", "make this", "make it", "turn this", "look like", "change the"),
        patterns=(r"\b(photo|picture|image)\b.*\b(look|into|like)\b",),
        needs=("image",),
    ),
    prompt_source="project",
    covers=("image editing",),
)


@hookimpl
def mio_agent_capabilities() -> list[Capability]:
    return [IMAGE_EDITING]
