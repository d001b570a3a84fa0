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


def test_cut_after_a_complete_block_keeps_the_first_block_whole_and_the_second_content_only(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    """The block boundary: only the open (last) block loses its timbre; the closed one before it and
    the text between the two stay exactly as generated."""
    v = vocab
    first = v.speech_block_ids([1, 2], [[3, 4], [5, 6], [7, 8]])
    body = [
        *text_ids(byte_tokenizer, "a"),
        *first,
        *text_ids(byte_tokenizer, "b"),
        v.spch_start,
        v.speech_id(0, 9),
        v.speech_id(0, 10),
        v.speech_id(1, 11),
    ]
    kept = close_reply(v, body, [v.im_end])
    assert kept == [
        *text_ids(byte_tokenizer, "a"),
        *first,
        *text_ids(byte_tokenizer, "b"),
        v.spch_start,
        v.speech_id(0, 9),
        v.speech_id(0, 10),
        v.spch_end,
    ]
    assert parts_from_ids(v, kept, byte_tokenizer.decode) == (
        TextPart("a"),
        SpeechPart((1, 2), ((3, 4), (5, 6), (7, 8))),
        TextPart("b"),
        SpeechPart((9, 10)),
    )


def test_content_timbre_boundary_is_code_1024(vocab: MioVocab) -> None:
    """Content codes are 0..1023 of layer 0; the first timbre code (layer 1, code 0) is index 1024."""
    v = vocab
    body = [v.spch_start, v.speech_id(0, 0), v.speech_id(0, 1023), v.speech_id(1, 0), v.speech_id(3, 1023)]
    assert close_reply(v, body, [v.im_end]) == [
        v.spch_start,
        v.speech_id(0, 0),
        v.speech_id(0, 1023),
        v.spch_end,
    ]


def test_cut_in_the_first_content_code_keeps_that_code(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    v = vocab
    body = [*text_ids(byte_tokenizer, "xy"), v.spch_start, v.speech_id(0, 42)]
    assert close_reply(v, body, [v.im_end]) == [
        *text_ids(byte_tokenizer, "xy"),
        v.spch_start,
        v.speech_id(0, 42),
        v.spch_end,
    ]


def test_speech_opened_after_text_and_cut_before_any_code_leaves_the_text(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    v = vocab
    body = [*text_ids(byte_tokenizer, "hi"), v.spch_start]
    assert close_reply(v, body, [v.im_end]) == text_ids(byte_tokenizer, "hi")
    # only timbre after the start (cannot happen under the constraint, but nothing undecodable is kept)
    assert close_reply(v, [*body, v.speech_id(2, 5)], [v.im_end]) == text_ids(byte_tokenizer, "hi")


def test_stop_inside_an_open_block_closes_it_and_ignores_the_rest(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    v = vocab
    body = [v.spch_start, v.speech_id(0, 3), v.eos, v.speech_id(0, 4), v.spch_end]
    # any of several stop ids ends the body
    assert close_reply(v, body, [v.im_end, v.eos]) == [v.spch_start, v.speech_id(0, 3), v.spch_end]
    assert close_reply(v, body, []) == body


def test_open_image_after_a_closed_speech_block_drops_only_the_image(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    v = vocab
    speech = v.speech_block_ids([5], [[6], [7], [8]])
    body = [*speech, v.image_start, *[v.image_id(c) for c in range(31)]]
    assert close_reply(v, body, [v.im_end]) == speech
    # a closed image then an open speech block: the image stays
    image = v.image_block_ids(range(32))
    body = [*image, v.spch_start, v.speech_id(0, 1), v.speech_id(1, 2)]
    assert close_reply(v, body, [v.im_end]) == [*image, v.spch_start, v.speech_id(0, 1), v.spch_end]


def test_parts_alternate_text_and_media_without_empty_or_repeated_text(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    v = vocab
    ids = [
        *v.speech_block_ids([1]),
        *v.speech_block_ids([2, 3]),
        *text_ids(byte_tokenizer, "one"),
        *v.image_block_ids(range(32)),
        *text_ids(byte_tokenizer, "two"),
        *v.speech_block_ids([4]),
        *text_ids(byte_tokenizer, "three"),
    ]
    assert parts_from_ids(v, ids, byte_tokenizer.decode) == (
        SpeechPart((1,)),
        SpeechPart((2, 3)),
        TextPart("one"),
        ImagePart(tuple(range(32))),
        TextPart("two"),
        SpeechPart((4,)),
        TextPart("three"),
    )
    assert parts_from_ids(v, [], byte_tokenizer.decode) == ()


def test_common_prefix_stops_at_the_first_difference() -> None:
    assert common_prefix([5, 6, 7], [5, 9, 7]) == 1
    assert common_prefix([1, 2, 3], [1, 2]) == 2
    assert common_prefix([9], [8]) == 0
