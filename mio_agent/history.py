"""Token history of one conversation, split by turn, and what a generated reply becomes in it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mio_agent.conversation import ImagePart, Part, SpeechPart, TextPart, Turn
from mio_agent.vocab import CODEBOOK_SIZE, MioVocab, TokenKind

__all__ = ["Segment", "close_reply", "common_prefix", "parts_from_ids"]

SegmentRole = Literal["system", "user", "assistant"]


@dataclass(slots=True)
class Segment:
    """One turn's ids in the conversation's flat id list: `ids[start:end]`."""

    role: SegmentRole
    start: int
    end: int
    turn: Turn | None

    @property
    def length(self) -> int:
        return self.end - self.start


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _is_content(vocab: MioVocab, token_id: int) -> bool:
    kind, value = vocab.kind(token_id)
    return kind is TokenKind.SPEECH_CODE and value < CODEBOOK_SIZE


def close_reply(vocab: MioVocab, body: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """A reply body made whole: stop tokens stripped, an open speech block kept as its content codes
    and closed, an open (undecodable) image block dropped.

    This is what the model's memory keeps of a reply that was cut short, so its next turn reads a
    well-formed history that matches what the user actually received.
    """
    out: list[int] = []
    open_kind: TokenKind | None = None
    block_start = 0
    stops = set(stop_ids)
    for tid in body:
        if tid in stops:
            break
        kind = vocab.kind(tid)[0]
        if kind in (TokenKind.SPEECH_START, TokenKind.IMAGE_START):
            open_kind, block_start = kind, len(out)
        elif kind in (TokenKind.SPEECH_END, TokenKind.IMAGE_END):
            open_kind = None
        out.append(tid)
    if open_kind is TokenKind.SPEECH_START:
        # partial timbre layers cannot be decoded, so an unfinished block keeps only its content
        block = out[block_start + 1 :]
        content = [t for t in block if _is_content(vocab, t)]
        out = out[:block_start]
        if content:
            out += [vocab.spch_start, *content, vocab.spch_end]
    elif open_kind is TokenKind.IMAGE_START:
        out = out[:block_start]
    return out


def parts_from_ids(
    vocab: MioVocab, ids: Sequence[int], decode_text: Callable[[Sequence[int]], str]
) -> tuple[Part, ...]:
    """Structured parts of a well-formed reply body (as close_reply makes it), read by the parser."""
    from mio_agent.parser import ImageBlock, SpeechBlock, StreamParser, TextDelta

    parser = StreamParser(vocab, decode_text)
    parts: list[Part] = []
    text: list[str] = []
    events = [ev for tid in ids for ev in parser.feed(tid)] + parser.finish("stop")
    for ev in events:
        if isinstance(ev, TextDelta):
            text.append(ev.text)
            continue
        if isinstance(ev, SpeechBlock | ImageBlock) and text:
            parts.append(TextPart("".join(text)))
            text.clear()
        if isinstance(ev, SpeechBlock):
            parts.append(SpeechPart(ev.content, ev.timbre))
        elif isinstance(ev, ImageBlock):
            parts.append(ImagePart(ev.codes))
    if text:
        parts.append(TextPart("".join(text)))
    return tuple(parts)
