"""StreamParser: text deltas, streamed speech codes, whole blocks, and typed reports of bad output."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mio_agent.parser import (
    Finished,
    FinishReason,
    ImageBlock,
    ImageStarted,
    Malformed,
    ParserEvent,
    SpeechBlock,
    SpeechContent,
    SpeechStarted,
    SpeechTimbre,
    StreamParser,
    TextDelta,
    Truncated,
)
from mio_agent.vocab import MioVocab, TokenKind
from tests._vocab import BYTE_OFFSET, ByteTokenizer, byte_ids


def parser(vocab: MioVocab, tok: ByteTokenizer) -> StreamParser:
    return StreamParser(vocab, lambda ids: tok.decode(ids, skip_special_tokens=False))


def run(
    vocab: MioVocab, tok: ByteTokenizer, ids: Sequence[int], end: FinishReason | None = "length"
) -> list[ParserEvent]:
    p = parser(vocab, tok)
    events: list[ParserEvent] = []
    for tid in ids:
        events.extend(p.feed(tid))
    if end is not None:
        events.extend(p.finish(end))
    assert p.tokens_delivered == len(ids)
    return events


def text_of(events: Sequence[ParserEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def speech_ids(vocab: MioVocab, layers: Sequence[Sequence[int]]) -> list[int]:
    return [vocab.speech_id(layer, c) for layer, codes in enumerate(layers) for c in codes]


def non_text(events: Sequence[ParserEvent]) -> list[ParserEvent]:
    return [e for e in events if not isinstance(e, TextDelta)]


# -- well-formed output -------------------------------------------------------------------------
def test_text_speech_image_and_stop(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    content, t0, t1, t2 = [5, 6, 7], [1, 2, 3], [1023, 0, 9], [4, 4, 4]
    img = list(range(100, 132))
    ids = [
        *byte_ids("Hi "),
        *vocab.speech_block_ids(content, [t0, t1, t2]),
        *byte_ids(" and "),
        *vocab.image_block_ids(img),
        *byte_ids("."),
        vocab.im_end,
    ]
    events = run(vocab, byte_tokenizer, ids, end=None)
    assert text_of(events) == "Hi  and ."
    assert non_text(events) == [
        SpeechStarted(),
        *(SpeechContent((c,)) for c in content),
        *(SpeechTimbre(1, (c,)) for c in t0),
        *(SpeechTimbre(2, (c,)) for c in t1),
        *(SpeechTimbre(3, (c,)) for c in t2),
        SpeechBlock(tuple(content), (tuple(t0), tuple(t1), tuple(t2))),
        ImageStarted(),
        ImageBlock(tuple(img)),
        Finished("stop"),
    ]
    # text before a block is delivered before the block starts
    assert events.index(SpeechStarted()) > max(
        i for i, e in enumerate(events[:10]) if isinstance(e, TextDelta)
    )


def test_content_only_speech_block(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    events = run(vocab, byte_tokenizer, vocab.speech_block_ids([1, 2, 1023]))
    assert events[-2:] == [SpeechBlock((1, 2, 1023), None), Finished("length")]


def test_eos_also_stops_and_later_ids_are_reported(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    p = parser(vocab, byte_tokenizer)
    assert p.feed(vocab.eos) == [Finished("stop")]
    assert p.feed(byte_ids("x")[0]) == [
        Malformed("id after the end of the reply (stop)", (byte_ids("x")[0],))
    ]
    assert p.finish("length") == []
    assert p.tokens_delivered == 2


def test_custom_stop_ids(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    p = StreamParser(vocab, byte_tokenizer.decode, stop_ids=[vocab.im_end])
    events = p.feed(vocab.eos)
    assert len(events) == 1 and isinstance(events[0], Malformed) and events[0].token_ids == (vocab.eos,)
    assert p.feed(vocab.im_end) == [Finished("stop")]


# -- text decoding ------------------------------------------------------------------------------
def test_multibyte_characters_are_held_until_complete(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    p = parser(vocab, byte_tokenizer)
    zhong = byte_ids("中")  # three bytes
    assert p.feed(byte_ids("a")[0]) == [TextDelta("a")]
    assert p.feed(zhong[0]) == []
    assert p.feed(zhong[1]) == []
    assert p.feed(zhong[2]) == [TextDelta("中")]
    emoji = byte_ids("🎉")
    out = [e for tid in emoji for e in p.feed(tid)]
    assert out == [TextDelta("🎉")]


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=0, max_size=30))
def test_any_text_decodes_exactly(vocab: MioVocab, byte_tokenizer: ByteTokenizer, text: str) -> None:
    events = run(vocab, byte_tokenizer, [*byte_ids(text), vocab.im_end], end=None)
    assert text_of(events) == text
    # no delta ever carries half a character
    assert all("\ufffd" not in e.text for e in events if isinstance(e, TextDelta)) or "\ufffd" in text


def test_a_run_of_invalid_bytes_is_not_held_forever(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    p = parser(vocab, byte_tokenizer)
    junk = [e for _ in range(20) for e in p.feed(byte_ids("x")[0] - ord("x") + 0xFF)]
    assert "".join(e.text for e in junk if isinstance(e, TextDelta)).startswith("\ufffd" * 9)
    rest = [*p.feed(byte_ids("a")[0]), *p.finish("length")]
    assert text_of([*junk, *rest]) == "\ufffd" * 20 + "a"


def test_incomplete_character_is_flushed_at_a_block_and_at_the_end(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    cut = byte_ids("é")[:1]
    events = run(vocab, byte_tokenizer, [*byte_ids("x"), *cut, vocab.spch_start])
    assert text_of(events) == "x\ufffd"
    assert events.index(SpeechStarted()) > events.index(TextDelta("\ufffd"))
    events = run(vocab, byte_tokenizer, [*byte_ids("y"), *cut], end="cancelled")
    assert events == [TextDelta("y"), TextDelta("\ufffd"), Finished("cancelled")]


def test_broken_bytes_do_not_merge_across_a_block(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    zhong = byte_ids("中")
    ids = [zhong[0], *vocab.image_block_ids([0] * 32), *zhong[1:]]
    events = run(vocab, byte_tokenizer, ids)
    assert text_of(events) == "\ufffd\ufffd\ufffd"


def test_unk_is_dropped_even_inside_a_character_and_a_block(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    zhong = byte_ids("中")
    ids = [
        zhong[0],
        vocab.unk,
        *zhong[1:],
        vocab.spch_start,
        vocab.speech_id(0, 3),
        vocab.unk,
        vocab.spch_end,
    ]
    events = run(vocab, byte_tokenizer, ids)
    assert text_of(events) == "中"
    assert SpeechBlock((3,), None) in events
    assert not any(isinstance(e, Malformed) for e in events)


def test_leading_space_survives_a_block_with_a_sentencepiece_style_decoder(vocab: MioVocab) -> None:
    """A SentencePiece decoder drops the first token's leading space; text after a block keeps it."""
    from tokenizers import Tokenizer, decoders, models

    words = {"<unk>": 0, "▁Hello": 8, "▁world": 9, "▁again": 10, "!": 11}
    sp = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    sp.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    p = StreamParser(vocab, lambda ids: str(sp.decode(list(ids))))
    ids = [8, 9, *vocab.speech_block_ids([1]), 10, 11, vocab.im_end]
    events = [e for tid in ids for e in p.feed(tid)]
    assert text_of(events) == "Hello world again!"


# -- malformed speech blocks --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("layers", "reason"),
    [
        ([[1, 2], [1, 2], [1, 2], [1]], "differ in length"),
        ([[1, 2], [1], [1, 2], [1, 2]], "timbre1 starts after 1 timbre0 codes"),
        ([[1, 2], [1, 2], [1, 2]], "after 3 of 4 parts"),
        ([[1, 2], [1, 2]], "after 2 of 4 parts"),
        ([[1], [1, 2]], "longer than the 1 content"),
        ([[], [1]], "expected at least 1"),
        ([[1], [], [1], [1]], "out of order"),
    ],
)
def test_speech_blocks_with_bad_parts(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer, layers: list[list[int]], reason: str
) -> None:
    block = [vocab.spch_start, *speech_ids(vocab, layers), vocab.spch_end]
    events = run(vocab, byte_tokenizer, block)
    bad = [e for e in events if isinstance(e, Malformed)]
    assert len(bad) == 1 and reason in bad[0].reason
    assert bad[0].token_ids == tuple(block)
    assert not any(isinstance(e, SpeechBlock) for e in events)


def test_parts_in_wrong_order_stop_streaming_codes(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    block = [
        vocab.spch_start,
        vocab.speech_id(0, 1),
        vocab.speech_id(1, 2),
        vocab.speech_id(0, 3),  # content after timbre0
        vocab.speech_id(1, 4),
        vocab.spch_end,
    ]
    events = run(vocab, byte_tokenizer, block)
    assert events[:3] == [SpeechStarted(), SpeechContent((1,)), SpeechTimbre(1, (2,))]
    assert isinstance(events[3], Malformed) and "out of order" in events[3].reason
    assert events[3].token_ids == tuple(block)
    assert events[4:] == [Finished("length")]


def test_empty_speech_block(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    events = run(vocab, byte_tokenizer, [vocab.spch_start, vocab.spch_end])
    assert events[1] == Malformed("empty speech block", (vocab.spch_start, vocab.spch_end))


@pytest.mark.parametrize("intruder", ["text", "image_code", "image_end", "im_start", "bos", "placeholder"])
def test_foreign_token_inside_speech_block(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer, intruder: str
) -> None:
    tid = {
        "text": byte_ids("a")[0],
        "image_code": vocab.image_id(7),
        "image_end": vocab.image_end,
        "im_start": vocab.im_start,
        "bos": vocab.bos,
        "placeholder": vocab.spch_placeholder,
    }[intruder]
    block = [
        vocab.spch_start,
        vocab.speech_id(0, 1),
        tid,
        *speech_ids(vocab, [[], [1], [1], [1]]),
        vocab.spch_end,
    ]
    events = run(vocab, byte_tokenizer, block)
    bad = [e for e in events if isinstance(e, Malformed)]
    assert len(bad) == 1 and "inside a speech block" in bad[0].reason
    assert bad[0].token_ids == tuple(block)
    assert text_of(events) == ""


# -- malformed image blocks ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 31, 33])
def test_image_block_with_wrong_count(vocab: MioVocab, byte_tokenizer: ByteTokenizer, n: int) -> None:
    block = [vocab.image_start, *(vocab.image_id(c) for c in range(n)), vocab.image_end]
    events = run(vocab, byte_tokenizer, block)
    assert events[0] == ImageStarted()
    assert events[1] == Malformed(f"image block holds {n} codes, not 32", tuple(block))


def test_speech_code_inside_image_block(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    block = [
        vocab.image_start,
        *(vocab.image_id(c) for c in range(32)),
        vocab.speech_id(0, 1),
        vocab.image_end,
    ]
    events = run(vocab, byte_tokenizer, block)
    assert isinstance(events[1], Malformed) and "speech code inside an image block" in events[1].reason
    assert events[1].token_ids == tuple(block)


# -- nesting, strays, truncation ----------------------------------------------------------------
def test_nested_block_abandons_the_open_one(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    first = [vocab.spch_start, vocab.speech_id(0, 1)]
    image = vocab.image_block_ids(list(range(32)))
    events = run(vocab, byte_tokenizer, [*first, *image])
    assert events[:2] == [SpeechStarted(), SpeechContent((1,))]
    bad = events[2]
    assert isinstance(bad, Malformed) and bad.token_ids == tuple(first)
    assert "interrupted by <image>" in bad.reason
    assert events[3:] == [ImageStarted(), ImageBlock(tuple(range(32))), Finished("length")]


def test_speech_inside_speech(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    ids = [vocab.spch_start, vocab.spch_start, vocab.speech_id(0, 9), vocab.spch_end]
    events = run(vocab, byte_tokenizer, ids)
    assert events[1] == Malformed("speech block interrupted by <spch> before its end", (vocab.spch_start,))
    assert events[2:] == [SpeechStarted(), SpeechContent((9,)), SpeechBlock((9,), None), Finished("length")]


@pytest.mark.parametrize("which", ["spch_end", "image_end", "speech_code", "image_code", "im_start", "bos"])
def test_stray_ids_outside_blocks(vocab: MioVocab, byte_tokenizer: ByteTokenizer, which: str) -> None:
    tid = {
        "spch_end": vocab.spch_end,
        "image_end": vocab.image_end,
        "speech_code": vocab.speech_id(2, 5),
        "image_code": vocab.image_id(5),
        "im_start": vocab.im_start,
        "bos": vocab.bos,
    }[which]
    events = run(vocab, byte_tokenizer, [*byte_ids("ab"), tid, *byte_ids("c")])
    bad = events[2]
    assert isinstance(bad, Malformed) and bad.token_ids == (tid,)
    assert events[:2] + events[3:] == [TextDelta("a"), TextDelta("b"), TextDelta("c"), Finished("length")]


@pytest.mark.parametrize("reason", ["length", "cancelled"])
def test_truncated_mid_speech_block(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer, reason: FinishReason
) -> None:
    ids = [vocab.spch_start, *speech_ids(vocab, [[1, 2], [3]])]
    events = run(vocab, byte_tokenizer, ids, end=reason)
    assert events[-2:] == [Truncated(reason, "speech", tuple(ids)), Finished(reason)]


def test_truncated_mid_image_block(vocab: MioVocab, byte_tokenizer: ByteTokenizer) -> None:
    ids = [vocab.image_start, vocab.image_id(1)]
    assert run(vocab, byte_tokenizer, ids)[-2:] == [
        Truncated("length", "image", tuple(ids)),
        Finished("length"),
    ]


def test_stop_inside_a_block_reports_the_partial_block(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    ids = [vocab.spch_start, vocab.speech_id(0, 4)]
    events = run(vocab, byte_tokenizer, [*ids, vocab.im_end], end=None)
    assert events[-2:] == [Truncated("stop", "speech", tuple(ids)), Finished("stop")]


# -- nothing lost -------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_streams_never_raise_and_lose_nothing(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer, data: st.DataObject
) -> None:
    """Every fed id is accounted for: in text, in a block's codes or markers, or in a report."""
    pool = st.one_of(
        st.sampled_from(
            [vocab.spch_start, vocab.spch_end, vocab.image_start, vocab.image_end, vocab.im_start, vocab.bos]
        ),
        st.builds(lambda c: vocab.speech_ids[c], st.integers(0, 4095)),
        st.builds(lambda c: vocab.image_ids[c], st.integers(0, 8191)),
        st.builds(lambda b: byte_ids("x")[0] - ord("x") + b, st.integers(0, 127)),
    )
    ids = data.draw(st.lists(pool, max_size=60))
    events = run(vocab, byte_tokenizer, ids)
    assert isinstance(events[-1], Finished)
    accounted = 0
    text_in_reports = 0
    for e in events:
        if isinstance(e, Malformed | Truncated):
            accounted += len(e.token_ids)
            text_in_reports += sum(vocab.kind(t)[0] is TokenKind.TEXT for t in e.token_ids)
        elif isinstance(e, SpeechBlock):
            accounted += 2 + len(e.content) * (1 if e.timbre is None else 4)
        elif isinstance(e, ImageBlock):
            accounted += 34
    # the text ids are ASCII bytes, one character each
    text = text_of(events)
    assert len(text) == sum(vocab.kind(t)[0] is TokenKind.TEXT for t in ids) - text_in_reports
    assert accounted + len(text) == len(ids)


# -- exact reasons ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("spch_end", "</spch> outside a speech block"),
        ("image_end", "</image> outside an image block"),
        ("speech_code", "speech code outside a speech block"),
        ("image_code", "image code outside an image block"),
        ("im_start", "im_start token is not allowed in a reply"),
        ("bos", "bos token is not allowed in a reply"),
        ("placeholder", "placeholder token is not allowed in a reply"),
    ],
)
def test_stray_reasons_are_exact(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer, which: str, reason: str
) -> None:
    tid = {
        "spch_end": vocab.spch_end,
        "image_end": vocab.image_end,
        "speech_code": vocab.speech_id(0, 5),
        "image_code": vocab.image_id(5),
        "im_start": vocab.im_start,
        "bos": vocab.bos,
        "placeholder": vocab.img_placeholder,
    }[which]
    assert run(vocab, byte_tokenizer, [tid]) == [Malformed(reason, (tid,)), Finished("length")]


@pytest.mark.parametrize(
    ("block", "intruder", "reason"),
    [
        ("speech", "text", "text token inside a speech block"),
        ("speech", "image_code", "image code inside a speech block"),
        ("speech", "image_end", "</image> inside a speech block"),
        ("speech", "bos", "bos token inside a speech block"),
        ("image", "text", "text token inside an image block"),
        ("image", "speech_code", "speech code inside an image block"),
        ("image", "spch_end", "</spch> inside an image block"),
        ("image", "im_start", "im_start token inside an image block"),
    ],
)
def test_foreign_reasons_are_exact(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer, block: str, intruder: str, reason: str
) -> None:
    tid = {
        "text": byte_ids("a")[0],
        "image_code": vocab.image_id(7),
        "speech_code": vocab.speech_id(0, 7),
        "image_end": vocab.image_end,
        "spch_end": vocab.spch_end,
        "im_start": vocab.im_start,
        "bos": vocab.bos,
    }[intruder]
    if block == "speech":
        ids = [vocab.spch_start, vocab.speech_id(0, 1), tid, vocab.spch_end]
    else:
        ids = [vocab.image_start, vocab.image_id(1), tid, vocab.image_end]
    bad = [e for e in run(vocab, byte_tokenizer, ids) if isinstance(e, Malformed)]
    assert bad == [Malformed(reason, tuple(ids))]


@pytest.mark.parametrize(
    ("layers", "reason"),
    [
        ([[1, 2], [1], [1, 2], [1, 2]], "speech part timbre1 starts after 1 timbre0 codes; expected 2"),
        ([[], [1]], "speech part timbre0 starts after 0 content codes; expected at least 1"),
        ([[1], [1], [], [1]], "speech part timbre2 after timbre0: parts out of order"),
        ([[1], [1, 2]], "speech part timbre0 is longer than the 1 content codes"),
        ([[1, 2], [1, 2], [1, 2]], "speech block ends after 3 of 4 parts"),
        ([[1, 2], [1, 2], [1, 2], [1]], "speech parts differ in length: [2, 2, 2, 1]"),
    ],
)
def test_speech_part_reasons_are_exact(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer, layers: list[list[int]], reason: str
) -> None:
    block = [vocab.spch_start, *speech_ids(vocab, layers), vocab.spch_end]
    bad = [e for e in run(vocab, byte_tokenizer, block) if isinstance(e, Malformed)]
    assert bad == [Malformed(reason, tuple(block))]


def test_finish_records_its_reason_and_later_ids_are_reported(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    p = parser(vocab, byte_tokenizer)
    assert p.finished is None
    assert p.finish("cancelled") == [Finished("cancelled")]
    assert p.finished == "cancelled"
    assert p.finish("length") == []
    tid = byte_ids("x")[0]
    assert p.feed(tid) == [Malformed("id after the end of the reply (cancelled)", (tid,))]


def test_a_run_of_invalid_bytes_is_released_after_eight_held_ids(
    vocab: MioVocab, byte_tokenizer: ByteTokenizer
) -> None:
    p = parser(vocab, byte_tokenizer)
    bad = BYTE_OFFSET + 0xFF  # the byte 0xFF is never part of UTF-8
    assert [p.feed(bad) for _ in range(8)] == [[]] * 8
    assert p.feed(bad) == [TextDelta("\ufffd" * 9)]


# SentencePiece-like pieces over byte ids 8..11: a leading "▁" is a space, dropped at the start of a
# decode; id 12 is a piece that decodes to nothing (e.g. a byte-fallback piece on its own)
_PIECES = {8: "▁Hello", 9: "▁world", 10: "▁again", 11: "!", 12: ""}


def _sp_decode(ids: Sequence[int]) -> str:
    text = "".join(_PIECES[i] for i in ids).replace("▁", " ")
    return text[1:] if text.startswith(" ") else text


def test_an_id_that_decodes_to_nothing_keeps_the_context_of_the_next_word(vocab: MioVocab) -> None:
    p = StreamParser(vocab, _sp_decode)
    events = [e for tid in (8, 12, 10, 11) for e in p.feed(tid)]
    assert text_of(events) == "Hello again!"


def test_context_kept_across_a_block_after_an_id_that_decodes_to_nothing(vocab: MioVocab) -> None:
    p = StreamParser(vocab, _sp_decode)
    ids = [8, 9, 12, *vocab.speech_block_ids([1]), 10, 11, vocab.im_end]
    events = [e for tid in ids for e in p.feed(tid)]
    assert text_of(events) == "Hello world again!"
    assert SpeechBlock((1,), None) in events
