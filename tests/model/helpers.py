"""Helpers of the model tests: tiny MIO-format folders and MIO's sentencepiece tokenizer layout."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import sentencepiece as spm

from mio_agent.model.builder import build_mio_format_model
from mio_agent.model.tokenizer import BYTE_OFFSET, TEXT_VOCAB_SIZE, embedded_token_strings

TINY: dict[str, Any] = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


def build_tiny(directory: Path, *, seed: int = 0, **options: Any) -> Path:
    """A tiny MIO-format folder (32 hidden, 2 layers) with the given weight layout."""
    return build_mio_format_model(directory, **TINY, seed=seed, **options)


def _sentencepiece_model(size: int) -> bytes:
    """A sentencepiece model with Yi's first eight pieces (as MIO's tokenizer.model has them)."""
    rng = random.Random(0)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))
        for _ in range(300)
    ]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        vocab_size=size,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<|startoftext|>",
        eos_piece="<|endoftext|>",
        user_defined_symbols=[
            "<|reserved_3|>",
            "<|reserved_4|>",
            "<|reserved_5|>",
            "<|im_start|>",
            "<|im_end|>",
        ],
        character_coverage=1.0,
        minloglevel=2,
        num_threads=1,
    )
    return out.getvalue()


def use_sentencepiece_tokenizer(folder: Path) -> None:
    """Swap the byte tokenizer for MIO's: tokenizer.model, tokenizer_config.json, special_tokens_map.json.

    The sentencepiece model has as many pieces as the byte tokenizer's text part, so MIO's six new
    tokens and the code tokens keep their ids and the weights still fit.
    """
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.model").write_bytes(_sentencepiece_model(TEXT_VOCAB_SIZE))
    tokens = embedded_token_strings()
    added = {
        str(i): {"content": tokens[i], "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i in [*range(BYTE_OFFSET), *range(TEXT_VOCAB_SIZE, len(tokens))]
    }  # fmt: skip
    specials = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
    }
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "added_tokens_decoder": added,
        **specials,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
