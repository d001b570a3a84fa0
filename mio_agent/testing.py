"""Helpers for testing a plugin's capability without hardware or weights: the embedded model, a recording sink, an event harness."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mio_agent.capability import Capability, CapabilityContext, CapabilityMode
from mio_agent.capability_runner import run_capability
from mio_agent.config import Config, load_config
from mio_agent.conversation import ImagePart, Part, SpeechPart, TextPart
from mio_agent.engine import ConversationEngine
from mio_agent.events import (
    AudioIn,
    CapabilityProgress,
    ErrorEvent,
    Event,
    ImageIn,
    ImageOut,
    OutputEvent,
    SpeechCodes,
    TextDelta,
    TextIn,
)

if TYPE_CHECKING:
    from mio_agent.model.loading import LoadedModel

__all__ = ["CapabilityHarness", "RecordingSink", "embedded_model", "png_bytes"]

E = TypeVar("E", bound=Event)


@lru_cache(maxsize=4)
def embedded_model(seed: int = 0) -> LoadedModel:
    """The embedded tiny MIO model (built into the user cache on first use), loaded once per process."""
    from mio_agent.model.embedded import embedded_model_path
    from mio_agent.model.loading import load_model

    return load_model(embedded_model_path(seed=seed), device="cpu", dtype="float32", progress=False)


@dataclass
class RecordingSink:
    """Every event a capability produced, in order, with helpers for assertions."""

    events: list[OutputEvent] = field(default_factory=list)

    def add(self, ev: OutputEvent) -> None:
        self.events.append(ev)

    def of_type(self, cls: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, cls)]

    @property
    def text(self) -> str:
        """All text deltas joined."""
        return "".join(e.text for e in self.of_type(TextDelta))

    @property
    def errors(self) -> list[ErrorEvent]:
        return self.of_type(ErrorEvent)

    @property
    def images(self) -> list[ImageOut]:
        return self.of_type(ImageOut)

    @property
    def progress(self) -> list[CapabilityProgress]:
        return self.of_type(CapabilityProgress)

    @property
    def speech_layers(self) -> list[SpeechCodes]:
        return self.of_type(SpeechCodes)

    @property
    def modalities(self) -> set[str]:
        """The output modalities seen ("text", "image", "speech"), to compare with `Capability.outputs`."""
        found = set()
        if self.of_type(TextDelta):
            found.add("text")
        if self.images:
            found.add("image")
        if self.speech_layers:
            found.add("speech")
        return found


class CapabilityHarness:
    """Runs capabilities on the embedded model with inputs made from plain files and strings.

    `config` (default: the built-in defaults) may name real MIO weights instead; replies of the
    embedded model are noise, so assert on structure (modalities, events, errors), not on words.
    Images and speech are encoded with the configured codecs (tiny ones with the embedded model).
    """

    def __init__(
        self, *, config: Config | None = None, seed: int = 0, max_new_tokens: int | None = 64
    ) -> None:
        self.config = config or load_config(None, env={})
        self.seed = seed
        self.max_new_tokens = max_new_tokens

    def engine(self, mode: CapabilityMode) -> ConversationEngine:
        lm = (
            embedded_model(self.config.model.embedded_seed)
            if self.config.model.path is None
            else self._real()
        )
        return ConversationEngine.from_config(lm, self.config.engine, mode=mode, seed=self.seed)

    def _real(self) -> LoadedModel:
        from mio_agent.model.loading import load_model

        assert self.config.model.path is not None
        return load_model(
            self.config.model.path, device=self.config.model.device, dtype=self.config.model.dtype
        )

    def image_part(self, image: str | os.PathLike[str] | bytes) -> ImagePart:
        """An image (a file path, or PNG/JPEG bytes) as its 32 codes."""
        from mio_agent.codecs.folders import image_tokenizer_dir
        from mio_agent.codecs.image.io import load_image

        codec = _image_codec(str(image_tokenizer_dir(self.config)))
        picture = load_image(image)
        return ImagePart(tuple(codec.encode(picture)), picture)

    def speech_part(self, wav: str | os.PathLike[str]) -> SpeechPart:
        """A WAV file as its content codes."""
        from mio_agent.codecs.folders import speech_tokenizer_dir
        from mio_agent.codecs.speech import SpeechCodec, load_audio

        codec = SpeechCodec.from_pretrained(speech_tokenizer_dir(self.config))
        audio, rate = load_audio(Path(wav))
        return SpeechPart(tuple(codec.encode(audio, rate, timbre=False).content))

    def parts(
        self,
        *,
        text: str | None = None,
        images: Sequence[str | os.PathLike[str] | bytes] = (),
        speech: str | os.PathLike[str] | None = None,
    ) -> tuple[Part, ...]:
        """Input parts in the order capabilities expect: images, speech, then text."""
        parts: list[Part] = [self.image_part(i) for i in images]
        if speech is not None:
            parts.append(self.speech_part(speech))
        if text is not None:
            parts.append(TextPart(text))
        return tuple(parts)

    async def run(
        self,
        cap: Capability,
        *,
        text: str | None = None,
        images: Sequence[str | os.PathLike[str] | bytes] = (),
        speech: str | os.PathLike[str] | None = None,
        parts: Sequence[Part] | None = None,
        voice: bool = False,
        timeout_s: float = 120.0,
    ) -> RecordingSink:
        """Run `cap` under the same supervision as the assistant (errors become ErrorEvents)."""
        ctx = CapabilityContext(
            parts=tuple(parts) if parts is not None else self.parts(text=text, images=images, speech=speech),
            engine_factory=self.engine,
            session="test-session",
            turn=1,
            max_new_tokens=self.max_new_tokens,
            capability=cap.name,
            voice=voice,
        )
        sink = RecordingSink()
        async for ev in run_capability(cap, ctx, timeout_s=timeout_s):
            sink.add(ev)
        return sink

    async def run_events(self, cap: Capability, inputs: Iterable[Event], **kwargs: Any) -> RecordingSink:
        """Run `cap` on input events as a front end would send them: TextIn, ImageIn and AudioIn
        (AudioIn chunks of one utterance are joined and encoded)."""
        parts: list[Part] = []
        pcm = b""
        rate = 16000
        for ev in inputs:
            if isinstance(ev, ImageIn):
                parts.append(self.image_part(ev.data))
            elif isinstance(ev, AudioIn):
                pcm += ev.pcm
                rate = ev.sample_rate
            elif isinstance(ev, TextIn):
                parts.append(TextPart(ev.text))
        if pcm:
            import numpy as np

            from mio_agent.codecs.folders import speech_tokenizer_dir
            from mio_agent.codecs.speech import SpeechCodec

            codec = SpeechCodec.from_pretrained(speech_tokenizer_dir(self.config))
            audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
            parts.insert(0, SpeechPart(tuple(codec.encode(audio, rate, timbre=False).content)))
        return await self.run(cap, parts=parts, **kwargs)


@lru_cache(maxsize=2)
def _image_codec(folder: str) -> Any:
    from mio_agent.codecs.image import ImageCodec

    return ImageCodec.from_pretrained(folder)


def png_bytes(width: int = 64, height: int = 64, color: tuple[int, int, int] = (120, 160, 200)) -> bytes:
    """A plain PNG for image inputs in tests."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()
