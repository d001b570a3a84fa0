"""Built-in capabilities on the embedded tiny model, and the supervisor that stops misbehaving plugins."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from mio_agent.capability import Capability, CapabilityContext, CapabilityMode, render_prompt
from mio_agent.capability_runner import run_capability
from mio_agent.conversation import ImagePart, Part, SpeechPart, TextPart, Turn
from mio_agent.engine import ConversationEngine
from mio_agent.events import CapabilityProgress, ErrorEvent, ImageOut, OutputEvent, SpeechCodes, TextDelta
from mio_agent.exceptions import ConversationError
from mio_agent.model.embedded import embedded_model_path
from mio_agent.model.loading import LoadedModel, load_model
from mio_agent.plugin import PluginManager

# every row of the capability table of mio-format.md ("Capabilities and how strong the authors rate them")
TABLE_ROWS = (
    "text generation",
    "image captioning",
    "image understanding",
    "image generation",
    "image editing",
    "ASR",
    "TTS",
    "speech understanding",
    "speech generation",
    "speech to speech",
    "video captioning",
    "video understanding",
    "video generation",
    "interleaved generation",
    "chain of visual thought",
    "multimodal in-context learning",
    "multimodal chain of thought",
    "chart understanding",
    "visual storytelling",
)
IMAGE = ImagePart(tuple(range(100, 132)))
FRAME2 = ImagePart(tuple(range(200, 232)))
SPEECH = SpeechPart(tuple(range(40, 60)))
CAP_TOKENS = 48


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    torch.set_num_threads(1)
    path = embedded_model_path(seed=0, cache_dir=tmp_path_factory.mktemp("cache"))
    return load_model(path, device="cpu", dtype="float32", progress=False)


@pytest.fixture(scope="module")
def pm() -> PluginManager:
    manager = PluginManager(autoload=False)
    manager.load()
    return manager


@dataclass
class Engines:
    """An engine factory that keeps every engine it made, to inspect prompts and state afterwards."""

    lm: LoadedModel
    made: list[ConversationEngine]

    def __call__(self, mode: CapabilityMode) -> ConversationEngine:
        eng = ConversationEngine(self.lm, mode=mode, seed=0)
        self.made.append(eng)
        return eng


def context(lm: LoadedModel, parts: tuple[Part, ...], **kw: Any) -> tuple[CapabilityContext, Engines]:
    engines = Engines(lm, [])
    kw.setdefault("max_new_tokens", CAP_TOKENS)
    ctx = CapabilityContext(parts=parts, engine_factory=engines, session="s1", turn=3, **kw)
    return ctx, engines


def inputs_for(cap: Capability) -> tuple[Part, ...]:
    parts: list[Part] = [TextPart("a red fox in the snow")]
    if "image" in cap.inputs:
        parts.append(IMAGE)
    if "video" in cap.inputs:
        parts += [IMAGE, FRAME2]
    if "speech" in cap.inputs:
        parts.append(SPEECH)
    return tuple(parts)


def modality(ev: OutputEvent) -> str | None:
    if isinstance(ev, TextDelta):
        return "text"
    if isinstance(ev, ImageOut):
        return "image"
    if isinstance(ev, SpeechCodes):
        return "speech"
    return None


def test_every_table_row_is_a_registered_capability(pm: PluginManager) -> None:
    covered = {row: cap.name for cap in pm.capabilities() for row in cap.covers}
    assert set(TABLE_ROWS) <= set(covered), set(TABLE_ROWS) - set(covered)
    for cap in pm.capabilities():
        assert cap.description and "\n" not in cap.description
        assert cap.prompt_source in ("reference", "project")


def test_reference_prompts_are_verbatim(pm: PluginManager) -> None:
    assert pm.capability("transcribe").prompt == "Please transcribe this speech.\n{speech}"
    tts = pm.capability("speak")
    assert tts.prompt == (
        "The transcription is ``{text}''. Please generate a speech according to the given transcription. "
        "Start with <spch>."
    )
    assert (tts.mode, tts.preset, tts.prompt_source) == ("voice", "tts", "reference")
    assert pm.capability("speech_understanding").prompt == "{speech}\nPlease continue the story."
    assert pm.capability("speech_to_speech").prompt == "{speech}"


def test_render_prompt_fills_slots() -> None:
    turn = render_prompt("Please transcribe this speech.\n{speech}", (TextPart("ignored"), SPEECH))
    assert turn == Turn("user", (TextPart("Please transcribe this speech.\n"), SPEECH))
    turn = render_prompt("{images}\nDescribe {text}.", (TextPart("it"), IMAGE, FRAME2))
    assert turn.parts == (IMAGE, FRAME2, TextPart("\nDescribe it."))
    assert render_prompt("{images?}{text}", (TextPart("hi"),)).parts == (TextPart("hi"),)
    with pytest.raises(ConversationError, match="'x' needs an image"):
        render_prompt("{image} {text}", (TextPart("hi"),), capability="x")


@pytest.mark.parametrize(
    "name",
    [
        "text_generation",
        "describe_image",
        "image_qa",
        "generate_image",
        "transcribe",
        "speak",
        "speech_generation",
        "speech_understanding",
        "speech_to_speech",
        "describe_video",
        "video_qa",
        "generate_video",
        "interleaved_generation",
        "in_context_examples",
        "multimodal_reasoning",
        "chart_qa",
        "image_editing",
        "visual_storytelling",
        "chain_of_visual_thought",
    ],
)
async def test_builtin_capability_end_to_end(lm: LoadedModel, pm: PluginManager, name: str) -> None:
    cap = pm.capability(name)
    ctx, engines = context(lm, inputs_for(cap))
    events = [ev async for ev in run_capability(cap, ctx, timeout_s=60)]
    assert not [e for e in events if isinstance(e, ErrorEvent)], events
    assert all(e.session == "s1" and e.turn == 3 for e in events)
    produced = {m for e in events if (m := modality(e)) is not None}
    declared = {"image" if m == "video" else m for m in cap.outputs}
    assert produced, f"{name} produced nothing"
    assert produced <= declared, f"{name} produced {produced}, declared {declared}"
    progress = [e for e in events if isinstance(e, CapabilityProgress)]
    assert progress and progress[-1].name == name
    # the first engine ran in the capability's mode, on the capability's own prompt
    first = engines.made[0]
    assert first.mode == cap.mode
    assert first.turns[0] == render_prompt(cap.prompt, ctx.parts, capability=name)
    assert not any(e.busy for e in engines.made)


async def test_generate_image_yields_one_image_of_32_codes(lm: LoadedModel, pm: PluginManager) -> None:
    ctx, _ = context(lm, (TextPart("a lighthouse"),))
    events = [ev async for ev in run_capability(pm.capability("generate_image"), ctx)]
    images = [e for e in events if isinstance(e, ImageOut)]
    assert len(images) == 1 and len(images[0].codes) == 32
    assert all(0 <= c < 8192 for c in images[0].codes)


async def test_speak_yields_four_layers_of_equal_length(lm: LoadedModel, pm: PluginManager) -> None:
    ctx, engines = context(lm, (TextPart("hello there"),))
    events = [ev async for ev in run_capability(pm.capability("speak"), ctx)]
    speech = [e for e in events if isinstance(e, SpeechCodes)]
    assert [e.layer for e in speech] == [0, 1, 2, 3]
    assert len({len(e.codes) for e in speech}) == 1 and speech[0].codes
    assert engines.made[0].mode == "voice"


async def test_missing_input_is_a_bad_input_error(lm: LoadedModel, pm: PluginManager) -> None:
    ctx, _ = context(lm, (TextPart("make it winter"),))
    events = [ev async for ev in run_capability(pm.capability("image_editing"), ctx)]
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    assert events[0].code == "capability.bad_input" and "needs an image" in events[0].message


async def test_closing_the_run_cancels_the_reply(lm: LoadedModel, pm: PluginManager) -> None:
    ctx, engines = context(lm, (TextPart("a dragon"),), max_new_tokens=None)
    run = run_capability(pm.capability("visual_storytelling"), ctx)
    seen: list[OutputEvent] = []
    async for ev in run:
        seen.append(ev)
        if isinstance(ev, TextDelta):
            break
    await run.aclose()
    eng = engines.made[0]
    assert not eng.busy
    # the story stopped inside its first part: no image and a single, cut-short assistant turn
    assert not any(isinstance(e, ImageOut) for e in seen)
    assert [t.role for t in eng.turns] == ["user", "assistant"]


async def test_cancelling_the_task_stops_a_long_image_job(lm: LoadedModel, pm: PluginManager) -> None:
    """Cancelling the task that runs a capability stops its reply before the next decode step: the
    model runs no forward after the cancel, the job goes on to no later step (no sketch, no image)
    and the conversation keeps what was produced before the cancel."""
    ctx, engines = context(lm, (TextPart("a dragon"),), max_new_tokens=None)
    held_at = 4  # the model's 4th forward (the prompt's, then decode steps) waits for the test
    forwards = 0
    paused, release = threading.Event(), threading.Event()

    def count(*_: object) -> None:
        # runs on the engine's worker thread, after each forward of the model
        nonlocal forwards
        forwards += 1
        if forwards == held_at:
            paused.set()
            release.wait(60)

    seen: list[OutputEvent] = []

    async def consume() -> None:
        async for ev in run_capability(pm.capability("chain_of_visual_thought"), ctx):
            seen.append(ev)

    hook = lm.model.register_forward_hook(count)
    try:
        task = asyncio.create_task(consume(), name="capability-under-test")
        assert await asyncio.to_thread(paused.wait, 60), f"the reply never reached forward {held_at}"
        # the reply is held inside a decode step: cancel the task, and let the step finish only
        # after the cancellation has run as far as it goes without waiting (call_soon keeps order)
        task.cancel()
        asyncio.get_running_loop().call_soon(release.set)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 60)
    finally:
        release.set()
        hook.remove()
    # nothing was produced after the cancel: no decode step, no later step of the job
    assert forwards == held_at
    assert len(engines.made) == 1 and not engines.made[0].busy
    assert not any(isinstance(e, ImageOut) for e in seen)
    assert [e.step for e in seen if isinstance(e, CapabilityProgress)] == [0]
    # the conversation kept the cut reply: what the consumer had been handed, nothing more
    eng = engines.made[0]
    assert [t.role for t in eng.turns] == ["user", "assistant"]
    said = "".join(e.text for e in seen if isinstance(e, TextDelta)).removeprefix("\nStep 1: ")
    kept = "".join(p.text for p in eng.turns[1].parts if isinstance(p, TextPart))
    assert said and kept == said


# -- misbehaving plugins --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scripted(Capability):
    """A capability whose run is a given async generator function (for misbehaving plugins)."""

    script: Callable[[CapabilityContext], AsyncIterator[Any]] | None = None

    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        assert self.script is not None
        async with contextlib.aclosing(self.script(ctx)) as events:  # type: ignore[type-var]
            async for ev in events:
                yield ev


def scripted(name: str, script: Callable[[CapabilityContext], AsyncIterator[Any]]) -> Scripted:
    return Scripted(
        name=name,
        description="A test capability.",
        inputs=("text",),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt="{text}",
        script=script,
    )


async def test_raising_hanging_and_garbage_plugins_become_errors(lm: LoadedModel, pm: PluginManager) -> None:
    closed: list[str] = []

    async def raising(ctx: CapabilityContext) -> AsyncIterator[Any]:
        yield TextDelta(session=ctx.session, turn=ctx.turn, text="partial")
        raise RuntimeError("plugin bug")

    async def hanging(ctx: CapabilityContext) -> AsyncIterator[Any]:
        try:
            yield ctx.progress(0)
            await asyncio.sleep(3600)
        finally:
            closed.append("hanging")

    async def garbage(ctx: CapabilityContext) -> AsyncIterator[Any]:
        try:
            yield "not an event"
            yield TextDelta(session=ctx.session, turn=ctx.turn, text="never")
        finally:
            closed.append("garbage")

    results: dict[str, list[OutputEvent]] = {}
    for cap, timeout in (
        (scripted("raising", raising), 5.0),
        (scripted("hanging", hanging), 0.2),
        (scripted("garbage", garbage), 5.0),
    ):
        ctx, _ = context(lm, (TextPart("x"),))
        results[cap.name] = [ev async for ev in run_capability(cap, ctx, timeout_s=timeout)]

    def last_error(name: str) -> ErrorEvent:
        ev = results[name][-1]
        assert isinstance(ev, ErrorEvent), results[name]
        assert ev.recoverable and ev.session == "s1"
        return ev

    assert last_error("raising").code == "capability.error"
    assert "plugin bug" in last_error("raising").message
    assert isinstance(results["raising"][0], TextDelta)
    assert last_error("hanging").code == "capability.timeout"
    assert last_error("garbage").code == "capability.garbage" and "str" in last_error("garbage").message
    assert not any(isinstance(e, TextDelta) and e.text == "never" for e in results["garbage"])
    assert sorted(closed) == ["garbage", "hanging"]
    # the other plugins still work afterwards
    ctx, _ = context(lm, (TextPart("a boat"),))
    events = [ev async for ev in run_capability(pm.capability("generate_image"), ctx)]
    assert any(isinstance(e, ImageOut) for e in events)
