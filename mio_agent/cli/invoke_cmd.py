"""`mio-agent invoke`: run one capability on files and text, streaming its text and saving its media."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mio_agent.cli.common import add_config_argument, config_from_args, next_output, open_model, output_folder
from mio_agent.exceptions import ConfigError

if TYPE_CHECKING:
    from mio_agent.config import Config
    from mio_agent.conversation import Part

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "invoke",
        help="run one capability (see `mio-agent plugins`) on text and files",
        description="Run a capability by name; text streams to stdout, images and speech are "
        "written to --out as image-N.png and speech-N.wav.",
    )
    p.add_argument("name", help="capability name, e.g. generate_image, transcribe, image_editing")
    p.add_argument("--text", default="", help="the instruction or question")
    p.add_argument("--image", action="append", default=[], metavar="FILE", help="an input image (repeatable)")
    p.add_argument("--video", metavar="FILE", help="an input video (its keyframes become images)")
    p.add_argument(
        "--speech", metavar="FILE", help="an input speech WAV (content codes, as MIO reads user speech)"
    )
    p.add_argument(
        "--out", default=".", metavar="DIR", help="where images and speech are written (default .)"
    )
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="cap on every reply of the capability")
    p.add_argument("--steps", type=int, help="image decoding steps (default codecs.diffusion_steps)")
    add_config_argument(p)
    p.set_defaults(func=run)


def _inputs(args: argparse.Namespace, cfg: Config) -> list[Part]:
    from mio_agent.conversation import ImagePart, SpeechPart, TextPart

    parts: list[Part] = []
    if args.speech:
        from mio_agent.codecs.folders import speech_tokenizer_dir
        from mio_agent.codecs.speech import SpeechCodec, load_audio

        audio, rate = load_audio(args.speech)
        codec = SpeechCodec.from_pretrained(speech_tokenizer_dir(cfg))
        parts.append(SpeechPart(codec.encode(audio, rate, timbre=False).content))
    if args.image or args.video:
        from mio_agent.codecs.folders import image_tokenizer_dir
        from mio_agent.codecs.image import ImageCodec, load_image

        images = [load_image(f) for f in args.image]
        if args.video:
            from mio_agent.codecs.video import keyframes_from_file

            images += [k.image for k in keyframes_from_file(args.video)]
        image_codec = ImageCodec.from_pretrained(image_tokenizer_dir(cfg))
        # each part keeps its picture, for capabilities that work on pixels (ctx.pictures)
        parts += [
            ImagePart(tuple(codes), picture)
            for codes, picture in zip(image_codec.encode_many(images), images, strict=True)
        ]
    if args.text:
        parts.append(TextPart(args.text))
    return parts


class _Media:
    """Decodes and writes what a capability produced, numbering the files in order."""

    def __init__(self, cfg: Config, out: Path, steps: int | None) -> None:
        self.cfg, self.out, self.steps = cfg, out, steps
        self.images = 0
        self.speeches = 0
        self.pending: list[tuple[int, ...]] = []

    def image(self, codes: tuple[int, ...], png: bytes | None = None) -> Path:
        """Write an image: the capability's own picture when it made one, else its codes decoded."""
        from mio_agent.files import atomic_output

        path, self.images = next_output(self.out, "image", ".png")
        if png is not None:
            with atomic_output(path) as tmp:
                Path(tmp).write_bytes(png)
            return path
        from mio_agent.codecs.folders import diffusion_dir, image_tokenizer_dir
        from mio_agent.codecs.image import ImageCodec

        codec = ImageCodec.from_pretrained(
            image_tokenizer_dir(self.cfg), diffusion_dir=diffusion_dir(self.cfg)
        )
        picture = codec.decode(codes, steps=self.steps or self.cfg.codecs.diffusion_steps)
        with atomic_output(path) as tmp:
            picture.save(tmp, format="PNG")
        return path

    def speech_layer(self, layer: int, codes: tuple[int, ...]) -> Path | None:
        # a block arrives as its layers 0..3 in order (content only: layer 0 alone)
        written = self.flush_speech() if layer == 0 else None
        self.pending.append(codes)
        return written

    def flush_speech(self) -> Path | None:
        if not self.pending:
            return None
        from mio_agent.codecs.folders import speech_tokenizer_dir
        from mio_agent.codecs.speech import SpeechCodec, write_wav

        content, *timbre = self.pending
        self.pending = []
        codec = SpeechCodec.from_pretrained(speech_tokenizer_dir(self.cfg))
        path, self.speeches = next_output(self.out, "speech", ".wav")
        write_wav(path, codec.decode(content, timbre or None), codec.sample_rate)
        return path


async def _invoke(args: argparse.Namespace) -> int:
    from mio_agent.capability import CapabilityContext
    from mio_agent.capability_runner import run_capability
    from mio_agent.engine import ConversationEngine
    from mio_agent.events import CapabilityProgress, ErrorEvent, ImageOut, SpeechCodes, TextDelta
    from mio_agent.plugin import PluginManager

    cfg = config_from_args(args)
    out = output_folder(args.out, "--out")
    manager = PluginManager.from_config(cfg)
    cap = manager.capability(args.name)
    parts = _inputs(args, cfg)
    lm = open_model(cfg)

    def engine_factory(mode: Any) -> ConversationEngine:
        return ConversationEngine.from_config(lm, cfg.engine, mode=mode)

    ctx = CapabilityContext(
        parts=tuple(parts),
        engine_factory=engine_factory,
        capability=cap.name,
        max_new_tokens=args.max_new_tokens,
    )
    media = _Media(cfg, out, args.steps)
    # plugins' sinks and observers see what invoke produces, as they do in a session
    sinks = [await factory.open() for factory in manager.sinks(cfg)]
    failed = False
    try:
        async for ev in run_capability(cap, ctx, timeout_s=cfg.plugins.timeout_s):
            manager.emit(ev)
            for sink in sinks:
                await sink.send(ev)
            written: Path | None = None
            if isinstance(ev, TextDelta):
                sys.stdout.write(ev.text)
                sys.stdout.flush()
            elif isinstance(ev, ImageOut):
                written = await asyncio.to_thread(media.image, ev.codes, ev.png)
            elif isinstance(ev, SpeechCodes):
                written = await asyncio.to_thread(media.speech_layer, ev.layer, ev.codes)
            elif isinstance(ev, CapabilityProgress):
                print(f"[{ev.name} {ev.step}/{ev.total or '?'}] {ev.message}", file=sys.stderr)
            elif isinstance(ev, ErrorEvent):
                failed = True
                if ev.code == "capability.bad_input":
                    # the user's input was refused: a user error (exit 2), said in plain words
                    raise ConfigError(ev.message)
                print(f"mio-agent invoke: error: {ev.message}", file=sys.stderr)
            if written is not None:
                print(f"\n[wrote {written}]")
    finally:
        for sink in sinks:
            await sink.aclose()
    last = await asyncio.to_thread(media.flush_speech)
    if last is not None:
        print(f"\n[wrote {last}]")
    print()
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_invoke(args))
