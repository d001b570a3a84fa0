"""LlamaTokenizerCompat gives exactly the ids of transformers 4.34's slow LlamaTokenizer (MIO's reference).

The folders and ids under data/sp_tokenizers/ were made by make_tokenizer_goldens.py with
transformers 4.34.0: tiny sentencepiece BPE models with Yi's layout, saved by 4.34's
`save_pretrained`, tokenized by `LlamaTokenizer.from_pretrained(folder)` as MIO's reference does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mio_agent.cli.doctor_cmd import _tokenizer as doctor_tokenizer_checks
from mio_agent.model.loading import load_tokenizer, tokenizer_implementation
from mio_agent.model.sp_tokenizer import IMPLEMENTATION, LlamaTokenizerCompat
from mio_agent.template import prompt_ids, prompt_segments
from mio_agent.vocab import IMAGE_CODES, MioVocab
from tests.model.make_tokenizer_goldens import CJK, DIGITS, EMOJI, ENGLISH, PARTIAL, SPACES, TOKENS, VARIANTS
from tests.test_template import IMG

DATA = Path(__file__).resolve().parent / "data" / "sp_tokenizers"
STRINGS: dict[str, list[str]] = json.loads((DATA / "strings.json").read_text(encoding="utf-8"))
ALL = STRINGS["prompts"] + STRINGS["random"]
# Yi's setting (no dummy prefix, legacy: true): every piece starting with <|im_start|> encodes alone
# as it does inside the whole prompt, which the engine's per-turn encoding relies on
SEGMENTABLE = [n for n, v in VARIANTS.items() if v["model"] == "yi" and v["legacy"]]


def concat(parts: Iterable[list[int]]) -> list[int]:
    return list(chain.from_iterable(parts))


@cache
def tok(name: str) -> LlamaTokenizerCompat:
    return LlamaTokenizerCompat.from_pretrained(DATA / name)


@cache
def golden(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name / "golden_ids.json").read_text(encoding="utf-8"))
    return data


def test_goldens_are_small_and_complete() -> None:
    assert {p.name for p in DATA.iterdir() if p.is_dir()} == set(VARIANTS)
    assert sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file()) < 2_000_000
    assert len(STRINGS["random"]) == 200
    for name in VARIANTS:
        g = golden(name)
        assert g["transformers"] == "4.34.0"
        assert len(g["ids"]) == len(g["ids_no_special"]) == len(ALL)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_golden_string_gives_the_reference_ids(name: str) -> None:
    t, g = tok(name), golden(name)
    assert len(t) == g["len"]
    for text, ids, plain in zip(ALL, g["ids"], g["ids_no_special"], strict=True):
        assert t.encode(text, add_special_tokens=False) == plain, text
        # MIO's reference call: tokenizer(text) with the default add_special_tokens=True
        assert t.encode(text) == ids, text
        assert t(text)["input_ids"] == ids


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_bos_follows_the_folder_config(name: str) -> None:
    t = tok(name)
    config = json.loads((DATA / name / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert t.add_bos_token is config["add_bos_token"] is VARIANTS[name]["bos"]
    assert (t.bos_token_id, t.eos_token_id, t.unk_token_id, t.pad_token_id) == (1, 2, 0, 0)
    assert t.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [6, 7]
    text = "<|startoftext|><|im_start|>user\nHi<|im_end|>"
    plain = t.encode(text, add_special_tokens=False)
    # a dummy prefix puts a "▁" before <|im_start|> (a sentencepiece piece, not an added token)
    assert plain[0] == 1 and plain.count(1) == 1
    assert plain[1:2] == [6] if VARIANTS[name]["model"] == "yi" else 6 in plain[1:3]
    # Yi and MIO: add_bos_token false, so the reference's BOS is the one written as text
    assert t.encode(text) == ([1, *plain] if t.add_bos_token else plain)


def test_full_layout_gives_mio_vocab_and_prompt_ids() -> None:
    t = tok("yi_legacy_added_full")
    vocab = MioVocab.from_tokenizer(t)
    base = t.vocab_size
    assert (vocab.spch_placeholder, vocab.spch_end, vocab.img_placeholder) == (base, base + 1, base + 2)
    assert (vocab.spch_start, vocab.image_end, vocab.image_start) == (base + 3, base + 4, base + 5)
    assert vocab.image_ids[0] == base + 6 and vocab.speech_ids[0] == base + 6 + IMAGE_CODES
    assert (vocab.bos, vocab.eos, vocab.im_start, vocab.im_end, vocab.unk) == (1, 2, 6, 7, 0)
    assert len(t) == base + 6 + 8192 + 4096
    assert t.convert_ids_to_tokens([vocab.speech_ids[4095], 6]) == ["<spch4095>", "<|im_start|>"]


@pytest.mark.parametrize("name", SEGMENTABLE)
def test_reference_ids_of_whole_prompts_equal_their_segments(name: str) -> None:
    ids = dict(zip(ALL, golden(name)["ids_no_special"], strict=True))
    whole = [s for s in STRINGS["prompts"] if s.startswith("<|startoftext|>") and s.count("<|im_start|>") > 1]
    assert len(whole) >= 10
    for text in whole:
        head, *rest = text.split("<|im_start|>")[1:]
        segments = ["<|startoftext|><|im_start|>" + head] + ["<|im_start|>" + r for r in rest]
        assert concat(ids[s] for s in segments) == ids[text]
        assert concat(tok(name).encode(s, add_special_tokens=False) for s in segments) == ids[text]


def test_prompt_ids_with_a_compat_tokenizer_are_the_reference_ids() -> None:
    from mio_agent.conversation import Conversation, ImagePart, SpeechPart, TextPart, Turn

    conv = Conversation(
        "std", (Turn("user", (TextPart("a"), ImagePart(tuple(IMG)))), Turn("assistant", (SpeechPart((5,)),)))
    )
    text = "".join(prompt_segments(conv))
    for name in VARIANTS:
        expected = dict(zip(ALL, golden(name)["ids_no_special"], strict=True))[text]
        assert prompt_ids(conv, tok(name)) == expected


PIECE = st.one_of(
    st.sampled_from(ENGLISH),
    st.sampled_from(CJK),
    st.sampled_from(EMOJI),
    st.sampled_from(DIGITS),
    st.sampled_from(SPACES),
    st.sampled_from(TOKENS),
    st.sampled_from(PARTIAL),
    st.text(st.characters(codec="utf-8"), max_size=3),
)
BODY = st.lists(PIECE, max_size=10).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SEGMENTABLE), bodies=st.lists(BODY, min_size=1, max_size=4), first=BODY)
def test_segments_starting_with_im_start_encode_like_the_joined_string(
    name: str, bodies: list[str], first: str
) -> None:
    t = tok(name)
    segments = ["<|startoftext|>" + first] + ["<|im_start|>" + b for b in bodies]
    joined = t.encode("".join(segments), add_special_tokens=False)
    assert joined == concat(t.encode(s, add_special_tokens=False) for s in segments)


@settings(max_examples=150, deadline=None)
@given(text=st.lists(PIECE, max_size=14).map("".join))
def test_decode_inverts_encode_without_stripping_tokens(text: str) -> None:
    # yi_legacy_exact: no dummy prefix, identity normalizer, added tokens that strip nothing;
    # sentencepiece itself reads "▁" in the text as its space marker
    assume("▁" not in text)
    t = tok("yi_legacy_exact")
    assert t.decode(t.encode(text, add_special_tokens=False)) == text


def test_decode_details() -> None:
    t = tok("yi_legacy_exact")
    ids = t.encode("<|startoftext|>hi <spch><spch12></spch>", add_special_tokens=False)
    assert t.decode(ids, skip_special_tokens=True) == "hi <spch12>"
    assert t.decode([*ids, 10**6]) == "<|startoftext|>hi <spch><spch12></spch>"
    nonlegacy = tok("yi_nonlegacy_added")
    assert nonlegacy.decode(nonlegacy.encode("hello  world\n", add_special_tokens=False)) == "hello  world\n"


def test_loading_picks_the_compat_tokenizer_for_sentencepiece_folders() -> None:
    t = load_tokenizer(DATA / "yi_legacy_added_full")
    assert isinstance(t, LlamaTokenizerCompat)
    assert tokenizer_implementation(t) == IMPLEMENTATION and "sentencepiece" in IMPLEMENTATION


def test_doctor_reports_implementation_and_round_trip() -> None:
    exact = doctor_tokenizer_checks(DATA / "yi_legacy_exact")
    assert [c.status for c in exact] == ["ok", "ok"]
    assert exact[0].detail == IMPLEMENTATION
    # tokens added as plain strings in 4.34 eat the whitespace next to them, as in the reference
    stripping = doctor_tokenizer_checks(DATA / "yi_legacy_added")
    assert [c.status for c in stripping] == ["ok", "warn"]
    assert "please:\\n<image>" in stripping[1].detail and "please:<image>" in stripping[1].detail
