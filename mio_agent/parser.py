"""Streaming parser of MIO's generated ids into text deltas, speech codes and image/speech blocks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mio_agent.vocab import CODEBOOK_SIZE, IMAGE_TOKENS_PER_IMAGE, NUM_SPEECH_LAYERS, MioVocab, TokenKind

__all__ = [
    "BlockKind",
    "FinishReason",
    "Finished",
    "ImageBlock",
    "ImageStarted",
    "Malformed",
    "ParserEvent",
    "SpeechBlock",
    "SpeechContent",
    "SpeechStarted",
    "SpeechTimbre",
    "StreamParser",
    "TextDelta",
    "Truncated",
]

FinishReason = Literal["stop", "length", "cancelled"]
BlockKind = Literal["speech", "image"]

# ids of the text run just before a flush that are kept as decoding context for the next run, so a
# tokenizer that drops a leading space at the start of a decode (SentencePiece) keeps it mid-reply
_CONTEXT_IDS = 4
_REPLACEMENT = "\ufffd"
# a UTF-8 character spans at most 4 byte tokens
_MAX_HELD_IDS = 8


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Newly decoded reply text."""

    text: str


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """`<spch>` opened a speech block."""


@dataclass(frozen=True, slots=True)
class SpeechContent:
    """Newly arrived content codes (0..1023) of the open speech block."""

    codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SpeechTimbre:
    """Newly arrived codes (0..1023) of timbre `layer` (1..3) of the open speech block."""

    layer: int
    codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SpeechBlock:
    """A complete, decodable speech block; `timbre` is None for a content-only block."""

    content: tuple[int, ...]
    timbre: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None


@dataclass(frozen=True, slots=True)
class ImageStarted:
    """`<image>` opened an image block."""


@dataclass(frozen=True, slots=True)
class ImageBlock:
    """A complete image block: exactly 32 image codes (0..8191)."""

    codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Malformed:
    """Ids that do not form valid output: a broken block (all its ids) or a stray id."""

    reason: str
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Truncated:
    """The stream ended (`reason`) while a block was open; `token_ids` are the block's ids so far."""

    reason: str
    open_block: BlockKind | None
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Finished:
    """The reply is over."""

    reason: FinishReason


ParserEvent = (
    TextDelta
    | SpeechStarted
    | SpeechContent
    | SpeechTimbre
    | SpeechBlock
    | ImageStarted
    | ImageBlock
    | Malformed
    | Truncated
    | Finished
)

_PART_NAMES = ("content", "timbre0", "timbre1", "timbre2")


class _TextDecoder:
    """Incremental detokenizer: decodes a small window of ids and emits what grew past the read mark."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        # ids[prefix:read] were emitted and serve as context; ids[read:] are not emitted yet
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        # a trailing U+FFFD is most often the first bytes of a character still to come; past a few
        # ids it is garbage, and holding it longer would only make each decode slower
        grew = len(after) > len(before)
        if (grew and not after.endswith(_REPLACEMENT)) or len(self._ids) - self._read > _MAX_HELD_IDS:
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Everything not yet emitted, incomplete characters included; keeps a little context."""
        if self._read == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        delta = after[len(before) :]
        if after.endswith(_REPLACEMENT):
            # the broken bytes must not merge with the next run's bytes
            self._ids = []
        else:
            self._ids = self._ids[-_CONTEXT_IDS:]
        self._prefix, self._read = 0, len(self._ids)
        return delta


class _Block:
    """An open block: its ids so far, its codes per part, and the first reason it is broken, if any."""

    def __init__(self, kind: BlockKind, start_id: int) -> None:
        self.kind: BlockKind = kind
        self.ids: list[int] = [start_id]
        self.parts: list[list[int]] = [[]]
        self.broken: str | None = None

    def fail(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason


class StreamParser:
    """Turns generated ids, fed one by one, into `ParserEvent`s; never raises on bad model output.

    Fed one id at a time, it turns a reply into typed events as early as each can be known:

    - text ids become `TextDelta`s, decoded incrementally; an unfinished multi-byte character is
      held back until its last byte arrives (or a block, the end, or a stray token flushes it);
    - `<spch>` … `</spch>` gives `SpeechStarted`, one `SpeechContent` or `SpeechTimbre` per code
      while the block is still well-formed, and `SpeechBlock` at `</spch>`;
    - `<image>` … `</image>` gives `ImageStarted` and `ImageBlock` at `</image>`;
    - a stop id gives `Finished("stop")`; `finish()` ends the stream for any other reason.

    A block is either exactly right (content codes, then as many codes of each timbre layer in
    order, or content codes only; an image block holds exactly 32 image codes) or it is reported
    whole, once, as a `Malformed` carrying every id from its opening marker to its end. Stray ids
    outside blocks are reported one by one. A stream that ends inside a block gives `Truncated`
    with the block's ids. So no id is lost silently: each ends up in text, in a block or in the
    ids of a `Malformed` or `Truncated`, `<unk>` excepted (the reference strips it, and so does
    this parser).

    `decode_text` decodes text ids with special tokens kept (the tokenizer's `decode`). `stop_ids`
    end the reply (default `<|im_end|>` and `<|endoftext|>`).
    """

    def __init__(
        self,
        vocab: MioVocab,
        decode_text: Callable[[Sequence[int]], str],
        *,
        stop_ids: Sequence[int] | None = None,
    ) -> None:
        self._vocab = vocab
        self._stop = frozenset(stop_ids if stop_ids is not None else (vocab.im_end, vocab.eos))
        self._text = _TextDecoder(decode_text)
        self._block: _Block | None = None
        self._delivered = 0
        self._finished: FinishReason | None = None

    @property
    def tokens_delivered(self) -> int:
        """How many ids were fed so far."""
        return self._delivered

    @property
    def finished(self) -> FinishReason | None:
        """Why the reply ended, or None while it goes on."""
        return self._finished

    @property
    def open_block(self) -> BlockKind | None:
        """The kind of the block open now, if any."""
        return None if self._block is None else self._block.kind

    def feed(self, token_id: int) -> list[ParserEvent]:
        """Events that `token_id` completes (often none, for a held-back byte)."""
        self._delivered += 1
        if self._finished is not None:
            return [Malformed(f"id after the end of the reply ({self._finished})", (token_id,))]
        kind, value = self._vocab.kind(token_id)
        if kind is TokenKind.UNK:
            return []
        if token_id in self._stop:
            events = self._close_text()
            if self._block is not None:
                block, self._block = self._block, None
                events.append(Truncated("stop", block.kind, tuple(block.ids)))
            self._finished = "stop"
            events.append(Finished("stop"))
            return events
        if self._block is None:
            return self._feed_outside(token_id, kind)
        return self._feed_block(self._block, token_id, kind, value)

    def finish(self, reason: FinishReason) -> list[ParserEvent]:
        """End the stream: flush held-back text, report an open block as `Truncated`, then `Finished`."""
        if self._finished is not None:
            return []
        events = self._close_text()
        if self._block is not None:
            block, self._block = self._block, None
            events.append(Truncated(reason, block.kind, tuple(block.ids)))
        self._finished = reason
        events.append(Finished(reason))
        return events

    # -- outside blocks ---------------------------------------------------------------------
    def _close_text(self) -> list[ParserEvent]:
        text = self._text.flush()
        return [TextDelta(text)] if text else []

    def _feed_outside(self, token_id: int, kind: TokenKind) -> list[ParserEvent]:
        if kind is TokenKind.TEXT:
            text = self._text.push(token_id)
            return [TextDelta(text)] if text else []
        events = self._close_text()
        if kind is TokenKind.SPEECH_START:
            self._block = _Block("speech", token_id)
            events.append(SpeechStarted())
        elif kind is TokenKind.IMAGE_START:
            self._block = _Block("image", token_id)
            events.append(ImageStarted())
        else:
            events.append(Malformed(self._stray_reason(kind), (token_id,)))
        return events

    def _stray_reason(self, kind: TokenKind) -> str:
        if kind is TokenKind.SPEECH_END:
            return "</spch> outside a speech block"
        if kind is TokenKind.IMAGE_END:
            return "</image> outside an image block"
        if kind is TokenKind.SPEECH_CODE:
            return "speech code outside a speech block"
        if kind is TokenKind.IMAGE_CODE:
            return "image code outside an image block"
        return f"{kind.value} token is not allowed in a reply"

    # -- inside blocks ----------------------------------------------------------------------
    def _feed_block(self, block: _Block, token_id: int, kind: TokenKind, value: int) -> list[ParserEvent]:
        if kind in (TokenKind.SPEECH_START, TokenKind.IMAGE_START):
            # a new block opener abandons the open one: the model has moved on
            name = "<spch>" if kind is TokenKind.SPEECH_START else "<image>"
            block.fail(f"{block.kind} block interrupted by {name} before its end")
            events: list[ParserEvent] = [Malformed(str(block.broken), tuple(block.ids))]
            self._block = None
            events.extend(self._feed_outside(token_id, kind))
            return events
        block.ids.append(token_id)
        if block.kind == "speech":
            if kind is TokenKind.SPEECH_END:
                self._block = None
                return [self._end_speech(block)]
            if kind is TokenKind.SPEECH_CODE:
                return self._speech_code(block, value)
        else:
            if kind is TokenKind.IMAGE_END:
                self._block = None
                return [self._end_image(block)]
            if kind is TokenKind.IMAGE_CODE:
                block.parts[0].append(value)
                return []
        block.fail(
            f"{self._foreign_reason(kind)} inside {'a speech' if block.kind == 'speech' else 'an image'} block"
        )
        return []

    def _foreign_reason(self, kind: TokenKind) -> str:
        names = {
            TokenKind.TEXT: "text token",
            TokenKind.SPEECH_CODE: "speech code",
            TokenKind.IMAGE_CODE: "image code",
            TokenKind.SPEECH_END: "</spch>",
            TokenKind.IMAGE_END: "</image>",
        }
        return names.get(kind, f"{kind.value} token")

    def _speech_code(self, block: _Block, index: int) -> list[ParserEvent]:
        layer, code = divmod(index, CODEBOOK_SIZE)
        current = len(block.parts) - 1
        if layer == current + 1:
            n, have = len(block.parts[0]), len(block.parts[current])
            if have == 0 or (current > 0 and have != n):
                block.fail(
                    f"speech part {_PART_NAMES[layer]} starts after {have} {_PART_NAMES[current]} codes; "
                    f"expected {n if current else 'at least 1'}"
                )
            block.parts.append([])
            current = layer
        elif layer != current:
            block.fail(f"speech part {_PART_NAMES[layer]} after {_PART_NAMES[current]}: parts out of order")
            return []
        part = block.parts[current]
        part.append(code)
        if current > 0 and len(part) > len(block.parts[0]):
            block.fail(
                f"speech part {_PART_NAMES[current]} is longer than the {len(block.parts[0])} content codes"
            )
        if block.broken is not None:
            return []
        if current == 0:
            return [SpeechContent((code,))]
        return [SpeechTimbre(current, (code,))]

    def _end_speech(self, block: _Block) -> ParserEvent:
        parts = block.parts
        n = len(parts[0])
        if block.broken is None:
            if n == 0:
                block.fail("empty speech block")
            elif len(parts) not in (1, NUM_SPEECH_LAYERS):
                block.fail(f"speech block ends after {len(parts)} of {NUM_SPEECH_LAYERS} parts")
            elif any(len(p) != n for p in parts):
                block.fail(f"speech parts differ in length: {[len(p) for p in parts]}")
        if block.broken is not None:
            return Malformed(block.broken, tuple(block.ids))
        if len(parts) == 1:
            return SpeechBlock(tuple(parts[0]), None)
        return SpeechBlock(tuple(parts[0]), (tuple(parts[1]), tuple(parts[2]), tuple(parts[3])))

    def _end_image(self, block: _Block) -> ParserEvent:
        codes = block.parts[0]
        if block.broken is None and len(codes) != IMAGE_TOKENS_PER_IMAGE:
            block.fail(f"image block holds {len(codes)} codes, not {IMAGE_TOKENS_PER_IMAGE}")
        if block.broken is not None:
            return Malformed(block.broken, tuple(block.ids))
        return ImageBlock(tuple(codes))
