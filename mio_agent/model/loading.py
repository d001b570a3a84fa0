"""Loading a MIO-format folder (the official release or a built one) into a ready LlamaForCausalLM."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from mio_agent.exceptions import ConfigError, MioAgentError, ModelFilesError, VocabularyError
from mio_agent.model.builder import BUILT_BY_KEY
from mio_agent.model.checkpoint import (
    OFFICIAL_REPO,
    WeightFiles,
    check_keys,
    check_weight_files,
    expected_keys,
    find_weights,
    meta_model,
    missing_in_shard,
    read_config,
    read_shard,
    reject_unexpected,
    require_folder,
    require_tokenizer_files,
    shard_lacks,
)
from mio_agent.model.sp_tokenizer import LlamaTokenizerCompat, is_sentencepiece_folder
from mio_agent.vocab import MioVocab, TokenizerLike

__all__ = [
    "LoadedModel",
    "TextTokenizer",
    "check_model_folder",
    "load_model",
    "load_tokenizer",
    "resolve_device_dtype",
    "tokenizer_implementation",
]


class TextTokenizer(TokenizerLike, Protocol):
    """What the project uses of a loaded tokenizer.

    MIO's sentencepiece folder (tokenizer.model) loads as `LlamaTokenizerCompat`, with the slow
    reference's ids; the embedded model's byte-level tokenizer.json loads through transformers.
    """

    def convert_ids_to_tokens(self, ids: list[int], skip_special_tokens: bool = ...) -> list[str]: ...

    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def eos_token_id(self) -> int | None: ...

    @property
    def unk_token_id(self) -> int | None: ...

    @property
    def pad_token_id(self) -> int | None: ...


_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and the facts the engine needs about it.

    `stop_ids` end a reply: `<|im_end|>` (the Instruct model's stop token) and `<|endoftext|>`.
    `max_positions` is the context length (config max_position_embeddings). `is_embedded` is
    true for folders written by `build_mio_format_model` (random weights, replies are noise).
    """

    model: LlamaForCausalLM
    tokenizer: TextTokenizer
    vocab: MioVocab
    path: Path
    device: torch.device
    dtype: torch.dtype
    max_positions: int
    stop_ids: tuple[int, ...]
    is_embedded: bool
    # the static-cache decode path (a mio_agent.model.fast_path.FastPath), set up by
    # `prepare_fast_path` or on first use; typed loosely so the two modules do not import each other
    fast: Any = None


def resolve_device_dtype(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """Device and dtype from config strings; "auto": cuda + float16 when CUDA works, else cpu + float32."""
    name = device.strip().lower()
    if name == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ConfigError(
                f"model.device {device!r} is not a device; use auto, cpu, cuda or cuda:N"
            ) from exc
        if dev.type not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"model.device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(
                    f"model.device is {device!r} but this torch sees no CUDA device; "
                    "set model.device to auto or cpu, or install a CUDA build of torch"
                )
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ConfigError(
                    f"model.device is {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                    "pick one of cuda:0 .. cuda:N-1"
                )
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(
                f"model.device is {device!r} but MPS is not available; set model.device to auto or cpu"
            )
    kind = dtype.strip().lower()
    if kind == "auto":
        return dev, torch.float16 if dev.type == "cuda" else torch.float32
    if kind not in _DTYPES:
        raise ConfigError(f"model.dtype {dtype!r} is not one of auto, float16, bfloat16, float32")
    return dev, _DTYPES[kind]


def tokenizer_implementation(tokenizer: TextTokenizer) -> str:
    """Which implementation tokenizes (for `mio-agent doctor`)."""
    if isinstance(tokenizer, LlamaTokenizerCompat):
        return str(tokenizer.implementation)
    return f"transformers {type(tokenizer).__name__} (tokenizer.json)"


def _load_tokenizer(folder: Path) -> TextTokenizer:
    require_tokenizer_files(folder)
    try:
        if is_sentencepiece_folder(folder):
            return LlamaTokenizerCompat.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # tokenizers and sentencepiece raise bare Exceptions on damaged files
        raise ModelFilesError(
            f"the tokenizer in {folder} does not load ({exc}); copy tokenizer.model, "
            f"tokenizer_config.json and special_tokens_map.json from {OFFICIAL_REPO}"
        ) from exc
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ModelFilesError(
            f"{folder} does not hold a Hugging Face tokenizer; copy the tokenizer files of {OFFICIAL_REPO}"
        )
    loaded: TextTokenizer = tokenizer
    return loaded


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """Only the tokenizer of a model folder (for printing prompt ids without loading weights).

    A folder with `tokenizer.model` (MIO's sentencepiece tokenizer) gets `LlamaTokenizerCompat`,
    which gives the ids of MIO's reference (the slow LlamaTokenizer of transformers 4.34); a
    folder with only `tokenizer.json` (the embedded model) loads through transformers.
    """
    folder = Path(path).expanduser()
    require_folder(folder)
    return _load_tokenizer(folder)


def _vocab(tokenizer: TextTokenizer, config: LlamaConfig, folder: Path) -> MioVocab:
    size = int(config.vocab_size)
    if len(tokenizer) > size:
        raise VocabularyError(
            f"the tokenizer in {folder} has {len(tokenizer)} tokens but config.json's vocab_size is {size}: "
            "the tokenizer files and config.json come from different releases; "
            f"take both from {OFFICIAL_REPO}"
        )
    try:
        return MioVocab.from_tokenizer(tokenizer, vocab_size=size)
    except VocabularyError as exc:
        raise VocabularyError(f"{folder}: {exc}") from exc


def _restore_computed_buffers(model: LlamaForCausalLM, device: torch.device) -> None:
    # non-persistent buffers (rotary frequencies) are in no checkpoint; build their modules anew
    for name, module in list(model.named_modules()):
        if not any(b.is_meta for b in module.buffers(recurse=False)):
            continue
        if not type(module).__name__.endswith("RotaryEmbedding"):
            raise RuntimeError(
                f"module {name} has buffers no checkpoint provides; this loader cannot build them"
            )
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, type(module)(config=model.config).to(device))


def _load_weights(
    model: LlamaForCausalLM,
    folder: Path,
    files: WeightFiles,
    device: torch.device,
    dtype: torch.dtype,
    progress: bool,
) -> LlamaForCausalLM:
    """Fill the meta-device `model` from the weight files, shard by shard."""
    expected = expected_keys(model)
    loaded: set[str] = set()
    bar = tqdm(
        total=len(files.shards),
        desc=f"loading {folder.name}",
        unit="shard",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        # a shard takes seconds: show every one, however quickly it went
        mininterval=0,
        miniters=1,
    )
    with bar:
        for shard in files.shards:
            chunk: dict[str, torch.Tensor] = {}
            for key, tensor in read_shard(shard):
                if expected.tolerates(key):
                    continue
                if key not in expected.required:
                    reject_unexpected([key], shard)
                if tensor.shape != expected.required[key]:
                    raise ModelFilesError(
                        f"{shard}: {key} has shape {tuple(tensor.shape)} but config.json asks for "
                        f"{tuple(expected.required[key])}; "
                        "config.json and the weights come from different models"
                    )
                # one tensor at a time, the source dropped before the next is read: with the shard
                # memory-mapped (or popped by read_shard), host memory holds at most one shard's
                # source pages beside the converted tensors
                chunk[key] = tensor.to(
                    device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype
                )
                del tensor
            absent = shard_lacks(files, shard, chunk, expected)
            if absent:
                raise ModelFilesError(missing_in_shard(shard, absent, files.index))
            # assign=True takes the tensors as they are, so nothing is copied into a second model
            model.load_state_dict(chunk, strict=False, assign=True)
            loaded.update(chunk)
            del chunk
            bar.update(1)
    check_keys(loaded, expected, files.index or files.shards[0])
    if model.config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    _restore_computed_buffers(model, device)
    model.eval()
    model.requires_grad_(False)
    return model


def check_model_folder(path: str | Path) -> list[str]:
    """Problems that would stop `load_model` on this folder, found without loading weights; [] if fine.

    Reads config.json, loads the tokenizer and checks it against the config, and checks that the
    weight files (index, shards, safetensors headers) provide every key of the model.
    """
    folder = Path(path).expanduser()
    try:
        require_folder(folder)
    except ModelFilesError as exc:
        return [str(exc)]
    problems: list[str] = []
    config: LlamaConfig | None = None
    try:
        config, _ = read_config(folder)
    except ModelFilesError as exc:
        problems.append(str(exc))
    try:
        tokenizer = _load_tokenizer(folder)
        if config is not None:
            _vocab(tokenizer, config, folder)
    except MioAgentError as exc:
        problems.append(str(exc))
    try:
        files = find_weights(folder)
        if config is not None:
            check_weight_files(files, expected_keys(meta_model(config)))
    except ModelFilesError as exc:
        problems.append(str(exc))
    return problems


def load_model(
    path: str | Path, *, device: str = "auto", dtype: str = "auto", progress: bool = True
) -> LoadedModel:
    """Load a MIO-format folder: config.json, tokenizer files and weights (.bin shards or safetensors).

    Weights are read shard by shard into a model built on the meta device, so memory holds one
    copy of the model plus at most one shard. `progress` shows a per-shard bar on stderr.
    Raises ModelFilesError (missing or malformed files), VocabularyError (tokenizer not MIO's or
    not matching config.json) or ConfigError (bad device or dtype).
    """
    folder = Path(path).expanduser()
    dev, dt = resolve_device_dtype(device, dtype)
    require_folder(folder)
    config, raw = read_config(folder)
    files = find_weights(folder)
    model = meta_model(config)
    # everything checkable without tensor data fails here, before the slow tokenizer and weights
    check_weight_files(files, expected_keys(model))
    tokenizer = _load_tokenizer(folder)
    vocab = _vocab(tokenizer, config, folder)
    model = _load_weights(model, folder, files, dev, dt, progress)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        vocab=vocab,
        path=folder,
        device=dev,
        dtype=dt,
        max_positions=int(config.max_position_embeddings),
        stop_ids=tuple(dict.fromkeys((vocab.im_end, vocab.eos))),
        is_embedded=BUILT_BY_KEY in raw,
    )
