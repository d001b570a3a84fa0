"""The embedded byte-level tokenizer: exact id layout, one id per byte, specials whole, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mio_agent.model.tokenizer import (
    EMBEDDED_VOCAB_SIZE,
    TEXT_VOCAB_SIZE,
    build_byte_tokenizer,
    byte_token,
    save_byte_tokenizer,
)
from mio_agent.vocab import MioVocab, TokenKind

TURN_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerBase:
    return build_byte_tokenizer()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    save_byte_tokenizer(folder)
    return folder


def test_layout_matches_mio_order(tok: PreTrainedTokenizerBase) -> None:
    expected = {
        "<unk>": 0,
        "<|startoftext|>": 1,
        "<|endoftext|>": 2,
        "<|reserved_3|>": 3,
        "<|reserved_4|>": 4,
        "<|reserved_5|>": 5,
        "<|im_start|>": 6,
        "<|im_end|>": 7,
        "[SPCH]": 264,
        "</spch>": 265,
        "[IMG]": 266,
        "<spch>": 267,
        "</image>": 268,
        "<image>": 269,
        "<img0>": 270,
        "<img8191>": 8461,
        "<spch0>": 8462,
        "<spch4095>": 12557,
    }
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert len(tok) == EMBEDDED_VOCAB_SIZE == 12558
    assert TEXT_VOCAB_SIZE == 264
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2 and tok.unk_token_id == 0


def test_bytes_are_ids_8_to_263_in_order(tok: PreTrainedTokenizerBase) -> None:
    assert [tok.convert_tokens_to_ids(byte_token(b)) for b in range(256)] == list(range(8, 264))
    text = "aé€😀\n\t\x00"
    assert tok.encode(text, add_special_tokens=False) == [8 + b for b in text.encode()]
    assert tok.decode(list(range(8, 8 + 128))) == bytes(range(128)).decode("ascii")


def test_vocab_reads_every_mio_token(tok: PreTrainedTokenizerBase) -> None:
    vocab = MioVocab.from_tokenizer(tok, vocab_size=12558)
    assert vocab.image_ids == tuple(range(270, 8462))
    assert vocab.speech_ids == tuple(range(8462, 12558))
    assert (vocab.im_start, vocab.im_end, vocab.spch_start, vocab.image_end) == (6, 7, 267, 268)
    assert vocab.kind(8 + ord("a")) == (TokenKind.TEXT, 0)


def test_special_and_code_strings_inside_text_are_single_ids(tok: PreTrainedTokenizerBase) -> None:
    ids = tok.encode("<|im_start|>user\n<spch><spch12></spch>", add_special_tokens=False)
    assert ids == [6, *(8 + b for b in b"user\n"), 267, 8462 + 12, 265]
    ids = tok.encode("x<image><img5><img8191></image>[IMG][SPCH]<|endoftext|>", add_special_tokens=False)
    assert ids == [8 + ord("x"), 269, 275, 8461, 268, 266, 264, 2]


def test_add_special_tokens_prepends_bos_only(tok: PreTrainedTokenizerBase) -> None:
    assert tok.encode("hi") == [1, 8 + ord("h"), 8 + ord("i")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8")))
def test_plain_text_is_one_id_per_byte_and_round_trips(tok: PreTrainedTokenizerBase, text: str) -> None:
    assume("<" not in text and "[" not in text)
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == [8 + b for b in text.encode()]
    assert tok.decode(ids) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.sampled_from(["<spch3>", "<|im_end|>", "<", "img", ">", "é", " ", "\n", "[IMG]", "a"]))
)
def test_any_text_with_specials_round_trips(tok: PreTrainedTokenizerBase, parts: list[str]) -> None:
    text = "".join(parts)
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    turns=st.lists(
        st.tuples(st.sampled_from(["system", "user", "assistant"]), TURN_TEXT), min_size=1, max_size=4
    )
)
def test_whole_prompt_encodes_as_its_turns_concatenated(
    tok: PreTrainedTokenizerBase, turns: list[tuple[str, str]]
) -> None:
    pieces = [f"<|im_start|>{role}\n{body}<spch><spch7><spch1030></spch><|im_end|>\n" for role, body in turns]
    pieces.append("<|im_start|>assistant\n")
    whole = tok.encode("".join(pieces), add_special_tokens=False)
    split = [i for piece in pieces for i in tok.encode(piece, add_special_tokens=False)]
    assert whole == split


def test_saved_files_load_back_identically(tok: PreTrainedTokenizerBase, saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    again = AutoTokenizer.from_pretrained(str(saved), local_files_only=True)
    assert again.get_vocab() == tok.get_vocab()
    text = "<|im_start|>user\nhé 😀<image><img1></image><|im_end|>\n"
    assert again.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert again.encode("a") == tok.encode("a")
    assert (again.bos_token, again.eos_token, again.unk_token) == (
        "<|startoftext|>",
        "<|endoftext|>",
        "<unk>",
    )


def test_saved_files_are_byte_identical(saved: Path, tmp_path: Path) -> None:
    save_byte_tokenizer(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (saved / name).read_bytes()
