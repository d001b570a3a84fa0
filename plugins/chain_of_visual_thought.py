"""Chain of visual thought: a question is answered through reasoning steps that include images."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from mio_agent import hookimpl
from mio_agent.capability import Capability, CapabilityContext, Trigger, render_prompt
from mio_agent.conversation import TextPart, Turn
from mio_agent.engine import ReplyOptions
from mio_agent.events import OutputEvent, TextDelta

__all__ = ["CHAIN_OF_VISUAL_THOUGHT", "ChainOfVisualThought", "mio_agent_capabilities"]

_ONE_IMAGE = 40
_STEP_TOKENS = 128


@dataclass(frozen=True, slots=True)
class ChainOfVisualThought(Capability):
    """`steps` rounds of a written reasoning step and a sketch of it, then a final written answer,
    all in one conversation so each step sees the previous ones."""

    steps: int = 2

    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        engine = ctx.engine(self.mode)
        total = 2 * self.steps + 1
        turn: Turn | None = render_prompt(self.prompt, ctx.parts, capability=self.name)
        think = ReplyOptions(
            preset="text", max_new_tokens=_STEP_TOKENS, allow_speech=False, allow_image=False
        )
        sketch = ReplyOptions(
            preset=self.preset, max_new_tokens=_ONE_IMAGE, allow_text=False, allow_speech=False
        )
        for step in range(self.steps):
            if step > 0:
                turn = Turn("user", (TextPart(f"Step {step + 1}: go on reasoning."),))
            yield ctx.progress(2 * step, total, f"reasoning step {step + 1}")
            yield TextDelta(session=ctx.session, turn=ctx.turn, text=f"\nStep {step + 1}: ")
            async for ev in ctx.stream(engine, turn, think):
                yield ev
            yield ctx.progress(2 * step + 1, total, f"sketching step {step + 1}")
            picture = Turn("user", (TextPart("Draw an image that shows this step."),))
            async for ev in ctx.stream(engine, picture, sketch):
                yield ev
        yield ctx.progress(2 * self.steps, total, "answering")
        yield TextDelta(session=ctx.session, turn=ctx.turn, text="\nAnswer: ")
        final = Turn("user", (TextPart("Now give the final answer in one sentence."),))
        async for ev in ctx.stream(engine, final, think):
            yield ev
        yield ctx.progress(total, total, "done")


CHAIN_OF_VISUAL_THOUGHT = ChainOfVisualThought(
    name="chain_of_visual_thought",
    description="Answer a question by reasoning in steps that include images, then a final answer.",
    inputs=("text",),
    outputs=("text", "image"),
    mode="std",
    preset="interleaved",
    prompt="{images?}{text}\nLet's think step by step, drawing an image for each step. Step 1:",
    trigger=Trigger(keywords=("think visually", "visual reasoning", "show your reasoning")),
    prompt_source="project",
    covers=("chain of visual thought",),
)


@hookimpl
def mio_agent_capabilities() -> list[Capability]:
    return [CHAIN_OF_VISUAL_THOUGHT]
