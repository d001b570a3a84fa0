"""Loading MIO-format models (official release folders and the embedded tiny model)."""

from __future__ import annotations

from mio_agent.model.builder import PRESETS, ModelSizes, build_mio_format_model, build_preset
from mio_agent.model.embedded import embedded_model_path
from mio_agent.model.loading import LoadedModel, check_model_folder, load_model, resolve_device_dtype
from mio_agent.model.tokenizer import build_byte_tokenizer, save_byte_tokenizer

__all__ = [
    "PRESETS",
    "LoadedModel",
    "ModelSizes",
    "build_byte_tokenizer",
    "build_mio_format_model",
    "build_preset",
    "check_model_folder",
    "embedded_model_path",
    "load_model",
    "resolve_device_dtype",
    "save_byte_tokenizer",
]
