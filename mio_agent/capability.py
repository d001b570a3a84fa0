"""Capabilities: what a plugin can do, how it is triggered, and how it drives MIO as a stream of events."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

from mio_agent.conversation import ImagePart, Part, SpeechPart, TextPart, Turn
from mio_agent.engine import ReplyOptions
from mio_agent.events import CapabilityProgress, ErrorEvent, ImageOut, OutputEvent, SpeechCodes, TextDelta
from mio_agent.exceptions import ConversationError, PluginError
from mio_agent.parser import ImageBlock, SpeechBlock
from mio_agent.parser import TextDelta as ParsedText
from mio_agent.presets import PRESETS

if TYPE_CHECKING:
    from PIL import Image

    from mio_agent.engine import ConversationEngine

__all__ = [
    "MODALITIES",
    "Capability",
    "CapabilityContext",
    "CapabilityMode",
    "EngineFactory",
    "Modality",
    "PluginError",
    "PromptSource",
    "RouteContext",
    "RouteDecision",
    "Trigger",
    "render_prompt",
    "turn_text",
]

Modality: TypeAlias = Literal["text", "image", "speech", "video"]
MODALITIES: tuple[Modality, ...] = ("text", "image", "speech", "video")
CapabilityMode: TypeAlias = Literal["std", "voice"]
PromptSource: TypeAlias = Literal["reference", "project"]
EngineFactory: TypeAlias = Callable[[CapabilityMode], "ConversationEngine"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SLOT = re.compile(r"\{(text|speech|image|images)(\?)?\}")


@dataclass(frozen=True, slots=True)
class Trigger:
    """How a capability is invoked: always by `/name`; by voice or text when a keyword or pattern matches.

    `keywords` match whole words, case-insensitively; `patterns` are regular expressions searched
    case-insensitively. `explicit_only` keeps the router from choosing it without a `/name` command.
    `needs` lists input modalities that must be present for a keyword match to count (e.g. an image
    for image editing), so "make it look like winter" without a picture stays plain conversation.
    """

    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    explicit_only: bool = False
    needs: tuple[Modality, ...] = ()

    def matches(self, text: str) -> str | None:
        """The keyword or pattern that matches `text`, else None."""
        if self.explicit_only:
            return None
        low = text.lower()
        for kw in self.keywords:
            if re.search(rf"(?<!\w){re.escape(kw.lower())}(?!\w)", low):
                return kw
        for pat in self.patterns:
            if re.search(pat, text, flags=re.IGNORECASE):
                return pat
        return None


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What the router knows about a turn besides its parts.

    `transcript` is the user's speech as text when a transcription ran (None otherwise);
    `recent_image` says whether an image is at hand (the last camera keyframe or the last image in
    the conversation), which some triggers need; `mode` is the session's mode.
    """

    mode: CapabilityMode = "std"
    transcript: str | None = None
    recent_image: bool = False


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The router's choice: run `capability`; `reason` says why (logged as an event); `text` is the
    turn's text with a `/name` command removed."""

    capability: str
    reason: str
    text: str = ""


@dataclass(slots=True)
class CapabilityContext:
    """What a running capability gets: its input parts, ids for its events, and fresh engines.

    `engine_factory(mode)` builds a new ConversationEngine in that mode; engines made through
    `engine()` are closed when the run ends. `max_new_tokens` caps every reply (None: the
    capability's own budget). `on_progress` is called with every progress event built by
    `progress()`, for hosts that show progress outside the event stream. `voice` says the user
    is talking by voice, so a capability should say its results aloud too (e.g. a confirmation).
    """

    parts: tuple[Part, ...]
    engine_factory: EngineFactory
    session: str = ""
    turn: int = 0
    max_new_tokens: int | None = None
    on_progress: Callable[[CapabilityProgress], None] | None = None
    capability: str = ""
    voice: bool = False
    _engines: list[ConversationEngine] = field(default_factory=list, repr=False)
    _streams: list[AsyncGenerator[OutputEvent, None]] = field(default_factory=list, repr=False)

    @property
    def text(self) -> str:
        """The input's text parts joined by a space."""
        return " ".join(p.text.strip() for p in self.parts if isinstance(p, TextPart) and p.text.strip())

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The input's images as MIO sees them (32 codes each; `.picture` holds the pixels when known)."""
        return tuple(p for p in self.parts if isinstance(p, ImagePart))

    @property
    def pictures(self) -> tuple[Image.Image, ...]:
        """The input images as the user gave them (Pillow images, RGB), for capabilities that work on
        pixels; images known only as codes (e.g. from the history) are not among them."""
        return tuple(p.picture for p in self.images if p.picture is not None)

    @property
    def speech(self) -> tuple[SpeechPart, ...]:
        return tuple(p for p in self.parts if isinstance(p, SpeechPart))

    def engine(self, mode: CapabilityMode) -> ConversationEngine:
        """A fresh engine in `mode`, closed when the run ends."""
        eng = self.engine_factory(mode)
        self._engines.append(eng)
        return eng

    async def aclose(self) -> None:
        """Close every reply stream still open (cancelling its reply), then every engine made here.

        A plugin's `run` that is closed at a `yield` inside `async for ev in ctx.stream(...)` leaves
        that stream suspended; closing it here cancels its reply at once instead of at garbage
        collection, so the engine is free again when the run has ended."""
        while self._streams:
            stream = self._streams.pop()
            with contextlib.suppress(Exception):
                await stream.aclose()
        while self._engines:
            self._engines.pop().close()

    def progress(self, step: int, total: int | None = None, message: str = "") -> CapabilityProgress:
        """A progress event of this run (yield it), also handed to `on_progress`."""
        ev = CapabilityProgress(
            session=self.session,
            turn=self.turn,
            name=self.capability,
            step=step,
            total=total,
            message=message,
        )
        if self.on_progress is not None:
            self.on_progress(ev)
        return ev

    def error(self, code: str, message: str) -> ErrorEvent:
        """A recoverable error event of this run."""
        return ErrorEvent(session=self.session, turn=self.turn, code=code, message=message)

    def stream(
        self, engine: ConversationEngine, turn: Turn | None, options: ReplyOptions
    ) -> AsyncGenerator[OutputEvent, None]:
        """One reply as output events (text deltas, speech codes per layer, images).

        Closing this generator, cancelling the task that iterates it, or the end of the run
        (`aclose`) cancels the reply between two decode steps, as a barge-in cancels a reply.
        """
        gen = self._stream(engine, turn, options)
        self._streams.append(gen)
        return gen

    async def _stream(
        self, engine: ConversationEngine, turn: Turn | None, options: ReplyOptions
    ) -> AsyncGenerator[OutputEvent, None]:
        if self.max_new_tokens is not None:
            cap = min(options.max_new_tokens or self.max_new_tokens, self.max_new_tokens)
            options = dataclasses.replace(options, max_new_tokens=cap)
        async with engine.reply(turn, options) as reply:
            async for ev in reply:
                if isinstance(ev, ParsedText):
                    yield TextDelta(session=self.session, turn=self.turn, text=ev.text)
                elif isinstance(ev, ImageBlock):
                    yield ImageOut(session=self.session, turn=self.turn, codes=ev.codes)
                elif isinstance(ev, SpeechBlock):
                    layers = (ev.content, *(ev.timbre or ()))
                    for layer, codes in enumerate(layers):
                        yield SpeechCodes(session=self.session, turn=self.turn, layer=layer, codes=codes)


def turn_text(turn: Turn) -> str:
    """The text parts of a turn joined by a space."""
    return " ".join(p.text.strip() for p in turn.parts if isinstance(p, TextPart) and p.text.strip())


def render_prompt(template: str, parts: Sequence[Part], *, capability: str = "") -> Turn:
    """A user turn from a prompt template and the input parts.

    Slots: `{text}` the input text, `{speech}` the first speech input, `{image}` the last image
    input, `{images}` every image input in order (video keyframes, in-context examples). A slot
    ending in `?` (`{images?}`) may stay empty; any other slot with nothing to fill it raises
    ConversationError naming the missing input.
    """
    what = f"capability {capability!r}" if capability else "this prompt"
    texts = " ".join(p.text.strip() for p in parts if isinstance(p, TextPart) and p.text.strip())
    speech = [p for p in parts if isinstance(p, SpeechPart)]
    images = [p for p in parts if isinstance(p, ImagePart)]
    out: list[Part] = []

    def add_text(s: str) -> None:
        if not s:
            return
        if out and isinstance(out[-1], TextPart):
            out[-1] = TextPart(out[-1].text + s)
        else:
            out.append(TextPart(s))

    pos = 0
    for m in _SLOT.finditer(template):
        add_text(template[pos : m.start()])
        pos = m.end()
        slot, optional = m.group(1), bool(m.group(2))
        if optional and not {"text": texts, "speech": speech}.get(slot, images):
            continue
        if slot == "text":
            if not texts:
                raise ConversationError(f"{what} needs text input; add a text (e.g. --text '...')")
            add_text(texts)
        elif slot == "speech":
            if not speech:
                raise ConversationError(f"{what} needs a speech input; record or attach speech")
            out.append(speech[0])
        else:
            if not images:
                raise ConversationError(f"{what} needs an image input; attach an image or a camera frame")
            out.extend(images if slot == "images" else images[-1:])
    add_text(template[pos:])
    return Turn("user", tuple(out))


def _options_for(outputs: Sequence[Modality], preset: str, max_new_tokens: int | None) -> ReplyOptions:
    visual = "image" in outputs or "video" in outputs
    return ReplyOptions(
        preset=preset,
        max_new_tokens=max_new_tokens,
        allow_text="text" in outputs,
        allow_speech="speech" in outputs,
        allow_image=visual,
    )


@dataclass(frozen=True, slots=True)
class Capability:
    """One thing MIO can be asked to do, as a plugin declares it.

    `prompt` is the user-turn template (see `render_prompt`), `preset` the generation preset's
    name, `mode` the MIO system prompt it runs under. `prompt_source` is "reference" when the
    prompt is the MIO authors' (verbatim), "project" when this project wrote it. `covers` names the
    rows of MIO's capability table it makes reachable. The default `run` renders the prompt and
    streams one reply restricted to the declared output modalities; subclasses override `run` for
    multi-step work and must keep its contract: an async generator of OutputEvents that stops
    cleanly when closed or cancelled.
    """

    name: str
    description: str
    inputs: tuple[Modality, ...]
    outputs: tuple[Modality, ...]
    mode: CapabilityMode
    preset: str
    prompt: str
    trigger: Trigger = Trigger()
    prompt_source: PromptSource = "project"
    covers: tuple[str, ...] = ()
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise PluginError(
                f"capability name {self.name!r} must be lower case letters, digits and '_' (it is typed as /name)"
            )
        if not self.description or "\n" in self.description:
            raise PluginError(f"capability {self.name!r}: the description must be one non-empty line")
        for m in (*self.inputs, *self.outputs):
            if m not in MODALITIES:
                raise PluginError(
                    f"capability {self.name!r}: unknown modality {m!r}; use {', '.join(MODALITIES)}"
                )
        if not self.outputs:
            raise PluginError(f"capability {self.name!r} declares no output modality")
        if self.preset not in PRESETS:
            raise PluginError(
                f"capability {self.name!r}: unknown generation preset {self.preset!r}; use one of {', '.join(PRESETS)}"
            )
        if self.mode == "voice" and set(self.outputs) != {"speech"}:
            raise PluginError(f"capability {self.name!r}: voice mode replies with speech only")

    def reply_options(self, max_new_tokens: int | None = None) -> ReplyOptions:
        """Reply options for this capability's preset and output modalities."""
        return _options_for(self.outputs, self.preset, max_new_tokens or self.max_new_tokens)

    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        """Render the prompt from `ctx.parts` and stream one reply of MIO as output events."""
        turn = render_prompt(self.prompt, ctx.parts, capability=self.name)
        engine = ctx.engine(self.mode)
        yield ctx.progress(0, 1, f"{self.name}: generating")
        async for ev in ctx.stream(engine, turn, self.reply_options()):
            yield ev
        yield ctx.progress(1, 1, f"{self.name}: done")
