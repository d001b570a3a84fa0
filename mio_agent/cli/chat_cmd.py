"""`mio-agent chat`: a text conversation with MIO on the terminal, streamed as it is generated."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mio_agent.cli.common import add_config_argument, config_from_args, next_output, open_model, output_folder
from mio_agent.exceptions import ConfigError

if TYPE_CHECKING:
    from mio_agent.codecs.speech import SpeechCodec
    from mio_agent.engine import ConversationEngine, ReplyResult

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "chat",
        help="chat with MIO in text (a REPL, or one shot with --text)",
        description="Chat with MIO. Without --text, reads one message per line from stdin (/quit ends).",
    )
    p.add_argument("--text", help="one message; print the reply and exit")
    p.add_argument("--mode", choices=["std", "voice"], help="std: text/images/speech; voice: speech replies")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="reply length limit in tokens")
    p.add_argument("--seed", type=int, help="sampling seed, for reproducible replies")
    p.add_argument(
        "--out-dir",
        default=".",
        metavar="DIR",
        help="where spoken replies are written as reply-N.wav, numbered after those already there "
        "(created if missing; default: the current folder)",
    )
    add_config_argument(p)
    p.set_defaults(func=run)


def _describe(ev: object) -> str | None:
    from mio_agent.parser import ImageBlock, Malformed, SpeechBlock, Truncated

    if isinstance(ev, SpeechBlock):
        n = len(ev.content)
        layers = "content only" if ev.timbre is None else f"+ 3×{n} timbre codes"
        return f"[speech block: {n} content codes {layers}, {n / 50:.2f} s of audio]"
    if isinstance(ev, ImageBlock):
        return f"[image block: {len(ev.codes)} codes]"
    if isinstance(ev, Truncated):
        return f"[reply cut ({ev.reason}) inside an open {ev.open_block} block of {len(ev.token_ids)} tokens]"
    if isinstance(ev, Malformed):
        return f"[malformed output: {ev.reason}]"
    return None


class _Speaker:
    """Writes each finished speech block as a WAV, decoding with the configured speech codec."""

    def __init__(self, codec: SpeechCodec, out_dir: Path) -> None:
        self.codec = codec
        self.out_dir = out_dir
        self.count = 0

    def write(self, content: tuple[int, ...], timbre: tuple[tuple[int, ...], ...] | None) -> Path:
        from mio_agent.codecs.speech import write_wav

        # numbered after the replies already in the folder: an earlier run's files stay
        path, self.count = next_output(self.out_dir, "reply", ".wav")
        write_wav(path, self.codec.decode(content, timbre), self.codec.sample_rate)
        return path


async def _one_turn(
    engine: ConversationEngine, text: str, out: TextIO, max_new: int | None, speaker: _Speaker | None
) -> ReplyResult:
    from mio_agent.conversation import TextPart, Turn
    from mio_agent.engine import ReplyOptions
    from mio_agent.parser import SpeechBlock, TextDelta

    stream = engine.reply(Turn("user", (TextPart(text),)), ReplyOptions(max_new_tokens=max_new))
    async with stream:
        async for ev in stream:
            if isinstance(ev, TextDelta):
                out.write(ev.text)
                out.flush()
                continue
            note = _describe(ev)
            if note:
                out.write("\n" + note)
                out.flush()
            if isinstance(ev, SpeechBlock) and speaker is not None:
                path = await asyncio.to_thread(speaker.write, ev.content, ev.timbre)
                out.write(f"\n[wrote {path}]")
                out.flush()
    result = stream.result
    assert result is not None
    out.write("\n")
    if result.error:
        print(f"error: the reply failed: {result.error}", file=sys.stderr)
    return result


async def _chat(args: argparse.Namespace) -> int:
    from mio_agent.engine import ConversationEngine

    cfg = config_from_args(args)
    if args.text is not None and not args.text.strip():
        raise ConfigError(
            '--text is empty: give the message to send, e.g. --text "hello", or leave --text out for a chat'
        )
    # before the model loads: a bad folder is said at once
    out_dir = output_folder(args.out_dir, "--out-dir")
    lm = open_model(cfg)
    mode = args.mode or cfg.engine.mode
    engine = ConversationEngine.from_config(
        lm,
        cfg.engine,
        mode=mode,
        max_new_tokens=args.max_new_tokens,
        preset=cfg.engine.preset,
        seed=args.seed,
    )
    from mio_agent.codecs.folders import speech_tokenizer_dir
    from mio_agent.codecs.speech import SpeechCodec

    # a speech block can come in std mode too, so the codec is loaded for both (it is small)
    speaker = _Speaker(SpeechCodec.from_pretrained(speech_tokenizer_dir(cfg), device="cpu"), out_dir)
    try:
        if args.text is not None:
            result = await _one_turn(engine, args.text, sys.stdout, args.max_new_tokens, speaker)
            return 1 if result.reason == "error" else 0
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                sys.stdout.write("you> ")
                sys.stdout.flush()
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or line.strip() in ("/quit", "/exit"):
                return 0
            if not line.strip():
                continue
            if interactive:
                sys.stdout.write("mio> ")
            await _one_turn(engine, line.rstrip("\n"), sys.stdout, args.max_new_tokens, speaker)
    finally:
        engine.close()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_chat(args))
