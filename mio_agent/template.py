"""MIO's chat templates (std, voice, custom): conversations to the exact prompt text and ids."""

from __future__ import annotations

from collections.abc import Sequence

from mio_agent.conversation import Conversation, ImagePart, Mode, Part, Role, TextPart, Turn
from mio_agent.vocab import (
    BOS,
    IM_END,
    IM_START,
    IMAGE_END,
    IMAGE_START,
    SPCH_END,
    SPCH_START,
    TokenizerLike,
    image_token,
    speech_token,
)

__all__ = [
    "GENERATION_PROMPT",
    "STD_SYSTEM",
    "TURN_SEPARATOR",
    "VOICE_SYSTEM",
    "encode_text",
    "image_text",
    "prompt_ids",
    "prompt_segments",
    "render_body",
    "render_prompt",
    "speech_text",
    "system_prompt",
    "system_segment",
    "turn_segment",
]

VOICE_SYSTEM = (
    "You are MIO, an AI assistant capable of understanding images, text, videos, and speech, and "
    "generating speech. Please respond to the user with speech only, starting with <spch> and ending "
    "with </spch>."
)
STD_SYSTEM = (
    "You are MIO, an AI assistant capable of understanding and generating images, text, videos, and "
    "speech, selecting the appropriate modality according to the context."
)
TURN_SEPARATOR = "\n"
GENERATION_PROMPT = f"{IM_START}assistant\n"


def system_prompt(mode: Mode, system: str | None = None) -> str:
    """The system prompt text of a mode (custom: the given one)."""
    if mode == "voice":
        return VOICE_SYSTEM
    if mode == "std":
        return STD_SYSTEM
    if system is None:
        raise ValueError("custom mode needs a system prompt")
    return system


def image_text(codes: Sequence[int]) -> str:
    """`<image><imgA>…</image>`: one image block as token text."""
    return IMAGE_START + "".join(image_token(c) for c in codes) + IMAGE_END


def speech_text(content: Sequence[int], timbre: Sequence[Sequence[int]] | None = None) -> str:
    """`<spch>` content [timbre0 timbre1 timbre2] `</spch>` as token text, parts back to back."""
    body = "".join(speech_token(0, c) for c in content)
    if timbre is not None:
        body += "".join(speech_token(layer, c) for layer, codes in enumerate(timbre, start=1) for c in codes)
    return SPCH_START + body + SPCH_END


def _part_text(part: Part, role: Role) -> str:
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ImagePart):
        return image_text(part.codes)
    # MIO saw user speech as content codes only and its own speech in four parts; an assistant
    # block without timbre (a reply cut short by an interruption) stays content-only.
    timbre = part.timbre if role == "assistant" else None
    return speech_text(part.content, timbre)


def render_body(parts: Sequence[Part], role: Role) -> str:
    """A turn's content: its parts' text back to back, media as token blocks in place."""
    return "".join(_part_text(p, role) for p in parts)


def system_segment(mode: Mode, system: str | None = None) -> str:
    """The prompt's first segment: the one BOS and the system block with its separator."""
    return f"{BOS}{IM_START}system\n{system_prompt(mode, system)}{IM_END}{TURN_SEPARATOR}"


def turn_segment(turn: Turn, *, last: bool = False) -> str:
    """One turn's block; every turn ends with the separator except the last without a generation prompt."""
    sep = "" if last else TURN_SEPARATOR
    return f"{IM_START}{turn.role}\n{render_body(turn.parts, turn.role)}{IM_END}{sep}"


def prompt_segments(conv: Conversation, *, generation_prompt: bool = True) -> list[str]:
    """The prompt split where the engine caches: system, one per turn, then the generation prompt."""
    segs = [system_segment(conv.mode, conv.system)]
    n = len(conv.turns)
    for i, turn in enumerate(conv.turns):
        segs.append(turn_segment(turn, last=(not generation_prompt and i == n - 1)))
    if generation_prompt:
        segs.append(GENERATION_PROMPT)
    elif n == 0:
        # the reference strips the trailing separator when no generation prompt follows
        segs[0] = segs[0][: -len(TURN_SEPARATOR)]
    return segs


def render_prompt(conv: Conversation, *, generation_prompt: bool = True) -> str:
    """The exact prompt text MIO was trained on, with exactly one BOS."""
    return "".join(prompt_segments(conv, generation_prompt=generation_prompt))


def encode_text(tokenizer: TokenizerLike, text: str) -> list[int]:
    """Ids of prompt text; special and code tokens inside it map to their own ids, no BOS is added."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def prompt_ids(conv: Conversation, tokenizer: TokenizerLike, *, generation_prompt: bool = True) -> list[int]:
    """Ids of the whole prompt, tokenized in one call as the reference does (but with one BOS)."""
    return encode_text(tokenizer, render_prompt(conv, generation_prompt=generation_prompt))
