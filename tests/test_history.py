"""What a reply becomes in the history: closed blocks, delivered content kept, parts read back."""

from __future__ import annotations

from mio_agent.conversation import ImagePart, SpeechPart, TextPart
from mio_agent.history import close_reply, common_prefix, parts_from_ids
from mio_agent.vocab import MioVocab
from tests._vocab import ByteTokenizer


def text_ids(tok: ByteTokenizer, s: str) -> list[int]:
    return tok.encode(s, add_special_tokens=False)


def test_cut_in_timbre_phase_keeps_only_the_content(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    v = vocab
    body = [
        *text_ids(byte_tokenizer, "ok "),
        v.spch_start,
        v.speech_id(0, 5),
        v.speech_id(0, 6),
        v.speech_id(1, 7),
    ]
    kept = close_reply(v, body, [v.im_end])
    assert kept == [
        *text_ids(byte_tokenizer, "ok "),
        v.spch_start,
        v.speech_id(0, 5),
        v.speech_id(0, 6),
        v.spch_end,
    ]
    parts = parts_from_ids(v, kept, byte_tokenizer.decode)
    assert parts == (TextPart("ok "), SpeechPart((5, 6)))


def test_open_image_is_dropped_and_stop_stripped(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    v = vocab
    image = [v.image_start, *[v.image_id(c) for c in range(32)], v.image_end]
    body = [*image, *text_ids(byte_tokenizer, "é"), v.image_start, v.image_id(1), v.image_id(2)]
    kept = close_reply(v, body, [v.im_end])
    assert kept == [*image, *text_ids(byte_tokenizer, "é")]
    assert parts_from_ids(v, kept, byte_tokenizer.decode) == (ImagePart(tuple(range(32))), TextPart("é"))
    assert close_reply(
        v, [*text_ids(byte_tokenizer, "a"), v.im_end, v.speech_id(0, 1)], [v.im_end]
    ) == text_ids(byte_tokenizer, "a")


def test_complete_four_part_block_reads_back_with_timbre(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    v = vocab
    body = [v.spch_start, *[v.speech_id(layer, 10 + layer) for layer in range(4)], v.spch_end, v.im_end]
    kept = close_reply(v, body, [v.im_end])
    assert parts_from_ids(v, kept, byte_tokenizer.decode) == (SpeechPart((10,), ((11,), (12,), (13,))),)


def test_speech_cut_before_any_code_leaves_nothing(vocab: MioVocab) -> None:
    assert close_reply(vocab, [vocab.spch_start], [vocab.im_end]) == []


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2
