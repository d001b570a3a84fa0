"""Conversations as data: turns of text, speech codes and image codes, and their JSON file format."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from mio_agent.exceptions import ConversationError
from mio_agent.vocab import CODEBOOK_SIZE, IMAGE_CODES, IMAGE_TOKENS_PER_IMAGE, NUM_SPEECH_LAYERS

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "MODES",
    "ROLES",
    "Conversation",
    "ImagePart",
    "Mode",
    "Part",
    "Role",
    "SpeechPart",
    "TextPart",
    "Turn",
    "conversation_from_json",
    "conversation_to_json",
    "load_conversation",
]

Mode: TypeAlias = Literal["std", "voice", "custom"]
Role: TypeAlias = Literal["user", "assistant"]
MODES: tuple[Mode, ...] = ("std", "voice", "custom")
ROLES: tuple[Role, ...] = ("user", "assistant")

Timbre: TypeAlias = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class TextPart:
    """Plain text inside a turn."""

    text: str


@dataclass(frozen=True, slots=True)
class SpeechPart:
    """Speech codes: content (RVQ layer 1) and, optionally, the three timbre layers of equal length."""

    content: tuple[int, ...]
    timbre: Timbre | None = None

    def __post_init__(self) -> None:
        _check_speech(self.content, self.timbre)


@dataclass(frozen=True, slots=True)
class ImagePart:
    """One image as exactly 32 SEED-2 codes, and the picture it was encoded from when known.

    `picture` (a Pillow image, as the user or the camera gave it) is what a capability that works
    on pixels uses; MIO only ever sees the codes, so two parts with the same codes are equal
    whatever their pictures. It is None for images that exist only as codes (from the history, a
    conversation file or the model's own output).
    """

    codes: tuple[int, ...]
    picture: Image.Image | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_image(self.codes)


Part: TypeAlias = TextPart | SpeechPart | ImagePart


@dataclass(frozen=True, slots=True)
class Turn:
    """One user or assistant turn: its parts in order."""

    role: Role
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Conversation:
    """A mode, a system prompt for `custom` mode, and the turns so far."""

    mode: Mode
    turns: tuple[Turn, ...] = ()
    system: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConversationError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.mode == "custom" and self.system is None:
            raise ConversationError("mode 'custom' needs a \"system\" prompt; add one or use mode std/voice")
        if self.mode != "custom" and self.system is not None:
            raise ConversationError(
                f"mode {self.mode!r} has a fixed system prompt; \"system\" is only for mode 'custom'"
            )


def _check_codes(codes: Sequence[int], limit: int, what: str) -> None:
    for i, c in enumerate(codes):
        if isinstance(c, bool) or not isinstance(c, int):
            raise ConversationError(f"{what} code #{i} is {c!r}: codes are integers")
        if not 0 <= c < limit:
            raise ConversationError(f"{what} code #{i} is {c}: it must be in 0..{limit - 1}")


def _check_speech(content: Sequence[int], timbre: Sequence[Sequence[int]] | None) -> None:
    if len(content) == 0:
        raise ConversationError("speech has no content codes: a speech item needs at least one")
    _check_codes(content, CODEBOOK_SIZE, "speech content")
    if timbre is None:
        return
    if len(timbre) != NUM_SPEECH_LAYERS - 1:
        raise ConversationError(f"speech timbre has {len(timbre)} lists: it needs exactly 3 (RVQ layers 2-4)")
    for k, layer in enumerate(timbre):
        if len(layer) != len(content):
            raise ConversationError(
                f"speech timbre list {k} has {len(layer)} codes but content has {len(content)}: "
                "all four parts must be of the same length"
            )
        _check_codes(layer, CODEBOOK_SIZE, f"speech timbre {k}")


def _check_image(codes: Sequence[int]) -> None:
    if len(codes) != IMAGE_TOKENS_PER_IMAGE:
        raise ConversationError(f"image has {len(codes)} codes: an image is exactly {IMAGE_TOKENS_PER_IMAGE}")
    _check_codes(codes, IMAGE_CODES, "image")


def _int_list(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ConversationError(f"{what} must be a list of integers, got {type(value).__name__}")
    _check_codes(value, 1 << 62, what)
    return tuple(value)


def _part_from_json(item: object) -> Part:
    if not isinstance(item, Mapping) or len(item) != 1:
        raise ConversationError('an item is an object with exactly one key: "text", "speech" or "image"')
    ((key, value),) = item.items()
    if key == "text":
        if not isinstance(value, str):
            raise ConversationError(f'"text" must be a string, got {type(value).__name__}')
        return TextPart(value)
    if key == "speech":
        if not isinstance(value, Mapping):
            raise ConversationError(
                '"speech" must be an object {"content": [...], "timbre": [[...],[...],[...]]}'
            )
        unknown = set(value) - {"content", "timbre"}
        if unknown:
            raise ConversationError(
                f'"speech" has unknown key(s) {sorted(unknown)}: allowed are content, timbre'
            )
        if "content" not in value:
            raise ConversationError('"speech" lacks "content" (a list of codes 0..1023)')
        content = _int_list(value["content"], "speech content")
        timbre: Timbre | None = None
        raw_timbre = value.get("timbre")
        if raw_timbre is not None:
            if not isinstance(raw_timbre, list) or len(raw_timbre) != NUM_SPEECH_LAYERS - 1:
                raise ConversationError('speech "timbre" must be a list of exactly 3 lists of codes 0..1023')
            t0, t1, t2 = (_int_list(layer, f"speech timbre {k}") for k, layer in enumerate(raw_timbre))
            timbre = (t0, t1, t2)
        return SpeechPart(content, timbre)
    if key == "image":
        if not isinstance(value, Mapping) or set(value) != {"codes"}:
            raise ConversationError('"image" must be an object {"codes": [32 codes 0..8191]}')
        return ImagePart(_int_list(value["codes"], "image"))
    raise ConversationError(f'unknown item {key!r}: expected "text", "speech" or "image"')


def conversation_from_json(data: object) -> Conversation:
    """Validate a parsed conversation file; errors name the turn, the item and the rule broken."""
    if not isinstance(data, Mapping):
        raise ConversationError('a conversation file is a JSON object with "mode" and "turns"')
    unknown = set(data) - {"mode", "system", "turns"}
    if unknown:
        raise ConversationError(
            f"unknown top-level key(s) {sorted(unknown)}: allowed are mode, system, turns"
        )
    mode = data.get("mode", "std")
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise ConversationError('"system" must be a string')
    raw_turns = data.get("turns", [])
    if not isinstance(raw_turns, list):
        raise ConversationError('"turns" must be a list of {"role": ..., "content": [...]} objects')
    turns: list[Turn] = []
    for t, raw in enumerate(raw_turns):
        if not isinstance(raw, Mapping):
            raise ConversationError(f'turn {t}: must be an object {{"role": ..., "content": [...]}}')
        extra = set(raw) - {"role", "content"}
        if extra:
            raise ConversationError(f"turn {t}: unknown key(s) {sorted(extra)}: allowed are role, content")
        role = raw.get("role")
        if role not in ROLES:
            raise ConversationError(f"turn {t}: unknown role {role!r}: expected 'user' or 'assistant'")
        content = raw.get("content")
        if isinstance(content, str):
            content = [{"text": content}]
        if not isinstance(content, list) or not content:
            raise ConversationError(f'turn {t}: "content" must be a non-empty list of items')
        parts: list[Part] = []
        for i, item in enumerate(content):
            try:
                parts.append(_part_from_json(item))
            except ConversationError as exc:
                kind = next(iter(item)) if isinstance(item, Mapping) and len(item) == 1 else "?"
                raise ConversationError(f"turn {t}, item {i} ({kind}): {exc}") from None
        turns.append(Turn(role, tuple(parts)))
    if mode not in MODES:
        raise ConversationError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    return Conversation(mode=mode, turns=tuple(turns), system=system)


def conversation_to_json(conv: Conversation) -> dict[str, Any]:
    """The file form of a conversation (inverse of conversation_from_json)."""
    turns: list[dict[str, Any]] = []
    for turn in conv.turns:
        items: list[dict[str, Any]] = []
        for p in turn.parts:
            if isinstance(p, TextPart):
                items.append({"text": p.text})
            elif isinstance(p, SpeechPart):
                speech: dict[str, Any] = {"content": list(p.content)}
                if p.timbre is not None:
                    speech["timbre"] = [list(layer) for layer in p.timbre]
                items.append({"speech": speech})
            else:
                items.append({"image": {"codes": list(p.codes)}})
        turns.append({"role": turn.role, "content": items})
    out: dict[str, Any] = {"mode": conv.mode, "turns": turns}
    if conv.system is not None:
        out["system"] = conv.system
    return out


def load_conversation(path: str | Path) -> Conversation:
    """Read and validate a conversation JSON file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConversationError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConversationError(f"{p}: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConversationError(
            f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    try:
        return conversation_from_json(data)
    except ConversationError as exc:
        raise ConversationError(f"{p}: {exc}") from None
