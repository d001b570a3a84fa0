"""load_model on MIO's .bin layout and on safetensors: same logits, the right facts, MIO's tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from mio_agent.exceptions import ConfigError
from mio_agent.model.loading import LoadedModel, load_model, resolve_device_dtype
from tests.model.helpers import TINY, use_sentencepiece_tokenizer

PROMPT = "<|im_start|>user\nhello <spch><spch3><spch900></spch><|im_end|>\n<|im_start|>assistant\n"


def logits(lm: LoadedModel, text: str = PROMPT) -> torch.Tensor:
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    with torch.inference_mode():
        out: torch.Tensor = lm.model(input_ids=torch.tensor([ids], device=lm.device)).logits[0].float()
    return out


@pytest.fixture(scope="module")
def loaded(folders: dict[str, Path]) -> dict[str, LoadedModel]:
    return {
        name: load_model(path, device="cpu", dtype="auto", progress=False) for name, path in folders.items()
    }


def test_every_layout_gives_identical_logits(loaded: dict[str, LoadedModel]) -> None:
    reference = logits(loaded["st1"])
    assert reference.shape[-1] == 12558
    assert torch.equal(logits(loaded["bin3"]), reference)
    assert torch.equal(logits(loaded["st2"]), reference)


def test_matches_transformers_own_loader(loaded: dict[str, LoadedModel], folders: dict[str, Path]) -> None:
    ours = loaded["bin3"]
    theirs = LlamaForCausalLM.from_pretrained(str(folders["st1"]), local_files_only=True, dtype=torch.float32)
    ids = torch.tensor([ours.tokenizer.encode(PROMPT, add_special_tokens=False)])
    with torch.inference_mode():
        expected = theirs(input_ids=ids).logits[0]
    torch.testing.assert_close(logits(ours), expected, rtol=0, atol=1e-6)


def test_loaded_facts(loaded: dict[str, LoadedModel], folders: dict[str, Path]) -> None:
    lm = loaded["bin3"]
    assert lm.path == folders["bin3"]
    assert (lm.device, lm.dtype) == (torch.device("cpu"), torch.float32)
    assert lm.stop_ids == (7, 2)
    assert lm.max_positions == TINY["max_position_embeddings"]
    assert lm.is_embedded
    assert lm.vocab.vocab_size == 12558 and lm.vocab.spch_start == 267
    assert not lm.model.training
    assert all(not p.requires_grad and not p.is_meta for p in lm.model.parameters())
    assert all(not b.is_meta for b in lm.model.buffers())
    # untied, as in MIO
    assert lm.model.lm_head.weight.data_ptr() != lm.model.model.embed_tokens.weight.data_ptr()


def test_bfloat16_is_close_to_float32(loaded: dict[str, LoadedModel], folders: dict[str, Path]) -> None:
    lm = load_model(folders["st2"], device="cpu", dtype="bfloat16", progress=False)
    assert lm.dtype == torch.bfloat16
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    # rotary frequencies stay float32 whatever the weights' dtype
    assert lm.model.model.rotary_emb.inv_freq.dtype == torch.float32
    torch.testing.assert_close(logits(lm), logits(loaded["st1"]), atol=0.05, rtol=0.05)


def test_progress_bar_goes_to_stderr_per_shard(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    load_model(folders["bin3"], device="cpu", progress=True)
    captured = capsys.readouterr()
    assert "3/3" in captured.err and "bin3" in captured.err
    assert captured.out == ""
    load_model(folders["bin3"], device="cpu", progress=False)
    assert capsys.readouterr().err == ""


def test_mio_sentencepiece_tokenizer_layout(
    copy_of: Callable[[str], Path], loaded: dict[str, LoadedModel]
) -> None:
    folder = copy_of("bin3")
    use_sentencepiece_tokenizer(folder)
    lm = load_model(folder, device="cpu", progress=False)
    assert type(lm.tokenizer).__name__.startswith("LlamaTokenizer")
    byte = loaded["bin3"].vocab
    assert (lm.vocab.im_start, lm.vocab.im_end, lm.vocab.eos, lm.vocab.bos) == (6, 7, 2, 1)
    assert lm.vocab.image_ids == byte.image_ids and lm.vocab.speech_ids == byte.speech_ids
    assert (lm.vocab.spch_placeholder, lm.vocab.image_start) == (264, 269)
    assert lm.stop_ids == (7, 2)
    ids = lm.tokenizer.encode("<|im_start|>user\n<spch><spch12></spch><|im_end|>", add_special_tokens=False)
    assert ids[0] == 6 and ids[-4:] == [267, 8462 + 12, 265, 7]


def test_resolve_device_dtype() -> None:
    cuda = torch.cuda.is_available()
    assert resolve_device_dtype("auto", "auto") == (
        (torch.device("cuda"), torch.float16) if cuda else (torch.device("cpu"), torch.float32)
    )
    assert resolve_device_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("CPU", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cpu", "float16") == (torch.device("cpu"), torch.float16)
    with pytest.raises(ConfigError, match=r"model\.dtype"):
        resolve_device_dtype("cpu", "int4")
    with pytest.raises(ConfigError, match=r"model\.device"):
        resolve_device_dtype("toaster", "auto")
    if not cuda:
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device_dtype("cuda", "auto")


def test_tied_config_ties_lm_head_to_embedding(copy_of: Callable[[str], Path]) -> None:
    folder = copy_of("st2")
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (folder / "config.json").write_text(json.dumps(config))
    # the stored lm_head.weight is tolerated and replaced by the embedding
    lm = load_model(folder, device="cpu", progress=False)
    assert lm.model.lm_head.weight is lm.model.model.embed_tokens.weight
    assert torch.isfinite(logits(lm)).all()
