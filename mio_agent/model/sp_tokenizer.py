"""MIO's text tokenizer with the ids of the slow `LlamaTokenizer` of transformers 4.34 (MIO's reference).

MIO's folder holds Yi's sentencepiece model (`tokenizer.model`) and transformers' files around it
(`tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json`). MIO's reference code
loads them with the slow `LlamaTokenizer` of transformers 4.34 and tokenizes the whole prompt in
one call; those ids are what MIO was trained on. This module gives the same ids with the
`sentencepiece` library directly:

- the added and special tokens, and their `lstrip`/`rstrip`/`single_word` flags, are read the way
  4.34's `from_pretrained` reads them: from `added_tokens_decoder` in tokenizer_config.json when it
  is there (special_tokens_map.json is then not read), else from special_tokens_map.json and
  added_tokens.json (whose tokens then strip the whitespace on both sides, as 4.34's slow
  tokenizers do for that older layout). Special tokens given as plain strings in the special
  token lists strip whitespace on both sides too, as 4.34 makes them; bos/eos/unk/pad given as
  strings do not;
- the text is cut at the added tokens (leftmost match, longest at that place), whitespace next to
  a stripping token is dropped, and each piece between them is encoded by sentencepiece on its
  own (with `legacy: true` the model's own dummy-prefix setting applies to every piece; with
  `legacy: false`, one `▁` is put before the whole text and the pieces are encoded without a
  dummy prefix, as 4.34 does);
- `encode(text, add_special_tokens=True)` adds BOS/EOS only when `add_bos_token`/`add_eos_token`
  say so (Yi and MIO: neither; MIO's reference writes BOS into the prompt text instead).

`decode` is the inverse of `encode` (added tokens as their text, runs of sentencepiece ids
through sentencepiece); it does not copy 4.34's slow decode, which puts a space before special
tokens with `legacy: true`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import sentencepiece as spm

__all__ = ["IMPLEMENTATION", "AddedTokenSpec", "LlamaTokenizerCompat", "is_sentencepiece_folder"]

IMPLEMENTATION = "sentencepiece (slow-reference compatible: transformers 4.34 LlamaTokenizer ids)"
SPIECE_UNDERLINE = "▁"
MODEL_FILE = "tokenizer.model"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_MAP_FILE = "special_tokens_map.json"
ADDED_FILE = "added_tokens.json"
# transformers' order of the special token attributes
_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# LlamaTokenizer's defaults for a config that leaves them out
_LLAMA_DEFAULTS: dict[str, str | None] = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


@dataclass(frozen=True)
class AddedTokenSpec:
    """One added token as transformers' `AddedToken` describes it (only the flags splitting uses)."""

    content: str
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    special: bool = False

    @classmethod
    def from_json(cls, value: Any, *, strip: bool = False, special: bool = False) -> AddedTokenSpec:
        """From a saved entry: a plain string (flags from `strip`/`special`) or an AddedToken dict."""
        if isinstance(value, str):
            return cls(value, lstrip=strip, rstrip=strip, special=special)
        if isinstance(value, dict) and isinstance(value.get("content"), str):
            return cls(
                value["content"],
                lstrip=bool(value.get("lstrip", False)),
                rstrip=bool(value.get("rstrip", False)),
                single_word=bool(value.get("single_word", False)),
                special=bool(value.get("special", special)),
            )
        raise ValueError(f"not a token: {value!r}")


class _Trie:
    """The added tokens, matched leftmost-first and longest at that place (as transformers' Trie)."""

    def __init__(self, words: Iterable[str]) -> None:
        self._root: dict[str, Any] = {}
        for word in words:
            if not word:
                continue
            node = self._root
            for ch in word:
                node = node.setdefault(ch, {})
            node[""] = True

    def split(self, text: str) -> list[str]:
        out: list[str] = []
        start = 0
        i = 0
        n = len(text)
        root = self._root
        while i < n:
            if text[i] not in root:
                i += 1
                continue
            node = root
            end = -1
            j = i
            while j < n and text[j] in node:
                node = node[text[j]]
                j += 1
                if "" in node:
                    end = j
            if end < 0:
                i += 1
                continue
            if start < i:
                out.append(text[start:i])
            out.append(text[i:end])
            start = i = end
        if start < n:
            out.append(text[start:])
        return out


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _model_proto(model: bytes) -> Any:
    # the generated protobuf module builds its classes at import time, which mypy cannot see
    pb2: Any = importlib.import_module("sentencepiece.sentencepiece_model_pb2")
    proto = pb2.ModelProto()
    proto.ParseFromString(model)
    return proto


def _without_dummy_prefix(model: bytes) -> bytes:
    proto = _model_proto(model)
    proto.normalizer_spec.add_dummy_prefix = False
    return bytes(proto.SerializeToString())


def _dummy_prefix(model: bytes) -> bool:
    return bool(_model_proto(model).normalizer_spec.add_dummy_prefix)


def is_sentencepiece_folder(folder: Path) -> bool:
    """Whether `folder` holds a sentencepiece tokenizer (tokenizer.model) for this class."""
    return (folder / MODEL_FILE).is_file()


class LlamaTokenizerCompat:
    """A sentencepiece tokenizer folder giving the ids of transformers 4.34's slow LlamaTokenizer."""

    implementation = IMPLEMENTATION
    is_fast = False

    def __init__(
        self,
        model: bytes,
        *,
        legacy: bool = True,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        special: dict[str, AddedTokenSpec | None] | None = None,
        additional_special: Sequence[AddedTokenSpec] = (),
        added: dict[int, AddedTokenSpec] | None = None,
        name_or_path: str = "",
    ) -> None:
        self.name_or_path = name_or_path
        self.legacy = legacy
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.dummy_prefix = _dummy_prefix(model)
        self._sp = spm.SentencePieceProcessor()
        # legacy: the model as it is; otherwise without its dummy prefix (4.34 rewrites the proto too)
        self._sp.LoadFromSerializedProto(model if legacy else _without_dummy_prefix(model))
        self._sp_size = int(self._sp.GetPieceSize())
        specials = {k: v for k, v in (special or {}).items() if v is not None}
        self._special = specials
        decoder: dict[int, AddedTokenSpec] = dict(added or {})
        encoder = {t.content: i for i, t in decoder.items()}
        # transformers' __init__: every special token joins the added tokens (new ones at the end)
        ordered: list[AddedTokenSpec] = []
        seen: set[str] = set()
        for attr in _SPECIAL_ATTRS:
            tok = specials.get(attr)
            if tok is not None and tok.content not in seen:
                seen.add(tok.content)
                ordered.append(tok)
        additional: list[AddedTokenSpec] = []
        for tok in additional_special:
            if tok.content not in {a.content for a in additional}:
                additional.append(tok)
            if tok.content not in seen:
                seen.add(tok.content)
                ordered.append(tok)
        vocab = {self._piece(i, decoder): i for i in range(self._sp_size)}
        vocab.update(encoder)
        next_id = len(vocab)
        for tok in ordered:
            marked = AddedTokenSpec(tok.content, tok.lstrip, tok.rstrip, tok.single_word, special=True)
            if marked.content in vocab:
                index = vocab[marked.content]
            else:
                index = next_id
                next_id += 1
                vocab[marked.content] = index
            decoder[index] = marked
            encoder[marked.content] = index
        self._additional = additional
        self._decoder = decoder
        self._encoder = encoder
        self._len = len(set(vocab))
        self._trie = _Trie(t.content for t in decoder.values())
        self.all_special_tokens: list[str] = list(dict.fromkeys([t.content for t in ordered]))
        self.all_special_ids: list[int] = [self._token_to_id(t) for t in self.all_special_tokens]
        self._special_id_set = frozenset(self.all_special_ids)
        self._unk_length = len(self._sp.encode(self.unk_token or "", out_type=str))

    # ---- loading

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LlamaTokenizerCompat:
        """Read a tokenizer folder the way transformers 4.34's `LlamaTokenizer.from_pretrained` does."""
        path = Path(folder)
        model = (path / MODEL_FILE).read_bytes()
        config = _read_json(path / CONFIG_FILE) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{path / CONFIG_FILE} is not a JSON object")
        special: dict[str, AddedTokenSpec | None] = {}
        for attr in _SPECIAL_ATTRS:
            value = config.get(attr, _LLAMA_DEFAULTS.get(attr))
            special[attr] = None if value is None else AddedTokenSpec.from_json(value)
        additional: list[AddedTokenSpec] = []
        raw_additional: list[Any] = list(config.get("additional_special_tokens") or [])
        added: dict[int, AddedTokenSpec] = {}
        if "added_tokens_decoder" in config:
            names = [v for v in raw_additional if isinstance(v, str)]
            for index, value in config["added_tokens_decoder"].items():
                tok = AddedTokenSpec.from_json(value)
                added[int(index)] = tok
                if tok.content in names:
                    names.remove(tok.content)
                if tok.special:
                    additional.append(tok)
            # plain strings left in the list are made AddedToken(lstrip=True, rstrip=True) by 4.34
            additional = [AddedTokenSpec.from_json(n, strip=True, special=True) for n in names] + additional
        else:
            extra = [AddedTokenSpec.from_json(v, strip=True, special=True) for v in raw_additional]
            special_map = _read_json(path / SPECIAL_MAP_FILE) or {}
            for key, value in special_map.items():
                if key == "additional_special_tokens" and isinstance(value, list):
                    for v in value:
                        tok = AddedTokenSpec.from_json(v, strip=True, special=True)
                        if tok.content not in {e.content for e in extra}:
                            extra.append(tok)
                elif key in _SPECIAL_ATTRS:
                    special[key] = AddedTokenSpec.from_json(value)
            additional = extra
            for content, index in (_read_json(path / ADDED_FILE) or {}).items():
                added[int(index)] = AddedTokenSpec(content, lstrip=True, rstrip=True)
        legacy = config.get("legacy")
        return cls(
            model,
            legacy=True if legacy is None else bool(legacy),
            add_bos_token=bool(config.get("add_bos_token", True)),
            add_eos_token=bool(config.get("add_eos_token", False)),
            special=special,
            additional_special=additional,
            added=added,
            name_or_path=str(path),
        )

    # ---- vocabulary

    def _piece(self, index: int, decoder: dict[int, AddedTokenSpec]) -> str:
        tok = decoder.get(index)
        return tok.content if tok is not None else str(self._sp.IdToPiece(index))

    def _token_to_id(self, token: str) -> int:
        found = self._encoder.get(token)
        return found if found is not None else int(self._sp.PieceToId(token))

    def __len__(self) -> int:
        return self._len

    @property
    def vocab_size(self) -> int:
        """Pieces of the sentencepiece model (without the added tokens)."""
        return self._sp_size

    def get_vocab(self) -> dict[str, int]:
        vocab = {self._piece(i, self._decoder): i for i in range(self._sp_size)}
        vocab.update(self._encoder)
        return vocab

    @property
    def added_tokens(self) -> dict[int, AddedTokenSpec]:
        """The added tokens by id, with their flags."""
        return dict(sorted(self._decoder.items()))

    @overload
    def convert_tokens_to_ids(self, tokens: str) -> int: ...

    @overload
    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]: ...

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    @overload
    def convert_ids_to_tokens(self, ids: int, skip_special_tokens: bool = False) -> str: ...

    @overload
    def convert_ids_to_tokens(self, ids: Sequence[int], skip_special_tokens: bool = False) -> list[str]: ...

    def convert_ids_to_tokens(
        self, ids: int | Sequence[int], skip_special_tokens: bool = False
    ) -> str | list[str]:
        if isinstance(ids, int):
            return self._piece(ids, self._decoder)
        return [
            self._piece(int(i), self._decoder)
            for i in ids
            if not (skip_special_tokens and int(i) in self._special_id_set)
        ]

    def _special_content(self, attr: str) -> str | None:
        tok = self._special.get(attr)
        return tok.content if tok is not None else None

    def _special_id(self, attr: str) -> int | None:
        content = self._special_content(attr)
        return None if content is None else self._token_to_id(content)

    @property
    def bos_token(self) -> str | None:
        return self._special_content("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self._special_content("eos_token")

    @property
    def unk_token(self) -> str | None:
        return self._special_content("unk_token")

    @property
    def pad_token(self) -> str | None:
        return self._special_content("pad_token")

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def unk_token_id(self) -> int | None:
        return self._special_id("unk_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad_token")

    @property
    def additional_special_tokens(self) -> list[str]:
        return [t.content for t in self._additional]

    # ---- encoding

    def _split(self, text: str) -> list[str]:
        """The text cut at added tokens, with the whitespace the tokens strip removed."""
        parts = self._trie.split(text)
        for i, part in enumerate(parts):
            if part not in self._encoder:
                continue
            tok = self._decoder.get(self._encoder[part])
            if tok is None:
                continue
            left = parts[i - 1] if i > 0 else None
            right = parts[i + 1] if i < len(parts) - 1 else None
            if tok.rstrip and right:
                parts[i + 1] = right.lstrip()
            if tok.lstrip and left:
                parts[i - 1] = left.rstrip()
            if tok.single_word and left and left[-1] != " ":
                parts[i - 1] += part
                parts[i] = ""
            elif tok.single_word and right and right[0] != " ":
                parts[i + 1] = part + parts[i + 1]
                parts[i] = ""
        return parts

    def _sp_tokenize(self, text: str) -> list[str]:
        pieces: list[str] = self._sp.encode(text, out_type=str)
        if self.legacy or not text.startswith((SPIECE_UNDERLINE, " ")):
            return pieces
        # 4.34 encodes unk + text and drops the unk's pieces, so the leading "▁" stays a space
        pieces = self._sp.encode((self.unk_token or "") + text, out_type=str)
        return pieces[self._unk_length :] if len(pieces) >= self._unk_length else pieces

    def tokenize(self, text: str) -> list[str]:
        """Token strings of `text` (added tokens whole, sentencepiece pieces between them)."""
        if not self.legacy and text:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        out: list[str] = []
        for part in self._split(text):
            if not part:
                continue
            if part in self._encoder:
                out.append(part)
            else:
                out.extend(self._sp_tokenize(part))
        if (
            not self.legacy
            and len(out) > 1
            and out[0] == SPIECE_UNDERLINE
            and out[1] in self.all_special_tokens
        ):
            out = out[1:]
        return out

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of `text`; `add_special_tokens` adds BOS/EOS only where the folder's config asks for them."""
        ids = [self._token_to_id(t) for t in self.tokenize(text)]
        if add_special_tokens:
            bos, eos = self.bos_token_id, self.eos_token_id
            if self.add_bos_token and bos is not None:
                ids.insert(0, bos)
            if self.add_eos_token and eos is not None:
                ids.append(eos)
        return ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        """`{"input_ids": ...}` for one string, as `tokenizer(text)` gives it."""
        ids = self.encode(text, add_special_tokens=add_special_tokens)
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    # ---- decoding

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `token_ids`: added tokens as their text, runs of pieces decoded by sentencepiece.

        Ids outside the vocabulary (a model's padding rows) decode to nothing.
        """
        out: list[str] = []
        run: list[int] = []
        lead: bool | None = None
        for raw in token_ids:
            index = int(raw)
            if skip_special_tokens and index in self._special_id_set:
                continue
            tok = self._decoder.get(index)
            if tok is None and not 0 <= index < self._sp_size:
                continue
            if lead is None:
                lead = tok is None and str(self._sp.IdToPiece(index)).startswith(SPIECE_UNDERLINE)
            if tok is None:
                run.append(index)
                continue
            if run:
                out.append(self._sp.decode(run))
                run = []
            out.append(tok.content)
        if run:
            out.append(self._sp.decode(run))
        text = "".join(out)
        if not self.legacy and lead and text.startswith(" "):
            # the "▁" that legacy: false puts before the text is not the caller's
            text = text[1:]
        return text
