"""Constrained decoding: masks next-token logits so every block MIO finishes is well-formed and decodable."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from mio_agent.exceptions import ConfigError
from mio_agent.vocab import CODEBOOK_SIZE, IMAGE_TOKENS_PER_IMAGE, NUM_SPEECH_LAYERS, MioVocab, TokenKind

__all__ = ["ConstraintMode", "MioConstraint", "prefix_allowed_tokens_fn"]

ConstraintMode = Literal["voice", "std"]

# Kinds of ids the constraint tells apart; an allowed set is a bit set of these.
_TEXT = 1 << 0
_STOP = 1 << 1
_SPCH_START = 1 << 2
_SPCH_END = 1 << 3
_IMAGE_START = 1 << 4
_IMAGE_END = 1 << 5
_IMAGE_CODE = 1 << 6
# speech layer k (0 content, 1..3 timbre) is bit 7 + k
_LAYER0 = 1 << 7

# budgets, in tokens, of what must still fit after a choice: a stop token closes every reply
_STOP_COST = 1
_IMAGE_BLOCK_COST = IMAGE_TOKENS_PER_IMAGE + 2
_TIMBRE_LAYERS = NUM_SPEECH_LAYERS - 1


def _layer_bit(layer: int) -> int:
    return _LAYER0 << layer


class _Masks:
    """Boolean masks of one vocabulary's id kinds, and every combination used so far (per device)."""

    def __init__(self, vocab: MioVocab) -> None:
        def one(tid: int) -> torch.Tensor:
            m = torch.zeros(vocab.vocab_size, dtype=torch.bool)
            m[tid] = True
            return m

        self.vocab_size = vocab.vocab_size
        self.base: dict[int, torch.Tensor] = {
            _TEXT: vocab.text_mask(),
            _SPCH_START: one(vocab.spch_start),
            _SPCH_END: one(vocab.spch_end),
            _IMAGE_START: one(vocab.image_start),
            _IMAGE_END: one(vocab.image_end),
            _IMAGE_CODE: vocab.image_code_mask(),
        }
        for layer in range(NUM_SPEECH_LAYERS):
            self.base[_layer_bit(layer)] = vocab.speech_layer_mask(layer)
        # (bits, stop ids) -> allowed mask on the CPU; (bits, stop ids, device) -> disallowed mask there
        self._allowed: dict[tuple[int, frozenset[int]], torch.Tensor] = {}
        self._blocked: dict[tuple[int, frozenset[int], torch.device], torch.Tensor] = {}
        self._ids: dict[tuple[int, frozenset[int]], list[int]] = {}

    def allowed(self, bits: int, stops: frozenset[int]) -> torch.Tensor:
        key = (bits, stops)
        mask = self._allowed.get(key)
        if mask is None:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            for bit, m in self.base.items():
                if bits & bit:
                    mask |= m
            # a stop id may also be a text id: it follows the stop rule, not the text one
            mask[list(stops)] = bool(bits & _STOP)
            self._allowed[key] = mask
        return mask

    def blocked(self, bits: int, stops: frozenset[int], device: torch.device) -> torch.Tensor:
        key = (bits, stops, device)
        mask = self._blocked.get(key)
        if mask is None:
            mask = (~self.allowed(bits, stops)).to(device)
            self._blocked[key] = mask
        return mask

    def ids(self, bits: int, stops: frozenset[int]) -> list[int]:
        key = (bits, stops)
        ids = self._ids.get(key)
        if ids is None:
            ids = self.allowed(bits, stops).nonzero().flatten().tolist()
            self._ids[key] = ids
        return ids


_MASKS: weakref.WeakKeyDictionary[MioVocab, _Masks] = weakref.WeakKeyDictionary()


def _masks_for(vocab: MioVocab) -> _Masks:
    masks = _MASKS.get(vocab)
    if masks is None:
        masks = _Masks(vocab)
        _MASKS[vocab] = masks
    return masks


@dataclass(slots=True)
class _State:
    generated: int = 0
    stopped: bool = False
    blocks: int = 0
    # "out", "speech" or "image"
    where: str = "out"
    # speech: content codes so far, current layer (0 content) and codes of it; image: codes so far
    content: int = 0
    layer: int = 0
    in_layer: int = 0
    image: int = 0


class MioConstraint:
    """State machine over the reply so far that masks the logits of the next token.

    What it guarantees of every reply it lets through:
    - a speech block is `<spch>`, N content codes, N codes of each timbre layer in order, `</spch>`
      (N >= `min_speech_codes`, at most `max_speech_codes`); an image block is exactly 32 codes;
      a code never appears outside its block, text never inside one;
    - `voice` replies are exactly one speech block, then the stop token (nothing else: `allow_*`
      flags other than speech do not apply);
    - the reply never runs past `max_new_tokens`, and a block only opens, or grows, while the
      rest of it plus its end marker and a stop token still fit: during content with n codes and
      B tokens left, another content code needs B >= 1 + 3(n+1) + 1 + 1, else the timbre layers
      start; `<spch>` needs room for `min_speech_codes` codes of all four layers, `<image>` 35
      tokens. So a reply cut by the budget is still whole;
    - BOS, `<|im_start|>`, `<unk>`, the `[SPCH]`/`[IMG]` placeholders and any special token that
      is not a stop id never appear.
    When text is not allowed, a stop is allowed only after a block (or when none fits any more),
    so e.g. an image-generation reply holds at least one image.
    With `timbre=False` a speech block is `<spch>`, N content codes, `</spch>` (see `substitute`).
    """

    def __init__(
        self,
        vocab: MioVocab,
        *,
        mode: ConstraintMode,
        max_new_tokens: int,
        stop_ids: Sequence[int] | None = None,
        allow_text: bool = True,
        allow_speech: bool = True,
        allow_image: bool = True,
        min_speech_codes: int = 1,
        max_speech_codes: int | None = None,
        timbre: bool = True,
    ) -> None:
        if mode not in ("voice", "std"):
            raise ConfigError(f'unknown constraint mode {mode!r}; use "voice" or "std"')
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if min_speech_codes < 1:
            raise ConfigError(f"min_speech_codes must be at least 1, got {min_speech_codes}")
        if max_speech_codes is not None and max_speech_codes < min_speech_codes:
            raise ConfigError(
                f"max_speech_codes ({max_speech_codes}) is below min_speech_codes ({min_speech_codes})"
            )
        if mode == "voice" and not allow_speech:
            raise ConfigError('a "voice" reply is one speech block: allow speech, or use mode "std"')
        if not (allow_text or allow_speech or allow_image):
            raise ConfigError("text, speech and images are all disallowed: the reply could hold nothing")
        stops = tuple(stop_ids) if stop_ids is not None else (vocab.im_end, vocab.eos)
        if not stops:
            raise ConfigError("at least one stop id is needed (e.g. <|im_end|>)")
        for sid in stops:
            kind = vocab.kind(sid)[0]
            if not 0 <= sid < vocab.vocab_size or kind not in (
                TokenKind.IM_END,
                TokenKind.EOS,
                TokenKind.TEXT,
            ):
                raise ConfigError(
                    f"stop id {sid} is not usable as a stop token ({kind.value}); use <|im_end|> or <|endoftext|>"
                )
        self.vocab = vocab
        self.mode: ConstraintMode = mode
        self.max_new_tokens = max_new_tokens
        self.stop_ids: frozenset[int] = frozenset(stops)
        self.allow_text = allow_text and mode == "std"
        self.allow_speech = allow_speech
        self.allow_image = allow_image and mode == "std"
        self.min_speech_codes = min_speech_codes
        self.max_speech_codes = max_speech_codes
        self.timbre = timbre
        self._masks = _masks_for(vocab)
        self._s = _State()
        speech_fits = self.allow_speech and self._speech_open_cost() <= max_new_tokens
        image_fits = self.allow_image and max_new_tokens >= _IMAGE_BLOCK_COST + _STOP_COST
        if not (self.allow_text or speech_fits or image_fits):
            # nothing but the stop token would fit: say so instead of ending the reply empty
            raise ConfigError(
                f"a reply of at most {max_new_tokens} new tokens has no room for its speech block: "
                f"{min_speech_codes} code(s) in {'all four parts' if timbre else 'the content part'} need "
                f"{self._speech_open_cost()} tokens; raise max_new_tokens or lower min_speech_codes"
            )

    # -- inspection -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once a stop token was chosen or the token budget is spent."""
        return self._s.stopped or self._s.generated >= self.max_new_tokens

    @property
    def generated(self) -> int:
        """How many tokens were advanced so far."""
        return self._s.generated

    @property
    def tokens_left(self) -> int:
        return 0 if self.done else self.max_new_tokens - self._s.generated

    def _bits(self) -> int:
        s = self._s
        if self.done:
            return 0
        left = self.max_new_tokens - s.generated
        if s.where == "speech":
            return self._speech_bits(left)
        if s.where == "image":
            return _IMAGE_CODE if s.image < IMAGE_TOKENS_PER_IMAGE else _IMAGE_END
        speech_fits = self.allow_speech and left >= self._speech_open_cost()
        if self.mode == "voice":
            # a voice reply is one speech block; with no room for one it can only be empty
            return _SPCH_START if s.blocks == 0 and speech_fits else _STOP
        bits = 0
        if self.allow_text:
            bits |= _TEXT
        if speech_fits:
            bits |= _SPCH_START
        if self.allow_image and left >= _IMAGE_BLOCK_COST + _STOP_COST:
            bits |= _IMAGE_START
        if self.allow_text or s.blocks > 0 or bits == 0:
            bits |= _STOP
        return bits

    def _speech_open_cost(self) -> int:
        layers = NUM_SPEECH_LAYERS if self.timbre else 1
        return 1 + layers * self.min_speech_codes + 1 + _STOP_COST

    def _speech_bits(self, left: int) -> int:
        s = self._s
        n = s.content
        if s.layer == 0:
            bits = 0
            below_max = self.max_speech_codes is None or n < self.max_speech_codes
            # room for this code, its n+1 codes in each timbre layer, </spch> and a stop
            timbre_cost = _TIMBRE_LAYERS * (n + 1) if self.timbre else 0
            if below_max and left >= 1 + timbre_cost + 1 + _STOP_COST:
                bits |= _layer_bit(0)
            if n >= self.min_speech_codes:
                # without timbre the model still says "content done" by choosing a timbre code,
                # which `substitute` turns into </spch>
                bits |= _layer_bit(1) if self.timbre else _layer_bit(1) | _SPCH_END
            return bits
        if s.in_layer < n:
            return _layer_bit(s.layer)
        if s.layer < _TIMBRE_LAYERS:
            return _layer_bit(s.layer + 1)
        return _SPCH_END

    def allowed_mask(self) -> torch.Tensor:
        """Boolean mask [vocab] of the ids allowed next (all False once done)."""
        return self._masks.allowed(self._bits(), self.stop_ids).clone()

    def allowed_ids(self) -> list[int]:
        """Ids allowed next, ascending; a shared list: do not modify it."""
        return self._masks.ids(self._bits(), self.stop_ids)

    def is_allowed(self, token_id: int) -> bool:
        bit = self._bit_of(token_id)
        return bit is not None and bool(self._bits() & bit)

    # -- stepping ---------------------------------------------------------------------------
    def substitute(self, token_id: int) -> int:
        """The id the reply takes for a chosen `token_id`: itself, except that without timbre
        (`timbre=False`) a timbre code chosen after the content codes closes the block (`</spch>`),
        so the reply keeps the content the model chose to end there, as after a barge-in."""
        s = self._s
        if self.timbre or s.where != "speech" or s.layer != 0:
            return token_id
        kind, value = self.vocab.kind(token_id)
        if kind is TokenKind.SPEECH_CODE and value >= CODEBOOK_SIZE:
            return self.vocab.spch_end
        return token_id

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` ([vocab] or [1, vocab]) with every disallowed id set to -inf (a new tensor)."""
        if logits.shape[-1] != self._masks.vocab_size:
            raise ValueError(
                f"logits have {logits.shape[-1]} entries, the vocabulary {self._masks.vocab_size}"
            )
        blocked = self._masks.blocked(self._bits(), self.stop_ids, logits.device)
        return logits.masked_fill(blocked, float("-inf"))

    def _bit_of(self, token_id: int) -> int | None:
        if token_id in self.stop_ids:
            return _STOP
        if not 0 <= token_id < self._masks.vocab_size:
            return None
        kind, value = self.vocab.kind(token_id)
        if kind is TokenKind.SPEECH_CODE:
            return _layer_bit(value // CODEBOOK_SIZE)
        return {
            TokenKind.TEXT: _TEXT,
            TokenKind.SPEECH_START: _SPCH_START,
            TokenKind.SPEECH_END: _SPCH_END,
            TokenKind.IMAGE_START: _IMAGE_START,
            TokenKind.IMAGE_END: _IMAGE_END,
            TokenKind.IMAGE_CODE: _IMAGE_CODE,
        }.get(kind)

    def advance(self, token_id: int) -> None:
        """Take `token_id` as the next token of the reply; ValueError if it was not allowed."""
        bit = self._bit_of(token_id)
        if bit is None or not self._bits() & bit:
            state = "after the end of the reply" if self.done else f"in state {self._describe()}"
            raise ValueError(f"token id {token_id} is not allowed {state}")
        s = self._s
        s.generated += 1
        if bit == _STOP:
            s.stopped = True
        elif bit == _SPCH_START:
            s.where, s.content, s.layer, s.in_layer = "speech", 0, 0, 0
        elif bit == _IMAGE_START:
            s.where, s.image = "image", 0
        elif bit == _IMAGE_CODE:
            s.image += 1
        elif bit in (_SPCH_END, _IMAGE_END):
            s.where = "out"
            s.blocks += 1
        elif bit != _TEXT:
            layer = (bit // _LAYER0).bit_length() - 1
            if layer == 0:
                s.content += 1
            elif layer == s.layer:
                s.in_layer += 1
            else:
                s.layer, s.in_layer = layer, 1

    def _describe(self) -> str:
        s = self._s
        if s.where == "speech":
            return f"speech block, layer {s.layer}, {s.content} content codes, {s.in_layer} in this layer"
        if s.where == "image":
            return f"image block, {s.image} codes"
        return f"outside blocks, {s.generated} of {self.max_new_tokens} tokens used"

    def clone(self) -> MioConstraint:
        """An independent copy at the same point of the reply."""
        other = copy.copy(self)
        other._s = copy.copy(self._s)
        return other


def prefix_allowed_tokens_fn(
    vocab: MioVocab,
    *,
    prompt_length: int,
    mode: ConstraintMode,
    max_new_tokens: int,
    stop_ids: Sequence[int] | None = None,
    allow_text: bool = True,
    allow_speech: bool = True,
    allow_image: bool = True,
    min_speech_codes: int = 1,
    max_speech_codes: int | None = None,
) -> Callable[[int, torch.Tensor], list[int]]:
    """`prefix_allowed_tokens_fn` for Hugging Face `generate` (the beam-search path).

    Each call rebuilds the state of one beam from the ids after `prompt_length` (the padded
    prompt length of the batch). Beams only ever extend a sequence of the previous step, so the
    states of the last two lengths are kept and a call costs one `advance`; the returned list is
    shared between calls with the same allowed set. A sequence the constraint would not have
    produced (a finished row padded by `generate`) gets the stop ids: it is discarded anyway.
    """
    root = MioConstraint(
        vocab,
        mode=mode,
        max_new_tokens=max_new_tokens,
        stop_ids=stop_ids,
        allow_text=allow_text,
        allow_speech=allow_speech,
        allow_image=allow_image,
        min_speech_codes=min_speech_codes,
        max_speech_codes=max_speech_codes,
    )
    fallback = sorted(root.stop_ids)
    states: dict[tuple[int, ...], MioConstraint | None] = {(): root}

    def state_of(suffix: tuple[int, ...]) -> MioConstraint | None:
        if suffix in states:
            return states[suffix]
        state: MioConstraint | None
        if suffix and suffix[:-1] in states:
            parent = states[suffix[:-1]]
            state, tail = (None if parent is None else parent.clone()), suffix[-1:]
        else:
            state, tail = root.clone(), suffix
        for tid in tail:
            if state is None or state.done or not state.is_allowed(tid):
                state = None
                break
            state.advance(tid)
        n = len(suffix)
        for key in [k for k in states if 0 < len(k) < n - 1]:
            del states[key]
        states[suffix] = state
        return state

    def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        suffix = tuple(int(t) for t in input_ids[prompt_length:].tolist())
        state = state_of(suffix)
        if state is None or state.done:
            return fallback
        return state.allowed_ids()

    return allowed
