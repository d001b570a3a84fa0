"""MIO's token vocabulary: special tokens, image and speech code tokens, and their ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from mio_agent.exceptions import VocabularyError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BOS",
    "CODEBOOK_SIZE",
    "EOS",
    "IMAGE_CODES",
    "IMAGE_END",
    "IMAGE_START",
    "IMAGE_TOKENS_PER_IMAGE",
    "IMG_PLACEHOLDER",
    "IM_END",
    "IM_START",
    "NUM_SPEECH_LAYERS",
    "SPCH_END",
    "SPCH_PLACEHOLDER",
    "SPCH_START",
    "SPEECH_CODES",
    "UNK",
    "MioVocab",
    "TokenKind",
    "TokenizerLike",
    "image_token",
    "speech_code",
    "speech_layer_of",
    "speech_token",
]

UNK = "<unk>"
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPCH_PLACEHOLDER = "[SPCH]"
SPCH_END = "</spch>"
IMG_PLACEHOLDER = "[IMG]"
SPCH_START = "<spch>"
IMAGE_END = "</image>"
IMAGE_START = "<image>"

IMAGE_CODES = 8192
SPEECH_CODES = 4096
CODEBOOK_SIZE = 1024
# content (RVQ layer 1) plus three timbre layers (RVQ layers 2-4)
NUM_SPEECH_LAYERS = 4
IMAGE_TOKENS_PER_IMAGE = 32


def image_token(code: int) -> str:
    """Token string of image code 0..8191."""
    if not 0 <= code < IMAGE_CODES:
        raise ValueError(f"image code {code} is outside 0..{IMAGE_CODES - 1}")
    return f"<img{code}>"


def speech_code(layer: int, code: int) -> int:
    """Index among the 4096 speech codes of `code` (0..1023) of `layer` (0 content, 1..3 timbre)."""
    if not 0 <= layer < NUM_SPEECH_LAYERS:
        raise ValueError(f"speech layer {layer} is outside 0..{NUM_SPEECH_LAYERS - 1}")
    if not 0 <= code < CODEBOOK_SIZE:
        raise ValueError(f"speech code {code} is outside 0..{CODEBOOK_SIZE - 1}")
    return layer * CODEBOOK_SIZE + code


def speech_layer_of(index: int) -> tuple[int, int]:
    """(layer, code) of a speech code index 0..4095."""
    if not 0 <= index < SPEECH_CODES:
        raise ValueError(f"speech code index {index} is outside 0..{SPEECH_CODES - 1}")
    return divmod(index, CODEBOOK_SIZE)


def speech_token(layer: int, code: int) -> str:
    """Token string of `code` of speech `layer`: content 0..1023 -> <spch0..1023>, timbre k -> +1024*k."""
    return f"<spch{speech_code(layer, code)}>"


class TokenizerLike(Protocol):
    """The part of a Hugging Face tokenizer the project uses."""

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...

    def __len__(self) -> int: ...


class TokenKind(Enum):
    """What one token id stands for."""

    TEXT = "text"
    IMAGE_CODE = "image_code"
    SPEECH_CODE = "speech_code"
    IMAGE_START = "image_start"
    IMAGE_END = "image_end"
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"
    IM_START = "im_start"
    IM_END = "im_end"
    BOS = "bos"
    EOS = "eos"
    UNK = "unk"
    PLACEHOLDER = "placeholder"


_STRUCTURAL = {
    BOS: TokenKind.BOS,
    EOS: TokenKind.EOS,
    IM_START: TokenKind.IM_START,
    IM_END: TokenKind.IM_END,
    UNK: TokenKind.UNK,
    SPCH_PLACEHOLDER: TokenKind.PLACEHOLDER,
    IMG_PLACEHOLDER: TokenKind.PLACEHOLDER,
    SPCH_START: TokenKind.SPEECH_START,
    SPCH_END: TokenKind.SPEECH_END,
    IMAGE_START: TokenKind.IMAGE_START,
    IMAGE_END: TokenKind.IMAGE_END,
}


@dataclass(frozen=True)
class MioVocab:
    """Ids of MIO's special and code tokens in one loaded tokenizer.

    Ids are read with `convert_tokens_to_ids`, never assumed, because the code tokens' order is
    the tokenizer's business. `image_ids[c]` is the id of `<img{c}>`, `speech_ids[i]` the id of
    `<spch{i}>`.
    """

    vocab_size: int
    bos: int
    eos: int
    im_start: int
    im_end: int
    unk: int
    spch_start: int
    spch_end: int
    image_start: int
    image_end: int
    spch_placeholder: int
    img_placeholder: int
    image_ids: tuple[int, ...]
    speech_ids: tuple[int, ...]
    _kind: dict[int, tuple[TokenKind, int]] = field(repr=False, compare=False)

    @classmethod
    def from_tokenizer(cls, tokenizer: TokenizerLike, vocab_size: int | None = None) -> MioVocab:
        """Read every MIO token's id from `tokenizer`; `vocab_size` is the model's (default: the tokenizer's)."""
        size = int(vocab_size if vocab_size is not None else len(tokenizer))

        def ids_of(tokens: list[str]) -> list[int]:
            raw = tokenizer.convert_tokens_to_ids(tokens)
            out = [raw] if isinstance(raw, int) else list(raw)
            return [-1 if i is None else int(i) for i in out]

        structural = list(_STRUCTURAL)
        s_ids = ids_of(structural)
        unk_id = s_ids[structural.index(UNK)]
        img = ids_of([f"<img{c}>" for c in range(IMAGE_CODES)])
        spch = ids_of([f"<spch{c}>" for c in range(SPEECH_CODES)])
        for name, tid in zip(structural, s_ids, strict=True):
            if tid < 0 or (tid == unk_id and name != UNK):
                raise VocabularyError(
                    f"the tokenizer has no token {name!r}; it is not a MIO tokenizer "
                    "(use the tokenizer files shipped with MIO-7B-Instruct or the embedded model)"
                )
        for prefix, ids in (("img", img), ("spch", spch)):
            bad = [c for c, i in enumerate(ids) if i < 0 or i == unk_id]
            if bad:
                raise VocabularyError(
                    f"the tokenizer lacks {len(bad)} code tokens, first <{prefix}{bad[0]}>; "
                    "it is not a MIO tokenizer (use the tokenizer files shipped with MIO-7B-Instruct)"
                )
        every = s_ids + img + spch
        if max(every) >= size:
            raise VocabularyError(
                f"token id {max(every)} is outside the model's vocabulary of {size}; "
                "the tokenizer and the model weights come from different releases"
            )
        kind: dict[int, tuple[TokenKind, int]] = {}
        for name, tid in zip(structural, s_ids, strict=True):
            kind[tid] = (_STRUCTURAL[name], 0)
        for c, tid in enumerate(img):
            kind[tid] = (TokenKind.IMAGE_CODE, c)
        for c, tid in enumerate(spch):
            kind[tid] = (TokenKind.SPEECH_CODE, c)
        s = dict(zip(structural, s_ids, strict=True))
        return cls(
            vocab_size=size,
            bos=s[BOS],
            eos=s[EOS],
            im_start=s[IM_START],
            im_end=s[IM_END],
            unk=s[UNK],
            spch_start=s[SPCH_START],
            spch_end=s[SPCH_END],
            image_start=s[IMAGE_START],
            image_end=s[IMAGE_END],
            spch_placeholder=s[SPCH_PLACEHOLDER],
            img_placeholder=s[IMG_PLACEHOLDER],
            image_ids=tuple(img),
            speech_ids=tuple(spch),
            _kind=kind,
        )

    def kind(self, token_id: int) -> tuple[TokenKind, int]:
        """(kind, value) of a token id; value is the code for code tokens, else 0."""
        return self._kind.get(token_id, (TokenKind.TEXT, 0))

    def image_id(self, code: int) -> int:
        """Token id of image code 0..8191."""
        if not 0 <= code < IMAGE_CODES:
            raise ValueError(f"image code {code} is outside 0..{IMAGE_CODES - 1}")
        return self.image_ids[code]

    def speech_id(self, layer: int, code: int) -> int:
        """Token id of `code` (0..1023) of speech `layer` (0 content, 1..3 timbre)."""
        return self.speech_ids[speech_code(layer, code)]

    def image_block_ids(self, codes: Iterable[int]) -> list[int]:
        """`<image>` + 32 code ids + `</image>`."""
        body = [self.image_id(c) for c in codes]
        if len(body) != IMAGE_TOKENS_PER_IMAGE:
            raise ValueError(f"an image block holds exactly {IMAGE_TOKENS_PER_IMAGE} codes, got {len(body)}")
        return [self.image_start, *body, self.image_end]

    def speech_block_ids(
        self, content: Sequence[int], timbre: Sequence[Sequence[int]] | None = None
    ) -> list[int]:
        """`<spch>` content [timbre0 timbre1 timbre2] `</spch>` (user speech: content only)."""
        ids = [self.speech_id(0, c) for c in content]
        if timbre is not None:
            if len(timbre) != NUM_SPEECH_LAYERS - 1 or any(len(t) != len(content) for t in timbre):
                raise ValueError("timbre must be three lists each as long as the content codes")
            for layer, codes in enumerate(timbre, start=1):
                ids.extend(self.speech_id(layer, c) for c in codes)
        return [self.spch_start, *ids, self.spch_end]

    def mask(self, *kinds: TokenKind) -> torch.Tensor:
        """Boolean mask over the model's vocabulary of the ids of the given structural/code kinds."""
        import torch

        m = torch.zeros(self.vocab_size, dtype=torch.bool)
        for tid, (k, _) in self._kind.items():
            if k in kinds:
                m[tid] = True
        return m

    def speech_layer_mask(self, layer: int) -> torch.Tensor:
        """Boolean mask of the ids of the 1024 codes of one speech layer."""
        import torch

        m = torch.zeros(self.vocab_size, dtype=torch.bool)
        m[list(self.speech_ids[layer * CODEBOOK_SIZE : (layer + 1) * CODEBOOK_SIZE])] = True
        return m

    def image_code_mask(self) -> torch.Tensor:
        """Boolean mask of the ids of the 8192 image codes."""
        import torch

        m = torch.zeros(self.vocab_size, dtype=torch.bool)
        m[list(self.image_ids)] = True
        return m

    def text_mask(self) -> torch.Tensor:
        """Ids that are plain text: not a code, not a structural special token, inside the vocabulary."""
        import torch

        m = torch.ones(self.vocab_size, dtype=torch.bool)
        m[list(self._kind)] = False
        return m
