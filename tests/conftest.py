"""Shared fixtures: a MIO vocabulary over a byte-level tokenizer with the embedded model's layout."""

from __future__ import annotations

import pytest

from mio_agent.vocab import MioVocab
from tests._vocab import ByteTokenizer, make_vocab


@pytest.fixture(scope="session")
def byte_tokenizer() -> ByteTokenizer:
    return make_vocab()[1]


@pytest.fixture(scope="session")
def vocab(byte_tokenizer: ByteTokenizer) -> MioVocab:
    return MioVocab.from_tokenizer(byte_tokenizer)
