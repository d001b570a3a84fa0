"""Golden prompts: the exact text MIO was trained on, for every mode and mixed-media multi-turn."""

from __future__ import annotations

import pytest

from mio_agent.conversation import Conversation, ImagePart, SpeechPart, TextPart, Turn, conversation_from_json
from mio_agent.template import (
    GENERATION_PROMPT,
    encode_text,
    prompt_ids,
    prompt_segments,
    render_prompt,
    system_prompt,
    turn_segment,
)
from tests._vocab import ByteTokenizer, byte_ids

VOICE = (
    "You are MIO, an AI assistant capable of understanding images, text, videos, and speech, and generating "
    "speech. Please respond to the user with speech only, starting with <spch> and ending with </spch>."
)
STD = (
    "You are MIO, an AI assistant capable of understanding and generating images, text, videos, and speech, "
    "selecting the appropriate modality according to the context."
)
IMG = list(range(100, 132))
IMG_TEXT = "<image>" + "".join(f"<img{c}>" for c in IMG) + "</image>"


def test_voice_tts_prompt_is_byte_exact() -> None:
    query = (
        "The transcription is ``Hello there''. Please generate a speech according to the given transcription. "
        "Start with <spch>."
    )
    conv = Conversation("voice", (Turn("user", (TextPart(query),)),))
    expected = (
        "<|startoftext|><|im_start|>system\n" + VOICE + "<|im_end|>\n"
        "<|im_start|>user\n" + query + "<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_prompt(conv) == expected


def test_std_prompt_and_no_generation_prompt() -> None:
    conv = Conversation("std", (Turn("user", (TextPart("Hi"),)), Turn("assistant", (TextPart("Hello!"),))))
    assert render_prompt(conv, generation_prompt=False) == (
        "<|startoftext|><|im_start|>system\n" + STD + "<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>"
    )
    assert render_prompt(conv).endswith("<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n")


def test_custom_mode_uses_given_system_prompt() -> None:
    conv = Conversation("custom", (Turn("user", (TextPart("q"),)),), system="Be brief.")
    assert render_prompt(conv) == (
        "<|startoftext|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    )


def test_multi_turn_mixed_media_user_speech_content_only_assistant_four_parts() -> None:
    conv = conversation_from_json(
        {
            "mode": "voice",
            "turns": [
                {
                    "role": "user",
                    "content": [
                        {"text": "Please transcribe this speech.\n"},
                        # timbre on a user turn is dropped: MIO reads user speech as content codes
                        {"speech": {"content": [12, 873], "timbre": [[1, 1], [2, 2], [3, 3]]}},
                        {"image": {"codes": IMG}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"speech": {"content": [1, 2], "timbre": [[3, 4], [5, 6], [7, 8]]}}],
                },
                {"role": "user", "content": [{"text": "again"}]},
            ],
        }
    )
    assert render_prompt(conv) == (
        "<|startoftext|><|im_start|>system\n" + VOICE + "<|im_end|>\n"
        "<|im_start|>user\nPlease transcribe this speech.\n<spch><spch12><spch873></spch>"
        + IMG_TEXT
        + "<|im_end|>\n"
        "<|im_start|>assistant\n<spch><spch1><spch2><spch1027><spch1028><spch2053><spch2054><spch3079><spch3080>"
        "</spch><|im_end|>\n"
        "<|im_start|>user\nagain<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_exactly_one_bos_and_segments_join_to_prompt() -> None:
    conv = Conversation(
        "std",
        (
            Turn("user", (TextPart("a"), ImagePart(tuple(IMG)))),
            Turn("assistant", (SpeechPart((5,)),)),
        ),
    )
    for gen in (True, False):
        text = render_prompt(conv, generation_prompt=gen)
        assert text.count("<|startoftext|>") == 1
        assert "".join(prompt_segments(conv, generation_prompt=gen)) == text
    # an interrupted assistant reply kept as content codes renders content-only
    assert "<spch><spch5></spch>" in render_prompt(conv)


def test_empty_conversation_without_generation_prompt_ends_at_system_block() -> None:
    assert render_prompt(Conversation("std"), generation_prompt=False) == (
        "<|startoftext|><|im_start|>system\n" + STD + "<|im_end|>"
    )


def test_defaults_end_with_the_generation_prompt_and_every_turn_with_the_separator() -> None:
    turn = Turn("user", (TextPart("q"),))
    conv = Conversation("std", (turn,))
    assert prompt_segments(conv)[-1] == GENERATION_PROMPT
    assert prompt_segments(conv)[1] == "<|im_start|>user\nq<|im_end|>\n"
    assert turn_segment(turn) == "<|im_start|>user\nq<|im_end|>\n"
    assert turn_segment(turn, last=True) == "<|im_start|>user\nq<|im_end|>"


def test_custom_mode_without_a_system_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^custom mode needs a system prompt$"):
        system_prompt("custom")
    assert system_prompt("custom", "Be brief.") == "Be brief."


def test_prompt_ids_tokenize_the_whole_prompt_once_without_a_second_bos(
    byte_tokenizer: ByteTokenizer,
) -> None:
    tok = byte_tokenizer
    conv = Conversation("custom", (Turn("user", (TextPart("hé"), SpeechPart((7,)))),), system="S")
    ids = prompt_ids(conv, tok)
    # specials and codes map to their own ids; the one BOS is the prompt's own, none is added
    assert ids == [
        tok.convert_tokens_to_ids("<|startoftext|>"),
        tok.convert_tokens_to_ids("<|im_start|>"),
        *byte_ids("system\nS"),
        tok.convert_tokens_to_ids("<|im_end|>"),
        *byte_ids("\n"),
        tok.convert_tokens_to_ids("<|im_start|>"),
        *byte_ids("user\nhé"),
        tok.convert_tokens_to_ids("<spch>"),
        tok.convert_tokens_to_ids("<spch7>"),
        tok.convert_tokens_to_ids("</spch>"),
        tok.convert_tokens_to_ids("<|im_end|>"),
        *byte_ids("\n"),
        tok.convert_tokens_to_ids("<|im_start|>"),
        *byte_ids("assistant\n"),
    ]
    assert prompt_ids(conv, tok, generation_prompt=False) == ids[: -1 - len("assistant\n") - 1]
    # the engine encodes segment by segment: the same ids
    assert [i for seg in prompt_segments(conv) for i in encode_text(tok, seg)] == ids
    assert encode_text(tok, "") == []
