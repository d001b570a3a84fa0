"""SpeechTokenizer files: strict loading of config.json + SpeechTokenizer.pt; seeded tiny ones saved alike."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mio_agent.codecs.speech.config import TINY_CONFIG, SpeechTokenizerConfig
from mio_agent.codecs.speech.model import SpeechTokenizerModel
from mio_agent.exceptions import ModelFilesError

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "check_state_dict",
    "expected_shapes",
    "load_speech_tokenizer",
    "random_model",
    "random_state_dict",
    "read_speech_config",
    "save_speech_tokenizer",
    "save_tiny_speech_tokenizer",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "SpeechTokenizer.pt"
_GET = "copy SpeechTokenizer/ (speechtokenizer_hubert_avg) of the MIO release there"
# relative spread of the random codebooks per RVQ layer: later layers code smaller residuals
_CODEBOOK_SCALE = 0.5
_CODEBOOK_DECAY = 0.5
# decoded audio of the random weights then has a standard deviation near 0.1
_OUTPUT_GAIN = 0.1


def read_speech_config(directory: Path) -> SpeechTokenizerConfig:
    """The checked `config.json` of a SpeechTokenizer folder."""
    if not directory.is_dir():
        raise ModelFilesError(f"speech tokenizer folder {directory} does not exist; {_GET}")
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise ModelFilesError(f"{file} is missing; {_GET}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFilesError(f"{file} is not readable JSON ({exc}); {_GET}") from exc
    return SpeechTokenizerConfig.from_dict(data, source=str(file))


def expected_shapes(config: SpeechTokenizerConfig) -> OrderedDict[str, tuple[int, ...]]:
    """Every tensor the weights file must hold, in the official order, with its shape (built on `meta`)."""
    with torch.device("meta"):
        model = SpeechTokenizerModel(config)
    return OrderedDict((name, tuple(t.shape)) for name, t in model.state_dict().items())


def _sample(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_state_dict(config: SpeechTokenizerConfig, state: Mapping[str, object], source: str) -> None:
    """Raise ModelFilesError naming the first problems unless `state` matches the architecture exactly."""
    expected = expected_shapes(config)
    missing = [name for name in expected if name not in state]
    if missing:
        raise ModelFilesError(
            f"{source} lacks {len(missing)} needed tensor(s): {_sample(missing)}; "
            "the file is truncated or not a speechtokenizer_hubert_avg checkpoint"
        )
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        raise ModelFilesError(
            f"{source} holds {len(unexpected)} tensor(s) the model does not have: {_sample(unexpected)}; "
            "expected the flat, unprefixed state dict of speechtokenizer_hubert_avg"
        )
    for name, shape in expected.items():
        value = state[name]
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise ModelFilesError(f"{source}: {name} is not a floating-point tensor ({type(value).__name__})")
        if tuple(value.shape) != shape:
            raise ModelFilesError(
                f"{source}: {name} has shape {tuple(value.shape)} but {CONFIG_FILE} implies {shape}; "
                "the config and the weights do not belong together"
            )


def load_speech_tokenizer(directory: str | Path, *, device: str = "cpu") -> SpeechTokenizerModel:
    """Build the model from `DIR/config.json` and load `DIR/SpeechTokenizer.pt` strictly, in eval mode."""
    folder = Path(directory).expanduser()
    config = read_speech_config(folder)
    file = folder / WEIGHTS_FILE
    if not file.is_file():
        raise ModelFilesError(f"{file} is missing; {_GET}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad pickle or zip
        raise ModelFilesError(
            f"{file} cannot be read as a PyTorch state dict ({type(exc).__name__}: {exc}); {_GET}"
        ) from exc
    if not isinstance(state, Mapping):
        raise ModelFilesError(f"{file} holds a {type(state).__name__}, not a state dict; {_GET}")
    check_state_dict(config, state, str(file))
    model = SpeechTokenizerModel(config)
    model.load_state_dict({name: t.float() for name, t in state.items()}, strict=True)
    return model.to(torch.device(device)).eval()


def random_state_dict(config: SpeechTokenizerConfig, *, seed: int) -> OrderedDict[str, Tensor]:
    """Seeded random weights in the official layout; numpy's PCG64 makes them the same on every machine.

    Scales keep activations near unit size (weight-normed rows of norm 1-1.6, LSTMs as torch
    initialises them), codebooks spread like the encoder's output so that codes vary, and the
    decoder's last convolution is scaled down so that decoded audio stays within [-1, 1].
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    out: OrderedDict[str, Tensor] = OrderedDict()
    shapes = expected_shapes(config)
    last_conv = [name for name in shapes if name.startswith("decoder.") and name.endswith(".weight_g")][-1]
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight_v":
            value = rng.standard_normal(shape, dtype=np.float32)
        elif leaf == "weight_g":
            # row norms a little above 1 keep the signal from fading through the deep stacks
            low, high = (1.0, 1.6) if name.startswith("encoder.") else (1.0, 1.4)
            value = rng.uniform(low, high, shape).astype(np.float32)
            if name == last_conv:
                value *= np.float32(_OUTPUT_GAIN)
        elif ".lstm." in name:
            bound = 1.0 / np.sqrt(shape[0] // 4)
            value = rng.uniform(-bound, bound, shape).astype(np.float32)
        elif name.startswith("transform."):
            value = (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1])).astype(np.float32)
        elif leaf == "inited":
            value = np.ones(shape, dtype=np.float32)
        elif leaf == "cluster_size":
            value = rng.uniform(1.0, 100.0, shape).astype(np.float32)
        elif leaf == "embed":
            layer = int(name.split(".")[3])
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(
                _CODEBOOK_SCALE * _CODEBOOK_DECAY**layer
            )
        elif leaf == "embed_avg":
            # EMA state consistent with embed: embed = embed_avg / cluster_size
            prefix = name.rsplit(".", 1)[0]
            value = (out[prefix + ".embed"] * out[prefix + ".cluster_size"][:, None]).numpy()
        else:  # conv biases
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
        out[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return out


def random_model(config: SpeechTokenizerConfig, *, seed: int) -> SpeechTokenizerModel:
    """A model of `config` with `random_state_dict` weights, in eval mode on the CPU."""
    model = SpeechTokenizerModel(config)
    model.load_state_dict(random_state_dict(config, seed=seed), strict=True)
    return model.eval()


def _write_atomic(file: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_speech_tokenizer(
    directory: Path, config: SpeechTokenizerConfig, state: Mapping[str, Tensor]
) -> Path:
    """Write `DIR/config.json` and `DIR/SpeechTokenizer.pt` (flat state dict) as the release lays them out."""
    check_state_dict(config, state, "state dict to save")
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    # saved from memory, not from a file name: the archive's inner folder name is then always the same
    torch.save(OrderedDict((name, t.detach().cpu().contiguous()) for name, t in state.items()), buffer)
    _write_atomic(directory / WEIGHTS_FILE, buffer.getvalue())
    text = json.dumps(config.to_dict(), indent=2) + "\n"
    _write_atomic(directory / CONFIG_FILE, text.encode("utf-8"))
    return directory


def save_tiny_speech_tokenizer(directory: Path, *, seed: int = 0) -> Path:
    """A tiny SpeechTokenizer (same classes, hop 320, 8 x 1024 codes) from `seed`; byte-identical per seed."""
    return save_speech_tokenizer(Path(directory), TINY_CONFIG, random_state_dict(TINY_CONFIG, seed=seed))
