"""A small byte-level tokenizer with the embedded model's exact id layout, fast to build for core tests."""

from __future__ import annotations

import re
from collections.abc import Sequence

from mio_agent.vocab import (
    BOS,
    EOS,
    IM_END,
    IM_START,
    IMAGE_CODES,
    IMAGE_END,
    IMAGE_START,
    IMG_PLACEHOLDER,
    SPCH_END,
    SPCH_PLACEHOLDER,
    SPCH_START,
    SPEECH_CODES,
    UNK,
    MioVocab,
)

__all__ = ["BYTE_OFFSET", "ByteTokenizer", "byte_ids", "make_vocab"]

# ids 0..7 as in Yi (3..5 unused), then one id per byte, MIO's six added tokens, image and speech codes
_SPECIALS = (UNK, BOS, EOS, "<|reserved_3|>", "<|reserved_4|>", "<|reserved_5|>", IM_START, IM_END)
BYTE_OFFSET = len(_SPECIALS)
_ADDED = (SPCH_PLACEHOLDER, SPCH_END, IMG_PLACEHOLDER, SPCH_START, IMAGE_END, IMAGE_START)


class ByteTokenizer:
    """Byte-level tokenizer: every UTF-8 byte is one id; special and code tokens match whole."""

    def __init__(self) -> None:
        self._tokens: list[str | None] = [*_SPECIALS, *([None] * 256), *_ADDED]
        self._tokens += [f"<img{c}>" for c in range(IMAGE_CODES)]
        self._tokens += [f"<spch{c}>" for c in range(SPEECH_CODES)]
        self._ids = {t: i for i, t in enumerate(self._tokens) if t is not None}
        # longest first, so "<spch12>" is not read as "<spch1>" followed by "2>"
        names = sorted(self._ids, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(n) for n in names) + ")")

    def __len__(self) -> int:
        return len(self._tokens)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._ids.get(tokens, 0)
        return [self._ids.get(t, 0) for t in tokens]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        out = [self._ids[BOS]] if add_special_tokens else []
        for piece in self._split.split(text):
            if piece in self._ids:
                out.append(self._ids[piece])
            else:
                out.extend(BYTE_OFFSET + b for b in piece.encode("utf-8"))
        return out

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        parts: list[str] = []
        pending = bytearray()
        for tid in token_ids:
            if BYTE_OFFSET <= tid < BYTE_OFFSET + 256:
                pending.append(tid - BYTE_OFFSET)
                continue
            if pending:
                parts.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if not skip_special_tokens:
                parts.append(self._tokens[tid] or "")
        if pending:
            parts.append(pending.decode("utf-8", errors="replace"))
        return "".join(parts)


def byte_ids(text: str) -> list[int]:
    """Ids of `text`'s UTF-8 bytes."""
    return [BYTE_OFFSET + b for b in text.encode("utf-8")]


def make_vocab() -> tuple[MioVocab, ByteTokenizer]:
    tok = ByteTokenizer()
    return MioVocab.from_tokenizer(tok), tok
