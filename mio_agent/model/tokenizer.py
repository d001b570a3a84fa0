"""The embedded model's byte-level tokenizer, laid out like MIO's vocabulary (specials, bytes, codes)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

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
)

__all__ = [
    "BYTE_OFFSET",
    "EMBEDDED_VOCAB_SIZE",
    "NEW_SPECIAL_TOKENS",
    "TEXT_SPECIAL_TOKENS",
    "TEXT_VOCAB_SIZE",
    "build_byte_tokenizer",
    "byte_token",
    "embedded_token_strings",
    "save_byte_tokenizer",
]

# ids 0..7, in the places Yi's (and so MIO's) tokenizer has them; 3..5 are unused there
TEXT_SPECIAL_TOKENS: tuple[str, ...] = (
    UNK,
    BOS,
    EOS,
    "<|reserved_3|>",
    "<|reserved_4|>",
    "<|reserved_5|>",
    IM_START,
    IM_END,
)
BYTE_OFFSET = len(TEXT_SPECIAL_TOKENS)
TEXT_VOCAB_SIZE = BYTE_OFFSET + 256
# MIO's six added tokens, in the order of its ids 64000..64005
NEW_SPECIAL_TOKENS: tuple[str, ...] = (
    SPCH_PLACEHOLDER,
    SPCH_END,
    IMG_PLACEHOLDER,
    SPCH_START,
    IMAGE_END,
    IMAGE_START,
)
EMBEDDED_VOCAB_SIZE = TEXT_VOCAB_SIZE + len(NEW_SPECIAL_TOKENS) + IMAGE_CODES + SPEECH_CODES


def _byte_chars() -> tuple[str, ...]:
    """One printable character per byte value, the usual byte-level BPE alphabet.

    Printable Latin-1 bytes stand for themselves; the others are moved to code points 256 and up,
    so no byte maps to whitespace or a control character.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)}
    chars: list[str] = []
    shifted = 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return tuple(chars)


_BYTE_CHARS = _byte_chars()


def byte_token(value: int) -> str:
    """Token string of byte `value` (0..255) in the byte-level alphabet."""
    return _BYTE_CHARS[value]


def embedded_token_strings() -> list[str]:
    """Every token of the embedded vocabulary, index = id."""
    return [
        *TEXT_SPECIAL_TOKENS,
        *_BYTE_CHARS,
        *NEW_SPECIAL_TOKENS,
        *(f"<img{c}>" for c in range(IMAGE_CODES)),
        *(f"<spch{c}>" for c in range(SPEECH_CODES)),
    ]


def build_byte_tokenizer(*, model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    """The embedded tokenizer: one id per UTF-8 byte, MIO's special and code tokens as single ids."""
    tokens = embedded_token_strings()
    # every token sits in the model vocabulary so its id is fixed; the non-byte ones are also
    # added tokens, which is what makes them match whole inside text
    vocab = {tok: i for i, tok in enumerate(tokens)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    # no regex split and no merges: each byte of the text becomes its own token
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    specials = [t for i, t in enumerate(tokens) if not BYTE_OFFSET <= i < TEXT_VOCAB_SIZE]
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    # like MIO's LlamaTokenizer: add_special_tokens=True prepends BOS only
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
    )


def save_byte_tokenizer(directory: Path, *, model_max_length: int = 4096) -> None:
    """Write the embedded tokenizer's files (tokenizer.json, tokenizer_config.json) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    build_byte_tokenizer(model_max_length=model_max_length).save_pretrained(str(directory))
